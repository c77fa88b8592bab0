//! Holding and resuming tasks (`sample hold` / `sample resume`) and the housekeeping that
//! makes `retrying` tasks pending again once their retry delay has passed.

use rusqlite::params;

use super::{get_task, map_err, write_tx, SqliteStore};
use crate::clock::Millis;
use crate::model::TaskState;
use crate::store::{Result, StoreError};

pub(super) async fn hold(store: &SqliteStore, step: &str, id: &str, now: Millis) -> Result<()> {
    const OP: &str = "hold";
    let (step, id) = (step.to_string(), id.to_string());
    store
        .run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            let task =
                get_task(&tx, OP, &step, &id)?.ok_or_else(|| StoreError::not_found(&step, &id))?;
            match task.state {
                TaskState::Held => return Ok(()),
                TaskState::Pending | TaskState::Waiting => {}
                state => {
                    return Err(StoreError::InvalidState {
                        step,
                        id,
                        state,
                        what: "only pending or waiting tasks can be held".into(),
                    })
                }
            }
            tx.execute(
                "UPDATE tasks SET state = 'held', held_from = ?3, reason = 'held by user', \
                 updated_at = ?4 WHERE step = ?1 AND id = ?2",
                params![step, id, task.state.as_str(), now],
            )
            .map_err(|e| map_err(OP, e))?;
            tx.commit().map_err(|e| map_err(OP, e))
        })
        .await
}

pub(super) async fn resume(store: &SqliteStore, step: &str, id: &str, now: Millis) -> Result<()> {
    const OP: &str = "resume";
    let (step, id) = (step.to_string(), id.to_string());
    store
        .run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            let task =
                get_task(&tx, OP, &step, &id)?.ok_or_else(|| StoreError::not_found(&step, &id))?;
            if task.state != TaskState::Held {
                return Err(StoreError::InvalidState {
                    step,
                    id,
                    state: task.state,
                    what: "only held tasks can be resumed".into(),
                });
            }
            let back = task.held_from.unwrap_or(TaskState::Pending);
            tx.execute(
                "UPDATE tasks SET state = ?3, held_from = NULL, reason = NULL, updated_at = ?4 \
                 WHERE step = ?1 AND id = ?2",
                params![step, id, back.as_str(), now],
            )
            .map_err(|e| map_err(OP, e))?;
            tx.commit().map_err(|e| map_err(OP, e))
        })
        .await
}

pub(super) async fn retry_due(store: &SqliteStore, step: &str, now: Millis) -> Result<u64> {
    const OP: &str = "retry due";
    let step = step.to_string();
    store
        .run(OP, move |c| {
            // `updated_at` becomes the time the task turned pending, as for any other
            // transition, so it queues behind tasks that were pending before it.
            let n = c
                .execute(
                    "UPDATE tasks SET state = 'pending', retry_at = NULL, updated_at = ?2 \
                     WHERE step = ?1 AND state = 'retrying' AND retry_at <= ?2",
                    params![step, now],
                )
                .map_err(|e| map_err(OP, e))?;
            Ok(n as u64)
        })
        .await
}
