//! Reconciler scenarios on a SQLite store, a manual clock and in-memory fake providers: the
//! controller's own logic (intents, cool-off, leadership, isolation between fleets), with the
//! planner's rules tested separately in `src/planner/tests.rs`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod common;

use common::OneProvider;

use anamo::clock::{ManualClock, SharedClock};
use anamo::controller::providers::{ProviderSet, RemoteFactory, WorkerLaunch};
use anamo::controller::reload::ManifestSource;
use anamo::controller::status::Role;
use anamo::controller::{Controller, ControllerConfig, PassReport};
use anamo::manifest::{self, FleetManifest};
use anamo::metrics::Metrics;
use anamo::model::{
    ClaimRequest, Completion, Outcome, RetryDelay, StopReason, TaskResult, TaskSpec, TaskState,
    WorkerInfo, WorkerState,
};
use anamo::planner::{ConditionStatus, ConditionType};
use anamo::provider::fake::{Call, FakeProvider};
use anamo::provider::fault::{FaultInjecting, Hold, Op};
use anamo::provider::{FleetProvider, ProviderError};
use anamo::store::instrumented::InstrumentedStore;
use anamo::store::sqlite::SqliteStore;
use anamo::store::{RequestRecorder, SharedStore};

const T0: i64 = 1_800_000_000_000;

fn fleet_yaml(name: &str, max: u32, extra: &str) -> String {
    format!(
        "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: {name}\nspec:\n  step: {name}\n  \
         provider:\n    ec2:\n      launchTemplate:\n        name: lt-{name}\n  minInstances: 0\n  \
         maxInstances: {max}\n  slotsPerInstance: 2\n  scaleDownDelay: 60s\n  bootTimeout: 5m\n  \
         leaseTTL: 30s\n{extra}"
    )
}

/// Hands out one fake provider per fleet and keeps them for inspection.
#[derive(Clone, Default)]
struct Fakes {
    clock: Option<SharedClock>,
    map: Arc<Mutex<BTreeMap<String, Arc<FakeProvider>>>>,
}

impl Fakes {
    fn get(&self, fleet: &str) -> Arc<FakeProvider> {
        let clock = self.clock.clone().expect("clock set");
        self.map
            .lock()
            .unwrap()
            .entry(fleet.to_string())
            .or_insert_with(|| Arc::new(FakeProvider::new(fleet, clock)))
            .clone()
    }
}

#[async_trait::async_trait]
impl RemoteFactory for Fakes {
    async fn build(
        &self,
        _cluster: &str,
        fleet: &FleetManifest,
        _launch: &WorkerLaunch,
    ) -> Result<Arc<dyn FleetProvider>, ProviderError> {
        Ok(self.get(fleet.name()))
    }
}

struct World {
    store: SharedStore,
    requests: RequestRecorder,
    /// The metrics of every controller of this world.
    metrics: Arc<Metrics>,
    clock: Arc<ManualClock>,
    fakes: Fakes,
    _dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let requests = store.recorder();
        let store: SharedStore = Arc::new(store);
        let clock = ManualClock::new(T0);
        let fakes = Fakes {
            clock: Some(clock.clone()),
            ..Default::default()
        };
        World {
            store,
            requests,
            metrics: Arc::new(Metrics::new()),
            clock,
            fakes,
            _dir: dir,
        }
    }

    fn controller(&self, yaml: &str, tweak: impl FnOnce(&mut ControllerConfig)) -> Controller {
        let set = manifest::parse_str(yaml, "test.yaml").expect("valid test manifests");
        self.controller_with(ManifestSource::fixed(set), tweak)
    }

    fn controller_with(
        &self,
        source: ManifestSource,
        tweak: impl FnOnce(&mut ControllerConfig),
    ) -> Controller {
        self.controller_on(self.store.clone(), source, tweak)
    }

    /// A controller reading and writing through `store` (e.g. a faulty wrapper of this one).
    fn controller_on(
        &self,
        store: SharedStore,
        source: ManifestSource,
        tweak: impl FnOnce(&mut ControllerConfig),
    ) -> Controller {
        self.controller_from(store, source, Box::new(self.fakes.clone()), tweak)
    }

    /// A controller whose providers come from `factory`.
    fn controller_from(
        &self,
        store: SharedStore,
        source: ManifestSource,
        factory: Box<dyn RemoteFactory>,
        tweak: impl FnOnce(&mut ControllerConfig),
    ) -> Controller {
        let mut cfg = ControllerConfig::new("test-cluster");
        cfg.interval = Duration::from_secs(10);
        tweak(&mut cfg);
        let clock: SharedClock = self.clock.clone();
        let providers = ProviderSet::new(
            WorkerLaunch {
                store_url: "sqlite://unused".into(),
                exe: "/bin/false".into(),
                log_dir: None,
                env: BTreeMap::new(),
                force_local: false,
                binary_url: None,
            },
            clock.clone(),
            &cfg.cluster,
            Some(factory),
        );
        Controller::new(cfg, store, clock, source, providers, self.metrics.clone())
    }

    async fn import(&self, step: &str, n: usize) {
        let tasks: Vec<TaskSpec> = (0..n)
            .map(|i| TaskSpec::new(step, format!("s{i}"), "true"))
            .collect();
        self.store.import(&tasks, self.clock.now()).await.unwrap();
    }

    fn launches(&self, fleet: &str) -> Vec<(String, u32)> {
        self.fakes
            .get(fleet)
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Launch { batch, count } => Some((batch, count)),
                _ => None,
            })
            .collect()
    }

    async fn register(&self, fleet: &str, instance: &str, busy: u32, last_busy_at: i64) {
        self.store
            .put_worker(
                &WorkerInfo {
                    worker_id: format!("w-{instance}"),
                    step: fleet.to_string(),
                    instance_id: Some(instance.to_string()),
                    slots: 2,
                    busy_slots: busy,
                    started_at: T0,
                    last_seen: self.clock.now(),
                    last_busy_at,
                    state: WorkerState::Active,
                    stop_reason: None,
                    drain_requested: false,
                },
                anamo::store::Fence::Unfenced,
            )
            .await
            .unwrap();
    }
}

