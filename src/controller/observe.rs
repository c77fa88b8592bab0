//! Observing: one snapshot per pass. The store reads (each fleet's backlog, every worker in one
//! read, launch intents not loaded yet in one read) and the providers' listings run
//! concurrently; each fleet's ledger is then updated with its listing and the planner's input
//! built from it. Only reads happen here, except the housekeeping that promotes waiting tasks
//! (and requeues expired leases of steps that no fleet plans for) before the reads.

use std::sync::Arc;

use futures::StreamExt;
use tracing::{debug, warn};

use super::{Controller, ControllerError, ObserveError, OBSERVE_CONCURRENCY};
use crate::clock::Millis;
use crate::manifest::FleetManifest;
use crate::model::{Backlog, WorkerInfo};
use crate::pipeline::Graph;
use crate::planner::estimate::{self, ArrivalLog, BacklogSample, RecentTasks};
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

impl Controller {
    /// Promotes waiting tasks on every step that has tasks or a fleet, and requeues expired
    /// leases on steps without a fleet (a fleet's step is requeued by its plan). Returns the
    /// steps and whether the store could list them.
    pub(super) async fn housekeep(
        &self,
        fleets: &[FleetManifest],
        graph: &Graph,
        now: Millis,
        errors: &mut Vec<ControllerError>,
    ) -> (Vec<String>, bool) {
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
        let planned = |step: &str| fleets.iter().any(|f| f.step() == step);
        let results: Vec<Result<(), StoreError>> = futures::stream::iter(
            steps
                .iter()
                .map(|step| self.housekeep_step(step, graph, !planned(step), now)),
        )
        .buffered(OBSERVE_CONCURRENCY)
        .collect()
        .await;
        for (step, result) in steps.iter().zip(results) {
            if let Err(source) = result {
                let step = step.clone();
                self.note_error(ControllerError::Housekeeping { step, source }, errors);
            }
        }
        (steps, listed)
    }

    async fn housekeep_step(
        &self,
        step: &str,
        graph: &Graph,
        requeue: bool,
        now: Millis,
    ) -> Result<(), StoreError> {
        let promoted = promote::promote_waiting(self.store.as_ref(), graph, step, now).await?;
        if promoted.promoted + promoted.failed + promoted.cancelled > 0 {
            debug!(
                step,
                promoted = promoted.promoted,
                failed = promoted.failed,
                cancelled = promoted.cancelled,
                "dependencies resolved"
            );
        }
        let retried = self.store.retry_due(step, now).await?;
        if retried > 0 {
            debug!(step, retried, "retry delay over: tasks pending again");
        }
        if requeue {
            self.requeue_expired(step, now).await?;
        }
        Ok(())
    }

    /// Requeues the step's tasks whose lease has expired.
    pub(super) async fn requeue_expired(&self, step: &str, now: Millis) -> Result<(), StoreError> {
        let r = self.store.requeue_expired(step, now, self.fence()).await?;
        if !r.requeued.is_empty() || !r.failed.is_empty() {
            warn!(step, requeued = ?r.requeued, failed = ?r.failed, "requeued tasks whose lease expired");
            self.metrics
                .tasks_requeued
                .with_label_values(&[step, "lease_expired"])
                .inc_by(r.requeued.len() as u64);
        }
        Ok(())
    }

