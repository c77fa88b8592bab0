//! The reconcile loop: every interval, [`observe`] (one snapshot: each step's backlog,
//! workers, instances, launch intents; each fleet's launch ledger updated with it), plan
//! (pure, [`planner::plan`]), [`act`] (the plan's actions, through instrumented providers and
//! the store) and [`publish`] (status and metrics), while holding the [`leadership`] lease.
//! Exact progress (every state's count, throughput) is counted less often, beside the passes
//! ([`progress`]).
//!
//! Launches are written ahead as intents ([`planner::ledger`]) before the provider is called,
//! so a controller that crashes mid-launch finds the batch again after a restart and completes
//! it instead of launching twice (providers find a batch's instances by its tag and use the
//! token as the EC2 `ClientToken`).

mod act;
pub mod aws;
mod cost;
mod error;
pub mod failures;
mod graph;
pub mod interruptions;
mod leadership;
mod observe;
mod pass_reads;
mod progress;
pub mod providers;
mod publish;
pub mod reload;
pub mod sample_census;
pub mod sample_view;
pub mod status;
mod status_docs;
mod step_progress;
pub mod tally;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::clock::{ms, Millis, SharedClock};
use crate::manifest::{FleetManifest, ManifestSet};
use crate::metrics::Metrics;
use crate::planner::ledger::FleetLedger;
use crate::planner::{self, Plan, PlanInput};
use crate::store::{LeaderToken, Leadership, SharedStore};

pub use error::{ControllerError, ObserveError};
use observe::Observed;
use progress::Census;
use providers::ProviderSet;
use reload::{ManifestSource, Reload};
use status::{ControllerStatus, Role};

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

/// What the controller keeps about a fleet between passes.
#[derive(Debug, Default)]
struct FleetMemory {
    ledger: FleetLedger,
    last_action: Option<(Millis, String)>,
    /// What the fleet's instances cost; `None` until resumed from its published status.
    cost: Option<crate::cost::ledger::CostLedger>,
    /// The cost last added to `anamo_fleet_cost_dollars_total`.
    cost_exported: f64,
    /// The instances counted in `anamo_fleet_interruptions_total`.
    interruptions: interruptions::InterruptionTally,
    /// The step's arrivals inferred pass by pass, for the planner's arrival estimate.
    arrivals: crate::planner::estimate::ArrivalLog,
    /// What the passes read of the step's store, kept to read less the next pass.
    reads: pass_reads::StepMemory,
}

/// Outcome of one pass, for tests and `anamo up`.
#[derive(Debug)]
pub struct PassReport {
    pub role: Role,
    pub plan: Option<Plan>,
    pub errors: Vec<ControllerError>,
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
    /// The fence of this controller's writes while it leads (with leader election).
    token: Option<LeaderToken>,
    /// A write of this pass was refused: another controller leads now.
    deposed: AtomicBool,
    census: Census,
    /// When each step was last housekept in full (whatever its counts said).
    sweeps: pass_reads::Sweeps,
    /// The pipeline graph this controller last wrote to the store.
    published_graph: Option<crate::pipeline::Graph>,
    cost: cost::CostState,
    /// The status documents this controller wrote (written again only when changed or due).
    docs_written: status_docs::DocsWritten,
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
            token: None,
            deposed: AtomicBool::new(false),
            census,
            sweeps: Default::default(),
            published_graph: None,
            cost: cost::CostState::default(),
            docs_written: status_docs::DocsWritten::default(),
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

