//! The controller's leadership lease: one row per cluster whose fencing number grows every
//! time leadership changes hands.

use rusqlite::{params, Connection, OptionalExtension};

use super::{map_err, write_tx, SqliteStore};
use crate::clock::Millis;
use crate::store::{Fence, LeaderToken, Leadership, Result, StoreError};

/// Refuses a leader's write once its leadership moved on; run inside the write's transaction
/// (so the check and the write are one atomic step). Unfenced writes (`None`) pass.
/// Runs `sql` with `values` in one write transaction, refused (as [`check_fence`] says) once
/// `fence` no longer leads.
pub(super) async fn fenced_execute(
    store: &SqliteStore,
    op: &'static str,
    fence: Fence<'_>,
    sql: &'static str,
    values: Vec<rusqlite::types::Value>,
) -> Result<()> {
    let token = fence.token();
    store
        .run(op, move |c| {
            let tx = super::write_tx(c, op)?;
            check_fence(&tx, op, token.as_ref())?;
            tx.execute(sql, rusqlite::params_from_iter(values))
                .map_err(|e| super::map_err(op, e))?;
            tx.commit().map_err(|e| super::map_err(op, e))
        })
        .await
}

pub(super) fn check_fence(c: &Connection, op: &str, token: Option<&LeaderToken>) -> Result<()> {
    let Some(token) = token else {
        return Ok(());
    };
    let current: Option<(String, i64)> = c
        .query_row(
            "SELECT owner, fencing FROM leaders WHERE cluster = ?1",
            params![token.cluster()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| map_err(op, e))?;
    match current {
        Some((owner, fencing))
            if owner == token.owner() && u64::try_from(fencing) == Ok(token.fencing()) =>
        {
            Ok(())
        }
        _ => Err(StoreError::fenced(op, token)),
    }
}

pub(super) async fn acquire_leadership(
    store: &SqliteStore,
    cluster: &str,
    owner: &str,
    ttl_ms: Millis,
    now: Millis,
) -> Result<Option<Leadership>> {
    const OP: &str = "acquire leadership";
    let (cluster, owner) = (cluster.to_string(), owner.to_string());
    store
        .run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            let current: Option<(String, i64, i64)> = tx
                .query_row(
                    "SELECT owner, fencing, expires_at FROM leaders WHERE cluster = ?1",
                    params![cluster],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(|e| map_err(OP, e))?;
            let fencing = match current {
                Some((holder, fencing, expires)) if holder == owner => {
                    let _ = expires;
                    fencing
                }
                Some((_, _, expires)) if expires >= now => return Ok(None),
                Some((_, fencing, _)) => fencing + 1,
                None => 1,
            };
            let expires_at = now + ttl_ms;
            tx.execute(
            "INSERT INTO leaders (cluster, owner, fencing, expires_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (cluster) DO UPDATE SET owner = excluded.owner, \
             fencing = excluded.fencing, expires_at = excluded.expires_at",
            params![cluster, owner, fencing, expires_at],
        )
        .map_err(|e| map_err(OP, e))?;
            tx.commit().map_err(|e| map_err(OP, e))?;
            Ok(Some(Leadership {
                owner,
                fencing: fencing as u64,
                expires_at,
            }))
        })
        .await
}

pub(super) async fn release_leadership(
    store: &SqliteStore,
    cluster: &str,
    owner: &str,
) -> Result<()> {
    const OP: &str = "release leadership";
    let (cluster, owner) = (cluster.to_string(), owner.to_string());
    // Keep the row (and its fencing number) but expire it, so the next holder's fencing
    // number is still higher.
    store
        .run(OP, move |c| {
            c.execute(
                "UPDATE leaders SET expires_at = 0 WHERE cluster = ?1 AND owner = ?2",
                params![cluster, owner],
            )
            .map(|_| ())
            .map_err(|e| map_err(OP, e))
        })
        .await
}

pub(super) async fn current_leader(
    store: &SqliteStore,
    cluster: &str,
) -> Result<Option<Leadership>> {
    const OP: &str = "current leader";
    let cluster = cluster.to_string();
    store
        .run(OP, move |c| {
            c.query_row(
                "SELECT owner, fencing, expires_at FROM leaders WHERE cluster = ?1",
                params![cluster],
                |r| {
                    Ok(Leadership {
                        owner: r.get(0)?,
                        fencing: r.get::<_, i64>(1)? as u64,
                        expires_at: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(|e| map_err(OP, e))
        })
        .await
}
