//! The running task's lease: heartbeat, complete and release, each one statement that holds only
//! while the task is running with the caller's token.

use rusqlite::{params, OptionalExtension};

use super::{json_err, map_err, parse_state, SqliteStore};
use crate::clock::Millis;
use crate::model::{Completion, LeaseRef, Outcome, TaskState};
use crate::store::{Result, StoreError};

pub(super) async fn heartbeat(
    store: &SqliteStore,
    lease: &LeaseRef,
    ttl_ms: Millis,
    now: Millis,
) -> Result<Millis> {
    const OP: &str = "heartbeat";
    let LeaseRef { step, id, token } = lease;
    let (step, id, token) = (step.to_string(), id.to_string(), token.to_string());
    store
        .run(OP, move |c| {
            let expires_at = now + ttl_ms;
            let n = c
                .execute(
                    "UPDATE tasks SET lease_expires_at = ?4, updated_at = ?5 \
                 WHERE step = ?1 AND id = ?2 AND state = 'running' AND lease_token = ?3",
                    params![step, id, token, expires_at, now],
                )
                .map_err(|e| map_err(OP, e))?;
            if n == 1 {
                Ok(expires_at)
            } else {
                Err(StoreError::lease_lost(&step, &id))
            }
        })
        .await
}

pub(super) async fn complete(
    store: &SqliteStore,
    lease: &LeaseRef,
    completion: &Completion,
    now: Millis,
) -> Result<TaskState> {
    const OP: &str = "complete";
    let LeaseRef { step, id, token } = lease;
    let (step, id, token) = (step.to_string(), id.to_string(), token.to_string());
    let completion = completion.clone();
    store
        .run(OP, move |c| {
            let result =
                serde_json::to_string(&completion.result).map_err(|e| json_err(OP, "result", e))?;
            let reason = completion.result.error.clone();
            // The target state depends on attempts, decided inside the same statement so the
            // token check and the transition are one atomic write.
            let (succeeded, permanent) = match completion.outcome {
                Outcome::Succeeded => (true, false),
                Outcome::Failed => (false, false),
                Outcome::FailedPermanently => (false, true),
            };
            // With a retry delay, the time a retried attempt waits depends on the attempts
            // so far: read them first (the token check below makes read-then-write safe).
            let retry_at: Option<Millis> = match (&completion.retry_delay, succeeded || permanent) {
                (Some(delay), false) => c
                    .query_row(
                        "SELECT attempts FROM tasks WHERE step = ?1 AND id = ?2",
                        params![step, id],
                        |r| r.get::<_, i64>(0),
                    )
                    .optional()
                    .map_err(|e| map_err(OP, e))?
                    .map(|attempts| {
                        let unit = rand::random::<f64>();
                        now + delay.jittered_ms(attempts.max(0) as u32, unit) as Millis
                    }),
                _ => None,
            };
            // Cached: one completion per task, the statement is compiled once per connection.
            let state: Option<String> = c
                .prepare_cached(
                    "UPDATE tasks SET \
                   state = CASE WHEN ?4 THEN 'succeeded' \
                                WHEN ?5 OR attempts >= max_attempts THEN 'failed' \
                                WHEN ?9 IS NOT NULL THEN 'retrying' \
                                ELSE 'pending' END, \
                   retry_at = CASE WHEN ?4 OR ?5 OR attempts >= max_attempts THEN NULL \
                                   ELSE ?9 END, \
                   lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, \
                   result = ?6, reason = CASE WHEN ?4 THEN NULL ELSE ?7 END, updated_at = ?8 \
                 WHERE step = ?1 AND id = ?2 AND state = 'running' AND lease_token = ?3 \
                 RETURNING state",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![
                            step, id, token, succeeded, permanent, result, reason, now, retry_at
                        ],
                        |r| r.get(0),
                    )
                    .optional()
                })
                .map_err(|e| map_err(OP, e))?;
            match state {
                Some(s) => parse_state(OP, &s),
                None => Err(StoreError::lease_lost(&step, &id)),
            }
        })
        .await
}

pub(super) async fn release(store: &SqliteStore, lease: &LeaseRef, now: Millis) -> Result<()> {
    const OP: &str = "release";
    let LeaseRef { step, id, token } = lease;
    let (step, id, token) = (step.to_string(), id.to_string(), token.to_string());
    store
        .run(OP, move |c| {
            let n = c
                .execute(
                    "UPDATE tasks SET state = 'pending', attempts = MAX(attempts - 1, 0), \
                 lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, \
                 reason = 'handed back by a draining worker', updated_at = ?4 \
                 WHERE step = ?1 AND id = ?2 AND state = 'running' AND lease_token = ?3",
                    params![step, id, token, now],
                )
                .map_err(|e| map_err(OP, e))?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::lease_lost(&step, &id))
            }
        })
        .await
}
