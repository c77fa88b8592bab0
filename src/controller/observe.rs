//! Observing: one snapshot per pass. The store reads (every fleet's counts together, then the
//! few reads the counts say are due: see [`super::pass_reads`]; every worker in one read;
//! launch intents not loaded yet in one read) and the providers' listings run concurrently;
//! each fleet's ledger is then updated with its listing and the planner's input built from
//! it. Only reads happen here, except the housekeeping that promotes waiting tasks (and
//! requeues expired leases of steps that no fleet plans for) before the reads.

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use tracing::{debug, warn};

use super::pass_reads::{self, Chores, Wanted};
use super::{Controller, ControllerError, ObserveError, OBSERVE_CONCURRENCY};
use crate::clock::Millis;
use crate::manifest::FleetManifest;
use crate::model::{Backlog, StepCounts, WorkerInfo};
use crate::pipeline::Graph;
use crate::planner::estimate::{self, BacklogSample, RecentTasks};
use crate::planner::ledger::{FleetLedger, LaunchIntent};
use crate::planner::{FleetInput, FleetPolicy, StepView};
use crate::provider::instrumented::InstrumentedProvider;
use crate::provider::{FleetProvider, Instance, ProviderError};
use crate::store::{promote, SharedStore, StatusDoc, StoreError};

/// What one pass observed about a fleet, next to its plan input.
pub(super) struct Observed {
    pub fleet: FleetManifest,
    pub provider: Option<Arc<dyn FleetProvider>>,
    pub instances: Vec<Instance>,
    pub workers: Vec<WorkerInfo>,
    /// Why the fleet could not be fully observed.
    pub error: Option<ObserveError>,
}

/// The status document under which a fleet's launch intents are kept.
pub(super) fn intent_key(fleet: &str) -> String {
    format!("launch/{fleet}")
}

/// A fleet's launch intents among the status documents (none if there are none or they do
/// not parse).
fn intents_from(fleet: &str, docs: &[StatusDoc]) -> Vec<LaunchIntent> {
    let key = intent_key(fleet);
    docs.iter()
        .find(|d| d.name == key)
        .and_then(|d| serde_json::from_value::<Vec<LaunchIntent>>(d.body.clone()).ok())
        .unwrap_or_default()
}

/// Every step's counts as one pass read them.
pub(super) type Counted = HashMap<String, StepCounts>;

/// What the housekeeping leaves the rest of the pass: the steps, whether the store could
/// list them, and their counts when they still hold (read, and nothing moved since).
pub(super) struct Housekept {
    pub steps: Vec<String>,
    pub listed: bool,
    pub counts: Option<Counted>,
}

/// `steps`' counts in one call ([`crate::store::TaskStore::pass_counts`]).
async fn read_counts(store: &SharedStore, steps: &[String]) -> Result<Counted, StoreError> {
    let counts = store.pass_counts(steps).await?;
    Ok(steps.iter().cloned().zip(counts).collect())
}

impl Controller {
    /// Housekeeps every step that has tasks or a fleet, as far as its counts say it needs
    /// ([`pass_reads::chores`]): promotes waiting tasks, makes due retries pending and
    /// requeues expired leases on steps without a fleet (a fleet's step is requeued by its
    /// plan); a few steps per pass in full whatever their counts say.
    pub(super) async fn housekeep(
        &mut self,
        fleets: &[FleetManifest],
        graph: &Graph,
        now: Millis,
        errors: &mut Vec<ControllerError>,
    ) -> Housekept {
        let (mut steps, listed) = match self.store.steps().await {
            Ok(s) => (s, true),
            Err(e) => {
                self.note_error(ControllerError::ListSteps(e), errors);
                (Vec::new(), false)
            }
        };
        for f in fleets {
            if !steps.iter().any(|s| s == f.step()) {
                steps.push(f.step().to_string());
            }
        }
        let counts = read_counts(&self.store, &steps).await;
        if let Err(e) = &counts {
            warn!(error = %e, "could not read the steps' counts; housekeeping every step");
        }
        let full = match &counts {
            Ok(_) => self.sweeps.due(&steps, now),
            Err(_) => Vec::new(),
        };
        let planned = |step: &str| fleets.iter().any(|f| f.step() == step);
        let work: Vec<(&String, Chores)> = steps
            .iter()
            .map(|step| {
                let c = counts.as_ref().ok().and_then(|c| c.get(step));
                (
                    step,
                    pass_reads::chores(c, full.contains(step), planned(step)),
                )
            })
            .filter(|(_, chores)| chores.any())
            .collect();
        let results: Vec<Result<bool, StoreError>> = futures::stream::iter(
            work.iter()
                .map(|(step, chores)| self.housekeep_step(step, graph, *chores, now)),
        )
        .buffered(OBSERVE_CONCURRENCY)
        .collect()
        .await;
        let mut moved = false;
        for ((step, _), result) in work.iter().zip(results) {
            match result {
                Ok(m) => {
                    moved |= m;
                    if full.contains(step) {
                        self.sweeps.done(step, now);
                    }
                }
                Err(source) => {
                    // It may have moved tasks before it failed: the counts are read again.
                    moved = true;
                    let step = step.to_string();
                    self.note_error(ControllerError::Housekeeping { step, source }, errors);
                }
            }
        }
        Housekept {
            counts: counts.ok().filter(|_| !moved),
            steps,
            listed,
        }
    }

