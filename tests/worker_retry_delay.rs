//! A step's `retryDelay`, as the graph document gives it, applied by a real worker (run
//! in-process, `anamo::worker::run_with`) on both stores: a retryable failed attempt waits in
//! `retrying` with its `retry_at` instead of going straight back to pending, and an idle
//! worker moves the due ones back to pending itself (no controller needed).
//!
//! DynamoDB variants need `scripts/test-services run -- cargo nextest run --test
//! worker_retry_delay`; without DynamoDB Local they fail under `CI=true`.

#[macro_use]
mod common;

use std::time::Duration;

use anamo::model::{TaskSpec, TaskState};
use anamo::pipeline::{RetryDelay, StepNode};
use anamo::store::graph::{empty_graph, put_graph};
use anamo::worker::StopReason;
use common::worker::*;
use common::Harness;

on_both_stores!(
    a_failed_attempt_waits_out_the_steps_retry_delay,
    an_idle_worker_retries_due_tasks
);

/// Publishes a graph in which `step` has `delay` as its retry delay.
async fn publish_delay(h: &Harness, step: &str, delay: RetryDelay) {
    let mut graph = empty_graph();
    let mut node = StepNode::plain();
    node.defaults.retry_delay = Some(delay);
    graph.steps.insert(step.to_string(), node);
    put_graph(
        h.store.as_ref(),
        &graph,
        now(),
        anamo::store::Fence::Unfenced,
    )
    .await
    .expect("publish the graph");
}

/// A delay of an hour: after its first failed attempt the task is `retrying`, due 30-60
/// minutes after the failure (equal jitter), and the worker does not run it again.
async fn a_failed_attempt_waits_out_the_steps_retry_delay(h: Harness) {
    let dir = tempfile::tempdir().unwrap();
    let step = "flaky";
    let hour: i64 = 3_600_000;
    publish_delay(
        &h,
        step,
        RetryDelay {
            initial_ms: hour as u64,
            max_ms: hour as u64,
        },
    )
    .await;
    import(&h.store, &[TaskSpec::new(step, "t1", "exit 1")]).await;
    let before = now();
    let mut args = fast_args(step, dir.path());
    args.idle_exit = Some(Duration::from_millis(800));
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    let exit = join(handle, Duration::from_secs(60)).await;
    assert_eq!(exit.reason, StopReason::Idle);
    let t = get(&h.store, step, "t1").await;
    assert_eq!((t.state, t.attempts), (TaskState::Retrying, 1), "{t:?}");
    let retry_at = t.retry_at.expect("a retrying task has retry_at");
    assert!(
        retry_at >= before + hour / 2 && retry_at <= now() + hour,
        "retry_at {} ms after the run started",
        retry_at - before
    );
    assert_eq!(h.store.counts(step).await.unwrap().retrying, 1);
}

/// A delay of a millisecond: the worker that found nothing pending moves the due task back
/// and runs it again, so it succeeds on its second attempt with no controller running.
async fn an_idle_worker_retries_due_tasks(h: Harness) {
    let dir = tempfile::tempdir().unwrap();
    let step = "second";
    publish_delay(
        &h,
        step,
        RetryDelay {
            initial_ms: 1,
            max_ms: 1,
        },
    )
    .await;
    import(
        &h.store,
        &[TaskSpec::new(step, "t1", "test $ANAMO_ATTEMPT -ge 2")],
    )
    .await;
    let mut args = fast_args(step, dir.path());
    args.idle_exit = Some(Duration::from_millis(1500));
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    let exit = join(handle, Duration::from_secs(60)).await;
    assert_eq!(exit.reason, StopReason::Idle);
    let t = get(&h.store, step, "t1").await;
    assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 2), "{t:?}");
    assert_eq!(t.retry_at, None);
}
