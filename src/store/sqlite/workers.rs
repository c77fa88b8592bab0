//! Worker registrations: one row per worker.

use rusqlite::params;

use super::leader::check_fence;
use super::{json_err, map_err, write_tx, SqliteStore};
use crate::model::WorkerInfo;
use crate::store::{Fence, Result};

pub(super) async fn put_worker(
    store: &SqliteStore,
    worker: &WorkerInfo,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "put worker";
    let body = serde_json::to_string(worker).map_err(|e| json_err(OP, "worker", e))?;
    let (wid, step) = (worker.worker_id.clone(), worker.step.clone());
    let token = fence.token();
    store
        .run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            check_fence(&tx, OP, token.as_ref())?;
            tx.execute(
                "INSERT INTO workers (worker_id, step, body) VALUES (?1, ?2, ?3) \
             ON CONFLICT (worker_id) DO UPDATE SET step = excluded.step, body = excluded.body",
                params![wid, step, body],
            )
            .map_err(|e| map_err(OP, e))?;
            tx.commit().map_err(|e| map_err(OP, e))
        })
        .await
}

pub(super) async fn remove_worker(
    store: &SqliteStore,
    worker_id: &str,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "remove worker";
    let wid = worker_id.to_string();
    let token = fence.token();
    store
        .run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            check_fence(&tx, OP, token.as_ref())?;
            tx.execute("DELETE FROM workers WHERE worker_id = ?1", params![wid])
                .map_err(|e| map_err(OP, e))?;
            tx.commit().map_err(|e| map_err(OP, e))
        })
        .await
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
