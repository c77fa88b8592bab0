//! The reconcile loop: every interval, observe (each step's backlog, workers, instances), plan
//! (pure), act (through the fleet providers), and publish status and metrics. Exact progress
//! (every state's count, throughput) is counted less often, beside the passes ([`progress`]).
//!
//! Launches are written ahead as *intents* (a batch token and a count, kept in the store)
//! before the provider is called, so a controller that crashes mid-launch finds the batch again
//! after a restart and completes it instead of launching twice (providers find a batch's
//! instances by its tag and use the token as the EC2 `ClientToken`).

pub mod aws;
mod progress;
pub mod providers;
pub mod reload;
pub mod status;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use crate::clock::{ms, Millis, SharedClock};
use crate::manifest::{FleetManifest, ManifestSet};
use crate::metrics::Metrics;
use crate::planner::{
    self, Action, ConditionStatus, CoolOff, FleetInput, FleetPlan, FleetPolicy, PendingLaunch,
    Plan, PlanInput, StepView,
};
use crate::provider::{
    FleetProvider, Instance, LaunchRequest, ProviderError, TAG_CONTROLLER, TAG_FLEET,
    TAG_LAUNCH_BATCH, TAG_STEP,
};
use crate::store::{Leadership, SharedStore, StatusDoc, StoreError};

use progress::Census;
use providers::ProviderSet;
use reload::{ManifestSource, Reload};
use status::{conditions_summary, ActionRecord, ControllerStatus, FleetReport, Role};

pub type SharedStatus = Arc<RwLock<ControllerStatus>>;

/// Steps whose store reads (and fleets whose provider listings, status writes...) one pass
/// runs at a time; also the steps one progress count reads at a time.
const OBSERVE_CONCURRENCY: usize = 8;

/// Settings of the controller process.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Cluster name: tags instances and names the leadership lease.
    pub cluster: String,
    /// This process (for the leadership lease).
    pub identity: String,
    pub interval: Duration,
    /// Take part in leader election (several controllers for one cluster).
    pub leader_election: bool,
    pub leader_ttl: Duration,
    /// After a capacity error, no launches for this long.
    pub cool_off: Duration,
    /// Exact progress (counts of every state, throughput) is counted this often, beside the
    /// passes; zero counts after every pass.
    pub progress_interval: Duration,
}

impl ControllerConfig {
    pub fn new(cluster: &str) -> Self {
        ControllerConfig {
            cluster: cluster.to_string(),
            identity: default_identity(),
            interval: Duration::from_secs(10),
            leader_election: false,
            leader_ttl: Duration::from_secs(30),
            cool_off: Duration::from_secs(120),
            progress_interval: crate::manifest::DEFAULT_PROGRESS_INTERVAL,
        }
    }
}

