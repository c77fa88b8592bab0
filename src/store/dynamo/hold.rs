//! Holding and resuming tasks (`sample hold` / `sample resume`) and the housekeeping that
//! makes `retrying` tasks pending again once their retry delay has passed.
//!
//! Held and retrying tasks live in their own index partitions (`S#{step}#held#{shard}`,
//! `S#{step}#retrying#{shard}`), so claims, which read only the pending partition, never see them.
//! Retrying tasks sort by the time they are due, so finding the due ones is one Query per
//! shard that reads only them.

use futures::{StreamExt, TryStreamExt};

use super::expr::Expr;
use super::items::*;
use super::layout::{state_shard_pk, TaskKeys};
use super::{DynamoStore, Sk, SWEEP_CONCURRENCY};
use crate::clock::Millis;
use crate::model::TaskState;
use crate::store::{Result, StoreError};

pub(super) async fn hold(store: &DynamoStore, step: &str, id: &str, now: Millis) -> Result<()> {
    let shards = store.step_shards(step).await?;
    store
        .user_action("hold", step, id, |task| match task.state {
            TaskState::Held => Ok(None),
            TaskState::Pending | TaskState::Waiting => Ok(Some(
                Expr::new()
                    .transition(&TaskKeys::moved(
                        step,
                        id,
                        TaskState::Held,
                        task.spec.priority,
                        now,
                        shards,
                    ))
                    .set(HELD_FROM, s(task.state.as_str()))
                    .set(REASON, s("held by user")),
            )),
            state => Err(StoreError::InvalidState {
                step: step.to_string(),
                id: id.to_string(),
                state,
                what: "only pending or waiting tasks can be held".into(),
            }),
        })
        .await
}

pub(super) async fn resume(store: &DynamoStore, step: &str, id: &str, now: Millis) -> Result<()> {
    let shards = store.step_shards(step).await?;
    store
        .user_action("resume", step, id, |task| {
            if task.state != TaskState::Held {
                return Err(StoreError::InvalidState {
                    step: step.to_string(),
                    id: id.to_string(),
                    state: task.state,
                    what: "only held tasks can be resumed".into(),
                });
            }
            let back = task.held_from.unwrap_or(TaskState::Pending);
            Ok(Some(
                Expr::new()
                    .transition(&TaskKeys::moved(
                        step,
                        id,
                        back,
                        task.spec.priority,
                        now,
                        shards,
                    ))
                    .remove(HELD_FROM)
                    .remove(REASON),
            ))
        })
        .await?;
    store.forget_leftovers();
    Ok(())
}

pub(super) async fn retry_due(store: &DynamoStore, step: &str, now: Millis) -> Result<u64> {
    const OP: &str = "retry due";
    let shards = store.step_shards(step).await?;
    // After an idle claim's counter reading, only the shards it counted tasks in; else all
    // (the controller's passes, a claimer's sweep: see `polls`).
    let retrying = match store.polls.take_retrying(step) {
        Some(counted) => counted,
        None => (0..shards).collect(),
    };
    let mut due = Vec::new();
    for shard in retrying {
        let pk = state_shard_pk(step, TaskState::Retrying, shard);
        let sk = Sk::LessThan(ts13(now + 1));
        due.extend(store.query_all(OP, &pk, sk, None).await?);
    }
    let moved: Vec<bool> = futures::stream::iter(due)
        .map(|item| async move {
            let r = Reader::new(OP, &item);
            let id = r.s(ID)?;
            let priority: i32 = r.opt_n(PRIORITY)?.unwrap_or(0);
            let e = Expr::new()
                .transition(&TaskKeys::moved(
                    step,
                    &id,
                    TaskState::Pending,
                    priority,
                    now,
                    shards,
                ))
                .remove(RETRY_AT)
                .cond_eq(STATE, s(TaskState::Retrying.as_str()));
            // A task cancelled or requeued meanwhile is skipped.
            Ok(store
                .update(OP, task_pk(step, &id), e, false)
                .await?
                .is_some())
        })
        .buffer_unordered(SWEEP_CONCURRENCY)
        .try_collect()
        .await?;
    let n = moved.into_iter().filter(|m| *m).count() as u64;
    if n > 0 {
        store.forget_leftovers();
    }
    Ok(n)
}