    /// One step's `chores`; whether a task moved.
    async fn housekeep_step(
        &self,
        step: &str,
        graph: &Graph,
        chores: Chores,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let mut moved = false;
        if chores.promote {
            let p = promote::promote_waiting(self.store.as_ref(), graph, step, now).await?;
            if p.promoted + p.failed + p.cancelled > 0 {
                debug!(
                    step,
                    promoted = p.promoted,
                    failed = p.failed,
                    cancelled = p.cancelled,
                    "dependencies resolved"
                );
            }
            moved |= p.promoted + p.failed + p.cancelled + p.expanded > 0;
        }
        if chores.retry {
            let retried = self.store.retry_due(step, now).await?;
            if retried > 0 {
                debug!(step, retried, "retry delay over: tasks pending again");
            }
            moved |= retried > 0;
        }
        if chores.requeue {
            moved |= self.requeue_expired(step, now).await?;
        }
        Ok(moved)
    }

    /// Requeues the step's tasks whose lease has expired; whether any moved.
    pub(super) async fn requeue_expired(
        &self,
        step: &str,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let r = self.store.requeue_expired(step, now, self.fence()).await?;
        let moved = !r.requeued.is_empty() || !r.failed.is_empty();
        if moved {
            warn!(step, requeued = ?r.requeued, failed = ?r.failed, "requeued tasks whose lease expired");
            self.metrics
                .tasks_requeued
                .with_label_values(&[step, "lease_expired"])
                .inc_by(r.requeued.len() as u64);
        }
        Ok(moved)
    }

    /// Observes every fleet, at most [`OBSERVE_CONCURRENCY`] store reads and listings at a
    /// time, and updates each fleet's ledger in order. `counts`: the steps' counts when the
    /// housekeeping's still hold (read here otherwise). Results are in the order of `fleets`
    /// (each step has one fleet: the manifests are checked for that).
    pub(super) async fn observe(
        &mut self,
        fleets: &[FleetManifest],
        now: Millis,
        counts: Option<Counted>,
    ) -> Vec<(Observed, FleetInput)> {
        let mut providers = Vec::with_capacity(fleets.len());
        for fleet in fleets {
            let p = self.providers.get(fleet).await;
            providers.push(p.map(|p| InstrumentedProvider::wrap(p, self.metrics.clone())));
        }
        let unloaded: Vec<&str> = fleets
            .iter()
            .map(|f| f.name())
            .filter(|name| self.memory.get(*name).is_none_or(|m| m.ledger.needs_load()))
            .collect();

        let store = &self.store;
        let steps = self.step_reads(fleets, counts, now);
        // One read of every worker instead of one per step (the index keeps them together).
        let workers = store.list_workers(None);
        let intents = async {
            if unloaded.is_empty() {
                None
            } else {
                Some(store.list_status().await)
            }
        };
        let listings = futures::stream::iter(
            providers
                .iter()
                .map(|p| async move { Some(p.as_ref().ok()?.list().await) }),
        )
        .buffered(OBSERVE_CONCURRENCY)
        .collect::<Vec<_>>();
        let ((counts, extras), workers, intents, listings) =
            tokio::join!(steps, workers, intents, listings);

        let intents_unread = self.restore_intents(unloaded, intents);
        let mut out = Vec::with_capacity(fleets.len());
        for (((fleet, extras), provider), listed) in
            fleets.iter().zip(extras).zip(providers).zip(listings)
        {
            let unread = intents_unread
                .as_ref()
                .filter(|(names, _)| names.contains(&fleet.name()));
            let memory = self.memory.entry(fleet.name().to_string()).or_default();
            // Each backlog is taken only as far as its fleet's plan can use it.
            let limit = policy(fleet, provider.as_ref().ok()).backlog_limit();
            let backlog = match &counts {
                Ok(all) => {
                    let c = all
                        .get(fleet.step())
                        .cloned()
                        .unwrap_or_else(|| StepCounts {
                            step: fleet.step().to_string(),
                            ..Default::default()
                        });
                    Ok(backlog_of(c, limit, extras, memory, now))
                }
                Err(e) => Err(e.clone()),
            };
            let step = step_view(fleet, backlog, &workers, unread.map(|(_, e)| e.as_str()));
            out.push(snapshot(
                fleet,
                now,
                step,
                provider,
                listed,
                &mut memory.ledger,
            ));
        }
        out
    }

