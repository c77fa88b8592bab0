//! The controller plans on the same estimates as the simulator: run times of the step's
//! newest succeeded tasks and arrivals inferred between passes, read from the store (SQLite
//! here, a manual clock and a fake provider), reach the plan and its reason.

use std::sync::Arc;
use std::time::Duration;

mod common;

use anamo::clock::{ManualClock, SharedClock};
use anamo::controller::{Controller, ControllerConfig, PassReport};
use anamo::model::{
    ClaimRequest, Completion, Outcome, TaskResult, TaskSpec, WorkerInfo, WorkerState,
};
use anamo::planner::Action;
use anamo::provider::fake::FakeProvider;
use anamo::store::sqlite::SqliteStore;
use anamo::store::{Fence, SharedStore};

const T0: i64 = 1_800_000_000_000;
const BOOT: i64 = 90_000;
const RUN: i64 = 300_000;

const FLEET: &str = "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: align\nspec:\n  \
    step: align\n  provider:\n    ec2:\n      launchTemplate:\n        name: lt-align\n  \
    minInstances: 0\n  maxInstances: 40\n  slotsPerInstance: 2\n  bootTimeout: 5m\n  \
    leaseTTL: 30s\n";

fn controller(store: SharedStore, clock: SharedClock, fake: Arc<FakeProvider>) -> Controller {
    let mut cfg = ControllerConfig::new("test-cluster");
    cfg.interval = Duration::from_secs(10);
    common::controller_on(cfg, FLEET, store, clock, fake)
}

async fn import(store: &SharedStore, from: usize, n: usize, now: i64) {
    let tasks: Vec<TaskSpec> = (from..from + n)
        .map(|i| TaskSpec::new("align", format!("s{i:03}"), "true"))
        .collect();
    store.import(&tasks, now).await.unwrap();
}

/// Four tasks that ran [`RUN`] each, finished before T0.
async fn finish_four(store: &SharedStore) {
    let req = ClaimRequest {
        step: "align".into(),
        owner: "earlier".into(),
        ttl_ms: 30_000,
    };
    for i in 0..4 {
        let end = T0 - 60_000 + i * 1_000;
        let c = store.claim(&req, end - RUN).await.unwrap().unwrap();
        let done = Completion {
            retry_delay: None,
            outcome: Outcome::Succeeded,
            result: TaskResult {
                exit_code: Some(0),
                duration_ms: RUN,
                worker_id: "earlier".into(),
                started_at: end - RUN,
                finished_at: end,
                ..Default::default()
            },
        };
        store.complete(&c.lease(), &done, end).await.unwrap();
    }
}

/// The launch reasons of a pass's plan, with their counts.
fn launches(r: &PassReport) -> Vec<(u32, String)> {
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r.plan
        .as_ref()
        .expect("a plan")
        .fleets
        .iter()
        .flat_map(|f| &f.actions)
        .filter_map(|a| match a {
            Action::Launch { count, reason, .. } => Some((*count, reason.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn run_times_and_arrivals_from_the_store_reach_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
    let clock = ManualClock::new(T0);
    let fake = Arc::new(FakeProvider::new("align", clock.clone()));
    // One instance, booted in BOOT, both slots busy; 30 tasks pending.
    import(&store, 0, 36, T0 - 120_000).await;
    finish_four(&store).await;
    fake.add_instance("i-1", None, T0 - 30_000 - BOOT);
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w-i-1".into(),
        ttl_ms: 30_000,
    };
    store.claim_batch(&req, 2, T0 - 1_000).await.unwrap();
    let worker = WorkerInfo {
        worker_id: "w-i-1".into(),
        step: "align".into(),
        instance_id: Some("i-1".into()),
        slots: 2,
        busy_slots: 2,
        started_at: T0 - 30_000,
        last_seen: T0,
        last_busy_at: T0,
        state: WorkerState::Active,
        stop_reason: None,
        drain_requested: false,
    };
    store.put_worker(&worker, Fence::Unfenced).await.unwrap();
    let mut c = controller(store.clone(), clock.clone(), fake);

    // Counts alone would launch 15 (30 tasks beside 2 running, 2 per instance, one ready).
    // Within ten boots (15m) each busy slot starts 3 more tasks (5 minutes each): 24 are
    // left, and a new instance starts 2 × (1 + 810 s / 300 s) = 6 of them: 4 instances.
    let first = launches(&c.reconcile_once().await);
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].0, 4, "{first:?}");
    assert!(
        first[0]
            .1
            .contains("tasks of about 5m, boots of about 1m 30s"),
        "{first:?}"
    );

    // Eight tasks arrive before the next pass (more than the booting instances take): the
    // plan says at what rate.
    clock.advance(Duration::from_secs(10));
    import(&store, 100, 8, T0 + 5_000).await;
    let second = launches(&c.reconcile_once().await);
    assert_eq!(second.len(), 1, "{second:?}");
    assert!(
        second[0].1.contains("tasks arriving per hour"),
        "{second:?}"
    );
}