use anamo::clock::Clock;

#[tokio::test]
async fn scales_up_once_while_instances_boot() {
    let w = World::new();
    w.import("align", 10).await;
    let mut c = w.controller(&fleet_yaml("align", 3, ""), |_| {});
    let r = c.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(w.launches("align").len(), 1);
    assert_eq!(
        w.launches("align")[0].1,
        3,
        "10 tasks / 2 per instance, capped at 3"
    );
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    assert_eq!(
        w.launches("align").len(),
        1,
        "booting instances count toward capacity"
    );
    assert_eq!(w.fakes.get("align").instances().len(), 3);
    let st = c.status().read().unwrap().clone();
    assert_eq!(st.role, Role::Leader);
    assert_eq!(st.fleets[0].desired, 3);
    let docs = w.store.list_status().await.unwrap();
    assert!(
        docs.iter().any(|d| d.name == "fleet/align"),
        "fleet status published to the store"
    );
}

#[tokio::test]
async fn fewer_instances_than_asked_are_completed_next_pass() {
    let w = World::new();
    w.import("align", 10).await;
    w.fakes.get("align").limit_per_launch(Some(1));
    let mut c = w.controller(&fleet_yaml("align", 3, ""), |_| {});
    c.reconcile_once().await;
    assert_eq!(w.fakes.get("align").instances().len(), 1);
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    assert_eq!(
        w.fakes.get("align").instances().len(),
        3,
        "the remainder is launched later"
    );
}

#[tokio::test]
async fn restart_after_a_launch_does_not_launch_twice() {
    let w = World::new();
    w.import("align", 10).await;
    let yaml = fleet_yaml("align", 3, "");
    {
        let mut first = w.controller(&yaml, |_| {});
        first.reconcile_once().await;
        // The controller "crashes" here: it never sees the instances listed.
    }
    assert_eq!(w.fakes.get("align").instances().len(), 3);
    let mut second = w.controller(&yaml, |_| {});
    w.clock.advance(Duration::from_secs(5));
    second.reconcile_once().await;
    // The batch's instances are listed, so its intent is complete: nothing is launched again.
    let launches = w.launches("align");
    assert_eq!(launches.len(), 1, "{launches:?}");
    assert_eq!(
        w.fakes.get("align").instances().len(),
        3,
        "no duplicate instances"
    );
    w.clock.advance(Duration::from_secs(10));
    second.reconcile_once().await;
    assert_eq!(w.fakes.get("align").instances().len(), 3);
}

/// A controller that cannot read its launch intents must not launch: a batch still in flight
/// (requested, not listed yet) would be launched again under a new batch.
#[tokio::test]
async fn unread_launch_intents_hold_the_fleet_back_for_a_pass() {
    let w = World::new();
    w.import("align", 10).await;
    let yaml = fleet_yaml("align", 3, "");
    let faulty = common::worker::FaultyStore::new(w.store.clone());
    // The pass's status listing is the launch intents' read (the pipeline graph is read by
    // its name).
    faulty.fail_next_call("list status");
    let set = manifest::parse_str(&yaml, "test.yaml").unwrap();
    let mut c = w.controller_on(faulty.clone(), ManifestSource::fixed(set), |_| {});
    let report = c.reconcile_once().await;
    assert!(
        w.launches("align").is_empty(),
        "launched without its intents"
    );
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.to_string().contains("launch intents")),
        "{:?}",
        report.errors
    );
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    assert_eq!(
        w.launches("align").len(),
        1,
        "read next pass, then launched"
    );
}

