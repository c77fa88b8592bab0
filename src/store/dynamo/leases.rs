//! The running task's lease: heartbeat, complete and release, each one conditional write that
//! holds only while the task is running with the caller's token.

use super::expr::Expr;
use super::items::*;
use super::layout::TaskKeys;
use super::DynamoStore;
use crate::clock::Millis;
use crate::model::{Completion, LeaseRef, Outcome, TaskState, DEFAULT_MAX_ATTEMPTS};
use crate::store::{Result, StoreError};

impl DynamoStore {
    /// Reads a running task and checks the caller's token; `LeaseLost` otherwise.
    async fn leased_item(&self, op: &str, step: &str, id: &str, token: &str) -> Result<Item> {
        let item = self
            .get_task_item(op, step, id)
            .await?
            .ok_or_else(|| StoreError::lease_lost(step, id))?;
        let r = Reader::new(op, &item);
        if r.state()? != TaskState::Running || r.opt_s(LEASE_TOKEN)?.as_deref() != Some(token) {
            return Err(StoreError::lease_lost(step, id));
        }
        Ok(item)
    }
}

/// A heartbeat's write: only `lease_expires_at`, which the index does not project, so the
/// write touches no index partition (and `updated_at`, the time of the last state change,
/// stays).
pub(crate) fn heartbeat_update(token: &str, expires_at: Millis) -> Expr {
    Expr::new()
        .set(LEASE_EXPIRES_AT, n(expires_at))
        .cond_eq(STATE, s(TaskState::Running.as_str()))
        .cond_eq(LEASE_TOKEN, s(token))
}

pub(super) async fn heartbeat(
    store: &DynamoStore,
    lease: &LeaseRef,
    ttl_ms: Millis,
    now: Millis,
) -> Result<Millis> {
    const OP: &str = "heartbeat";
    let LeaseRef { step, id, token } = lease;
    let expires_at = now + ttl_ms;
    let e = heartbeat_update(token, expires_at);
    match store.update(OP, task_pk(step, id), e, false).await? {
        Some(_) => Ok(expires_at),
        None => Err(StoreError::lease_lost(step, id)),
    }
}

/// Where a completed attempt leaves its task.
pub(crate) struct Done {
    pub target: TaskState,
    pub priority: i32,
    pub retry_at: Option<Millis>,
    /// The result as JSON.
    pub result: String,
    pub reason: Option<String>,
}

/// A completion's write: the task moves to `done.target` with its result, on condition that
/// it is still running with `token`.
pub(crate) fn completion_update(
    step: &str,
    id: &str,
    token: &str,
    done: Done,
    now: Millis,
    shards: u32,
) -> Expr {
    Expr::new()
        .transition(&TaskKeys {
            step,
            id,
            state: done.target,
            priority: done.priority,
            updated_at: now,
            retry_at: done.retry_at.unwrap_or(0),
            lease_owner: None,
            shards,
        })
        .set_opt(RETRY_AT, done.retry_at.map(n))
        .remove_lease()
        .set(RESULT, s(done.result))
        .set_opt(REASON, done.reason.map(s))
        .cond_eq(STATE, s(TaskState::Running.as_str()))
        .cond_eq(LEASE_TOKEN, s(token))
}

pub(super) async fn complete(
    store: &DynamoStore,
    lease: &LeaseRef,
    completion: &Completion,
    now: Millis,
) -> Result<TaskState> {
    const OP: &str = "complete";
    let LeaseRef { step, id, token } = lease;
    let result = serde_json::to_string(&completion.result)
        .map_err(|e| StoreError::backend(OP, format!("cannot encode the result: {e}")))?;
    let (target, priority, retry_at) = match completion.outcome {
        Outcome::Succeeded => (TaskState::Succeeded, 0, None),
        Outcome::FailedPermanently => (TaskState::Failed, 0, None),
        Outcome::Failed => {
            // Whether the task is retried (and after how long) depends on its attempts: read
            // them (the token condition on the write below makes the read-then-write safe).
            let item = store.leased_item(OP, step, id, token).await?;
            let r = Reader::new(OP, &item);
            let attempts: u32 = r.opt_n(ATTEMPTS)?.unwrap_or(0);
            let max: u32 = r.opt_n(MAX_ATTEMPTS)?.unwrap_or(DEFAULT_MAX_ATTEMPTS);
            let priority: i32 = r.opt_n(PRIORITY)?.unwrap_or(0);
            match (attempts >= max, &completion.retry_delay) {
                (true, _) => (TaskState::Failed, priority, None),
                (false, None) => (TaskState::Pending, priority, None),
                (false, Some(delay)) => {
                    let wait = delay.jittered_ms(attempts, rand::random::<f64>());
                    (TaskState::Retrying, priority, Some(now + wait as Millis))
                }
            }
        }
    };
    let reason = match completion.outcome {
        Outcome::Succeeded => None,
        _ => completion.result.error.clone(),
    };
    let shards = store.step_shards(step).await?;
    let done = Done {
        target,
        priority,
        retry_at,
        result,
        reason,
    };
    let e = completion_update(step, id, token, done, now, shards);
    match store.update(OP, task_pk(step, id), e, false).await? {
        Some(_) => {
            if target == TaskState::Pending {
                store.forget_leftovers();
            }
            Ok(target)
        }
        None => Err(StoreError::lease_lost(step, id)),
    }
}

pub(super) async fn release(store: &DynamoStore, lease: &LeaseRef, now: Millis) -> Result<()> {
    const OP: &str = "release";
    let LeaseRef { step, id, token } = lease;
    let item = store.leased_item(OP, step, id, token).await?;
    let r = Reader::new(OP, &item);
    let attempts: u32 = r.opt_n(ATTEMPTS)?.unwrap_or(0);
    let priority: i32 = r.opt_n(PRIORITY)?.unwrap_or(0);
    let shards = store.step_shards(step).await?;
    let e = Expr::new()
        .transition(&TaskKeys::moved(
            step,
            id,
            TaskState::Pending,
            priority,
            now,
            shards,
        ))
        .remove_lease()
        .set(ATTEMPTS, n(attempts.saturating_sub(1)))
        .set(REASON, s("handed back by a draining worker"))
        .cond_eq(STATE, s(TaskState::Running.as_str()))
        .cond_eq(LEASE_TOKEN, s(token));
    match store.update(OP, task_pk(step, id), e, false).await? {
        Some(_) => {
            store.forget_leftovers();
            Ok(())
        }
        None => Err(StoreError::lease_lost(step, id)),
    }
}
