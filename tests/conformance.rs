//! One conformance suite for every `TaskStore`: the same test functions run against SQLite and
//! against DynamoDB Local.

#[macro_use]
mod common;
#[path = "conformance/drain.rs"]
mod drain_cases;
#[path = "conformance/expiry.rs"]
mod expiry_cases;
#[path = "conformance/fence.rs"]
mod fence_cases;
#[path = "conformance/graph.rs"]
mod graph_cases;
#[path = "conformance/recent.rs"]
mod recent_cases;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use anamo::model::{
    Claim, ClaimRequest, Completion, LeaseRef, Outcome, RequeueReport, TaskFilter, TaskResult,
    TaskSpec, TaskState, WorkerInfo, WorkerState,
};
use anamo::store::{SharedStore, StatusDoc, StoreError};

const T0: i64 = 1_700_000_000_000;
const TTL: i64 = 60_000;

fn req(step: &str, owner: &str) -> ClaimRequest {
    ClaimRequest {
        step: step.into(),
        owner: owner.into(),
        ttl_ms: TTL,
    }
}

fn specs(step: &str, n: usize) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| TaskSpec::new(step, format!("s{i:05}"), format!("echo {i}")))
        .collect()
}

fn done(outcome: Outcome, worker: &str, code: i32) -> Completion {
    Completion {
        retry_delay: None,
        outcome,
        result: TaskResult {
            exit_code: Some(code),
            duration_ms: 5,
            log_tail: format!("output of {worker}"),
            worker_id: worker.into(),
            started_at: T0,
            finished_at: T0 + 5,
            error: (code != 0).then(|| format!("exit {code}")),
            ..Default::default()
        },
    }
}

/// Claims one task of `step` for `owner` at `now`; there must be one.
async fn claim(store: &SharedStore, step: &str, owner: &str, now: i64) -> Claim {
    store
        .claim(&req(step, owner), now)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("a pending task of {step} for {owner}"))
}

/// Requeues the expired leases of `step` at `now`, unfenced.
async fn requeue(store: &SharedStore, step: &str, now: i64) -> RequeueReport {
    store
        .requeue_expired(step, now, anamo::store::Fence::Unfenced)
        .await
        .unwrap()
}

/// Ends the attempt of `lease` as [`done`] says, at `now`.
async fn finish(
    store: &SharedStore,
    lease: &LeaseRef,
    outcome: Outcome,
    worker: &str,
    code: i32,
    now: i64,
) -> Result<TaskState, StoreError> {
    store
        .complete(lease, &done(outcome, worker, code), now)
        .await
}