#[tokio::test]
async fn crash_before_the_provider_call_launches_on_restart() {
    let w = World::new();
    w.import("align", 4).await;
    let yaml = fleet_yaml("align", 3, "");
    let fake = w.fakes.get("align");
    // The call fails the way a timeout would: it may or may not have launched.
    fake.fail_next_launch(ProviderError::Unavailable("connection reset".into()));
    let mut c = w.controller(&yaml, |_| {});
    let r = c.reconcile_once().await;
    assert_eq!(r.errors.len(), 1);
    assert!(fake.instances().is_empty());
    w.clock.advance(Duration::from_secs(10));
    let mut restarted = w.controller(&yaml, |_| {});
    restarted.reconcile_once().await;
    let launches = w.launches("align");
    assert_eq!(launches.len(), 2);
    assert_eq!(launches[0], launches[1], "the same batch, re-issued");
    assert_eq!(
        fake.instances().len(),
        2,
        "4 tasks need 2 instances, launched once"
    );
}

#[tokio::test]
async fn capacity_errors_cool_off_and_set_stalled() {
    let w = World::new();
    w.import("align", 4).await;
    let fake = w.fakes.get("align");
    fake.fail_next_launch(ProviderError::InsufficientCapacity(
        "We currently do not have sufficient c5.large capacity".into(),
    ));
    let mut c = w.controller(&fleet_yaml("align", 3, ""), |cfg| {
        cfg.cool_off = Duration::from_secs(120)
    });
    c.reconcile_once().await;
    w.clock.advance(Duration::from_secs(10));
    let r = c.reconcile_once().await;
    let plan = r.plan.unwrap();
    let fp = plan.fleet("align").unwrap();
    assert_eq!(fp.launch_count(), 0, "no launch during the cool-off");
    let stalled = fp.condition(ConditionType::Stalled).unwrap();
    assert_eq!(stalled.status, ConditionStatus::True);
    assert!(
        stalled.message.contains("sufficient c5.large capacity"),
        "{}",
        stalled.message
    );
    assert_eq!(w.launches("align").len(), 1);
    w.clock.advance(Duration::from_secs(121));
    c.reconcile_once().await;
    assert_eq!(w.launches("align").len(), 2, "retried after the cool-off");
    assert_eq!(fake.instances().len(), 2);
}

#[tokio::test]
async fn one_broken_fleet_does_not_stop_the_others() {
    let w = World::new();
    w.import("align", 4).await;
    w.import("call", 4).await;
    let yaml = format!(
        "{}---\n{}",
        fleet_yaml("align", 3, ""),
        fleet_yaml("call", 3, "")
    );
    w.fakes
        .get("align")
        .fail_next_list(ProviderError::Unavailable("timeout".into()));
    let mut c = w.controller(&yaml, |_| {});
    let r = c.reconcile_once().await;
    assert!(
        r.errors.iter().any(|e| e.to_string().contains("align")),
        "{:?}",
        r.errors
    );
    assert!(
        w.launches("align").is_empty(),
        "no action on an unobserved fleet"
    );
    assert_eq!(w.launches("call").len(), 1, "the other fleet still scales");
}

#[tokio::test]
async fn observing_reads_the_workers_and_the_intents_once_for_every_fleet() {
    let w = World::new();
    w.import("a", 3).await;
    w.import("b", 5).await;
    let yaml = format!("{}---\n{}", fleet_yaml("a", 4, ""), fleet_yaml("b", 4, ""));
    let mut c = w.controller(&yaml, |_| {});
    // The first dry run: the counts of `a` and of `b`, their oldest pending tasks (tasks
    // pending, none running: what `Stalled` looks at), every worker, the launch intents. No
    // run times: nothing succeeded.
    let before = w.requests.total();
    let plan = c.dry_run().await;
    assert_eq!(w.requests.total() - before, 6);
    let pending: Vec<u64> = plan.fleets.iter().map(|f| f.status.pending_tasks).collect();
    assert_eq!(pending, [3, 5]);
    // Intents are read once per controller (until it becomes the leader again), an oldest
    // pending time is kept for a minute, and the tasks finished since the previous pass
    // come from the counts: the counts and the workers.
    let before = w.requests.total();
    c.dry_run().await;
    assert_eq!(w.requests.total() - before, 3);
    // Once a task succeeded, its step's run times are read, once.
    let req = ClaimRequest {
        step: "b".into(),
        owner: "w".into(),
        ttl_ms: 30_000,
    };
    let claim = w.store.claim(&req, T0).await.unwrap().unwrap();
    let done = Completion {
        outcome: Outcome::Succeeded,
        result: TaskResult {
            exit_code: Some(0),
            duration_ms: 5,
            worker_id: "w".into(),
            ..Default::default()
        },
        retry_delay: None,
    };
    w.store.complete(&claim.lease(), &done, T0).await.unwrap();
    for reads in [4, 3] {
        let before = w.requests.total();
        c.dry_run().await;
        assert_eq!(w.requests.total() - before, reads);
    }
}

