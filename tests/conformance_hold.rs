//! Conformance of the `held` and `retrying` states on every `TaskStore` (SQLite and DynamoDB
//! Local): held tasks are never claimed and resume to the state they had; a retried failure
//! with a retry delay waits in `retrying` (its `retry_at` visible) until the housekeeping call
//! makes it pending again.

#[macro_use]
mod common;

use anamo::model::{
    ClaimRequest, Completion, LeaseRef, Outcome, TaskFilter, TaskResult, TaskSpec, TaskState,
};
use anamo::pipeline::RetryDelay;
use anamo::store::{SharedStore, StoreError};

const T0: i64 = 1_700_000_000_000;
const TTL: i64 = 60_000;

fn req(step: &str) -> ClaimRequest {
    ClaimRequest {
        step: step.into(),
        owner: "w".into(),
        ttl_ms: TTL,
    }
}

fn failed(retry_delay: Option<RetryDelay>) -> Completion {
    Completion {
        outcome: Outcome::Failed,
        retry_delay,
        result: TaskResult {
            exit_code: Some(3),
            duration_ms: 5,
            worker_id: "w".into(),
            started_at: T0,
            finished_at: T0 + 5,
            error: Some("exit 3".into()),
            ..Default::default()
        },
    }
}

async fn state(store: &SharedStore, step: &str, id: &str) -> TaskState {
    store
        .get(step, id)
        .await
        .unwrap()
        .expect("task exists")
        .state
}

fn assert_invalid_state<T: std::fmt::Debug>(r: Result<T, StoreError>, what: &str) {
    match r {
        Err(StoreError::InvalidState { .. }) => {}
        other => panic!("{what}: expected InvalidState, got {other:?}"),
    }
}

mod cases {
    use super::*;

    pub async fn held_tasks_are_not_claimed_and_resume_to_their_state(store: SharedStore) {
        let mut call = TaskSpec::new("call", "S1", "true");
        call.depends_on = vec!["align".into()];
        store
            .import(&[TaskSpec::new("align", "S1", "true"), call], T0)
            .await
            .unwrap();
        store.hold("align", "S1", T0 + 1).await.unwrap();
        store.hold("call", "S1", T0 + 1).await.unwrap();
        store
            .hold("align", "S1", T0 + 2)
            .await
            .expect("holding twice is fine");
        let t = store.get("align", "S1").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Held);
        assert_eq!(t.held_from, Some(TaskState::Pending));
        assert_eq!(t.reason.as_deref(), Some("held by user"));
        assert!(store.claim(&req("align"), T0 + 3).await.unwrap().is_none());
        let c = store.counts("align").await.unwrap();
        assert_eq!((c.held, c.pending), (1, 0));
        let listed = store
            .list(&TaskFilter {
                state: Some(TaskState::Held),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), 2, "both held tasks are listed by state");

