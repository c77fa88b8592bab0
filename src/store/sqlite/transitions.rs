//! State changes other than a worker's own: import, the controller's sweeps (requeue expired
//! leases, promote waiting tasks) and user actions (requeue, cancel, delete).

use rusqlite::{params, OptionalExtension};

use super::{get_task, json_err, map_err, write_tx, SqliteStore};
use crate::clock::Millis;
use crate::model::{ImportReport, RequeueReport, Task, TaskSpec, TaskState};
use crate::store::{initial_state, Fence, Result, StoreError};

pub(super) async fn import(
    store: &SqliteStore,
    tasks: &[TaskSpec],
    graph: &crate::pipeline::Graph,
    now: Millis,
) -> Result<ImportReport> {
    const OP: &str = "import";
    let tasks: Vec<(TaskSpec, TaskState)> = tasks
        .iter()
        .map(|t| (t.clone(), initial_state(graph, t)))
        .collect();
    store
        .run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            let mut report = ImportReport::default();
            {
                let mut existing = tx
                    .prepare_cached("SELECT spec FROM tasks WHERE step = ?1 AND id = ?2")
                    .map_err(|e| map_err(OP, e))?;
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO tasks (step, id, spec, state, priority, attempts, \
                     max_attempts, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?7)",
                    )
                    .map_err(|e| map_err(OP, e))?;
                for (spec, state) in &tasks {
                    let old: Option<String> = existing
                        .query_row(params![spec.step, spec.id], |r| r.get(0))
                        .optional()
                        .map_err(|e| map_err(OP, e))?;
                    match old {
                        Some(old) => {
                            let same = serde_json::from_str::<TaskSpec>(&old)
                                .map(|o| &o == spec)
                                .unwrap_or(false);
                            if same {
                                report.unchanged += 1;
                            } else {
                                report
                                    .conflicting
                                    .push(format!("{}/{}", spec.step, spec.id));
                            }
                        }
                        None => {
                            let json = serde_json::to_string(spec)
                                .map_err(|e| json_err(OP, "task spec", e))?;
                            insert
                                .execute(params![
                                    spec.step,
                                    spec.id,
                                    json,
                                    state.as_str(),
                                    spec.priority,
                                    spec.max_attempts,
                                    now
                                ])
                                .map_err(|e| map_err(OP, e))?;
                            report.inserted += 1;
                        }
                    }
                }
            }
            tx.commit().map_err(|e| map_err(OP, e))?;
            Ok(report)
        })
        .await
}

pub(super) async fn requeue_expired(
    store: &SqliteStore,
    step: &str,
    now: Millis,
    fence: Fence<'_>,
) -> Result<RequeueReport> {
    const OP: &str = "requeue expired";
    let step = step.to_string();
    let token = fence.token();
    store.run(OP, move |c| {
        let tx = write_tx(c, OP)?;
        super::leader::check_fence(&tx, OP, token.as_ref())?;
        let mut report = RequeueReport::default();
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE tasks SET \
                       state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, \
                       reason = CASE WHEN attempts >= max_attempts \
                         THEN 'lease expired on attempt ' || attempts || ' of ' || max_attempts \
                         ELSE 'lease expired' END, \
                       lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, \
                       updated_at = ?2 \
                     WHERE step = ?1 AND state = 'running' AND lease_expires_at < ?2 \
                     RETURNING id, state",
                )
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(params![step, now], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(|e| map_err(OP, e))?;
            for row in rows {
                let (id, state) = row.map_err(|e| map_err(OP, e))?;
                if state == "failed" {
                    report.failed.push(id);
                } else {
                    report.requeued.push(id);
                }
            }
        }
        tx.commit().map_err(|e| map_err(OP, e))?;
        report.requeued.sort();
        report.failed.sort();
        Ok(report)
    })
    .await
}

/// What a user's action does to one task, decided from the task as it is.
pub(super) enum Change {
    /// Nothing to do (the task is already where the action would put it).
    Nothing,
    /// Run `sql` with `?1` the step, `?2` the id, `?3` `value` and `?4` the time.
    Update {
        sql: &'static str,
        value: &'static str,
    },
}

/// Changes task `step/id` in one write transaction as `decide` says from the task read in it;
/// `decide`'s error is why the task's state does not allow the action.
pub(super) async fn change_task(
    store: &SqliteStore,
    op: &'static str,
    step: &str,
    id: &str,
    now: Millis,
    decide: impl FnOnce(&Task) -> std::result::Result<Change, String> + Send + 'static,
) -> Result<()> {
    let (step, id) = (step.to_string(), id.to_string());
    store
        .run(op, move |c| {
            let tx = write_tx(c, op)?;
            let task =
                get_task(&tx, op, &step, &id)?.ok_or_else(|| StoreError::not_found(&step, &id))?;
            let (sql, value) = match decide(&task) {
                Ok(Change::Nothing) => return Ok(()),
                Ok(Change::Update { sql, value }) => (sql, value),
                Err(what) => {
                    return Err(StoreError::InvalidState {
                        step,
                        id,
                        state: task.state,
                        what,
                    })
                }
            };
            tx.execute(sql, params![step, id, value, now])
                .map_err(|e| map_err(op, e))?;
            tx.commit().map_err(|e| map_err(op, e))
        })
        .await
}

pub(super) async fn requeue(
    store: &SqliteStore,
    step: &str,
    id: &str,
    force: bool,
    now: Millis,
) -> Result<()> {
    change_task(store, "requeue", step, id, now, move |task| {
        match task.state {
            TaskState::Pending | TaskState::Waiting => Ok(Change::Nothing),
            TaskState::Running if !force => {
                Err("it is running; use --force to revoke its lease and requeue it".into())
            }
            _ => Ok(Change::Update {
                sql: "UPDATE tasks SET state = ?3, attempts = 0, lease_owner = NULL, \
                  lease_token = NULL, lease_expires_at = NULL, reason = NULL, retry_at = NULL, \
                  held_from = NULL, updated_at = ?4 WHERE step = ?1 AND id = ?2",
                value: requeue_target(&task.spec).as_str(),
            }),
        }
    })
    .await
}

pub(super) async fn cancel(store: &SqliteStore, step: &str, id: &str, now: Millis) -> Result<()> {
    change_task(store, "cancel", step, id, now, |task| {
        if task.state.is_final() {
            return Err(
                "only waiting, pending, held, retrying or running tasks can be cancelled".into(),
            );
        }
        Ok(Change::Update {
            sql: "UPDATE tasks SET state = ?3, lease_owner = NULL, lease_token = NULL, \
                  lease_expires_at = NULL, reason = 'cancelled by user', retry_at = NULL, \
                  held_from = NULL, updated_at = ?4 WHERE step = ?1 AND id = ?2",
            value: TaskState::Cancelled.as_str(),
        })
    })
    .await
}

pub(super) async fn delete(store: &SqliteStore, step: &str, id: &str) -> Result<()> {
    const OP: &str = "delete";
    let (step, id) = (step.to_string(), id.to_string());
    store
        .run(OP, move |c| {
            let n = c
                .execute(
                    "DELETE FROM tasks WHERE step = ?1 AND id = ?2",
                    params![step, id],
                )
                .map_err(|e| map_err(OP, e))?;
            if n == 0 {
                Err(StoreError::not_found(&step, &id))
            } else {
                Ok(())
            }
        })
        .await
}

/// The state a requeued task returns to: waiting when it has dependencies (so they are checked
/// again), pending otherwise.
fn requeue_target(spec: &TaskSpec) -> TaskState {
    spec.initial_state()
}
