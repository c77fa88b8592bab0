//! The primitives the pipeline graph's promotion (`store::promote`) is built from: states of
//! given tasks, ids and states of a step's tasks, and conditional moves of one task.

use std::collections::HashMap;

use rusqlite::{params, params_from_iter, OptionalExtension};

use super::{map_err, parse_state, SqliteStore};
use crate::clock::Millis;
use crate::model::TaskState;
use crate::store::{Entered, Result};

pub(super) async fn task_states(
    store: &SqliteStore,
    step: &str,
    ids: &[String],
) -> Result<HashMap<String, TaskState>> {
    const OP: &str = "task states";
    let (step, ids) = (step.to_string(), ids.to_vec());
    store
        .run(OP, move |c| {
            let tx = c.transaction().map_err(|e| map_err(OP, e))?;
            let mut out = HashMap::new();
            {
                let mut stmt = tx
                    .prepare_cached("SELECT state FROM tasks WHERE step = ?1 AND id = ?2")
                    .map_err(|e| map_err(OP, e))?;
                for id in ids {
                    let state: Option<String> = stmt
                        .query_row(params![step, id], |r| r.get(0))
                        .optional()
                        .map_err(|e| map_err(OP, e))?;
                    if let Some(state) = state {
                        out.insert(id, parse_state(OP, &state)?);
                    }
                }
            }
            tx.commit().map_err(|e| map_err(OP, e))?;
            Ok(out)
        })
        .await
}

pub(super) async fn step_ids(
    store: &SqliteStore,
    step: &str,
    states: &[TaskState],
    prefix: &str,
) -> Result<Vec<(String, TaskState)>> {
    const OP: &str = "step ids";
    if states.is_empty() {
        return Ok(Vec::new());
    }
    let marks: Vec<String> = (0..states.len()).map(|i| format!("?{}", i + 4)).collect();
    let sql = format!(
        "SELECT id, state FROM tasks WHERE step = ?1 AND id >= ?2 AND substr(id, 1, ?3) = ?2 \
         AND state IN ({}) ORDER BY id",
        marks.join(", ")
    );
    let mut values: Vec<rusqlite::types::Value> = vec![
        step.to_string().into(),
        prefix.to_string().into(),
        (prefix.chars().count() as i64).into(),
    ];
    values.extend(states.iter().map(|s| s.as_str().to_string().into()));
    store
        .run(OP, move |c| {
            let mut stmt = c.prepare_cached(&sql).map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(params_from_iter(values), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(|e| map_err(OP, e))?;
            let mut out = Vec::new();
            for row in rows {
                let (id, state) = row.map_err(|e| map_err(OP, e))?;
                out.push((id, parse_state(OP, &state)?));
            }
            Ok(out)
        })
        .await
}

pub(super) async fn entered_since(
    store: &SqliteStore,
    step: &str,
    state: TaskState,
    since: Millis,
) -> Result<Vec<Entered>> {
    const OP: &str = "entered since";
    if !state.is_final() {
        return Err(Entered::not_final(state));
    }
    let (step, state) = (step.to_string(), state.as_str());
    store
        .run(OP, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT id, updated_at, reason FROM tasks \
                     WHERE step = ?1 AND state = ?2 AND updated_at >= ?3 ORDER BY updated_at, id",
                )
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(params![step, state, since], |r| {
                    Ok(Entered {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        reason: r.get(2)?,
                    })
                })
                .map_err(|e| map_err(OP, e))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| map_err(OP, e))
        })
        .await
}

pub(super) async fn settle_waiting(
    store: &SqliteStore,
    step: &str,
    id: &str,
    _priority: i32,
    to: TaskState,
    reason: Option<&str>,
    now: Millis,
) -> Result<bool> {
    const OP: &str = "settle waiting";
    let (step, id, reason) = (step.to_string(), id.to_string(), reason.map(str::to_string));
    store
        .run(OP, move |c| {
            c.execute(
                "UPDATE tasks SET state = ?3, reason = ?4, updated_at = ?5 \
                 WHERE step = ?1 AND id = ?2 AND state = 'waiting'",
                params![step, id, to.as_str(), reason, now],
            )
            .map(|n| n > 0)
            .map_err(|e| map_err(OP, e))
        })
        .await
}

pub(super) async fn hold_back(
    store: &SqliteStore,
    step: &str,
    id: &str,
    now: Millis,
) -> Result<bool> {
    const OP: &str = "hold back";
    let (step, id) = (step.to_string(), id.to_string());
    store
        .run(OP, move |c| {
            c.execute(
                "UPDATE tasks SET state = 'waiting', reason = NULL, updated_at = ?3 \
                 WHERE step = ?1 AND id = ?2 AND state = 'pending' AND attempts = 0",
                params![step, id, now],
            )
            .map(|n| n > 0)
            .map_err(|e| map_err(OP, e))
        })
        .await
}