pub fn default_identity() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "controller".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A launch written ahead of the provider call (persisted under `launch/<fleet>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LaunchIntent {
    batch: String,
    count: u32,
    launched_at: Millis,
    /// The provider confirmed the launch. Unconfirmed intents (crash or error mid-call) are
    /// issued again with the same token, which launches only what is missing.
    confirmed: bool,
    /// Instances of the batch listed at least once. Once listed, an instance counts as
    /// capacity by itself (or, if it died, as nothing): it is no longer "being launched".
    #[serde(default)]
    seen: std::collections::BTreeSet<String>,
    /// Instances without a batch tag listed when the launch was planned. An Auto Scaling
    /// group picks its instances, so they carry no batch tag: a new untagged instance counts
    /// toward the oldest intent still waiting, unless that intent already knew it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    known: std::collections::BTreeSet<String>,
}

impl LaunchIntent {
    /// Instances of the batch not listed yet.
    fn unseen(&self) -> u32 {
        self.count.saturating_sub(self.seen.len() as u32)
    }
}

#[derive(Debug, Default)]
struct FleetMemory {
    intents: Vec<LaunchIntent>,
    cool_off: Option<CoolOff>,
    last_action: Option<(Millis, String)>,
    intents_loaded: bool,
    /// Ids listed by the last successful listing (`None` before the first one).
    listed: Option<std::collections::BTreeSet<String>>,
}

/// What one pass observed about a fleet, next to its plan input.
struct Observed {
    fleet: FleetManifest,
    provider: Option<Arc<dyn FleetProvider>>,
    instances: Vec<Instance>,
    workers: Vec<crate::model::WorkerInfo>,
    error: Option<String>,
}

/// Outcome of one pass, for tests and `anamo up`.
#[derive(Debug, Clone)]
pub struct PassReport {
    pub role: Role,
    pub plan: Option<Plan>,
    pub errors: Vec<String>,
}

pub struct Controller {
    cfg: ControllerConfig,
    store: SharedStore,
    clock: SharedClock,
    manifests: ManifestSource,
    providers: ProviderSet,
    memory: BTreeMap<String, FleetMemory>,
    status: SharedStatus,
    metrics: Arc<Metrics>,
    leadership: Option<Leadership>,
    census: Census,
}

impl Controller {
    pub fn new(
        cfg: ControllerConfig,
        store: SharedStore,
        clock: SharedClock,
        manifests: ManifestSource,
        providers: ProviderSet,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut initial = ControllerStatus::new(&cfg.cluster, &cfg.identity, &store.describe());
        initial.interval_ms = ms(cfg.interval);
        let status = Arc::new(RwLock::new(initial));
        let census = Census::new(
            ms(cfg.progress_interval),
            store.clone(),
            status.clone(),
            metrics.clone(),
        );
        Controller {
            cfg,
            store,
            clock,
            manifests,
            providers,
            memory: BTreeMap::new(),
            status,
            metrics,
            leadership: None,
            census,
        }
    }

    pub fn status(&self) -> SharedStatus {
        self.status.clone()
    }

    pub fn manifests(&self) -> &ManifestSet {
        self.manifests.current()
    }

    /// Runs passes every interval until `shutdown` resolves, then gives up leadership and
    /// drains local workers.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.reconcile_once().await;
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.interval) => {}
                _ = &mut shutdown => break,
            }
        }
        self.shutdown().await;
    }

    /// Gives up leadership and drains local workers.
    pub async fn shutdown(&mut self) {
        info!("controller shutting down");
        if self.cfg.leader_election {
            if let Err(e) = self
                .store
                .release_leadership(&self.cfg.cluster, &self.cfg.identity)
                .await
            {
                warn!(error = %e, "could not release leadership");
            }
        }
        self.metrics.leader.set(0);
        self.providers.shutdown_local(Duration::from_secs(60)).await;
        self.report_stopped().await;
    }

    /// One reconcile pass. Errors in one fleet do not stop the others.
    pub async fn reconcile_once(&mut self) -> PassReport {
        let started = Instant::now();
        let now = self.clock.now();
        let mut errors = Vec::new();

        match self.manifests.reload() {
            Reload::Unchanged => {}
            Reload::Applied => {
                self.metrics.manifest_last_reload_ok.set(1);
                info!(path = %self.manifests.path().display(), "manifests reloaded")
            }
            Reload::Rejected(e) => {
                self.metrics.manifest_reload_errors.inc();
                self.metrics.manifest_last_reload_ok.set(0);
                error!("manifest change rejected, keeping the last good manifests:\n{e}");
            }
        }
        self.write_status().manifest_error = self.manifests.rejected().map(str::to_string);

        let role = match self.ensure_leadership(now).await {
            Ok(role) => role,
            Err(e) => {
                self.note_error("leadership", &e.to_string(), &mut errors);
                Role::Follower
            }
        };
        self.metrics.leader.set(i64::from(role == Role::Leader));
        if role != Role::Leader {
            let mut st = self.write_status();
            st.role = role;
            st.manifests_loaded = true;
            st.last_reconcile_at = Some(now);
            return PassReport {
                role,
                plan: None,
                errors,
            };
        }

        // Housekeeping on every step that has tasks, fleet or not.
        let mut store_ok = true;
        let store_steps = match self.store.steps().await {
            Ok(s) => s,
            Err(e) => {
                store_ok = false;
                self.note_error("store", &format!("listing steps: {e}"), &mut errors);
                Vec::new()
            }
        };
        let fleets = self.fleets_in_order();
        let mut all_steps: Vec<String> = store_steps.clone();
        for f in &fleets {
            if !all_steps.iter().any(|s| s == f.step()) {
                all_steps.push(f.step().to_string());
            }
        }
        let housekept: Vec<Result<(), StoreError>> =
            futures::stream::iter(all_steps.iter().map(|step| self.housekeep_step(step, now)))
                .buffered(OBSERVE_CONCURRENCY)
                .collect()
                .await;
        for (step, result) in all_steps.iter().zip(housekept) {
            if let Err(e) = result {
                self.note_error("store", &format!("step {step}: {e}"), &mut errors);
            }
        }

        // Observe every fleet.
        let names: Vec<&str> = fleets.iter().map(|f| f.name()).collect();
        self.providers.retain(&names).await;
        let mut observed = Vec::new();
        let mut input = PlanInput::default();
        for (obs, fin) in self.observe_all(&fleets, now).await {
            let fleet = &obs.fleet;
            if let Some(e) = &obs.error {
                self.note_error(
                    "observe",
                    &format!("fleet {}: {e}", fleet.name()),
                    &mut errors,
                );
            }
            observed.push(obs);
            input.fleets.push(fin);
        }

        let plan = planner::plan(&input, now);
        store_ok &= input.fleets.iter().all(|f| f.step.is_ok());

        // A deposed leader must not act: check the lease right before the action batch.
        let may_act = self.still_leader(now).await;
        if !may_act {
            warn!("lost the leadership during the pass; not acting on its plan");
        }
        for (fp, obs) in plan.fleets.iter().zip(observed.iter()) {
            if may_act {
                if let Some(provider) = &obs.provider {
                    self.execute(fp, obs, provider.clone(), now, &mut errors)
                        .await;
                }
            }
        }

        self.publish(&plan, &observed, store_ok, now, &errors).await;
        self.census.start_if_due(all_steps, now);
        let took = started.elapsed();
        self.metrics.reconcile_duration.observe(took.as_secs_f64());
        if errors.is_empty() {
            self.metrics.last_success.set(now as f64 / 1000.0);
        }
        PassReport {
            role,
            plan: Some(plan),
            errors,
        }
    }

    /// The current manifests' fleets, dependencies first.
    fn fleets_in_order(&self) -> Vec<FleetManifest> {
        self.manifests
            .current()
            .in_dependency_order()
            .into_iter()
            .cloned()
            .collect()
    }

    fn write_status(&self) -> std::sync::RwLockWriteGuard<'_, ControllerStatus> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.status.write().unwrap_or_else(|p| p.into_inner())
    }

    fn note_error(&self, kind: &'static str, msg: &str, errors: &mut Vec<String>) {
        self.metrics
            .reconcile_errors
            .with_label_values(&[kind])
            .inc();
        warn!(kind, "{msg}");
        errors.push(msg.to_string());
    }

    async fn ensure_leadership(&mut self, now: Millis) -> Result<Role, StoreError> {
        if !self.cfg.leader_election {
            return Ok(Role::Leader);
        }
        let held = self
            .store
            .acquire_leadership(
                &self.cfg.cluster,
                &self.cfg.identity,
                ms(self.cfg.leader_ttl),
                now,
            )
            .await?;
        let was = self.leadership.as_ref().map(|l| l.fencing);
        self.leadership = held;
        match (&self.leadership, was) {
            // A new fencing token: the lease changed hands since this controller last held it
            // (even if it never saw itself lose it), and another leader may have launched
            // meanwhile: read the launch intents again.
            (Some(l), was) if was != Some(l.fencing) => {
                info!(fencing = l.fencing, "became the leader");
                for mem in self.memory.values_mut() {
                    mem.intents_loaded = false;
                    mem.listed = None;
                }
            }
            (None, Some(_)) => warn!("lost the leadership"),
            _ => {}
        }
        Ok(if self.leadership.is_some() {
            Role::Leader
        } else {
            Role::Follower
        })
    }

    async fn still_leader(&self, now: Millis) -> bool {
        if !self.cfg.leader_election {
            return true;
        }
        let Some(mine) = &self.leadership else {
            return false;
        };
        match self.store.current_leader(&self.cfg.cluster).await {
            Ok(Some(l)) => {
                l.owner == self.cfg.identity && l.fencing == mine.fencing && l.expires_at > now
            }
            _ => false,
        }
    }

    /// Promotes waiting tasks whose dependencies are done and requeues expired leases.
    async fn housekeep_step(&self, step: &str, now: Millis) -> Result<(), StoreError> {
        let promoted = self.store.promote_waiting(step, now).await?;
        if promoted.promoted + promoted.failed > 0 {
            debug!(
                step,
                promoted = promoted.promoted,
                failed = promoted.failed,
                "dependencies resolved"
            );
        }
        let r = self.store.requeue_expired(step, now).await?;
        if !r.requeued.is_empty() || !r.failed.is_empty() {
            warn!(step, requeued = ?r.requeued, failed = ?r.failed, "requeued tasks whose lease expired");
            self.metrics
                .tasks_requeued
                .with_label_values(&[step, "lease_expired"])
                .inc_by(r.requeued.len() as u64);
        }
        Ok(())
    }

    /// Observes every fleet: the store reads (each fleet's backlog, every worker in one
    /// read, the launch intents not loaded yet in one read) and the providers' listings run
    /// concurrently, at most [`OBSERVE_CONCURRENCY`] steps and [`OBSERVE_CONCURRENCY`]
    /// listings at a time; then each fleet's memory is updated in order. Results are in the
    /// order of `fleets` (each step has one fleet: the manifests are checked for that).
    async fn observe_all(
        &mut self,
        fleets: &[FleetManifest],
        now: Millis,
    ) -> Vec<(Observed, FleetInput)> {
        let mut providers = Vec::with_capacity(fleets.len());
        for fleet in fleets {
            providers.push(self.providers.get(fleet).await);
        }
        let unloaded: Vec<&str> = fleets
            .iter()
            .map(|f| f.name())
            .filter(|name| !self.memory.get(*name).is_some_and(|m| m.intents_loaded))
            .collect();

        let this = &*self;
        let store = &this.store;
        // Each backlog is counted only as far as its fleet's plan can use it.
        let backlogs = futures::stream::iter(fleets.iter().map(|f| {
            let limit = FleetPolicy::from_manifest(f).backlog_limit();
            store.backlog(f.step(), limit)
        }))
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
        let listings = futures::stream::iter(providers.iter().map(|p| async move {
            let p = p.as_ref().ok()?;
            this.count_call(p.as_ref(), "list");
            let listed = p.list().await;
            if let Err(e) = &listed {
                this.count_error(p.as_ref(), "list", e);
            }
            Some(listed)
        }))
        .buffered(OBSERVE_CONCURRENCY)
        .collect::<Vec<_>>();
        let (backlogs, workers, intents, listings) =
            tokio::join!(backlogs, workers, intents, listings);

        // Launch intents that could not be read are read again next pass; until then their
        // fleets do not act (a launch planned without them could repeat one in flight).
        let mut intents_unread = None;
        match intents {
            Some(Ok(docs)) => {
                for fleet in unloaded {
                    let mem = self.memory.entry(fleet.to_string()).or_default();
                    mem.intents = intents_from(fleet, &docs);
                    mem.intents_loaded = true;
                }
            }
            Some(Err(e)) => intents_unread = Some((unloaded, e.to_string())),
            None => {}
        }
        fleets
            .iter()
            .zip(backlogs)
            .zip(providers)
            .zip(listings)
            .map(|(((fleet, backlog), provider), listed)| {
                let unread = intents_unread
                    .as_ref()
                    .filter(|(names, _)| names.contains(&fleet.name()));
                let step = match (backlog, &workers, unread) {
                    (_, _, Some((_, e))) => Err(format!("launch intents: {e}")),
                    (Ok(backlog), Ok(all), None) => Ok(StepView {
                        backlog,
                        workers: all
                            .iter()
                            .filter(|w| w.step == fleet.step())
                            .cloned()
                            .collect(),
                    }),
                    (Err(e), _, None) => Err(e.to_string()),
                    (_, Err(e), None) => Err(e.to_string()),
                };
                self.settle(fleet, now, step, provider, listed)
            })
            .collect()
    }

    /// One fleet's observation from what [`Self::observe_all`] read: launch intents matched
    /// with the listed instances, cool-off expiry, and the planner's input.
    fn settle(
        &mut self,
        fleet: &FleetManifest,
        now: Millis,
        step: Result<StepView, String>,
        provider: Result<Arc<dyn FleetProvider>, ProviderError>,
        listed: Option<Result<Vec<Instance>, ProviderError>>,
    ) -> (Observed, FleetInput) {
        let policy = FleetPolicy::from_manifest(fleet);
        let mut error = None;
        if let Err(e) = &step {
            error = Some(format!("reading the store: {e}"));
        }
        let provider = match provider {
            Ok(p) => Some(p),
            Err(e) => {
                error = Some(format!("provider: {e}"));
                None
            }
        };
        let instances = match listed {
            Some(Ok(list)) => Ok(list),
            Some(Err(e)) => {
                error = Some(format!("listing instances: {e}"));
                Err(e.to_string())
            }
            None => Err(error.clone().unwrap_or_default()),
        };

        // Intents (loaded once by observe_all: a restarted controller finds its unfinished
        // launches): prune the ones whose instances are all listed or that are older than the
        // boot timeout.
        let mem = self.memory.entry(fleet.name().to_string()).or_default();
        if let Ok(list) = &instances {
            let boot = ms(fleet.spec.boot_timeout);
            for i in mem.intents.iter_mut() {
                for x in list {
                    if x.launch_batch.as_deref() == Some(i.batch.as_str()) {
                        i.seen.insert(x.id.clone());
                    }
                }
            }
            // Untagged instances listed for the first time go to the oldest intent waiting.
            let mut new_untagged: Vec<&Instance> = list
                .iter()
                .filter(|x| x.launch_batch.is_none())
                .filter(|x| !mem.listed.as_ref().is_some_and(|l| l.contains(&x.id)))
                .filter(|x| !mem.intents.iter().any(|i| i.seen.contains(&x.id)))
                .collect();
            new_untagged.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
            for x in new_untagged {
                if let Some(i) = mem
                    .intents
                    .iter_mut()
                    .find(|i| i.unseen() > 0 && !i.known.contains(&x.id))
                {
                    i.seen.insert(x.id.clone());
                }
            }
            mem.listed = Some(list.iter().map(|x| x.id.clone()).collect());
            mem.intents
                .retain(|i| i.unseen() > 0 && now - i.launched_at < boot);
        }
        if mem.cool_off.as_ref().is_some_and(|c| c.until <= now) {
            mem.cool_off = None;
        }
        let input = FleetInput {
            policy,
            step: step.clone(),
            instances: instances.clone(),
            cool_off: mem.cool_off.clone(),
            // The planner subtracts the batch's listed instances from `count`; give it the
            // unseen ones plus those, so an instance that was listed and then died is not
            // counted as still launching.
            pending_launches: mem
                .intents
                .iter()
                .map(|i| {
                    let listed_now = instances.as_ref().map_or(0, |l| {
                        l.iter()
                            .filter(|x| x.launch_batch.as_deref() == Some(i.batch.as_str()))
                            .count() as u32
                    });
                    PendingLaunch {
                        batch: i.batch.clone(),
                        count: i.unseen() + listed_now,
                        launched_at: i.launched_at,
                    }
                })
                .collect(),
        };
        let obs = Observed {
            fleet: fleet.clone(),
            provider,
            instances: instances.unwrap_or_default(),
            workers: step.map(|s| s.workers).unwrap_or_default(),
            error,
        };
        (obs, input)
    }

    async fn save_intents(&self, fleet: &str, now: Millis) -> Result<(), StoreError> {
        let intents = self
            .memory
            .get(fleet)
            .map(|m| m.intents.clone())
            .unwrap_or_default();
        self.store
            .put_status(&StatusDoc {
                name: intent_key(fleet),
                updated_at: now,
                body: serde_json::to_value(intents).unwrap_or_default(),
            })
            .await
    }

    fn count_call(&self, p: &dyn FleetProvider, op: &str) {
        self.metrics
            .provider_calls
            .with_label_values(&[p.kind(), op])
            .inc();
    }

    fn count_error(&self, p: &dyn FleetProvider, op: &str, e: &ProviderError) {
        self.metrics
            .provider_errors
            .with_label_values(&[p.kind(), op, e.kind()])
            .inc();
        if matches!(e, ProviderError::Throttled(_)) {
            self.metrics
                .provider_throttles
                .with_label_values(&[p.kind()])
                .inc();
        }
    }

    fn remember(&mut self, fleet: &str, now: Millis, what: String, rec: ActionRecord) {
        self.memory
            .entry(fleet.to_string())
            .or_default()
            .last_action = Some((now, what));
        self.write_status().record_action(rec);
    }

    async fn execute(
        &mut self,
        fp: &FleetPlan,
        obs: &Observed,
        provider: Arc<dyn FleetProvider>,
        now: Millis,
        errors: &mut Vec<String>,
    ) {
        let fleet = fp.fleet.clone();
        // Re-issue unconfirmed launches first (same token: only what is missing is launched).
        let unconfirmed: Vec<LaunchIntent> = self
            .memory
            .get(&fleet)
            .map(|m| m.intents.iter().filter(|i| !i.confirmed).cloned().collect())
            .unwrap_or_default();
        for intent in unconfirmed {
            self.launch(
                fp,
                &obs.fleet,
                &provider,
                intent,
                now,
                errors,
                "re-issued unconfirmed launch",
            )
            .await;
        }
        for action in &fp.actions {
            match action {
                Action::Launch { count, reason, .. } => {
                    let intent = LaunchIntent {
                        batch: format!(
                            "{}-{}",
                            fleet,
                            &uuid::Uuid::new_v4().simple().to_string()[..16]
                        ),
                        count: *count,
                        launched_at: now,
                        confirmed: false,
                        seen: Default::default(),
                        known: obs
                            .instances
                            .iter()
                            .filter(|i| i.launch_batch.is_none())
                            .map(|i| i.id.clone())
                            .collect(),
                    };
                    let mem = self.memory.entry(fleet.clone()).or_default();
                    mem.intents.push(intent.clone());
                    // Written ahead: if this fails we do not launch (we could not recover).
                    if let Err(e) = self.save_intents(&fleet, now).await {
                        self.memory
                            .entry(fleet.clone())
                            .or_default()
                            .intents
                            .retain(|i| i.batch != intent.batch);
                        self.note_error(
                            "store",
                            &format!("fleet {fleet}: cannot record launch intent: {e}"),
                            errors,
                        );
                        continue;
                    }
                    self.launch(fp, &obs.fleet, &provider, intent, now, errors, reason)
                        .await;
                }
                Action::Terminate {
                    ids, cause, reason, ..
                } => {
                    self.count_call(provider.as_ref(), "terminate");
                    let res = provider.terminate(ids).await;
                    let ok = res.is_ok();
                    let err = res.err();
                    match &err {
                        None => {
                            info!(fleet, ids = ?ids, cause = cause.as_str(), "{reason}");
                            self.metrics
                                .terminations
                                .with_label_values(&[&fleet, cause.as_str()])
                                .inc_by(ids.len() as u64);
                        }
                        Some(e) => {
                            self.count_error(provider.as_ref(), "terminate", e);
                            self.note_error(
                                "provider",
                                &format!("fleet {fleet}: terminate failed: {e}"),
                                errors,
                            );
                        }
                    }
                    self.remember(
                        &fleet,
                        now,
                        format!("terminate {}: {reason}", ids.len()),
                        ActionRecord {
                            at: now,
                            fleet: fleet.clone(),
                            action: format!("terminate {}", ids.join(" ")),
                            reason: reason.clone(),
                            ok,
                            error: err.map(|e| e.to_string()),
                        },
                    );
                }
                Action::MarkLost {
                    ids,
                    workers,
                    reason,
                    ..
                } => {
                    warn!(fleet, instances = ?ids, workers = ?workers, "{reason}");
                    self.write_status().record_action(ActionRecord {
                        at: now,
                        fleet: fleet.clone(),
                        action: format!("mark lost {}", ids.join(" ")),
                        reason: reason.clone(),
                        ok: true,
                        error: None,
                    });
                }
                // Done for every step at the start of the pass.
                Action::RequeueExpired { .. } => {}
            }
        }
        self.sync_protection(obs, provider.as_ref(), errors).await;
        self.forget_gone_workers(obs, now).await;
    }

    #[allow(clippy::too_many_arguments)]
    async fn launch(
        &mut self,
        fp: &FleetPlan,
        fleet: &FleetManifest,
        provider: &Arc<dyn FleetProvider>,
        intent: LaunchIntent,
        now: Millis,
        errors: &mut Vec<String>,
        reason: &str,
    ) {
        let name = fp.fleet.clone();
        let mut tags = BTreeMap::new();
        tags.insert(TAG_FLEET.to_string(), name.clone());
        tags.insert(TAG_STEP.to_string(), fp.step.clone());
        tags.insert(TAG_CONTROLLER.to_string(), self.cfg.cluster.clone());
        tags.insert(TAG_LAUNCH_BATCH.to_string(), intent.batch.clone());
        let req = LaunchRequest {
            fleet: name.clone(),
            step: fleet.step().to_string(),
            count: intent.count,
            batch_token: intent.batch.clone(),
            tags,
        };
        self.count_call(provider.as_ref(), "launch");
        let res = provider.launch(&req).await;
        let cool = ms(self.cfg.cool_off);
        let mem = self.memory.entry(name.clone()).or_default();
        let (ok, err_text) = match res {
            Ok(out) => {
                // No ids: the provider does not know them yet (an Auto Scaling group picks its
                // instances), and the whole batch is on its way.
                let got = match out.instances.len() as u32 {
                    0 => intent.count,
                    n => n,
                };
                if let Some(i) = mem.intents.iter_mut().find(|i| i.batch == intent.batch) {
                    i.confirmed = true;
                    // Fewer than asked: the planner launches the rest on a later pass.
                    i.count = got.min(i.count);
                }
                mem.intents.retain(|i| i.count > 0);
                if provider.lists_launches_immediately() {
                    // Already listed (or, if one died at once, gone): nothing is pending.
                    mem.intents.retain(|i| i.batch != intent.batch);
                }
                self.metrics
                    .launches
                    .with_label_values(&[&name])
                    .inc_by(u64::from(got));
                info!(
                    fleet = name,
                    batch = intent.batch,
                    launched = got,
                    requested = intent.count,
                    "{reason}"
                );
                (true, None)
            }
            Err(e) => {
                let text = e.to_string();
                if e.is_capacity() || matches!(e, ProviderError::Config(_)) {
                    // Nothing was launched: drop the intent and cool off before retrying.
                    mem.intents.retain(|i| i.batch != intent.batch);
                    mem.cool_off = Some(CoolOff {
                        until: now + cool,
                        reason: text.clone(),
                    });
                }
                // Other errors (throttling, timeouts) may or may not have launched: the intent
                // stays unconfirmed and is re-issued with the same token next pass.
                self.count_error(provider.as_ref(), "launch", &e);
                self.note_error(
                    "provider",
                    &format!("fleet {name}: launch failed: {e}"),
                    errors,
                );
                (false, Some(text))
            }
        };
        if let Err(e) = self.save_intents(&name, now).await {
            warn!(fleet = name, error = %e, "cannot record launch intents");
        }
        self.remember(
            &name,
            now,
            format!("launch {}: {reason}", intent.count),
            ActionRecord {
                at: now,
                fleet: name.clone(),
                action: format!("launch {}", intent.count),
                reason: reason.to_string(),
                ok,
                error: err_text,
            },
        );
    }

    /// Scale-in protection on while an instance's worker is busy, off when idle (Auto Scaling
    /// groups; a no-op elsewhere).
    async fn sync_protection(
        &mut self,
        obs: &Observed,
        provider: &dyn FleetProvider,
        errors: &mut Vec<String>,
    ) {
        if provider.kind() != "autoscaling" {
            return;
        }
        let busy_instances: Vec<&str> = obs
            .workers
            .iter()
            .filter(|w| w.busy_slots > 0)
            .filter_map(|w| w.instance_id.as_deref())
            .collect();
        let (mut protect, mut unprotect) = (Vec::new(), Vec::new());
        for i in &obs.instances {
            let busy = busy_instances.contains(&i.id.as_str());
            if busy && !i.protected {
                protect.push(i.id.clone());
            } else if !busy && i.protected {
                unprotect.push(i.id.clone());
            }
        }
        for (ids, on) in [(protect, true), (unprotect, false)] {
            if ids.is_empty() {
                continue;
            }
            self.count_call(provider, "set_protection");
            if let Err(e) = provider.set_protection(&ids, on).await {
                self.count_error(provider, "set_protection", &e);
                self.note_error(
                    "provider",
                    &format!("fleet {}: set protection: {e}", obs.fleet.name()),
                    errors,
                );
            }
        }
    }

    /// Tidies worker registrations: removes those of workers that exited (or vanished long
    /// ago) whose instance is gone, and marks as gone a worker silent for longer than the lost
    /// threshold plus a lease TTL: every lease it held has expired by then, so its instance no
    /// longer counts as busy and can be replaced. A worker that was only cut off re-registers
    /// with its next heartbeat.
    async fn forget_gone_workers(&self, obs: &Observed, now: Millis) {
        const KEEP_MS: Millis = 10 * 60 * 1000;
        let policy = FleetPolicy::from_manifest(&obs.fleet);
        let dead_after = policy.lost_after + ms(obs.fleet.spec.lease_ttl);
        for w in &obs.workers {
            let listed = w
                .instance_id
                .as_deref()
                .is_some_and(|id| obs.instances.iter().any(|i| i.id == id));
            let exited = w.state == crate::model::WorkerState::Gone;
            let silent = now - w.last_seen;
            let result = if !listed && (exited || silent > KEEP_MS) {
                self.store.remove_worker(&w.worker_id).await
            } else if listed && !exited && silent > dead_after {
                warn!(
                    worker = w.worker_id,
                    silent_ms = silent,
                    "worker presumed dead"
                );
                let mut gone = w.clone();
                gone.state = crate::model::WorkerState::Gone;
                gone.busy_slots = 0;
                self.store.put_worker(&gone).await
            } else {
                Ok(())
            };
            if let Err(e) = result {
                warn!(worker = w.worker_id, error = %e, "cannot update worker registration");
            }
        }
    }

    async fn publish(
        &mut self,
        plan: &Plan,
        observed: &[Observed],
        store_ok: bool,
        now: Millis,
        errors: &[String],
    ) {
        let mut fleets = Vec::new();
        let mut docs = Vec::new();
        for (fp, obs) in plan.fleets.iter().zip(observed) {
            let mem = self.memory.get(&fp.fleet);
            let s = &fp.status;
            let report = FleetReport {
                fleet: fp.fleet.clone(),
                step: fp.step.clone(),
                provider: obs
                    .provider
                    .as_ref()
                    .map(|p| p.kind())
                    .unwrap_or("-")
                    .to_string(),
                desired: fp.desired,
                actual: s.instances,
                idle: s.ready.saturating_sub(s.busy),
                status: *s,
                conditions: fp.conditions.clone(),
                conditions_summary: conditions_summary(&fp.conditions),
                last_action: mem.and_then(|m| m.last_action.as_ref().map(|a| a.1.clone())),
                last_action_at: mem.and_then(|m| m.last_action.as_ref().map(|a| a.0)),
                error: obs.error.clone(),
                observed_at: now,
            };
            let m = &self.metrics;
            m.fleet_desired
                .with_label_values(&[&fp.fleet])
                .set(i64::from(fp.desired));
            for (label, v) in [
                ("actual", s.instances),
                ("ready", s.ready),
                ("busy", s.busy),
                ("idle", report.idle),
                ("booting", s.booting + s.launching),
                ("lost", s.lost),
            ] {
                m.fleet_instances
                    .with_label_values(&[&fp.fleet, label])
                    .set(i64::from(v));
            }
            for c in &fp.conditions {
                m.fleet_condition
                    .with_label_values(&[&fp.fleet, c.type_.as_str()])
                    .set(i64::from(c.status == ConditionStatus::True));
            }
            docs.push(StatusDoc {
                name: format!("fleet/{}", fp.fleet),
                updated_at: now,
                body: serde_json::to_value(&report).unwrap_or_default(),
            });
            fleets.push(report);
        }
        docs.push(self.controller_doc().to_doc(now));
        let store = &self.store;
        let written: Vec<Result<(), StoreError>> =
            futures::stream::iter(docs.iter().map(|doc| store.put_status(doc)))
                .buffered(OBSERVE_CONCURRENCY)
                .collect()
                .await;
        for (doc, result) in docs.iter().zip(written) {
            if let Err(e) = result {
                warn!(status = doc.name, error = %e, "cannot write fleet status");
            }
        }
        let mut st = self.write_status();
        st.role = Role::Leader;
        st.manifests_loaded = true;
        st.store_reachable = store_ok;
        st.last_reconcile_at = Some(now);
        if errors.is_empty() {
            st.last_success_at = Some(now);
            st.last_error = None;
        } else {
            st.last_error = errors.last().cloned();
        }
        st.fleets = fleets;
    }

    /// Waits for the progress count in flight, so that the status and metrics show counts
    /// taken at or after the last pass (`anamo up` shows progress after every pass).
    pub async fn settle_progress(&mut self) {
        self.census.settle().await;
    }
}

fn intent_key(fleet: &str) -> String {
    format!("launch/{fleet}")
}

/// A fleet's launch intents among the status documents; launches in flight when the last
/// controller stopped are re-issued. None if the documents could not be read.
fn intents_from(fleet: &str, docs: &[StatusDoc]) -> Vec<LaunchIntent> {
    let key = intent_key(fleet);
    docs.iter()
        .find(|d| d.name == key)
        .and_then(|d| serde_json::from_value::<Vec<LaunchIntent>>(d.body.clone()).ok())
        .map(|v| {
            v.into_iter()
                .map(|mut i| {
                    i.confirmed = false;
                    i
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Controller {
    /// What the controller would do now, and why, changing nothing (`anamo plan`).
    pub async fn dry_run(&mut self) -> Plan {
        let now = self.clock.now();
        let fleets = self.fleets_in_order();
        let mut input = PlanInput::default();
        for (_, fin) in self.observe_all(&fleets, now).await {
            input.fleets.push(fin);
        }
        planner::plan(&input, now)
    }
}