    /// Observes every fleet, at most [`OBSERVE_CONCURRENCY`] store reads and listings at a
    /// time, and updates each fleet's ledger in order. Results are in the order of `fleets`
    /// (each step has one fleet: the manifests are checked for that).
    pub(super) async fn observe(
        &mut self,
        fleets: &[FleetManifest],
        now: Millis,
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
        let since: Vec<Option<Millis>> = fleets
            .iter()
            .map(|f| self.memory.get(f.name()).and_then(|m| m.arrivals.since()))
            .collect();
        // Each backlog is counted only as far as its fleet's plan can use it.
        let backlogs = futures::stream::iter(fleets.iter().zip(&providers).zip(&since).map(
            |((f, p), since)| {
                let limit = policy(f, p.as_ref().ok()).backlog_limit();
                step_reads(store, f.step(), limit, *since)
            },
        ))
        .buffered(OBSERVE_CONCURRENCY)
        .collect::<Vec<_>>();
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
        let (backlogs, workers, intents, listings) =
            tokio::join!(backlogs, workers, intents, listings);

        let intents_unread = self.restore_intents(unloaded, intents);
        let mut out = Vec::with_capacity(fleets.len());
        for (((fleet, backlog), provider), listed) in
            fleets.iter().zip(backlogs).zip(providers).zip(listings)
        {
            let unread = intents_unread
                .as_ref()
                .filter(|(names, _)| names.contains(&fleet.name()));
            let memory = self.memory.entry(fleet.name().to_string()).or_default();
            let recent = backlog
                .as_ref()
                .ok()
                .map(|reads| reads.recent(&mut memory.arrivals, now))
                .unwrap_or_default();
            let backlog = backlog.map(|reads| reads.backlog);
            let mut step = step_view(fleet, backlog, &workers, unread.map(|(_, e)| e.as_str()));
            if let Ok(view) = step.as_mut() {
                view.recent = recent;
            }
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

/// A fleet's step as one pass reads it: the bounded backlog, and for the planner's estimates
/// the newest run times and how many tasks finished since the previous pass (each `None`
/// when its read failed: the planner then plans without that estimate).
struct StepReads {
    backlog: Backlog,
    run_times: Option<Vec<Millis>>,
    finished: Option<u64>,
}

/// The reads of [`StepReads`], concurrently; only the backlog's failure fails the step.
async fn step_reads(
    store: &SharedStore,
    step: &str,
    limit: u64,
    since: Option<Millis>,
) -> Result<StepReads, StoreError> {
    let finished = async {
        match since {
            Some(t) => Some(store.count_finished_since(step, t).await),
            None => None,
        }
    };
    let (backlog, run_times, finished) = tokio::join!(
        store.backlog(step, limit),
        store.recent_run_times(step, estimate::WINDOW),
        finished,
    );
    Ok(StepReads {
        backlog: backlog?,
        run_times: optional(step, "recent run times", run_times),
        finished: finished.and_then(|r| optional(step, "the finished count", r)),
    })
}

/// A read the estimates can do without: its value, or a warning and `None`.
fn optional<T>(step: &str, what: &str, read: Result<T, StoreError>) -> Option<T> {
    match read {
        Ok(v) => Some(v),
        Err(e) => {
            warn!(step, error = %e, "could not read {what}; planning without that estimate");
            None
        }
    }
}

impl StepReads {
    /// The planner's [`RecentTasks`]: the run times read, and the arrivals this pass adds to
    /// the fleet's log.
    fn recent(&self, arrivals: &mut ArrivalLog, now: Millis) -> RecentTasks {
        let b = &self.backlog;
        let sample = BacklogSample {
            at: now,
            pending: b.pending,
            running: b.running,
            more_pending: b.more_pending,
        };
        arrivals.observe(sample, self.finished);
        RecentTasks {
            durations: self.run_times.clone().unwrap_or_default(),
            runnable_at: arrivals.runnable_at(),
        }
    }
}

/// What the store says about a fleet's step, or why it cannot be told.
fn step_view(
    fleet: &FleetManifest,
    backlog: Result<Backlog, StoreError>,
    workers: &Result<Vec<WorkerInfo>, StoreError>,
    intents_unread: Option<&str>,
) -> Result<StepView, ObserveError> {
    match (backlog, workers, intents_unread) {
        (_, _, Some(e)) => Err(ObserveError::Intents(e.to_string())),
        (Ok(backlog), Ok(all), None) => Ok(StepView {
            backlog,
            workers: all
                .iter()
                .filter(|w| w.step == fleet.step())
                .cloned()
                .collect(),
            // Filled in from the same pass's reads (`StepReads::recent`).
            recent: Default::default(),
        }),
        (Err(e), _, None) => Err(ObserveError::Store(e.to_string())),
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