/// Housekeeping costs what changed: once every step was housekept in full (two steps per
/// pass), a pass looks at a step's retries only while its counts show a retrying task, and
/// at every step again once the full-housekeeping period (10 minutes) is over.
#[tokio::test]
async fn housekeeping_follows_the_counts() {
    let w = World::new();
    for step in ["a", "b", "c"] {
        w.import(step, 2).await;
    }
    let store = InstrumentedStore::wrap(w.store.clone(), &w.metrics);
    let set = manifest::parse_str(&fleet_yaml("a", 2, ""), "test.yaml").unwrap();
    let mut c = w.controller_on(store, ManifestSource::fixed(set), |_| {});
    let retry_due = || {
        w.metrics
            .store_requests
            .with_label_values(&["retry_due"])
            .get()
    };
    let mut looked = Vec::new();
    for _ in 0..3 {
        let before = retry_due();
        c.reconcile_once().await;
        looked.push(retry_due() - before);
        w.clock.advance(Duration::from_secs(10));
    }
    assert_eq!(looked, [2, 1, 0], "two steps in full per pass, then none");
    let req = ClaimRequest {
        step: "b".into(),
        owner: "w".into(),
        ttl_ms: 30_000,
    };
    let claim = w.store.claim(&req, w.clock.now()).await.unwrap().unwrap();
    let failed = Completion {
        outcome: Outcome::Failed,
        result: TaskResult {
            exit_code: Some(1),
            worker_id: "w".into(),
            ..Default::default()
        },
        retry_delay: Some(RetryDelay {
            initial_ms: 60_000,
            max_ms: 60_000,
        }),
    };
    let lease = claim.lease();
    let state = w.store.complete(&lease, &failed, w.clock.now()).await;
    assert_eq!(state.unwrap(), TaskState::Retrying);
    let before = retry_due();
    c.reconcile_once().await;
    assert_eq!(retry_due() - before, 1, "the step with a retrying task");
    w.clock.advance(Duration::from_secs(600));
    let before = retry_due();
    c.reconcile_once().await;
    assert_eq!(
        retry_due() - before,
        2,
        "the period is over: two steps in full again"
    );
}

#[tokio::test]
async fn busy_instances_are_never_terminated() {
    let w = World::new();
    let mut c = w.controller(&fleet_yaml("align", 3, ""), |_| {});
    let fake = w.fakes.get("align");
    fake.add_instance("i-busy", None, T0 - 3_600_000);
    fake.add_instance("i-idle", None, T0 - 3_600_000);
    w.register("align", "i-busy", 1, T0).await;
    w.register("align", "i-idle", 0, T0 - 600_000).await;
    c.reconcile_once().await;
    let terminated: Vec<Vec<String>> = fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Terminate(ids) => Some(ids),
            _ => None,
        })
        .collect();
    assert_eq!(terminated, vec![vec!["i-idle".to_string()]]);
    assert_eq!(fake.instances().len(), 1);
}

/// Three rounds on one controller: a task claimed by a worker that then dies stays running
/// while its lease lasts, and the first pass after the lease ran out requeues it, every time.
#[tokio::test]
async fn expired_leases_are_requeued_each_pass() {
    let w = World::new();
    let mut task = TaskSpec::new("align", "s0", "true");
    task.max_attempts = 10;
    w.store.import(&[task], w.clock.now()).await.unwrap();
    let mut c = w.controller(&fleet_yaml("align", 3, ""), |_| {});
    for round in 1..=3u32 {
        let claim = w
            .store
            .claim(
                &ClaimRequest {
                    step: "align".into(),
                    owner: format!("dead-worker-{round}"),
                    ttl_ms: 30_000,
                },
                w.clock.now(),
            )
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("round {round}: nothing to claim"));
        c.reconcile_once().await;
        let t = w.store.get("align", "s0").await.unwrap().unwrap();
        assert_eq!(
            (claim.task.id(), t.state),
            ("s0", TaskState::Running),
            "round {round}: the lease is still valid"
        );
        w.clock.advance(Duration::from_secs(31));
        c.reconcile_once().await;
        let t = w.store.get("align", "s0").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Pending, "round {round}: {t:?}");
        assert_eq!(t.reason.as_deref(), Some("lease expired"), "round {round}");
        assert_eq!(
            t.attempts, round,
            "round {round}: each expiry counts an attempt"
        );
    }
}

