//! Claiming: one transaction in which each claimed task is one atomic UPDATE of the best
//! pending task, with its own lease token.

use rusqlite::{params, OptionalExtension};

use super::{map_err, task_from_row, write_tx, SqliteStore, TASK_COLUMNS};
use crate::clock::Millis;
use crate::model::{Claim, ClaimRequest};
use crate::store::{new_token, Result};

pub(super) async fn claim_batch(
    store: &SqliteStore,
    req: &ClaimRequest,
    max: usize,
    now: Millis,
) -> Result<Vec<Claim>> {
    const OP: &str = "claim";
    let req = req.clone();
    store
        .run(OP, move |c| {
            let expires_at = now + req.ttl_ms;
            // One transaction, one statement per task: each selects the best pending task and
            // takes it atomically with its own lease token.
            let tx = write_tx(c, OP)?;
            let mut claims = Vec::new();
            {
                let mut take = tx
                    .prepare_cached(&format!(
                        "UPDATE tasks SET state = 'running', lease_owner = ?2, lease_token = ?3, \
                     lease_expires_at = ?4, attempts = attempts + 1, updated_at = ?5 \
                     WHERE step = ?1 AND id = (SELECT id FROM tasks WHERE step = ?1 AND \
                     state = 'pending' ORDER BY priority DESC, updated_at, id LIMIT 1) \
                     AND state = 'pending' RETURNING {TASK_COLUMNS}"
                    ))
                    .map_err(|e| map_err(OP, e))?;
                while claims.len() < max.max(1) {
                    let token = new_token();
                    let Some(raw) = take
                        .query_row(
                            params![req.step, req.owner, token, expires_at, now],
                            task_from_row,
                        )
                        .optional()
                        .map_err(|e| map_err(OP, e))?
                    else {
                        break;
                    };
                    claims.push(Claim {
                        task: raw.into_task(OP)?,
                        token,
                        expires_at,
                    });
                }
            }
            tx.commit().map_err(|e| map_err(OP, e))?;
            Ok(claims)
        })
        .await
}