    /// The fleets' steps' counts (`counts`, or read now) and the optional reads they say
    /// are due ([`pass_reads::wanted`]), one per fleet.
    async fn step_reads(
        &self,
        fleets: &[FleetManifest],
        counts: Option<Counted>,
        now: Millis,
    ) -> (Result<Counted, String>, Vec<Extras>) {
        let store = &self.store;
        let counts = match counts {
            Some(c) => Ok(c),
            None => {
                let steps: Vec<String> = fleets.iter().map(|f| f.step().to_string()).collect();
                read_counts(store, &steps).await
            }
        };
        let wanted = match &counts {
            Ok(c) => {
                let steps: Vec<_> = fleets
                    .iter()
                    .map(|f| (self.memory.get(f.name()).map(|m| &m.reads), c.get(f.step())))
                    .collect();
                pass_reads::wanted(&steps, now)
            }
            Err(_) => vec![Wanted::default(); fleets.len()],
        };
        let extras = futures::stream::iter(
            fleets
                .iter()
                .zip(wanted)
                .map(|(f, w)| extra_reads(store, f.step(), w)),
        )
        .buffered(OBSERVE_CONCURRENCY)
        .collect()
        .await;
        (counts.map_err(|e| e.to_string()), extras)
    }
}

impl Controller {
    /// Restores the launch ledgers of `unloaded` fleets from the published intents. Intents
    /// that could not be read are read again next pass; until then their fleets do not act (a
    /// launch planned without them could repeat one in flight): those fleets and the error.
    fn restore_intents<'a>(
        &mut self,
        unloaded: Vec<&'a str>,
        intents: Option<crate::store::Result<Vec<StatusDoc>>>,
    ) -> Option<(Vec<&'a str>, String)> {
        match intents {
            Some(Ok(docs)) => {
                for fleet in unloaded {
                    let mem = self.memory.entry(fleet.to_string()).or_default();
                    mem.ledger.restore(intents_from(fleet, &docs));
                }
                None
            }
            Some(Err(e)) => Some((unloaded, e.to_string())),
            None => None,
        }
    }
}

/// The optional reads of one step this pass (`None`: not read, or the read failed: the
/// planner then plans with what was read before).
#[derive(Debug, Default)]
struct Extras {
    run_times: Option<Vec<Millis>>,
    oldest: Option<Option<Millis>>,
}

/// The reads `wanted` of `step`, concurrently.
async fn extra_reads(store: &SharedStore, step: &str, wanted: Wanted) -> Extras {
    let run_times = async {
        if wanted.run_times {
            optional(
                step,
                "recent run times",
                store.recent_run_times(step, estimate::WINDOW).await,
            )
        } else {
            None
        }
    };
    let oldest = async {
        if wanted.oldest {
            optional(
                step,
                "the oldest pending task",
                store.oldest_pending(step).await,
            )
        } else {
            None
        }
    };
    let (run_times, oldest) = tokio::join!(run_times, oldest);
    Extras { run_times, oldest }
}

