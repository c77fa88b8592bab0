//! Reads of tasks: one task, lists, exact counts, the bounded backlog a reconcile pass needs,
//! the step registry and finished counts.

use rusqlite::params;

use super::{get_task, json_err, map_err, parse_state, task_from_row, SqliteStore, TASK_COLUMNS};
use crate::clock::Millis;
use crate::model::{Backlog, StepCounts, Task, TaskFilter, TaskResult, TaskState};
use crate::store::Result;

pub(super) async fn get(store: &SqliteStore, step: &str, id: &str) -> Result<Option<Task>> {
    let (step, id) = (step.to_string(), id.to_string());
    store
        .run("get", move |c| get_task(c, "get", &step, &id))
        .await
}

pub(super) async fn list(store: &SqliteStore, filter: &TaskFilter) -> Result<Vec<Task>> {
    const OP: &str = "list";
    let filter = filter.clone();
    store
        .run(OP, move |c| {
            let limit = filter.limit.map(|l| l as i64).unwrap_or(-1);
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR step = ?1) \
                 AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR id = ?3) \
                 ORDER BY step, id LIMIT ?4"
                ))
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(
                    params![
                        filter.step,
                        filter.state.map(|s| s.as_str()),
                        filter.id,
                        limit
                    ],
                    task_from_row,
                )
                .map_err(|e| map_err(OP, e))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(|e| map_err(OP, e))?.into_task(OP)?);
            }
            Ok(out)
        })
        .await
}

pub(super) async fn counts(store: &SqliteStore, step: &str) -> Result<StepCounts> {
    const OP: &str = "counts";
    let step = step.to_string();
    store
        .run(OP, move |c| {
            let mut counts = StepCounts {
                step: step.clone(),
                ..Default::default()
            };
            let mut stmt = c
                .prepare_cached(
                    "SELECT state, COUNT(*), MIN(updated_at) FROM tasks WHERE step = ?1 \
                 GROUP BY state",
                )
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(params![step], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(|e| map_err(OP, e))?;
            for row in rows {
                let (state, n, oldest) = row.map_err(|e| map_err(OP, e))?;
                let state = parse_state(OP, &state)?;
                counts.set(state, n as u64);
                if state == TaskState::Pending {
                    counts.oldest_pending_at = oldest;
                }
            }
            Ok(counts)
        })
        .await
}

pub(super) async fn backlog(
    store: &SqliteStore,
    step: &str,
    pending_limit: u64,
) -> Result<Backlog> {
    const OP: &str = "backlog";
    let step = step.to_string();
    // One more than the limit tells whether there are more.
    let probe = i64::try_from(pending_limit.saturating_add(1)).unwrap_or(i64::MAX);
    store
        .run(OP, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT \
                 (SELECT COUNT(*) FROM (SELECT 1 FROM tasks \
                    WHERE step = ?1 AND state = 'pending' LIMIT ?2)), \
                 (SELECT COUNT(*) FROM tasks WHERE step = ?1 AND state = 'running'), \
                 (SELECT MIN(updated_at) FROM tasks WHERE step = ?1 AND state = 'pending')",
                )
                .map_err(|e| map_err(OP, e))?;
            let (pending, running, oldest) = stmt
                .query_row(params![step, probe], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                    ))
                })
                .map_err(|e| map_err(OP, e))?;
            let pending = pending.max(0) as u64;
            Ok(Backlog {
                step: step.clone(),
                pending: pending.min(pending_limit),
                more_pending: pending > pending_limit,
                running: running.max(0) as u64,
                oldest_pending_at: oldest,
            })
        })
        .await
}

pub(super) async fn steps(store: &SqliteStore) -> Result<Vec<String>> {
    const OP: &str = "steps";
    store
        .run(OP, |c| {
            let mut stmt = c
                .prepare_cached("SELECT DISTINCT step FROM tasks ORDER BY step")
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map([], |r| r.get(0))
                .map_err(|e| map_err(OP, e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| map_err(OP, e))
        })
        .await
}

pub(super) async fn count_finished_since(
    store: &SqliteStore,
    step: &str,
    since: Millis,
) -> Result<u64> {
    const OP: &str = "count finished";
    let step = step.to_string();
    store
        .run(OP, move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM tasks WHERE step = ?1 AND state IN ('succeeded', 'failed') \
             AND updated_at >= ?2",
                params![step, since],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| map_err(OP, e))
        })
        .await
}

/// Run times of the step's newest succeeded tasks (`LIMIT`: the rows decoded are bounded;
/// SQLite finds the newest through the `tasks_by_state` index's step and state).
pub(super) async fn recent_run_times(
    store: &SqliteStore,
    step: &str,
    limit: usize,
) -> Result<Vec<Millis>> {
    const OP: &str = "recent run times";
    let step = step.to_string();
    store
        .run(OP, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT result FROM tasks WHERE step = ?1 AND state = 'succeeded' \
                     ORDER BY updated_at DESC LIMIT ?2",
                )
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(params![step, limit as i64], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .map_err(|e| map_err(OP, e))?;
            let mut out = Vec::new();
            for row in rows {
                let Some(text) = row.map_err(|e| map_err(OP, e))? else {
                    continue;
                };
                let result: TaskResult =
                    serde_json::from_str(&text).map_err(|e| json_err(OP, "result", e))?;
                out.push(result.duration_ms.max(0));
            }
            Ok(out)
        })
        .await
}