#[tokio::test]
async fn only_the_leader_acts_and_a_follower_takes_over() {
    let w = World::new();
    w.import("align", 10).await;
    let yaml = fleet_yaml("align", 3, "");
    let ha = |cfg: &mut ControllerConfig| {
        cfg.leader_election = true;
        cfg.leader_ttl = Duration::from_secs(30);
    };
    let mut a = w.controller(&yaml, |cfg| {
        ha(cfg);
        cfg.identity = "a".into();
    });
    let mut b = w.controller(&yaml, |cfg| {
        ha(cfg);
        cfg.identity = "b".into();
    });
    assert_eq!(a.reconcile_once().await.role, Role::Leader);
    assert_eq!(b.reconcile_once().await.role, Role::Follower);
    assert_eq!(w.launches("align").len(), 1, "one leader, one launch");
    // a dies (stops renewing); after the lease TTL b takes over.
    w.clock.advance(Duration::from_secs(20));
    assert_eq!(b.reconcile_once().await.role, Role::Follower);
    w.clock.advance(Duration::from_secs(11));
    assert_eq!(b.reconcile_once().await.role, Role::Leader);
    // The old leader, coming back, is a follower and does nothing.
    let before = w.fakes.get("align").calls().len();
    assert_eq!(a.reconcile_once().await.role, Role::Follower);
    assert_eq!(w.fakes.get("align").calls().len(), before);
}

type Faulty = Arc<FaultInjecting<FakeProvider>>;

/// A controller taking part in leader election (lease 30 s) whose one fleet, align, runs on a
/// fake provider that can be told to fail or to hold a call.
fn leader_on_faulty(w: &World) -> (Controller, Faulty) {
    let clock: SharedClock = w.clock.clone();
    let provider = Arc::new(FaultInjecting::new(FakeProvider::new("align", clock)));
    let set = manifest::parse_str(&fleet_yaml("align", 3, ""), "test.yaml").unwrap();
    let c = w.controller_from(
        w.store.clone(),
        ManifestSource::fixed(set),
        Box::new(OneProvider(provider.clone())),
        |cfg| {
            cfg.leader_election = true;
            cfg.leader_ttl = Duration::from_secs(30);
        },
    );
    (c, provider)
}

/// Runs one pass whose call held by `hold` outlasts the lease: once the pass reaches the
/// call, the clock moves past the lease before the call goes on.
async fn pass_outlasting_the_lease(w: &World, c: &mut Controller, hold: &Hold) -> PassReport {
    let outlast_the_lease = async {
        hold.reached().await;
        w.clock.advance(Duration::from_secs(31));
        hold.release();
    };
    let pass = async { tokio::join!(c.reconcile_once(), outlast_the_lease).0 };
    tokio::time::timeout(Duration::from_secs(60), pass)
        .await
        .expect("hang guard: the held call was released")
}

#[tokio::test]
async fn a_leader_whose_lease_ran_out_during_the_pass_does_not_act() {
    let w = World::new();
    w.import("align", 4).await;
    let (mut c, provider) = leader_on_faulty(&w);
    // The pass starts as the leader; its listing takes longer than the lease.
    let hold = provider.hold_next(Op::List);
    let r = pass_outlasting_the_lease(&w, &mut c, &hold).await;
    assert_eq!(r.role, Role::Leader, "{:?}", r.errors);
    let plan = r.plan.expect("a leader plans");
    assert_eq!(plan.fleet("align").unwrap().launch_count(), 2, "{plan:?}");
    assert!(
        provider.launches().is_empty(),
        "a controller whose lease ran out while it observed must not act: {:?}",
        provider.launches()
    );
    // The next pass renews the lease, and acts.
    let r = c.reconcile_once().await;
    assert_eq!(r.role, Role::Leader, "{:?}", r.errors);
    assert_eq!(provider.launches().len(), 1);
}

