//! Worker registrations: one row per worker.

use rusqlite::params;

use super::leader::fenced_execute;
use super::{json_err, map_err, SqliteStore};
use crate::model::WorkerInfo;
use crate::store::{Fence, Result};

pub(super) async fn put_worker(
    store: &SqliteStore,
    worker: &WorkerInfo,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "put worker";
    let body = serde_json::to_string(worker).map_err(|e| json_err(OP, "worker", e))?;
    let sql = "INSERT INTO workers (worker_id, step, body) VALUES (?1, ?2, ?3) \
               ON CONFLICT (worker_id) DO UPDATE SET step = excluded.step, body = excluded.body";
    let values = vec![
        worker.worker_id.clone().into(),
        worker.step.clone().into(),
        body.into(),
    ];
    fenced_execute(store, OP, fence, sql, values).await
}

pub(super) async fn remove_worker(
    store: &SqliteStore,
    worker_id: &str,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "remove worker";
    let sql = "DELETE FROM workers WHERE worker_id = ?1";
    let values = vec![worker_id.to_string().into()];
    fenced_execute(store, OP, fence, sql, values).await
}

pub(super) async fn list_workers(
    store: &SqliteStore,
    step: Option<&str>,
) -> Result<Vec<WorkerInfo>> {
    const OP: &str = "list workers";
    let step = step.map(str::to_string);
    store
        .run(OP, move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT w.body, d.worker_id IS NOT NULL FROM workers w \
                     LEFT JOIN worker_drains d ON d.worker_id = w.worker_id \
                     WHERE (?1 IS NULL OR w.step = ?1) ORDER BY w.worker_id",
                )
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(params![step], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, bool>(1)?))
                })
                .map_err(|e| map_err(OP, e))?;
            let mut out = Vec::new();
            for row in rows {
                let (body, drain) = row.map_err(|e| map_err(OP, e))?;
                let mut w: WorkerInfo =
                    serde_json::from_str(&body).map_err(|e| json_err(OP, "worker", e))?;
                w.drain_requested = drain;
                out.push(w);
            }
            Ok(out)
        })
        .await
}

/// The controller's drain mark: a row of `worker_drains` (removed with the worker's row).
pub(super) async fn set_worker_drain(
    store: &SqliteStore,
    step: &str,
    worker_id: &str,
    drain: bool,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "set worker drain";
    let (sql, values) = if drain {
        (
            "INSERT INTO worker_drains (worker_id, step) VALUES (?1, ?2) \
             ON CONFLICT (worker_id) DO UPDATE SET step = excluded.step",
            vec![worker_id.to_string().into(), step.to_string().into()],
        )
    } else {
        (
            "DELETE FROM worker_drains WHERE worker_id = ?1",
            vec![worker_id.to_string().into()],
        )
    };
    fenced_execute(store, OP, fence, sql, values).await
}

pub(super) async fn worker_drain_requested(store: &SqliteStore, worker_id: &str) -> Result<bool> {
    const OP: &str = "worker drain requested";
    let id = worker_id.to_string();
    store
        .run(OP, move |c| {
            c.prepare_cached("SELECT EXISTS (SELECT 1 FROM worker_drains WHERE worker_id = ?1)")
                .and_then(|mut s| s.query_row(params![id], |r| r.get::<_, bool>(0)))
                .map_err(|e| map_err(OP, e))
        })
        .await
}
