//! Conformance case of the planner's duration read: the run times of a step's newest
//! succeeded tasks, newest first and at most the limit asked for; failed tasks and other
//! steps are not in it.

use anamo::model::{Completion, Outcome, TaskResult};
use anamo::store::SharedStore;

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
