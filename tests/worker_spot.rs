//! The worker against a fake instance metadata endpoint ([`FakeImds`]): a spot interruption
//! notice hands running tasks back at once; a rebalance recommendation stops claims, lets the
//! running tasks finish and the worker exit, and counts in `anamo_worker_spot_notices_total`.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anamo::model::{TaskSpec, TaskState, WorkerState};
use anamo::worker::{StopReason, WorkerArgs};
use common::http::{free_port, get as http_get};
use common::worker::*;
use common::Harness;

/// A spot interruption notice from IMDS hands running tasks back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spot_notice_hands_back_at_once() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let imds = FakeImds::start().await;
    let step = "spot";
    // The task and the drain grace outlast `join`'s deadline by far: the worker only exits
    // in time if the notice skips the grace.
    import(&h.store, &[TaskSpec::new(step, "long", "sleep 600")]).await;
    let mut args = fast_args(step, dir.path());
    args.imds_endpoint = Some(imds.url.clone());
    args.spot_poll = Duration::from_millis(200);
    args.drain_grace = Duration::from_secs(600);
    args.worker_id = Some("spotty".into());
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    wait_running(&h.store, step, "long", Duration::from_secs(10)).await;
    let polls = imds.polls();
    wait_until(
        "the worker polls for notices",
        Duration::from_secs(10),
        || async { imds.polls() > polls },
    )
    .await;
    // The instance id came from IMDS.
    let w = &h.store.list_workers(Some(step)).await.unwrap()[0];
    assert_eq!(w.instance_id.as_deref(), Some("i-0123456789abcdef0"));
    assert_eq!(w.state, WorkerState::Active);

    imds.interrupt();
    let exit = join(handle, Duration::from_secs(60)).await;
    assert_eq!(exit.reason, StopReason::SpotInterruption);
    assert_eq!(exit.stats.handed_back, 1);
    let t = get(&h.store, step, "long").await;
    assert_eq!((t.state, t.attempts), (TaskState::Pending, 0));
}

/// A task that runs until `go` exists.
fn gated(step: &str, id: &str, go: &Path) -> TaskSpec {
    let mut t = TaskSpec::new(
        step,
        id,
        format!("while [ ! -f '{}' ]; do sleep 0.05; done", go.display()),
    );
    t.priority = 1;
    t
}

/// A one-slot worker on `imds`, polling it every 200 ms, serving metrics on `port`.
fn spot_args(step: &str, dir: &Path, imds: &FakeImds, port: u16) -> WorkerArgs {
    let mut args = fast_args(step, dir);
    args.imds_endpoint = Some(imds.url.clone());
    args.spot_poll = Duration::from_millis(200);
    args.slots = 1;
    args.metrics_addr = Some(SocketAddr::from(([127, 0, 0, 1], port)));
    args
}

/// `anamo_worker_spot_notices_total{kind,step}` as the worker serves it.
async fn notices(port: u16, step: &str, kind: &str) -> Option<f64> {
    let body = tokio::task::spawn_blocking(move || http_get(port, "/metrics"))
        .await
        .unwrap()?
        .1;
    let series = format!("anamo_worker_spot_notices_total{{kind=\"{kind}\",step=\"{step}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// A worker on a fresh store and fake IMDS, running task `first` of `tasks`, that has just
/// seen a rebalance recommendation (its notice counters were at 0 before).
struct Rebalanced {
    h: Harness,
    imds: FakeImds,
    port: u16,
    handle: tokio::task::JoinHandle<anamo::worker::Result<anamo::worker::WorkerExit>>,
}

async fn rebalanced(step: &str, dir: &Path, tasks: &[TaskSpec]) -> Rebalanced {
    let h = Harness::sqlite().await;
    let imds = FakeImds::start().await;
    import(&h.store, tasks).await;
    let port = free_port();
    let (control, handle) = spawn_worker_task(spot_args(step, dir, &imds, port), h.store.clone());
    wait_running(&h.store, step, "first", Duration::from_secs(10)).await;
    wait_until("the notice counters", Duration::from_secs(10), || async {
        notices(port, step, "rebalance").await.is_some()
    })
    .await;
    assert_eq!(notices(port, step, "rebalance").await, Some(0.0));

    imds.recommend_rebalance();
    wait_until(
        "the worker sees the recommendation",
        Duration::from_secs(10),
        || async { control.stop_reason() == Some(StopReason::Rebalance) },
    )
    .await;
    // Still running: a recommendation is no interruption.
    assert_eq!(get(&h.store, step, "first").await.state, TaskState::Running);
    Rebalanced {
        h,
        imds,
        port,
        handle,
    }
}

/// A rebalance recommendation mid-run stops claims; the running task finishes and is
/// recorded once (it is not handed back), the worker exits once it has, and the other task
/// is left to other workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rebalance_recommendation_stops_claiming_and_lets_tasks_finish() {
    let dir = tempfile::tempdir().unwrap();
    let step = "rebalance";
    let go = dir.path().join("go");
    let later = TaskSpec::new(step, "later", "true");
    let Rebalanced {
        h,
        imds,
        port,
        handle,
    } = rebalanced(step, dir.path(), &[gated(step, "first", &go), later]).await;
    wait_until(
        "the registration says draining for a rebalance",
        Duration::from_secs(10),
        || async {
            let w = &h.store.list_workers(Some(step)).await.unwrap()[0];
            (w.state, w.stop_reason) == (WorkerState::Draining, Some(StopReason::Rebalance))
        },
    )
    .await;
    // Counted once, though the recommendation stays out over many polls.
    let polls = imds.polls();
    wait_until("more polls", Duration::from_secs(10), || async {
        imds.polls() >= polls + 3
    })
    .await;
    assert_eq!(notices(port, step, "rebalance").await, Some(1.0));
    assert_eq!(notices(port, step, "interruption").await, Some(0.0));

    std::fs::write(&go, "").unwrap();
    let exit = join(handle, Duration::from_secs(60)).await;
    assert_eq!(exit.reason, StopReason::Rebalance);
    assert_eq!((exit.stats.claimed, exit.stats.recorded()), (1, 1));
    assert_eq!(exit.stats.handed_back, 0);
    let first = get(&h.store, step, "first").await;
    assert_eq!((first.state, first.attempts), (TaskState::Succeeded, 1));
    let later = get(&h.store, step, "later").await;
    assert_eq!((later.state, later.attempts), (TaskState::Pending, 0));
    let w = &h.store.list_workers(Some(step)).await.unwrap()[0];
    assert_eq!(
        (w.state, w.stop_reason),
        (WorkerState::Gone, Some(StopReason::Rebalance))
    );
}

/// An interruption notice after a recommendation still hands the running task back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interruption_after_a_recommendation_hands_back() {
    let dir = tempfile::tempdir().unwrap();
    let step = "rebalanced";
    // Never released: the worker only exits if the notice hands the task back.
    let first = gated(step, "first", &dir.path().join("never"));
    let Rebalanced {
        h, imds, handle, ..
    } = rebalanced(step, dir.path(), &[first]).await;

    imds.interrupt();
    let exit = join(handle, Duration::from_secs(60)).await;
    assert_eq!(exit.reason, StopReason::SpotInterruption);
    assert_eq!(exit.stats.handed_back, 1);
    let first = get(&h.store, step, "first").await;
    assert_eq!((first.state, first.attempts), (TaskState::Pending, 0));
    // The registration tells the controller it was an interruption.
    let w = &h.store.list_workers(Some(step)).await.unwrap()[0];
    assert_eq!(
        (w.state, w.stop_reason),
        (WorkerState::Gone, Some(StopReason::SpotInterruption))
    );
}