fn assert_lease_lost<T: std::fmt::Debug>(r: Result<T, StoreError>) {
    match r {
        Err(StoreError::LeaseLost { .. }) => {}
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

mod cases {
    use super::*;
    pub use crate::drain_cases::*;
    pub use crate::expiry_cases::*;
    pub use crate::fence_cases::*;
    pub use crate::graph_cases::*;
    pub use crate::recent_cases::*;

    pub async fn claim_is_exclusive_under_concurrency(store: SharedStore) {
        claimers_share_the_tasks(store, 16, 2_000, 1).await;
    }

    pub async fn batch_claims_are_exclusive_under_concurrency(store: SharedStore) {
        claimers_share_the_tasks(store, 8, 1_000, 4).await;
    }

    /// `claimers` loops claim (`batch` at a time) and complete until nothing is left: every
    /// task is claimed exactly once, each claim with its own token.
    async fn claimers_share_the_tasks(store: SharedStore, claimers: usize, n: usize, batch: usize) {
        let r = store.import(&specs("align", n), T0).await.unwrap();
        assert_eq!(r.inserted, n as u64);
        let claimed = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for w in 0..claimers {
            let (store, claimed) = (store.clone(), claimed.clone());
            handles.push(tokio::spawn(async move {
                let owner = format!("w{w}");
                loop {
                    let claims = store
                        .claim_batch(&req("align", &owner), batch, T0 + 1)
                        .await
                        .unwrap();
                    if claims.is_empty() {
                        break;
                    }
                    assert!(claims.len() <= batch, "at most the batch asked for");
                    let tokens: HashSet<_> = claims.iter().map(|c| c.token.clone()).collect();
                    assert_eq!(tokens.len(), claims.len(), "one lease token per task");
                    for c in claims {
                        assert_eq!(c.task.state, TaskState::Running);
                        assert_eq!(c.task.attempts, 1);
                        assert_eq!(c.task.lease.as_ref().map(|l| &l.token), Some(&c.token));
                        let st = finish(&store, &c.lease(), Outcome::Succeeded, &owner, 0, T0 + 2)
                            .await
                            .unwrap();
                        assert_eq!(st, TaskState::Succeeded);
                        claimed.lock().unwrap().push(c.task.spec.id.clone());
                    }
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let claimed = claimed.lock().unwrap().clone();
        let unique: HashSet<_> = claimed.iter().collect();
        assert_eq!(
            claimed.len(),
            n,
            "every task claimed once (no double claims)"
        );
        assert_eq!(unique.len(), n);
        let c = store.counts("align").await.unwrap();
        assert_eq!(c.succeeded, n as u64);
        assert_eq!(c.pending + c.running, 0);
    }

    pub async fn a_batch_takes_the_best_tasks_and_stops_at_the_end(store: SharedStore) {
        let mut tasks = specs("align", 5);
        tasks[3].priority = 9;
        tasks[4].priority = 5;
        store.import(&tasks, T0).await.unwrap();
        let first = store.claim_batch(&req("align", "w"), 2, T0).await.unwrap();
        let mut ids: Vec<_> = first.iter().map(|c| c.task.id().to_string()).collect();
        ids.sort();
        assert_eq!(ids, ["s00003", "s00004"], "the two highest priorities");
        let rest = store.claim_batch(&req("align", "w"), 10, T0).await.unwrap();
        assert_eq!(rest.len(), 3, "only what is pending");
        assert!(store
            .claim_batch(&req("align", "w"), 10, T0)
            .await
            .unwrap()
            .is_empty());
        // Each task of a batch is leased on its own: one fenced write does not touch another.
        let (a, b) = (&rest[0], &rest[1]);
        assert_lease_lost(
            finish(
                &store,
                &LeaseRef::new("align", a.task.id(), &b.token),
                Outcome::Succeeded,
                "w",
                0,
                T0,
            )
            .await,
        );
        finish(&store, &a.lease(), Outcome::Succeeded, "w", 0, T0)
            .await
            .unwrap();
    }

    pub async fn claim_on_empty_step_returns_none(store: SharedStore) {
        store.import(&specs("align", 1), T0).await.unwrap();
        assert!(store.claim(&req("call", "w"), T0).await.unwrap().is_none());
        assert!(store.claim(&req("align", "w"), T0).await.unwrap().is_some());
        assert!(store.claim(&req("align", "w"), T0).await.unwrap().is_none());
    }

    pub async fn higher_priority_is_claimed_first(store: SharedStore) {
        let mut tasks = specs("align", 10);
        tasks[7].priority = 5;
        store.import(&tasks, T0).await.unwrap();
        let c = claim(&store, "align", "w", T0).await;
        assert_eq!(c.task.id(), "s00007");
    }

    /// A claimer may keep the candidates its last claim found (DynamoDB), but a task made
    /// pending through the same store comes first when its priority says so, and a candidate
    /// another claimer took meanwhile is never taken again.
    pub async fn new_pending_tasks_come_before_earlier_candidates(store: SharedStore) {
        store.import(&specs("align", 10), T0).await.unwrap();
        let first = claim(&store, "align", "w", T0).await;
        assert_eq!(first.task.id(), "s00000");
        let mut urgent = TaskSpec::new("align", "urgent", "echo urgent");
        urgent.priority = 9;
        store.import(&[urgent], T0 + 1).await.unwrap();
        let next = claim(&store, "align", "w", T0 + 2).await;
        assert_eq!(
            next.task.id(),
            "urgent",
            "an imported task of higher priority first"
        );
        store
            .release(&LeaseRef::new("align", "urgent", &next.token), T0 + 3)
            .await
            .unwrap();
        let again = claim(&store, "align", "w", T0 + 4).await;
        assert_eq!(
            again.task.id(),
            "urgent",
            "a handed back task of higher priority first"
        );
        let then = claim(&store, "align", "w", T0 + 5).await;
        assert_eq!(then.task.id(), "s00001", "then the queue in order again");
    }

    pub async fn a_candidate_taken_meanwhile_is_not_claimed_again(store: SharedStore) {
        store.import(&specs("align", 10), T0).await.unwrap();
        let mut seen = HashSet::new();
        // Two claimers alternate: each one's next candidates are what the other just took.
        for round in 0..4 {
            for owner in ["a", "b"] {
                let c = store
                    .claim(&req("align", owner), T0 + round)
                    .await
                    .unwrap()
                    .expect("a pending task");
                assert_eq!(c.task.lease.as_ref().map(|l| l.owner.as_str()), Some(owner));
                assert!(
                    seen.insert(c.task.id().to_string()),
                    "{} twice",
                    c.task.id()
                );
            }
        }
        let rest = store
            .claim_batch(&req("align", "a"), 10, T0 + 9)
            .await
            .unwrap();
        assert_eq!(rest.len(), 2, "exactly the two never claimed are left");
        for c in rest {
            assert!(
                seen.insert(c.task.id().to_string()),
                "{} twice",
                c.task.id()
            );
        }
        assert_eq!(seen.len(), 10);
    }

    pub async fn claim_sets_lease(store: SharedStore) {
        store.import(&specs("align", 1), T0).await.unwrap();
        let c = claim(&store, "align", "w1", T0).await;
        assert_eq!(c.expires_at, T0 + TTL);
        let t = store.get("align", "s00000").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Running);
        let lease = t.lease.expect("lease recorded");
        assert_eq!(lease.owner, "w1");
        assert_eq!(lease.token, c.token);
        assert_eq!(lease.expires_at, T0 + TTL);
        assert_eq!(t.attempts, 1);
    }

    pub async fn heartbeat_extends_only_with_the_token(store: SharedStore) {
        store.import(&specs("align", 1), T0).await.unwrap();
        let c = claim(&store, "align", "w1", T0).await;
        let exp = store
            .heartbeat(
                &LeaseRef::new("align", "s00000", &c.token),
                TTL,
                T0 + 30_000,
            )
            .await
            .unwrap();
        assert_eq!(exp, T0 + 30_000 + TTL);
        // Not expired at the original expiry any more.
        let r = requeue(&store, "align", T0 + TTL + 1).await;
        assert!(r.requeued.is_empty());
        assert_lease_lost(
            store
                .heartbeat(&LeaseRef::new("align", "s00000", "bogus"), TTL, T0)
                .await,
        );
        assert_lease_lost(
            store
                .heartbeat(&LeaseRef::new("align", "nope", &c.token), TTL, T0)
                .await,
        );
    }

    pub async fn zombie_cannot_overwrite_a_reclaimed_task(store: SharedStore) {
        store.import(&specs("align", 1), T0).await.unwrap();
        let a = claim(&store, "align", "zombie", T0).await;
        let r = requeue(&store, "align", T0 + TTL + 1).await;
        assert_eq!(r.requeued, vec!["s00000".to_string()]);
        let b = claim(&store, "align", "fresh", T0 + TTL + 2).await;
        assert_ne!(a.token, b.token);
        assert_eq!(b.task.attempts, 2);
        assert_lease_lost(store.heartbeat(&a.lease(), TTL, T0 + TTL + 3).await);
        assert_lease_lost(
            finish(
                &store,
                &a.lease(),
                Outcome::Succeeded,
                "zombie",
                0,
                T0 + TTL + 3,
            )
            .await,
        );
        assert_lease_lost(store.release(&a.lease(), T0 + TTL + 3).await);
        finish(
            &store,
            &b.lease(),
            Outcome::Succeeded,
            "fresh",
            0,
            T0 + TTL + 4,
        )
        .await
        .unwrap();
        // The zombie's late completion after the fresh one is rejected too: exactly one result.
        assert_lease_lost(
            finish(
                &store,
                &a.lease(),
                Outcome::Failed,
                "zombie",
                1,
                T0 + TTL + 5,
            )
            .await,
        );
        assert_lease_lost(
            finish(
                &store,
                &b.lease(),
                Outcome::Failed,
                "fresh",
                1,
                T0 + TTL + 5,
            )
            .await,
        );
        let t = store.get("align", "s00000").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Succeeded);
        let result = t.result.unwrap();
        assert_eq!(result.worker_id, "fresh");
        assert_eq!(result.log_tail, "output of fresh");
        assert!(t.lease.is_none());
    }

    pub async fn expired_leases_are_requeued(store: SharedStore) {
        store.import(&specs("align", 3), T0).await.unwrap();
        let a = claim(&store, "align", "w", T0).await;
        let _b = claim(&store, "align", "w", T0 + 10_000).await;
        assert!(requeue(&store, "align", T0 + TTL - 1)
            .await
            .requeued
            .is_empty());
        let r = requeue(&store, "align", T0 + TTL + 1).await;
        assert_eq!(r.requeued, vec![a.task.spec.id.clone()]);
        assert!(r.failed.is_empty());
        let t = store.get("align", a.task.id()).await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Pending);
        assert_eq!(t.attempts, 1, "the expired attempt counts");
        assert!(t.lease.is_none());
        assert_eq!(t.reason.as_deref(), Some("lease expired"));
        let c = store.counts("align").await.unwrap();
        assert_eq!((c.pending, c.running), (2, 1));
        // Other steps are untouched.
        assert!(requeue(&store, "call", T0 + 10 * TTL)
            .await
            .requeued
            .is_empty());
    }

    pub async fn expiry_after_max_attempts_fails_the_task(store: SharedStore) {
        let mut t = TaskSpec::new("align", "S1", "true");
        t.max_attempts = 2;
        store.import(&[t], T0).await.unwrap();
        let mut now = T0;
        for attempt in 1..=2 {
            let c = claim(&store, "align", "w", now).await;
            assert_eq!(c.task.attempts, attempt);
            now += TTL + 1;
            let r = requeue(&store, "align", now).await;
            if attempt == 1 {
                assert_eq!(r.requeued, vec!["S1".to_string()]);
            } else {
                assert_eq!(r.failed, vec!["S1".to_string()]);
            }
        }
        let t = store.get("align", "S1").await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Failed);
        assert_eq!(t.reason.as_deref(), Some("lease expired on attempt 2 of 2"));
        assert!(store
            .claim(&req("align", "w"), now)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn failed_attempts_retry_until_max(store: SharedStore) {
        let mut a = TaskSpec::new("align", "A", "false");
        a.max_attempts = 2;
        let b = TaskSpec::new("align", "B", "false");
        store.import(&[a, b], T0).await.unwrap();
        let c = claim(&store, "align", "w", T0).await;
        assert_eq!(c.task.id(), "A");
        let st = finish(
            &store,
            &LeaseRef::new("align", "A", &c.token),
            Outcome::Failed,
            "w",
            3,
            T0 + 1,
        )
        .await
        .unwrap();
        assert_eq!(st, TaskState::Pending, "attempt 1 of 2 failed: retried");
        let t = store.get("align", "A").await.unwrap().unwrap();
        assert_eq!(t.result.as_ref().and_then(|r| r.exit_code), Some(3));
        assert!(t.lease.is_none());
        // B is older in the pending queue now (A became pending again at T0+1).
        let c = claim(&store, "align", "w", T0 + 2).await;
        assert_eq!(c.task.id(), "B");
        let st = finish(
            &store,
            &LeaseRef::new("align", "B", &c.token),
            Outcome::FailedPermanently,
            "w",
            2,
            T0 + 3,
        )
        .await
        .unwrap();
        assert_eq!(st, TaskState::Failed, "a fail-now exit code is not retried");
        let c = claim(&store, "align", "w", T0 + 4).await;
        assert_eq!(c.task.id(), "A");
        assert_eq!(c.task.attempts, 2);
        let st = finish(
            &store,
            &LeaseRef::new("align", "A", &c.token),
            Outcome::Failed,
            "w",
            3,
            T0 + 5,
        )
        .await
        .unwrap();
        assert_eq!(st, TaskState::Failed);
        let t = store.get("align", "A").await.unwrap().unwrap();
        assert_eq!(t.reason.as_deref(), Some("exit 3"));
        let counts = store.counts("align").await.unwrap();
        assert_eq!(counts.failed, 2);
    }

    pub async fn release_hands_back_without_counting(store: SharedStore) {
        store.import(&specs("align", 1), T0).await.unwrap();
        let c = claim(&store, "align", "w", T0).await;
        store
            .release(&LeaseRef::new("align", "s00000", &c.token), T0 + 1)
            .await
            .unwrap();
        let t = store.get("align", "s00000").await.unwrap().unwrap();
        assert_eq!((t.state, t.attempts), (TaskState::Pending, 0));
        assert!(t.lease.is_none());
        assert_lease_lost(
            store
                .release(&LeaseRef::new("align", "s00000", &c.token), T0 + 2)
                .await,
        );
        let c2 = claim(&store, "align", "w2", T0 + 3).await;
        assert_eq!(c2.task.attempts, 1);
    }

    /// `align`: 2 pending, 1 running, 1 succeeded, 1 cancelled; `call`: 3 pending; `joint`:
    /// 1 waiting.
    async fn three_steps(store: &SharedStore) {
        store.import(&specs("align", 5), T0).await.unwrap();
        store.import(&specs("call", 3), T0 + 100).await.unwrap();
        let mut dep = TaskSpec::new("joint", "s00000", "true");
        dep.depends_on = vec!["call".into()];
        store.import(&[dep], T0).await.unwrap();
        let c = claim(store, "align", "w", T0 + 200).await;
        finish(store, &c.lease(), Outcome::Succeeded, "w", 0, T0 + 300)
            .await
            .unwrap();
        claim(store, "align", "w", T0 + 400).await;
        store.cancel("align", "s00004", T0 + 500).await.unwrap();
    }

    pub async fn counts_are_per_step_and_state(store: SharedStore) {
        three_steps(&store).await;
        let a = store.counts("align").await.unwrap();
        assert_eq!(a.step, "align");
        assert_eq!(
            (
                a.pending,
                a.running,
                a.succeeded,
                a.cancelled,
                a.failed,
                a.waiting
            ),
            (2, 1, 1, 1, 0, 0)
        );
        assert_eq!(a.total(), 5);
        assert_eq!(a.oldest_pending_at, Some(T0));
        let c = store.counts("call").await.unwrap();
        assert_eq!((c.pending, c.total()), (3, 3));
        assert_eq!(c.oldest_pending_at, Some(T0 + 100));
        let j = store.counts("joint").await.unwrap();
        assert_eq!((j.waiting, j.pending), (1, 0));
        assert_eq!(j.oldest_pending_at, None);
        let none = store.counts("nothing").await.unwrap();
        assert_eq!(none.total(), 0);
        assert_eq!(store.steps().await.unwrap(), vec!["align", "call", "joint"]);
    }

    /// A pass's counts of several steps are each step's exact counts (without the oldest
    /// pending task, read on its own), in the order asked, zero for a step without tasks.
    pub async fn pass_counts_are_each_steps_counts(store: SharedStore) {
        three_steps(&store).await;
        let mut low = TaskSpec::new("call", "low", "true");
        low.priority = -3;
        store.import(&[low], T0 + 50).await.unwrap();
        let c = claim(&store, "align", "w", T0 + 600).await;
        finish(
            &store,
            &c.lease(),
            Outcome::FailedPermanently,
            "w",
            1,
            T0 + 700,
        )
        .await
        .unwrap();
        let steps: Vec<String> = ["joint", "nothing", "align", "call"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let all = store.pass_counts(&steps).await.unwrap();
        assert_eq!(all.len(), 4);
        for (step, got) in steps.iter().zip(&all) {
            let mut exact = store.counts(step).await.unwrap();
            exact.oldest_pending_at = None;
            assert_eq!(got, &exact, "{step}");
        }
        let a = &all[2];
        assert_eq!(
            (a.pending, a.running, a.succeeded, a.failed, a.cancelled),
            (1, 1, 1, 1, 1)
        );
        assert_eq!((all[0].waiting, all[1].total()), (1, 0));
        assert!(store.pass_counts(&[]).await.unwrap().is_empty());
        // The oldest pending task, on its own: across priorities, none when none is pending.
        assert_eq!(store.oldest_pending("call").await.unwrap(), Some(T0 + 50));
        assert_eq!(store.oldest_pending("align").await.unwrap(), Some(T0));
        assert_eq!(store.oldest_pending("joint").await.unwrap(), None);
        assert_eq!(store.oldest_pending("nothing").await.unwrap(), None);
    }

    pub async fn backlog_is_counted_up_to_the_limit(store: SharedStore) {
        store.import(&specs("align", 30), T0).await.unwrap();
        let mut dep = TaskSpec::new("joint", "s00000", "true");
        dep.depends_on = vec!["align".into()];
        store.import(&[dep], T0).await.unwrap();
        let claims = store
            .claim_batch(&req("align", "w"), 2, T0 + 10)
            .await
            .unwrap();
        assert_eq!(claims.len(), 2);
        let exact = store.counts("align").await.unwrap();
        assert_eq!((exact.pending, exact.running), (28, 2));
        // (limit, pending read, more pending)
        for (limit, pending, more) in [
            (100, 28, false),
            (29, 28, false),
            (28, 28, false),
            (27, 27, true),
            (5, 5, true),
            (1, 1, true),
            (0, 0, true),
        ] {
            let b = store.backlog("align", limit).await.unwrap();
            assert_eq!(b.step, "align");
            assert_eq!(
                (b.pending, b.more_pending, b.running),
                (pending, more, 2),
                "limit {limit}"
            );
            assert_eq!(
                b.oldest_pending_at, exact.oldest_pending_at,
                "limit {limit}"
            );
        }
        // Waiting tasks are not runnable; an unknown step has nothing.
        let j = store.backlog("joint", 10).await.unwrap();
        assert_eq!((j.pending, j.more_pending, j.running), (0, false, 0));
        assert_eq!(j.oldest_pending_at, None);
        let none = store.backlog("nothing", 10).await.unwrap();
        assert_eq!(
            (none.pending, none.more_pending, none.running),
            (0, false, 0)
        );
    }

    pub async fn import_is_idempotent(store: SharedStore) {
        let tasks = specs("align", 50);
        let r = store.import(&tasks, T0).await.unwrap();
        assert_eq!((r.inserted, r.unchanged), (50, 0));
        let c = claim(&store, "align", "w", T0).await;
        finish(&store, &c.lease(), Outcome::Succeeded, "w", 0, T0 + 1)
            .await
            .unwrap();
        let r = store.import(&tasks, T0 + 2).await.unwrap();
        assert_eq!((r.inserted, r.unchanged), (0, 50));
        assert!(r.conflicting.is_empty());
        let t = store.get("align", c.task.id()).await.unwrap().unwrap();
        assert_eq!(
            t.state,
            TaskState::Succeeded,
            "re-import must not reset progress"
        );
        assert_eq!(t.created_at, T0);
        let mut changed = tasks[1].clone();
        changed.script = "different".into();
        let r = store.import(&[changed], T0 + 3).await.unwrap();
        assert_eq!(r.inserted, 0);
        assert_eq!(r.conflicting, vec!["align/s00001".to_string()]);
        assert_eq!(
            store
                .get("align", "s00001")
                .await
                .unwrap()
                .unwrap()
                .spec
                .script,
            "echo 1"
        );
    }

    pub async fn spec_fields_round_trip(store: SharedStore) {
        let mut t = TaskSpec::new("align", "S1", "bwa mem \"$1\"");
        t.args = vec!["ref.fa".into(), "with space".into()];
        t.env = BTreeMap::from([("THREADS".to_string(), "8".to_string())]);
        t.priority = -3;
        t.max_attempts = 7;
        t.timeout_secs = Some(3600);
        t.retry_exit_codes = vec![75];
        t.fail_exit_codes = vec![2, 64];
        t.subtasks = vec!["echo a".into(), "echo b".into()];
        t.subtask_parallelism = Some(2);
        store.import(&[t.clone()], T0).await.unwrap();
        let got = store.get("align", "S1").await.unwrap().unwrap();
        assert_eq!(got.spec, t);
        assert_eq!(got.created_at, T0);
        assert_eq!(got.state, TaskState::Pending);
        let c = claim(&store, "align", "w", T0).await;
        assert_eq!(c.task.spec, t);
    }

    pub async fn dependencies_promote_and_fail(store: SharedStore) {
        store.import(&specs("align", 3), T0).await.unwrap();
        let deps: Vec<TaskSpec> = (0..3)
            .map(|i| {
                let mut t = TaskSpec::new("call", format!("s{i:05}"), "true");
                t.depends_on = vec!["align".into()];
                t
            })
            .collect();
        store.import(&deps, T0).await.unwrap();
        assert_eq!(store.counts("call").await.unwrap().waiting, 3);
        assert!(
            store.claim(&req("call", "w"), T0).await.unwrap().is_none(),
            "waiting tasks are not claimable"
        );
        // s00000 succeeds, s00001 fails permanently, s00002 still running.
        for (outcome, code) in [(Outcome::Succeeded, 0), (Outcome::FailedPermanently, 2)] {
            let c = claim(&store, "align", "w", T0).await;
            finish(&store, &c.lease(), outcome, "w", code, T0 + 1)
                .await
                .unwrap();
        }
        claim(&store, "align", "w", T0).await;
        let plain = anamo::store::graph::empty_graph();
        let promote =
            |at| anamo::store::promote::promote_waiting(store.as_ref(), &plain, "call", at);
        let r = promote(T0 + 2).await.unwrap();
        assert_eq!((r.promoted, r.failed), (1, 1));
        assert_eq!(
            store.get("call", "s00000").await.unwrap().unwrap().state,
            TaskState::Pending
        );
        let failed = store.get("call", "s00001").await.unwrap().unwrap();
        assert_eq!(failed.state, TaskState::Failed);
        assert_eq!(
            failed.reason.as_deref(),
            Some("dependency failed: align/s00001")
        );
        assert_eq!(
            store.get("call", "s00002").await.unwrap().unwrap().state,
            TaskState::Waiting
        );
        // Promotion is idempotent.
        let r = promote(T0 + 3).await.unwrap();
        assert_eq!((r.promoted, r.failed), (0, 0));
        let c = claim(&store, "call", "w", T0 + 4).await;
        assert_eq!(c.task.id(), "s00000");
    }

    pub async fn admin_requeue_cancel_delete(store: SharedStore) {
        store.import(&specs("align", 3), T0).await.unwrap();
        let c = claim(&store, "align", "w", T0).await;
        let id = c.task.spec.id.clone();
        // Running: requeue refused without force.
        match store.requeue("align", &id, false, T0 + 1).await {
            Err(StoreError::InvalidState {
                state: TaskState::Running,
                ..
            }) => {}
            other => panic!("expected InvalidState, got {other:?}"),
        }
        // Cancel revokes the lease.
        store.cancel("align", &id, T0 + 2).await.unwrap();
        assert_lease_lost(
            store
                .heartbeat(&LeaseRef::new("align", &id, &c.token), TTL, T0 + 3)
                .await,
        );
        let t = store.get("align", &id).await.unwrap().unwrap();
        assert_eq!(t.state, TaskState::Cancelled);
        assert_eq!(t.reason.as_deref(), Some("cancelled by user"));
        assert!(matches!(
            store.cancel("align", &id, T0 + 4).await,
            Err(StoreError::InvalidState { .. })
        ));
        // Requeue a cancelled task: pending again, attempts reset.
        store.requeue("align", &id, false, T0 + 5).await.unwrap();
        let t = store.get("align", &id).await.unwrap().unwrap();
        assert_eq!((t.state, t.attempts), (TaskState::Pending, 0));
        // Force-requeue of a running task revokes its lease.
        let c = claim(&store, "align", "w", T0 + 6).await;
        store
            .requeue("align", c.task.id(), true, T0 + 7)
            .await
            .unwrap();
        assert_lease_lost(store.heartbeat(&c.lease(), TTL, T0 + 8).await);
        // Not found errors.
        assert!(matches!(
            store.cancel("align", "nope", T0).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.requeue("align", "nope", false, T0).await,
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            store.delete("align", "nope").await,
            Err(StoreError::NotFound { .. })
        ));
        store.delete("align", "s00002").await.unwrap();
        assert!(store.get("align", "s00002").await.unwrap().is_none());
        assert_eq!(store.counts("align").await.unwrap().total(), 2);
    }

    pub async fn list_filters(store: SharedStore) {
        store.import(&specs("align", 4), T0).await.unwrap();
        store.import(&specs("call", 2), T0).await.unwrap();
        let c = claim(&store, "align", "w", T0).await;
        finish(&store, &c.lease(), Outcome::Succeeded, "w", 0, T0 + 1)
            .await
            .unwrap();
        let all = store.list(&TaskFilter::default()).await.unwrap();
        assert_eq!(all.len(), 6);
        let keys: Vec<_> = all
            .iter()
            .map(|t| format!("{}/{}", t.step(), t.id()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "listed by step then id");
        let done = store
            .list(&TaskFilter {
                step: Some("align".into()),
                state: Some(TaskState::Succeeded),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].id(), c.task.id());
        let by_id = store
            .list(&TaskFilter {
                id: Some("s00001".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_id.len(), 2, "the same sample in both steps");
        let limited = store
            .list(&TaskFilter {
                step: Some("align".into()),
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(limited.len(), 2);
    }

    pub async fn workers_and_status_docs(store: SharedStore) {
        let mut w = WorkerInfo {
            worker_id: "w-1".into(),
            step: "align".into(),
            instance_id: Some("i-123".into()),
            slots: 4,
            busy_slots: 2,
            started_at: T0,
            last_seen: T0,
            last_busy_at: T0,
            state: WorkerState::Active,
            stop_reason: None,
            drain_requested: false,
        };
        store
            .put_worker(&w, anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        w.busy_slots = 3;
        w.last_seen = T0 + 10;
        // A draining worker records why.
        w.state = WorkerState::Draining;
        w.stop_reason = Some(anamo::model::StopReason::Rebalance);
        store
            .put_worker(&w, anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        let mut other = w.clone();
        other.worker_id = "w-2".into();
        other.step = "call".into();
        store
            .put_worker(&other, anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        assert_eq!(
            store.list_workers(Some("align")).await.unwrap(),
            vec![w.clone()]
        );
        assert_eq!(store.list_workers(None).await.unwrap().len(), 2);
        store
            .remove_worker("w-1", anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        store
            .remove_worker("w-1", anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        assert!(store.list_workers(Some("align")).await.unwrap().is_empty());

        let doc = StatusDoc {
            name: "fleet/align".into(),
            updated_at: T0,
            body: serde_json::json!({"desired": 3}),
        };
        store
            .put_status(&doc, anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        let doc2 = StatusDoc {
            updated_at: T0 + 1,
            body: serde_json::json!({"desired": 4}),
            ..doc.clone()
        };
        store
            .put_status(&doc2, anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        assert_eq!(store.list_status().await.unwrap(), vec![doc2.clone()]);
        // One document by name: the latest write, and none for a name never written.
        assert_eq!(store.get_status("fleet/align").await.unwrap(), Some(doc2));
        assert_eq!(store.get_status("fleet/call").await.unwrap(), None);
    }

    pub async fn oldest_pending_spans_priorities(store: SharedStore) {
        let mut low = TaskSpec::new("align", "low", "true");
        low.priority = -5;
        store.import(&[low], T0).await.unwrap();
        let mut high = TaskSpec::new("align", "high", "true");
        high.priority = 9;
        store.import(&[high], T0 + 500).await.unwrap();
        store.import(&specs("align", 2), T0 + 900).await.unwrap();
        let c = store.counts("align").await.unwrap();
        assert_eq!(c.pending, 4);
        assert_eq!(
            c.oldest_pending_at,
            Some(T0),
            "the low-priority task waits longest"
        );
        // Claiming takes the high-priority task; the oldest is still the low one.
        let claim = claim(&store, "align", "w", T0 + 1_000).await;
        assert_eq!(claim.task.id(), "high");
        assert_eq!(
            store.counts("align").await.unwrap().oldest_pending_at,
            Some(T0)
        );
    }

    pub async fn finished_tasks_are_counted_by_time(store: SharedStore) {
        store.import(&specs("align", 4), T0).await.unwrap();
        for (i, outcome) in [
            Outcome::Succeeded,
            Outcome::FailedPermanently,
            Outcome::Succeeded,
        ]
        .into_iter()
        .enumerate()
        {
            let at = T0 + 1_000 * (i as i64 + 1);
            let c = claim(&store, "align", "w", at).await;
            finish(&store, &c.lease(), outcome, "w", i as i32, at)
                .await
                .unwrap();
        }
        assert_eq!(store.count_finished_since("align", T0).await.unwrap(), 3);
        assert_eq!(
            store
                .count_finished_since("align", T0 + 2_000)
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .count_finished_since("align", T0 + 3_001)
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.count_finished_since("call", T0).await.unwrap(), 0);
    }

    pub async fn leadership_is_exclusive_and_fenced(store: SharedStore) {
        let a = store
            .acquire_leadership("c1", "a", 10_000, T0)
            .await
            .unwrap()
            .expect("a leads");
        assert!(store
            .acquire_leadership("c1", "b", 10_000, T0 + 1)
            .await
            .unwrap()
            .is_none());
        let renewed = store
            .acquire_leadership("c1", "a", 10_000, T0 + 5_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            renewed.fencing, a.fencing,
            "renewal keeps the fencing number"
        );
        assert_eq!(renewed.expires_at, T0 + 15_000);
        assert!(store
            .acquire_leadership("c1", "b", 10_000, T0 + 14_000)
            .await
            .unwrap()
            .is_none());
        let b = store
            .acquire_leadership("c1", "b", 10_000, T0 + 15_001)
            .await
            .unwrap()
            .expect("b takes over after expiry");
        assert!(b.fencing > a.fencing);
        assert_eq!(
            store.current_leader("c1").await.unwrap().unwrap().owner,
            "b"
        );
        // Another cluster is independent.
        assert!(store
            .acquire_leadership("c2", "a", 10_000, T0 + 15_002)
            .await
            .unwrap()
            .is_some());
        // Release lets a follower in at once, with a still higher fencing number.
        store.release_leadership("c1", "a").await.unwrap(); // not the holder: no effect
        assert!(store
            .acquire_leadership("c1", "a", 10_000, T0 + 15_003)
            .await
            .unwrap()
            .is_none());
        store.release_leadership("c1", "b").await.unwrap();
        let a2 = store
            .acquire_leadership("c1", "a", 10_000, T0 + 15_004)
            .await
            .unwrap()
            .expect("free after release");
        assert!(a2.fencing > b.fencing);
    }
}

conformance!(
    claim_is_exclusive_under_concurrency,
    batch_claims_are_exclusive_under_concurrency,
    a_batch_takes_the_best_tasks_and_stops_at_the_end,
    claim_on_empty_step_returns_none,
    higher_priority_is_claimed_first,
    new_pending_tasks_come_before_earlier_candidates,
    a_candidate_taken_meanwhile_is_not_claimed_again,
    claim_sets_lease,
    heartbeat_extends_only_with_the_token,
    zombie_cannot_overwrite_a_reclaimed_task,
    expired_leases_are_requeued,
    a_gone_workers_tasks_are_requeued_after_the_ttl,
    expiry_after_max_attempts_fails_the_task,
    failed_attempts_retry_until_max,
    release_hands_back_without_counting,
    counts_are_per_step_and_state,
    pass_counts_are_each_steps_counts,
    backlog_is_counted_up_to_the_limit,
    import_is_idempotent,
    spec_fields_round_trip,
    dependencies_promote_and_fail,
    admin_requeue_cancel_delete,
    list_filters,
    workers_and_status_docs,
    drain_marks_are_fenced_and_outlive_heartbeats,
    finished_tasks_are_counted_by_time,
    recent_run_times_are_the_newest_successes,
    entered_since_reads_a_final_state_from_a_time_on,
    oldest_pending_spans_priorities,
    leadership_is_exclusive_and_fenced,
    graph_is_published_and_read_back,
    one_edge_and_scattered_children_wait_for_their_sample,
    gathers_per_key_part_and_over_a_whole_step,
    dependents_imported_before_their_upstream_wait,
    gather_failure_rules,
    cancelled_upstream_cancels_dependents,
    legacy_depends_on_without_a_graph,
    gather_over_ten_thousand_upstream_tasks,
    a_published_graph_holds_back_pending_tasks,
    a_deposed_leaders_writes_are_refused_and_change_nothing,
    the_current_leaders_writes_succeed,
    tasks_imported_before_a_scatter_are_expanded,
);