/// A read the estimates can do without: its value, or a warning and `None`.
fn optional<T>(step: &str, what: &str, read: Result<T, StoreError>) -> Option<T> {
    match read {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(step, error = %e, "could not read {what}; planning without it this pass");
            None
        }
    }
}

/// A fleet's backlog (taken up to `limit`) and recent tasks from its step's counts and this
/// pass's optional reads, updating what the fleet's memory keeps for the next pass.
fn backlog_of(
    mut c: StepCounts,
    limit: u64,
    extras: Extras,
    memory: &mut super::FleetMemory,
    now: Millis,
) -> (Backlog, RecentTasks) {
    c.oldest_pending_at = memory.reads.oldest(&c, extras.oldest, now);
    let backlog = Backlog::from_counts(&c, limit);
    let durations = memory.reads.run_times(&c, extras.run_times, now);
    let finished = memory.reads.finished_since(&c);
    let sample = BacklogSample {
        at: now,
        pending: backlog.pending,
        running: backlog.running,
        more_pending: backlog.more_pending,
    };
    memory.arrivals.observe(sample, finished);
    let recent = RecentTasks {
        durations,
        runnable_at: memory.arrivals.runnable_at(),
        ..Default::default()
    };
    (backlog, recent)
}

/// What the store says about a fleet's step, or why it cannot be told.
fn step_view(
    fleet: &FleetManifest,
    backlog: Result<(Backlog, RecentTasks), String>,
    workers: &Result<Vec<WorkerInfo>, StoreError>,
    intents_unread: Option<&str>,
) -> Result<StepView, ObserveError> {
    match (backlog, workers, intents_unread) {
        (_, _, Some(e)) => Err(ObserveError::Intents(e.to_string())),
        (Ok((backlog, recent)), Ok(all), None) => Ok(StepView {
            backlog,
            workers: all
                .iter()
                .filter(|w| w.step == fleet.step())
                .cloned()
                .collect(),
            recent,
        }),
        (Err(e), _, None) => Err(ObserveError::Store(e)),
        (_, Err(e), None) => Err(ObserveError::Store(e.to_string())),
    }
}

/// The planner's policy of `fleet`, with the slots per instance its provider derives from its
/// instance types (`vcpusPerTask`; known from the provider's last read of them, so the first
/// pass after a start counts the backlog at `slotsPerInstance`).
fn policy(fleet: &FleetManifest, provider: Option<&Arc<dyn FleetProvider>>) -> FleetPolicy {
    let policy = FleetPolicy::from_manifest(fleet);
    match provider.and_then(|p| p.slots_per_instance()) {
        Some(slots) => policy.with_derived_slots(slots, fleet.spec.tasks_per_instance),
        None => policy,
    }
}

/// One fleet's observation from what [`Controller::observe`] read: its ledger updated with the
/// listing, and the planner's input.
fn snapshot(
    fleet: &FleetManifest,
    now: Millis,
    step: Result<StepView, ObserveError>,
    provider: Result<Arc<dyn FleetProvider>, ProviderError>,
    listed: Option<Result<Vec<Instance>, ProviderError>>,
    ledger: &mut FleetLedger,
) -> (Observed, FleetInput) {
    let mut error = step.as_ref().err().cloned();
    let provider = match provider {
        Ok(p) => Some(p),
        Err(e) => {
            error = Some(ObserveError::Provider(e.to_string()));
            None
        }
    };
    let instances = match listed {
        Some(Ok(list)) => Ok(list),
        Some(Err(e)) => {
            error = Some(ObserveError::Listing(e.to_string()));
            Err(e.to_string())
        }
        None => Err(error.as_ref().map(ToString::to_string).unwrap_or_default()),
    };
    let input = ledger.reconcile(
        policy(fleet, provider.as_ref()),
        step.clone().map_err(|e| e.store_text()),
        instances,
        provider.as_ref().is_some_and(|p| p.scale_in_protection()),
        now,
    );
    let obs = Observed {
        fleet: fleet.clone(),
        provider,
        instances: input.instances.clone().unwrap_or_default(),
        workers: step.map(|s| s.workers).unwrap_or_default(),
        error,
    };
    (obs, input)
}