#[tokio::test]
async fn a_leader_whose_lease_ran_out_while_acting_stops() {
    let w = World::new();
    w.import("align", 4).await;
    let ttl = 30_000;
    let req = ClaimRequest {
        step: "align".into(),
        owner: "dead-worker".into(),
        ttl_ms: ttl,
    };
    let claim = w.store.claim(&req, T0).await.unwrap().unwrap();
    let (mut c, provider) = leader_on_faulty(&w);
    // A throttled launch stays unconfirmed: the next pass issues it again before its plan.
    provider.throttle_next(Op::Launch, 1);
    let r = c.reconcile_once().await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    w.clock.advance(Duration::from_secs(31));
    // That re-issued launch outlasts the lease; the plan's requeue of the expired claim
    // (the action after it) must not happen.
    let hold = provider.hold_next(Op::Launch);
    let r = pass_outlasting_the_lease(&w, &mut c, &hold).await;
    let plan = r.plan.expect("a leader plans");
    assert!(
        plan.actions()
            .any(|a| matches!(a, anamo::planner::Action::RequeueExpired { .. })),
        "{plan:?}"
    );
    let state = |t: Option<anamo::model::Task>| t.expect("the claimed task").state;
    let task = w.store.get("align", claim.task.id()).await.unwrap();
    assert_eq!(
        state(task),
        TaskState::Running,
        "acted after the lease ran out"
    );
    // The next pass holds the lease again and requeues it.
    c.reconcile_once().await;
    let task = w.store.get("align", claim.task.id()).await.unwrap();
    assert_eq!(state(task), TaskState::Pending);
}

#[tokio::test]
async fn a_deposed_leaders_write_is_refused_counted_and_stops_the_pass() {
    let w = World::new();
    w.import("align", 4).await;
    let (mut c, provider) = leader_on_faulty(&w);
    let cluster = "test-cluster";
    // The launch is held; meanwhile the leadership changes hands in the store (released and
    // taken by another controller), though this one's clock says its lease still holds.
    let hold = provider.hold_next(Op::Launch);
    let take_over = async {
        hold.reached().await;
        let me = w.store.current_leader(cluster).await.unwrap().unwrap();
        w.store
            .release_leadership(cluster, &me.owner)
            .await
            .unwrap();
        let now = w.clock.now();
        let other = w.store.acquire_leadership(cluster, "other", 30_000, now);
        assert!(other.await.unwrap().is_some(), "the other takes over");
        hold.release();
    };
    let pass = async { tokio::join!(c.reconcile_once(), take_over).0 };
    let r = tokio::time::timeout(Duration::from_secs(60), pass)
        .await
        .expect("hang guard: the held launch was released");
    assert_eq!(provider.launches().len(), 1, "the launch was in flight");
    assert_eq!(r.role, Role::Follower, "the pass stops as a follower");
    assert!(r.plan.is_none(), "{r:?}");
    assert_eq!(w.metrics.fenced_writes.get(), 1, "the refused intent write");
    // Nothing after the refused write: no fleet status was published by the deposed leader.
    let docs = w.store.list_status().await.unwrap();
    let names: Vec<&str> = docs.iter().map(|d| d.name.as_str()).collect();
    assert!(!names.contains(&"fleet/align"), "{names:?}");
    // The launch intent it wrote ahead (as the leader) stays unconfirmed for the new leader.
    let intents = docs.iter().find(|d| d.name == "launch/align").unwrap();
    assert_eq!(intents.body[0]["count"], 2, "{:?}", intents.body);
    assert_eq!(intents.body[0]["confirmed"], false, "{:?}", intents.body);
    // Next pass: the lease is another's; this controller follows and writes nothing.
    let r = c.reconcile_once().await;
    assert_eq!(r.role, Role::Follower);
    assert_eq!(w.metrics.fenced_writes.get(), 1);
}

#[tokio::test]
async fn a_silent_busy_worker_is_eventually_replaced() {
    let w = World::new();
    let mut c = w.controller(&fleet_yaml("align", 3, ""), |_| {});
    let fake = w.fakes.get("align");
    fake.add_instance("i-zombie", None, T0 - 3_600_000);
    w.register("align", "i-zombie", 2, T0).await;
    // Lost after 3 heartbeats (30s), presumed dead after one more lease TTL (30s).
    w.clock.advance(Duration::from_secs(45));
    c.reconcile_once().await;
    assert_eq!(
        fake.instances().len(),
        1,
        "lost but maybe still running: kept"
    );
    w.clock.advance(Duration::from_secs(30));
    c.reconcile_once().await;
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    assert!(
        fake.instances().is_empty(),
        "a dead worker's instance is terminated"
    );
}

