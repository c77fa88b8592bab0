//! Conformance case of the planner's duration read: the run times of a step's newest
//! succeeded tasks, newest first and at most the limit asked for; failed tasks and other
//! steps are not in it. And the progress refresh's read of the tasks that entered a final
//! state from a time on.

use anamo::model::{Completion, Outcome, TaskResult, TaskState};
use anamo::store::{SharedStore, StoreError};

use super::{claim, specs, T0};

/// Claims a task of `step` and ends it with `outcome` after `duration` ms, `at` when it ends.
async fn run(store: &SharedStore, step: &str, outcome: Outcome, duration: i64, at: i64) {
    let c = claim(store, step, "w", at - duration).await;
    let completion = Completion {
        retry_delay: None,
        outcome,
        result: TaskResult {
            exit_code: Some(i32::from(outcome != Outcome::Succeeded)),
            duration_ms: duration,
            worker_id: "w".into(),
            started_at: at - duration,
            finished_at: at,
            ..Default::default()
        },
    };
    store.complete(&c.lease(), &completion, at).await.unwrap();
}

pub async fn recent_run_times_are_the_newest_successes(store: SharedStore) {
    store.import(&specs("align", 6), T0).await.unwrap();
    store.import(&specs("call", 1), T0).await.unwrap();
    assert!(store.recent_run_times("align", 4).await.unwrap().is_empty());
    let runs = [
        (Outcome::Succeeded, 100),
        (Outcome::Succeeded, 200),
        (Outcome::FailedPermanently, 999),
        (Outcome::Succeeded, 300),
        (Outcome::Succeeded, 400),
    ];
    for (i, (outcome, duration)) in runs.into_iter().enumerate() {
        run(
            &store,
            "align",
            outcome,
            duration,
            T0 + 10_000 * (i as i64 + 1),
        )
        .await;
    }
    run(&store, "call", Outcome::Succeeded, 7, T0 + 60_000).await;
    assert_eq!(
        store.recent_run_times("align", 3).await.unwrap(),
        vec![400, 300, 200]
    );
    assert_eq!(
        store.recent_run_times("align", 32).await.unwrap(),
        vec![400, 300, 200, 100]
    );
    assert!(store.recent_run_times("align", 0).await.unwrap().is_empty());
    assert_eq!(store.recent_run_times("call", 32).await.unwrap(), vec![7]);
}

/// The progress refresh's incremental read: the tasks that entered a final state from a time
/// on (inclusive), with when and why, by time; a task that left the state (requeued) is not
/// in it, other steps' tasks neither; a state that is not final is refused.
pub async fn entered_since_reads_a_final_state_from_a_time_on(store: SharedStore) {
    store.import(&specs("align", 5), T0).await.unwrap();
    store.import(&specs("call", 1), T0).await.unwrap();
    let ended = [
        (Outcome::Succeeded, 10_000),
        (Outcome::Succeeded, 20_000),
        (Outcome::FailedPermanently, 30_000),
        (Outcome::Succeeded, 40_000),
    ];
    for (outcome, at) in ended {
        run(&store, "align", outcome, 5, T0 + at).await;
    }
    run(&store, "call", Outcome::Succeeded, 5, T0 + 20_000).await;
    let since = |state: TaskState, at: i64| {
        let store = store.clone();
        async move {
            let entered = store.entered_since("align", state, at).await.unwrap();
            entered
                .into_iter()
                .map(|e| (e.at - T0, e.id, e.reason))
                .collect::<Vec<_>>()
        }
    };
    let all = since(TaskState::Succeeded, 0).await;
    let times: Vec<i64> = all.iter().map(|(at, _, _)| *at).collect();
    assert_eq!(times, [10_000, 20_000, 40_000], "{all:?}");
    let from = since(TaskState::Succeeded, T0 + 20_000).await;
    assert_eq!(from.len(), 2, "from a time on, inclusive: {from:?}");
    assert!(since(TaskState::Succeeded, T0 + 40_001).await.is_empty());
    let failed = since(TaskState::Failed, 0).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, 30_000);
    // The fifth task, still pending, is cancelled: its reason comes along.
    store.cancel("align", "s00004", T0 + 45_000).await.unwrap();
    let cancelled = since(TaskState::Cancelled, T0 + 45_000).await;
    assert_eq!(
        cancelled,
        [(
            45_000,
            "s00004".to_string(),
            Some("cancelled by user".to_string())
        )]
    );

    let first = all[0].1.clone();
    store
        .requeue("align", &first, false, T0 + 50_000)
        .await
        .unwrap();
    let left = since(TaskState::Succeeded, 0).await;
    assert!(left.iter().all(|(_, id, _)| *id != first), "{left:?}");
    let pending = store.entered_since("align", TaskState::Pending, 0).await;
    assert!(
        matches!(pending, Err(StoreError::InvalidInput(_))),
        "{pending:?}"
    );
}
