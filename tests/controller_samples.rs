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

use common::Harness;

use anamo::clock::{ManualClock, SharedClock};
use anamo::controller::tally::REREAD_EVERY;
use anamo::controller::{Controller, ControllerConfig};
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
    let fake = Arc::new(FakeProvider::new("align", clock.clone()));
    common::controller_on(cfg, FLEET, store, clock, fake)
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
    let matrix = st.samples.read().matrix();
    matrix
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

/// Side by side, on DynamoDB Local (`ANAMO_REFRESH_TASKS` tasks over 10 steps, default 2,000 so
/// that the suite checks it; the measurement in BENCHMARKS.md ran 100,000 with
/// `ANAMO_TEST_DYNAMO_SHARDS=8` and `--nocapture`): each round makes `ANAMO_REFRESH_CHANGES`
/// (default 100) tasks of the first two steps run to the end (one in 50 fails), then reads the
/// per-sample view and failed tasks as `main` did (`read_failed` + `steps_matrix`: every task)
/// and incrementally (`Tallies::refresh`), and prints the time and requests of each beside the
/// steps' counters. Both must agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refresh_cost_side_by_side() {
    use anamo::controller::sample_census::Tallies;
    use anamo::controller::status::step_report;
    use std::time::Instant;

    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n, changes) = (
        env("ANAMO_REFRESH_TASKS", 2_000),
        env("ANAMO_REFRESH_CHANGES", 100),
    );
    let h = Harness::dynamo()
        .await
        .expect("DynamoDB Local (scripts/test-services run)");
    let store = h.store.clone();
    let steps: Vec<String> = (0..10).map(|i| format!("s{i:02}")).collect();
    let started = Instant::now();
    for step in &steps {
        let tasks: Vec<TaskSpec> = (0..n / steps.len())
            .map(|i| TaskSpec::new(step.as_str(), format!("NA{i:06}"), "true"))
            .collect();
        for chunk in tasks.chunks(5_000) {
            store.import(chunk, T0).await.unwrap();
        }
    }
    println!(
        "import of {n} tasks: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let mut tallies = Tallies::default();
    let mut now = T0 + 1_000;
    for round in 0..4 {
        if round > 0 {
            finish(&store, &steps[..2], changes, now).await;
        }
        now += 30_000;
        let before = h.requests.total();
        let t = Instant::now();
        let mut counts = std::collections::HashMap::new();
        for step in &steps {
            let r = step_report(&store, step, now).await.unwrap();
            counts.insert(step.clone(), r.counts);
        }
        let (counters_ms, counters_req) = (t.elapsed().as_millis(), h.requests.total() - before);

        let old = measure(&h, || every_task(&store, &steps)).await;
        let new = measure(&h, || {
            incremental(&store, &mut tallies, &steps, &counts, now)
        })
        .await;
        println!(
            "round {round}: counters+throughput {counters_ms} ms {counters_req} req | \
             samples+failed: every task {} | incremental {}",
            old.1, new.1
        );
        let ((old, old_failed), (matrix, failed)) = (old.0, new.0);
        assert_eq!(matrix, old, "round {round}");
        assert_eq!(failed, old_failed, "round {round}");
    }
}

type View = (
    anamo::pipeline::matrix::SampleMatrix,
    anamo::controller::failures::FailedTasks,
);

/// Runs `read`; returns its result and `"{ms} ms, {requests} req, {read units} RU {by kind}"`.
async fn measure<F, Fut>(h: &Harness, read: F) -> (View, String)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = View>,
{
    let (requests, units, kinds) = (
        h.requests.total(),
        h.requests.read_units(),
        h.requests.by_kind(),
    );
    let t = std::time::Instant::now();
    let view = read().await;
    let ms = t.elapsed().as_millis();
    let mut sent = h.requests.by_kind();
    sent.retain(|k, n| {
        *n -= kinds.get(k).copied().unwrap_or(0);
        *n > 0
    });
    let figures = format!(
        "{ms} ms, {} req, {:.1} RU {sent:?}",
        h.requests.total() - requests,
        h.requests.read_units() - units
    );
    (view, figures)
}

/// The view as `main` read it: the failed tasks whole, every task's id and state.
async fn every_task(store: &SharedStore, steps: &[String]) -> View {
    use anamo::controller::failures::read_failed;
    use anamo::store::graph::{empty_graph, get_graph};
    use anamo::store::samples::steps_matrix;
    let graph = get_graph(store.as_ref())
        .await
        .unwrap()
        .unwrap_or_else(empty_graph);
    let failed = read_failed(store.as_ref(), &graph, steps).await.unwrap();
    let with_tasks = store.steps().await.unwrap();
    let matrix = steps_matrix(store.as_ref(), &graph, with_tasks)
        .await
        .unwrap();
    (matrix, failed)
}

/// The view as the controller reads it now: what changed.
async fn incremental(
    store: &SharedStore,
    tallies: &mut anamo::controller::sample_census::Tallies,
    steps: &[String],
    counts: &std::collections::HashMap<String, anamo::model::StepCounts>,
    now: i64,
) -> View {
    use anamo::controller::sample_census::RefreshInput;
    use anamo::store::graph::{empty_graph, get_graph};
    let graph = get_graph(store.as_ref())
        .await
        .unwrap()
        .unwrap_or_else(empty_graph);
    let with_tasks = store.steps().await.unwrap();
    let input = RefreshInput {
        graph: &graph,
        with_tasks: &with_tasks,
        counts,
        now,
    };
    tallies.refresh(store.as_ref(), &input).await.unwrap();
    (tallies.matrix(), tallies.failed(steps))
}

/// Runs `changes` pending tasks of `steps` (in turn) to the end at `now`; one in 50 fails.
async fn finish(store: &SharedStore, steps: &[String], changes: usize, now: i64) {
    use futures::StreamExt;
    let per_step = changes / steps.len();
    for step in steps {
        let req = ClaimRequest {
            step: step.clone(),
            owner: "w".into(),
            ttl_ms: 600_000,
        };
        let mut claims = Vec::new();
        while claims.len() < per_step {
            let batch = store
                .claim_batch(&req, per_step - claims.len(), now)
                .await
                .unwrap();
            assert!(!batch.is_empty(), "{step} has pending tasks left");
            claims.extend(batch);
        }
        futures::stream::iter(claims.into_iter().enumerate())
            .map(|(i, c)| async move {
                let outcome = if i % 50 == 0 {
                    Outcome::FailedPermanently
                } else {
                    Outcome::Succeeded
                };
                let done = Completion {
                    retry_delay: None,
                    outcome,
                    result: TaskResult::default(),
                };
                store.complete(&c.lease(), &done, now).await.unwrap();
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
    }
}