#[tokio::test]
async fn a_changed_manifest_takes_effect_and_a_broken_one_is_rejected() {
    let w = World::new();
    w.import("align", 20).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("align.yaml");
    std::fs::write(&file, fleet_yaml("align", 1, "")).unwrap();
    let mut c = w.controller_with(ManifestSource::open(dir.path()).unwrap(), |_| {});
    c.reconcile_once().await;
    assert_eq!(w.fakes.get("align").instances().len(), 1);
    // A broken edit is rejected: the last good manifest (max 1) stays in force.
    let broken = fleet_yaml("align", 1, "").replace("maxInstances: 1", "maxInstances: lots");
    std::fs::write(&file, broken).unwrap();
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    assert_eq!(w.fakes.get("align").instances().len(), 1);
    // A valid edit takes effect on the next pass.
    std::fs::write(&file, fleet_yaml("align", 4, "")).unwrap();
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    assert_eq!(w.fakes.get("align").instances().len(), 4);
}

#[tokio::test]
async fn a_pass_counts_the_backlog_to_the_limit_and_progress_every_interval() {
    let w = World::new();
    w.import("a", 25).await;
    // 4 instances of 2 slots can use 8 tasks: a pass counts no further.
    let mut c = w.controller(&fleet_yaml("a", 4, ""), |cfg| {
        cfg.progress_interval = Duration::from_secs(30)
    });
    let report = c.reconcile_once().await;
    let plan = report.plan.expect("the leader plans");
    let fp = &plan.fleets[0];
    assert_eq!((fp.status.pending_tasks, fp.status.more_pending), (8, true));
    assert_eq!(fp.launch_count(), 4, "{fp}");
    assert!(
        fp.to_string()
            .contains("backlog of more than 8 runnable tasks"),
        "{fp}"
    );
    // The progress count is exact, and taken beside the pass.
    c.settle_progress().await;
    let progress = |c: &Controller| {
        let st = c.status();
        let st = st.read().unwrap();
        st.steps
            .iter()
            .map(|s| (s.counts.step.clone(), s.counts.pending, s.counted_at))
            .collect::<Vec<_>>()
    };
    assert_eq!(progress(&c), [("a".to_string(), 25, T0)]);

    // New tasks show at the next count, one progress interval later, not at every pass.
    w.import("a", 40).await;
    w.clock.advance(Duration::from_secs(10));
    c.reconcile_once().await;
    c.settle_progress().await;
    assert_eq!(progress(&c), [("a".to_string(), 25, T0)]);
    w.clock.advance(Duration::from_secs(25));
    c.reconcile_once().await;
    c.settle_progress().await;
    assert_eq!(progress(&c), [("a".to_string(), 40, T0 + 35_000)]);
}

/// Instances counted in `anamo_fleet_interruptions_total` by kind (all types and zones).
fn interruptions(m: &Metrics, kind: &str) -> f64 {
    use prometheus::core::Collector;
    m.fleet_interruptions.collect()[0]
        .get_metric()
        .iter()
        .filter(|s| {
            s.get_label()
                .iter()
                .any(|l| l.name() == "kind" && l.value() == kind)
        })
        .map(|s| s.get_counter().get_value())
        .sum()
}

/// Each interrupted or rebalanced instance is counted once, across passes and a controller
/// restart, in the metric and in the fleet status.
#[tokio::test]
async fn interruptions_are_counted_once_per_instance() {
    let w = World::new();
    w.import("align", 10).await;
    let yaml = fleet_yaml("align", 3, "");
    let mut c = w.controller(&yaml, |_| {});
    c.reconcile_once().await;
    let ids: Vec<String> = w
        .fakes
        .get("align")
        .instances()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(ids.len(), 3);
    let stop = |id: &str, reason| {
        let store = w.store.clone();
        let worker = WorkerInfo {
            worker_id: format!("w-{id}"),
            step: "align".into(),
            instance_id: Some(id.to_string()),
            slots: 2,
            busy_slots: 1,
            started_at: T0,
            last_seen: w.clock.now(),
            last_busy_at: w.clock.now(),
            state: WorkerState::Draining,
            stop_reason: Some(reason),
            drain_requested: false,
        };
        async move {
            store
                .put_worker(&worker, anamo::store::Fence::Unfenced)
                .await
                .unwrap();
        }
    };
    stop(&ids[0], StopReason::Rebalance).await;
    stop(&ids[1], StopReason::SpotInterruption).await;
    for _ in 0..2 {
        w.clock.advance(Duration::from_secs(5));
        c.reconcile_once().await;
    }
    let totals = |c: &Controller| {
        let t = c.status().read().unwrap().fleets[0].interruptions.clone();
        (t.interruption, t.rebalance)
    };
    let both = (1, 1);
    assert_eq!(totals(&c), both);
    assert_eq!(
        (
            interruptions(&w.metrics, "interruption"),
            interruptions(&w.metrics, "rebalance")
        ),
        (1.0, 1.0)
    );

    // A new controller (same metrics registry) counts nothing again and resumes the totals.
    drop(c);
    let mut c = w.controller(&yaml, |_| {});
    for _ in 0..2 {
        w.clock.advance(Duration::from_secs(5));
        c.reconcile_once().await;
    }
    assert_eq!(totals(&c), both);
    assert_eq!(interruptions(&w.metrics, "interruption"), 1.0);
    stop(&ids[2], StopReason::SpotInterruption).await;
    w.clock.advance(Duration::from_secs(5));
    c.reconcile_once().await;
    assert_eq!(totals(&c).0, 2);
    assert_eq!(interruptions(&w.metrics, "interruption"), 2.0);
}