    /// One reconcile pass: observe → plan → act → publish. Errors in one fleet do not stop
    /// the others.
    pub async fn reconcile_once(&mut self) -> PassReport {
        let started = Instant::now();
        let now = self.clock.now();
        let mut errors = Vec::new();
        self.reload_manifests();
        let role = match self.ensure_leadership().await {
            Ok(role) => role,
            Err(e) => {
                self.note_error(ControllerError::Leadership(e), &mut errors);
                Role::Follower
            }
        };
        self.metrics.leader.set(i64::from(role == Role::Leader));
        if role != Role::Leader {
            self.publish_follower(now);
            return PassReport {
                role,
                plan: None,
                errors,
            };
        }
        let fleets = self.fleets_in_order();
        let graph = self.sync_graph(now, &mut errors).await;
        let graph_ok = graph.is_ok();
        let graph = graph.unwrap_or_else(|g| g);
        if self.is_deposed() {
            return self.stop_deposed(errors);
        }
        let kept = self.housekeep(&fleets, &graph, now, &mut errors).await;
        let (steps, steps_listed) = (kept.steps, kept.listed);
        if self.is_deposed() {
            return self.stop_deposed(errors);
        }
        let names: Vec<&str> = fleets.iter().map(|f| f.name()).collect();
        self.providers.retain(&names).await;
        let (observed, mut input) = self
            .observe_and_note(&fleets, now, kept.counts, &mut errors)
            .await;
        self.account(&observed, now).await;
        self.spend_into(&mut input);
        let plan = planner::plan(&input, now);
        let store_ok = steps_listed && input.fleets.iter().all(|f| f.step.is_ok());
        // A deposed leader must not act: the lease is read again, at the time of acting.
        if self.still_leader().await {
            for (fp, obs) in plan.fleets.iter().zip(&observed) {
                // Without the graph published, a dependent step's early tasks may be pending.
                if graph_ok || graph.node(obs.fleet.step()).depends_on.is_empty() {
                    self.act(fp, obs, &mut errors).await;
                }
            }
        } else {
            warn!("lost the leadership during the pass; not acting on its plan");
        }
        if self.is_deposed() {
            return self.stop_deposed(errors);
        }
        self.publish(&plan, &observed, store_ok, now, &errors).await;
        if self.is_deposed() {
            return self.stop_deposed(errors);
        }
        self.census.start_if_due(steps, now);
        self.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        if errors.is_empty() {
            self.metrics.last_success.set(now as f64 / 1000.0);
        }
        PassReport {
            role,
            plan: Some(plan),
            errors,
        }
    }

    /// Ends a pass in which a write was refused as a deposed leader's: nothing more is
    /// written, and the next pass starts from the store's leadership.
    fn stop_deposed(&mut self, errors: Vec<ControllerError>) -> PassReport {
        warn!("another controller took the leadership; this pass stops");
        self.docs_written.clear();
        self.step_down();
        PassReport {
            role: Role::Follower,
            plan: None,
            errors,
        }
    }

    fn reload_manifests(&mut self) {
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
    }

    fn publish_follower(&mut self, now: Millis) {
        self.docs_written.clear();
        let mut st = self.write_status();
        st.role = Role::Follower;
        st.manifests_loaded = true;
        st.last_reconcile_at = Some(now);
    }

    /// Observes every fleet and notes the ones that could not be observed.
    async fn observe_and_note(
        &mut self,
        fleets: &[FleetManifest],
        now: Millis,
        counts: Option<observe::Counted>,
        errors: &mut Vec<ControllerError>,
    ) -> (Vec<Observed>, PlanInput) {
        let mut observed = Vec::new();
        let mut input = PlanInput::default();
        for (obs, fin) in self.observe(fleets, now, counts).await {
            if let Some(source) = &obs.error {
                let fleet = obs.fleet.name().to_string();
                let source = source.clone();
                self.note_error(ControllerError::Observe { fleet, source }, errors);
            } else {
                self.count_interruptions(&obs);
            }
            observed.push(obs);
            input.fleets.push(fin);
        }
        (observed, input)
    }

    /// Adds the fleet's newly interrupted or rebalanced instances (read without error) to
    /// `anamo_fleet_interruptions_total`.
    fn count_interruptions(&mut self, obs: &Observed) {
        let fleet = obs.fleet.name();
        let mem = self.memory.entry(fleet.to_string()).or_default();
        for i in mem.interruptions.observe(&obs.workers, &obs.instances) {
            self.metrics
                .fleet_interruptions
                .with_label_values(&[fleet, &i.instance_type, &i.zone, i.kind])
                .inc();
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

    fn note_error(&self, e: ControllerError, errors: &mut Vec<ControllerError>) {
        if let Some(source) = e.store_error() {
            self.note_fenced(source);
        }
        let kind = e.kind();
        self.metrics
            .reconcile_errors
            .with_label_values(&[kind])
            .inc();
        warn!(kind, "{e}");
        errors.push(e);
    }

    /// Waits for the progress count in flight, so that the status and metrics show counts
    /// taken at or after the last pass (`anamo up` shows progress after every pass).
    pub async fn settle_progress(&mut self) {
        self.census.settle().await;
    }

    /// What the controller would do now, and why, changing nothing (`anamo plan`).
    pub async fn dry_run(&mut self) -> Plan {
        let now = self.clock.now();
        let fleets = self.fleets_in_order();
        let mut input = PlanInput::default();
        for (_, fin) in self.observe(&fleets, now, None).await {
            input.fleets.push(fin);
        }
        planner::plan(&input, now)
    }
}
