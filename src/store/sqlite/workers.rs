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
                    "SELECT body FROM workers WHERE (?1 IS NULL OR step = ?1) ORDER BY worker_id",
                )
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map(params![step], |r| r.get::<_, String>(0))
                .map_err(|e| map_err(OP, e))?;
            let mut out = Vec::new();
            for row in rows {
                let body = row.map_err(|e| map_err(OP, e))?;
                out.push(serde_json::from_str(&body).map_err(|e| json_err(OP, "worker", e))?);
            }
            Ok(out)
        })
        .await
}
