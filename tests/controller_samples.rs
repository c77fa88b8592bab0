//! The controller's per-sample view and failed-tasks table, refreshed from what changed since
//! the previous progress count (`controller::tally`): a completion, a claim and a failure show
//! at the next refresh; a requeue and a delete too (the step's counters show them and the step
//! is read whole); a requeue the counters cannot see (netted out by a completion in the same
//! interval) shows at the latest after the full re-read. On SQLite and DynamoDB Local (a
//! manual clock, a fake provider).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[macro_use]
mod common;

use common::{Harness, OneProvider};

use anamo::clock::{ManualClock, SharedClock};
use anamo::controller::providers::{ProviderSet, WorkerLaunch};
use anamo::controller::reload::ManifestSource;
use anamo::controller::tally::REREAD_EVERY;
use anamo::controller::{Controller, ControllerConfig};
use anamo::manifest;
use anamo::metrics::Metrics;
use anamo::model::{Claim, ClaimRequest, Completion, Outcome, TaskResult, TaskSpec, TaskState};
use anamo::provider::fake::FakeProvider;
use anamo::store::SharedStore;

const T0: i64 = 1_800_000_000_000;

const FLEET: &str = "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: align\nspec:\n  \
    step: align\n  provider:\n    ec2:\n      launchTemplate:\n        name: lt-align\n  \
    minInstances: 0\n  maxInstances: 1\n  slotsPerInstance: 1\n  bootTimeout: 5m\n  \
    leaseTTL: 10m\n";

fn controller(store: SharedStore, clock: SharedClock) -> Controller {
    let mut cfg = ControllerConfig::new("test-cluster");
    cfg.interval = Duration::from_secs(10);
    cfg.progress_interval = Duration::from_secs(1);
    let set = manifest::parse_str(FLEET, "test.yaml").expect("valid test manifest");
    let launch = WorkerLaunch {
        store_url: "sqlite://unused".into(),
        exe: "/bin/false".into(),
        log_dir: None,
        env: BTreeMap::new(),
        force_local: false,
        binary_url: None,
    };
    let fake = Arc::new(FakeProvider::new("align", clock.clone()));
    let providers = ProviderSet::new(
        launch,
        clock.clone(),
        &cfg.cluster,
        Some(Box::new(OneProvider(fake))),
    );
    Controller::new(
        cfg,
        store,
        clock,
        ManifestSource::fixed(set),
        providers,
        Arc::new(Metrics::new()),
    )
}

/// Each sample's `align` cell (every task is its own sample: no graph).
type Cells = BTreeMap<String, Vec<(TaskState, u64)>>;

/// A pass after `by`, its progress count awaited; the view it published.
async fn refresh(c: &mut Controller, clock: &ManualClock, by: Duration) -> Cells {
    clock.advance(by);
    let report = c.reconcile_once().await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    c.settle_progress().await;
    let status = c.status();
    let st = status.read().unwrap_or_else(|p| p.into_inner());
    st.samples
        .samples
        .iter()
        .map(|r| {
            let cell = r.steps.get("align").cloned().unwrap_or_default();
            (r.sample.clone(), cell.into_iter().collect())
        })
        .collect()
}

fn one(state: TaskState) -> Vec<(TaskState, u64)> {
    vec![(state, 1)]
}

/// Claims `id` (there must be no other pending task before it) and, unless `outcome` is
/// `None`, ends it so at `now`. Returns the claim.
async fn run(store: &SharedStore, id: &str, outcome: Option<Outcome>, now: i64) -> Claim {
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w".into(),
        ttl_ms: 600_000,
    };
    let c = store
        .claim(&req, now)
        .await
        .unwrap()
        .expect("a pending task");
    assert_eq!(c.task.id(), id, "claimed in id order");
    let Some(outcome) = outcome else { return c };
    let failed = outcome != Outcome::Succeeded;
    let done = Completion {
        retry_delay: None,
        outcome,
        result: TaskResult {
            exit_code: Some(i32::from(failed) * 3),
            worker_id: "w".into(),
            error: failed.then(|| "exit 3".to_string()),
            ..Default::default()
        },
    };
    store.complete(&c.lease(), &done, now).await.unwrap();
    c
}

async fn changes_reach_the_view_at_the_next_refresh_or_the_full_read(h: Harness) {
    let store = h.store.clone();
    let clock = ManualClock::new(T0);
    let tasks: Vec<TaskSpec> = (0..5)
        .map(|i| TaskSpec::new("align", format!("s{i}"), "true"))
        .collect();
    store.import(&tasks, T0 - 1_000).await.unwrap();
    let mut c = controller(store.clone(), clock.clone());
    let step = Duration::from_secs(10);
    let view = refresh(&mut c, &clock, step).await;
    assert_eq!(view.len(), 5);
    assert!(
        view.values().all(|v| *v == one(TaskState::Pending)),
        "{view:?}"
    );

    // Two succeed, one fails, one is claimed: read incrementally.
    let now = T0 + 15_000;
    run(&store, "s0", Some(Outcome::Succeeded), now).await;
    run(&store, "s1", Some(Outcome::Succeeded), now + 1).await;
    run(&store, "s2", Some(Outcome::FailedPermanently), now + 2).await;
    let s3 = run(&store, "s3", None, now + 3).await;
    let view = refresh(&mut c, &clock, step).await;
    let expect = |v: &[(&str, TaskState)]| -> Cells {
        v.iter().map(|(s, st)| (s.to_string(), one(*st))).collect()
    };
    use TaskState::*;
    assert_eq!(
        view,
        expect(&[
            ("s0", Succeeded),
            ("s1", Succeeded),
            ("s2", Failed),
            ("s3", Running),
            ("s4", Pending)
        ])
    );
    {
        let status = c.status();
        let st = status.read().unwrap_or_else(|p| p.into_inner());
        assert_eq!(st.failed_tasks.total, 1);
        let newest: Vec<&str> = st
            .failed_tasks
            .newest
            .iter()
            .map(|t| t.id.as_str())
            .collect();
        assert_eq!(newest, ["s2"]);
    }

    // A requeue and a delete: the counters show them, the step is read whole.
    store
        .requeue("align", "s0", false, T0 + 25_000)
        .await
        .unwrap();
    store.delete("align", "s4").await.unwrap();
    let view = refresh(&mut c, &clock, step).await;
    assert_eq!(
        view,
        expect(&[
            ("s0", Pending),
            ("s1", Succeeded),
            ("s2", Failed),
            ("s3", Running)
        ])
    );

    // A requeue netted out by a completion: the counters do not move, so the next refresh may
    // not see it; the full read after REREAD_EVERY does.
    store
        .requeue("align", "s1", false, T0 + 35_000)
        .await
        .unwrap();
    let done = Completion {
        retry_delay: None,
        outcome: Outcome::Succeeded,
        result: TaskResult::default(),
    };
    store
        .complete(&s3.lease(), &done, T0 + 35_001)
        .await
        .unwrap();
    refresh(&mut c, &clock, step).await;
    let every = Duration::from_millis(REREAD_EVERY as u64);
    let view = refresh(&mut c, &clock, every).await;
    assert_eq!(
        view,
        expect(&[
            ("s0", Pending),
            ("s1", Pending),
            ("s2", Failed),
            ("s3", Succeeded)
        ])
    );
}

on_both_stores!(changes_reach_the_view_at_the_next_refresh_or_the_full_read);