        store.resume("align", "S1", T0 + 4).await.unwrap();
        store.resume("call", "S1", T0 + 4).await.unwrap();
        assert_eq!(state(&store, "align", "S1").await, TaskState::Pending);
        let call = store.get("call", "S1").await.unwrap().unwrap();
        assert_eq!(
            call.state,
            TaskState::Waiting,
            "a held waiting task resumes waiting"
        );
        assert_eq!((call.held_from, call.reason), (None, None));
        assert!(store.claim(&req("align"), T0 + 5).await.unwrap().is_some());
    }

    pub async fn only_pending_or_waiting_tasks_are_held(store: SharedStore) {
        store
            .import(&[TaskSpec::new("align", "S1", "true")], T0)
            .await
            .unwrap();
        assert_invalid_state(
            store.resume("align", "S1", T0).await,
            "resuming a task that is not held",
        );
        store.claim(&req("align"), T0).await.unwrap().unwrap();
        assert_invalid_state(
            store.hold("align", "S1", T0).await,
            "holding a running task",
        );
        assert_eq!(state(&store, "align", "S1").await, TaskState::Running);
        match store.hold("align", "nope", T0).await {
            Err(StoreError::NotFound { .. }) => {}
            other => panic!("expected NotFound, got {other:?}"),
        }
    }

    pub async fn held_tasks_can_be_cancelled_and_requeued(store: SharedStore) {
        store
            .import(
                &[
                    TaskSpec::new("align", "S1", "true"),
                    TaskSpec::new("align", "S2", "true"),
                ],
                T0,
            )
            .await
            .unwrap();
        store.hold("align", "S1", T0).await.unwrap();
        store.hold("align", "S2", T0).await.unwrap();
        store.cancel("align", "S1", T0 + 1).await.unwrap();
        let t = store.get("align", "S1").await.unwrap().unwrap();
        assert_eq!((t.state, t.held_from), (TaskState::Cancelled, None));
        store.requeue("align", "S2", false, T0 + 1).await.unwrap();
        let t = store.get("align", "S2").await.unwrap().unwrap();
        assert_eq!((t.state, t.held_from), (TaskState::Pending, None));
    }

    pub async fn a_retry_delay_waits_in_retrying_until_due(store: SharedStore) {
        store
            .import(&[TaskSpec::new("align", "S1", "false")], T0)
            .await
            .unwrap();
        let delay = RetryDelay {
            initial_ms: 10_000,
            max_ms: 60_000,
        };
        let c = store.claim(&req("align"), T0).await.unwrap().unwrap();
        let st = store
            .complete(&c.lease(), &failed(Some(delay)), T0 + 100)
            .await
            .unwrap();
        assert_eq!(st, TaskState::Retrying);
        let t = store.get("align", "S1").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Retrying);
        assert_eq!(t.reason.as_deref(), Some("exit 3"));
        let retry_at = t.retry_at.expect("retry_at is recorded");
        // Equal jitter after the first attempt: between half the delay and all of it.
        assert!(
            (T0 + 100 + 5_000..=T0 + 100 + 10_000).contains(&retry_at),
            "retry_at {} not within 5-10 s of the failure",
            retry_at - T0
        );
        assert_eq!(store.counts("align").await.unwrap().retrying, 1);
        assert!(store
            .claim(&req("align"), T0 + 200)
            .await
            .unwrap()
            .is_none());

        assert_eq!(store.retry_due("align", retry_at - 1).await.unwrap(), 0);
        assert_eq!(state(&store, "align", "S1").await, TaskState::Retrying);
        assert_eq!(store.retry_due("align", retry_at).await.unwrap(), 1);
        let t = store.get("align", "S1").await.unwrap().unwrap();
        assert_eq!(
            (t.state, t.retry_at, t.attempts),
            (TaskState::Pending, None, 1)
        );

        // The second failure waits twice as long (10-20 s).
        let c = store.claim(&req("align"), retry_at).await.unwrap().unwrap();
        assert_eq!(c.task.attempts, 2);
        store
            .complete(&c.lease(), &failed(Some(delay)), retry_at + 1)
            .await
            .unwrap();
        let second = store.get("align", "S1").await.unwrap().unwrap().retry_at;
        let waited = second.expect("retrying again") - (retry_at + 1);
        assert!((10_000..=20_000).contains(&waited), "waited {waited} ms");
    }

    pub async fn the_last_attempt_fails_without_a_delay(store: SharedStore) {
        let mut spec = TaskSpec::new("align", "S1", "false");
        spec.max_attempts = 1;
        store
            .import(&[spec, TaskSpec::new("align", "S2", "false")], T0)
            .await
            .unwrap();
        let delay = RetryDelay {
            initial_ms: 1_000,
            max_ms: 1_000,
        };
        let claims = store.claim_batch(&req("align"), 2, T0).await.unwrap();
        for c in &claims {
            let st = store
                .complete(&c.lease(), &failed(Some(delay)), T0 + 1)
                .await
                .unwrap();
            let expected = if c.task.id() == "S1" {
                TaskState::Failed
            } else {
                TaskState::Retrying
            };
            assert_eq!(st, expected, "task {}", c.task.id());
        }
        let s1 = store.get("align", "S1").await.unwrap().unwrap();
        assert_eq!(s1.retry_at, None);
        // Without a delay a retried failure is pending at once, as before.
        let c = store.claim(&req("align"), T0 + 2).await.unwrap();
        assert!(c.is_none(), "S2 waits out its delay");
        store.retry_due("align", T0 + 2_000).await.unwrap();
        let c = store
            .claim(&req("align"), T0 + 2_000)
            .await
            .unwrap()
            .unwrap();
        let st = store
            .complete(&c.lease(), &failed(None), T0 + 2_001)
            .await
            .unwrap();
        assert_eq!(st, TaskState::Pending);
    }

    pub async fn a_retrying_task_can_be_cancelled_or_requeued(store: SharedStore) {
        store
            .import(
                &[
                    TaskSpec::new("align", "S1", "false"),
                    TaskSpec::new("align", "S2", "false"),
                ],
                T0,
            )
            .await
            .unwrap();
        let delay = RetryDelay {
            initial_ms: 60_000,
            max_ms: 60_000,
        };
        for c in store.claim_batch(&req("align"), 2, T0).await.unwrap() {
            let lease: LeaseRef = c.lease();
            store
                .complete(&lease, &failed(Some(delay)), T0 + 1)
                .await
                .unwrap();
        }
        store.cancel("align", "S1", T0 + 2).await.unwrap();
        store.requeue("align", "S2", false, T0 + 2).await.unwrap();
        let s2 = store.get("align", "S2").await.unwrap().unwrap();
        assert_eq!(
            (s2.state, s2.retry_at, s2.attempts),
            (TaskState::Pending, None, 0)
        );
        assert_eq!(
            store.retry_due("align", T0 + 120_000).await.unwrap(),
            0,
            "nothing left retrying"
        );
        assert_eq!(state(&store, "align", "S1").await, TaskState::Cancelled);
    }
}

conformance!(
    held_tasks_are_not_claimed_and_resume_to_their_state,
    only_pending_or_waiting_tasks_are_held,
    held_tasks_can_be_cancelled_and_requeued,
    a_retry_delay_waits_in_retrying_until_due,
    the_last_attempt_fails_without_a_delay,
    a_retrying_task_can_be_cancelled_or_requeued,
);
