//! Status documents the controller publishes: one row each.

use super::leader::fenced_execute;
use super::{json_err, map_err, SqliteStore};
use crate::store::{Fence, Result, StatusDoc};

pub(super) async fn put_status(
    store: &SqliteStore,
    doc: &StatusDoc,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "put status";
    let body = serde_json::to_string(&doc.body).map_err(|e| json_err(OP, "status", e))?;
    let sql = "INSERT INTO status (name, updated_at, body) VALUES (?1, ?2, ?3) \
               ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at, \
               body = excluded.body";
    let values = vec![doc.name.clone().into(), doc.updated_at.into(), body.into()];
    fenced_execute(store, OP, fence, sql, values).await
}

pub(super) async fn list_status(store: &SqliteStore) -> Result<Vec<StatusDoc>> {
    const OP: &str = "list status";
    store
        .run(OP, |c| {
            let mut stmt = c
                .prepare_cached("SELECT name, updated_at, body FROM status ORDER BY name")
                .map_err(|e| map_err(OP, e))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(|e| map_err(OP, e))?;
            let mut out = Vec::new();
            for row in rows {
                let (name, updated_at, body) = row.map_err(|e| map_err(OP, e))?;
                out.push(status_doc(OP, name, updated_at, &body)?);
            }
            Ok(out)
        })
        .await
}

pub(super) async fn get_status(store: &SqliteStore, name: &str) -> Result<Option<StatusDoc>> {
    const OP: &str = "get status";
    let name = name.to_string();
    store
        .run(OP, move |c| {
            let mut stmt = c
                .prepare_cached("SELECT updated_at, body FROM status WHERE name = ?1")
                .map_err(|e| map_err(OP, e))?;
            let mut rows = stmt.query([&name]).map_err(|e| map_err(OP, e))?;
            let Some(row) = rows.next().map_err(|e| map_err(OP, e))? else {
                return Ok(None);
            };
            let updated_at: i64 = row.get(0).map_err(|e| map_err(OP, e))?;
            let body: String = row.get(1).map_err(|e| map_err(OP, e))?;
            status_doc(OP, name, updated_at, &body).map(Some)
        })
        .await
}

/// A status row as a document (its body is JSON text).
fn status_doc(op: &'static str, name: String, updated_at: i64, body: &str) -> Result<StatusDoc> {
    Ok(StatusDoc {
        name,
        updated_at,
        body: serde_json::from_str(body).map_err(|e| json_err(op, "status", e))?,
    })
}
