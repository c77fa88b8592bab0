//! Holding and resuming tasks (`sample hold` / `sample resume`) and the housekeeping that
//! makes `retrying` tasks pending again once their retry delay has passed.

use rusqlite::params;

use super::transitions::{change_task, Change};
use super::{map_err, SqliteStore};
use crate::clock::Millis;
use crate::model::TaskState;
use crate::store::Result;

pub(super) async fn hold(store: &SqliteStore, step: &str, id: &str, now: Millis) -> Result<()> {
    change_task(store, "hold", step, id, now, |task| match task.state {
        TaskState::Held => Ok(Change::Nothing),
        TaskState::Pending | TaskState::Waiting => Ok(Change::Update {
            sql: "UPDATE tasks SET state = 'held', held_from = ?3, reason = 'held by user', \
                  updated_at = ?4 WHERE step = ?1 AND id = ?2",
            value: task.state.as_str(),
        }),
        _ => Err("only pending or waiting tasks can be held".into()),
    })
    .await
}

pub(super) async fn resume(store: &SqliteStore, step: &str, id: &str, now: Millis) -> Result<()> {
    change_task(store, "resume", step, id, now, |task| {
        if task.state != TaskState::Held {
            return Err("only held tasks can be resumed".into());
        }
        Ok(Change::Update {
            sql: "UPDATE tasks SET state = ?3, held_from = NULL, reason = NULL, updated_at = ?4 \
                  WHERE step = ?1 AND id = ?2",
            value: task.held_from.unwrap_or(TaskState::Pending).as_str(),
        })
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