/// The labels of `anamo_fleet_interruptions_total`'s series with a non-zero count.
fn interruption_series(m: &Metrics) -> Vec<Vec<(String, String)>> {
    use prometheus::core::Collector;
    m.fleet_interruptions.collect()[0]
        .get_metric()
        .iter()
        .filter(|s| s.get_counter().get_value() > 0.0)
        .map(|s| {
            s.get_label()
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string()))
                .collect()
        })
        .collect()
}

/// An interrupted instance the provider lists with its type and zone is counted under them,
/// in the metric and in the status's breakdown.
#[tokio::test]
async fn interruptions_carry_the_listed_type_and_zone() {
    let w = World::new();
    w.import("align", 10).await;
    let mut c = w.controller(&fleet_yaml("align", 1, ""), |_| {});
    c.reconcile_once().await;
    let fake = w.fakes.get("align");
    let id = fake.instances()[0].id.clone();
    fake.place(&id, "c6i.4xlarge", "eu-west-1b");
    let worker = WorkerInfo {
        worker_id: format!("w-{id}"),
        step: "align".into(),
        instance_id: Some(id.clone()),
        slots: 2,
        busy_slots: 1,
        started_at: T0,
        last_seen: w.clock.now(),
        last_busy_at: w.clock.now(),
        state: WorkerState::Draining,
        stop_reason: Some(StopReason::SpotInterruption),
        drain_requested: false,
    };
    w.store
        .put_worker(&worker, anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    w.clock.advance(Duration::from_secs(5));
    c.reconcile_once().await;
    let labels = |pairs: [(&str, &str); 4]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        interruption_series(&w.metrics),
        [labels([
            ("fleet", "align"),
            ("instance_type", "c6i.4xlarge"),
            ("kind", "interruption"),
            ("zone", "eu-west-1b")
        ])]
    );
    let st = c.status();
    let by = &st.read().unwrap().fleets[0].interruptions.by_offering;
    let by: Vec<_> = by
        .iter()
        .map(|o| {
            (
                o.kind.as_str(),
                o.instance_type.as_str(),
                o.zone.as_str(),
                o.count,
            )
        })
        .collect();
    assert_eq!(by, [("interruption", "c6i.4xlarge", "eu-west-1b", 1)]);
}

/// With `vcpusPerTask`, the controller plans with the slots the provider derives from the
/// fleet's instance types: 8 runnable tasks on instances of 4 slots need 2 instances, not 8;
/// and the backlog is counted as far as 10 such instances can use it (40 tasks need 10).
#[tokio::test]
async fn derived_slots_per_instance_size_the_launch() {
    let w = World::new();
    w.import("big", 40).await;
    w.fakes.get("big").set_slots_per_instance(Some(4));
    let yaml = fleet_yaml("big", 10, "  vcpusPerTask: 2\n").replace("  slotsPerInstance: 2\n", "");
    let mut c = w.controller(&yaml, |_| {});
    let plan = c.reconcile_once().await.plan.expect("the leader plans");
    assert_eq!(plan.fleets[0].launch_count(), 10, "{}", plan.fleets[0]);

    let w = World::new();
    w.import("align", 8).await;
    w.fakes.get("align").set_slots_per_instance(Some(4));
    let yaml =
        fleet_yaml("align", 10, "  vcpusPerTask: 2\n").replace("  slotsPerInstance: 2\n", "");
    let mut c = w.controller(&yaml, |_| {});
    let report = c.reconcile_once().await;
    let plan = report.plan.expect("the leader plans");
    assert_eq!(plan.fleets[0].launch_count(), 2, "{}", plan.fleets[0]);
}
