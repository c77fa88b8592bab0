//! SQLite store for the embedded default (`anamo up`). Same semantics as DynamoDB; every
//! state transition is one SQL statement (or one transaction), so concurrent workers in other
//! processes sharing the file are safe.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use super::{new_token, Leadership, RequestCounter, Result, StatusDoc, StoreError, TaskStore};
use crate::clock::Millis;
use crate::model::{
    Backlog, Claim, ClaimRequest, Completion, ImportReport, Lease, Outcome, PromoteReport,
    RequeueReport, StepCounts, Task, TaskFilter, TaskResult, TaskSpec, TaskState, WorkerInfo,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS tasks (
    step             TEXT NOT NULL,
    id               TEXT NOT NULL,
    spec             TEXT NOT NULL,
    state            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL,
    max_attempts     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_token      TEXT,
    lease_expires_at INTEGER,
    result           TEXT,
    reason           TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    PRIMARY KEY (step, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_state ON tasks (step, state, priority DESC, updated_at, id);
CREATE INDEX IF NOT EXISTS tasks_by_lease ON tasks (step, state, lease_expires_at);
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    step      TEXT NOT NULL,
    body      TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS status (
    name       TEXT PRIMARY KEY,
    updated_at INTEGER NOT NULL,
    body       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS leaders (
    cluster    TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    fencing    INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
"#;

const TASK_COLUMNS: &str = "spec, state, attempts, lease_owner, lease_token, lease_expires_at, \
                            result, reason, created_at, updated_at";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    requests: Arc<RequestCounter>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its schema.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::unavailable("open", format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path).map_err(|e| map_err("open", e))?;
        // Workers in other processes share the file: wait for locks instead of failing.
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(|e| map_err("open", e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| map_err("open", e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| map_err("open", e))?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| map_err("create schema", e))?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
            requests: Arc::new(RequestCounter::default()),
        })
    }

    /// Runs `f` on the connection off the async runtime.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.requests.add(1);
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::backend(op, "connection mutex poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::backend(op, e))?
    }
}

fn map_err(op: &str, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen)
        | Some(ErrorCode::SystemIoFailure | ErrorCode::ReadOnly | ErrorCode::DiskFull) => {
            StoreError::unavailable(op, e)
        }
        _ => StoreError::backend(op, e),
    }
}

fn json_err(op: &str, what: &str, e: serde_json::Error) -> StoreError {
    StoreError::backend(op, format!("malformed {what}: {e}"))
}

fn parse_state(op: &str, s: &str) -> Result<TaskState> {
    s.parse().map_err(|e: String| StoreError::backend(op, e))
}

/// Reads a task row selected with `TASK_COLUMNS`.
fn task_from_row(row: &Row<'_>) -> rusqlite::Result<RawTask> {
    Ok(RawTask {
        spec: row.get(0)?,
        state: row.get(1)?,
        attempts: row.get(2)?,
        lease_owner: row.get(3)?,
        lease_token: row.get(4)?,
        lease_expires_at: row.get(5)?,
        result: row.get(6)?,
        reason: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    })
}

struct RawTask {
    spec: String,
    state: String,
    attempts: i64,
    lease_owner: Option<String>,
    lease_token: Option<String>,
    lease_expires_at: Option<i64>,
    result: Option<String>,
    reason: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl RawTask {
    fn into_task(self, op: &str) -> Result<Task> {
        let spec: TaskSpec =
            serde_json::from_str(&self.spec).map_err(|e| json_err(op, "task spec", e))?;
        let result = match self.result {
            Some(r) => Some(
                serde_json::from_str::<TaskResult>(&r).map_err(|e| json_err(op, "result", e))?,
            ),
            None => None,
        };
        let lease = match (self.lease_owner, self.lease_token, self.lease_expires_at) {
            (Some(owner), Some(token), Some(expires_at)) => Some(Lease {
                owner,
                token,
                expires_at,
            }),
            _ => None,
        };
        Ok(Task {
            spec,
            state: parse_state(op, &self.state)?,
            attempts: self.attempts.max(0) as u32,
            lease,
            result,
            reason: self.reason,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

fn get_task(conn: &Connection, op: &str, step: &str, id: &str) -> Result<Option<Task>> {
    conn.query_row(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE step = ?1 AND id = ?2"),
        params![step, id],
        task_from_row,
    )
    .optional()
    .map_err(|e| map_err(op, e))?
    .map(|r| r.into_task(op))
    .transpose()
}

/// A transaction that takes the write lock up front: a deferred one that reads first and then
/// writes fails at once (without waiting) when another process wrote in between.
fn write_tx<'c>(c: &'c mut Connection, op: &str) -> Result<rusqlite::Transaction<'c>> {
    c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| map_err(op, e))
}

/// The state a requeued task returns to: waiting when it has dependencies (so they are checked
/// again), pending otherwise.
fn requeue_target(spec: &TaskSpec) -> TaskState {
    spec.initial_state()
}

#[async_trait]
impl TaskStore for SqliteStore {
    async fn create_schema(&self) -> Result<()> {
        self.run("create schema", |c| {
            c.execute_batch(SCHEMA)
                .map_err(|e| map_err("create schema", e))
        })
        .await
    }

    async fn delete_schema(&self) -> Result<()> {
        self.run("delete schema", |c| {
            c.execute_batch(
                "DROP TABLE IF EXISTS tasks; DROP TABLE IF EXISTS workers; \
                 DROP TABLE IF EXISTS status; DROP TABLE IF EXISTS leaders;",
            )
            .map_err(|e| map_err("delete schema", e))
        })
        .await
    }

    async fn import(&self, tasks: &[TaskSpec], now: Millis) -> Result<ImportReport> {
        const OP: &str = "import";
        let tasks = tasks.to_vec();
        self.run(OP, move |c| {
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
                for spec in &tasks {
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
                                    spec.initial_state().as_str(),
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

    async fn claim_batch(&self, req: &ClaimRequest, max: usize, now: Millis) -> Result<Vec<Claim>> {
        const OP: &str = "claim";
        let req = req.clone();
        self.run(OP, move |c| {
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

    async fn heartbeat(
        &self,
        step: &str,
        id: &str,
        token: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Millis> {
        const OP: &str = "heartbeat";
        let (step, id, token) = (step.to_string(), id.to_string(), token.to_string());
        self.run(OP, move |c| {
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

    async fn complete(
        &self,
        step: &str,
        id: &str,
        token: &str,
        completion: &Completion,
        now: Millis,
    ) -> Result<TaskState> {
        const OP: &str = "complete";
        let (step, id, token) = (step.to_string(), id.to_string(), token.to_string());
        let completion = completion.clone();
        self.run(OP, move |c| {
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
            // Cached: one completion per task, the statement is compiled once per connection.
            let state: Option<String> = c
                .prepare_cached(
                    "UPDATE tasks SET \
                       state = CASE WHEN ?4 THEN 'succeeded' \
                                    WHEN ?5 OR attempts >= max_attempts THEN 'failed' \
                                    ELSE 'pending' END, \
                       lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, \
                       result = ?6, reason = CASE WHEN ?4 THEN NULL ELSE ?7 END, updated_at = ?8 \
                     WHERE step = ?1 AND id = ?2 AND state = 'running' AND lease_token = ?3 \
                     RETURNING state",
                )
                .and_then(|mut stmt| {
                    stmt.query_row(
                        params![step, id, token, succeeded, permanent, result, reason, now],
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

    async fn release(&self, step: &str, id: &str, token: &str, now: Millis) -> Result<()> {
        const OP: &str = "release";
        let (step, id, token) = (step.to_string(), id.to_string(), token.to_string());
        self.run(OP, move |c| {
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

    async fn requeue_expired(&self, step: &str, now: Millis) -> Result<RequeueReport> {
        const OP: &str = "requeue expired";
        let step = step.to_string();
        self.run(OP, move |c| {
            let tx = write_tx(c, OP)?;
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

    async fn promote_waiting(&self, step: &str, now: Millis) -> Result<PromoteReport> {
        const OP: &str = "promote waiting";
        let step = step.to_string();
        self.run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            let mut report = PromoteReport::default();
            {
                let waiting: Vec<(String, String)> = {
                    let mut stmt = tx
                        .prepare_cached(
                            "SELECT id, spec FROM tasks WHERE step = ?1 AND state = 'waiting'",
                        )
                        .map_err(|e| map_err(OP, e))?;
                    let rows = stmt
                        .query_map(params![step], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(|e| map_err(OP, e))?;
                    rows.collect::<rusqlite::Result<_>>()
                        .map_err(|e| map_err(OP, e))?
                };
                let mut dep_state = tx
                    .prepare_cached("SELECT state FROM tasks WHERE step = ?1 AND id = ?2")
                    .map_err(|e| map_err(OP, e))?;
                let mut update = tx
                    .prepare_cached(
                        "UPDATE tasks SET state = ?3, reason = ?4, updated_at = ?5 \
                         WHERE step = ?1 AND id = ?2 AND state = 'waiting'",
                    )
                    .map_err(|e| map_err(OP, e))?;
                for (id, spec) in waiting {
                    let spec: TaskSpec =
                        serde_json::from_str(&spec).map_err(|e| json_err(OP, "task spec", e))?;
                    let mut all_succeeded = true;
                    let mut failed_dep = None;
                    for dep in &spec.depends_on {
                        let s: Option<String> = dep_state
                            .query_row(params![dep, id], |r| r.get(0))
                            .optional()
                            .map_err(|e| map_err(OP, e))?;
                        match s.as_deref() {
                            Some("succeeded") => {}
                            Some("failed") | Some("cancelled") => {
                                failed_dep = Some(dep.clone());
                                break;
                            }
                            _ => all_succeeded = false,
                        }
                    }
                    if let Some(dep) = failed_dep {
                        let reason = format!("dependency failed: {dep}/{id}");
                        update
                            .execute(params![step, id, "failed", reason, now])
                            .map_err(|e| map_err(OP, e))?;
                        report.failed += 1;
                    } else if all_succeeded {
                        update
                            .execute(params![step, id, "pending", None::<String>, now])
                            .map_err(|e| map_err(OP, e))?;
                        report.promoted += 1;
                    }
                }
            }
            tx.commit().map_err(|e| map_err(OP, e))?;
            Ok(report)
        })
        .await
    }

    async fn get(&self, step: &str, id: &str) -> Result<Option<Task>> {
        let (step, id) = (step.to_string(), id.to_string());
        self.run("get", move |c| get_task(c, "get", &step, &id))
            .await
    }

    async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        const OP: &str = "list";
        let filter = filter.clone();
        self.run(OP, move |c| {
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

    async fn counts(&self, step: &str) -> Result<StepCounts> {
        const OP: &str = "counts";
        let step = step.to_string();
        self.run(OP, move |c| {
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

    async fn backlog(&self, step: &str, pending_limit: u64) -> Result<Backlog> {
        const OP: &str = "backlog";
        let step = step.to_string();
        // One more than the limit tells whether there are more.
        let probe = i64::try_from(pending_limit.saturating_add(1)).unwrap_or(i64::MAX);
        self.run(OP, move |c| {
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

    async fn steps(&self) -> Result<Vec<String>> {
        const OP: &str = "steps";
        self.run(OP, |c| {
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

    async fn count_finished_since(&self, step: &str, since: Millis) -> Result<u64> {
        const OP: &str = "count finished";
        let step = step.to_string();
        self.run(OP, move |c| {
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

    async fn requeue(&self, step: &str, id: &str, force: bool, now: Millis) -> Result<()> {
        const OP: &str = "requeue";
        let (step, id) = (step.to_string(), id.to_string());
        self.run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            let task =
                get_task(&tx, OP, &step, &id)?.ok_or_else(|| StoreError::not_found(&step, &id))?;
            match task.state {
                TaskState::Pending | TaskState::Waiting => return Ok(()),
                TaskState::Running if !force => {
                    return Err(StoreError::InvalidState {
                        step,
                        id,
                        state: task.state,
                        what: "it is running; use --force to revoke its lease and requeue it"
                            .into(),
                    })
                }
                _ => {}
            }
            tx.execute(
                "UPDATE tasks SET state = ?3, attempts = 0, lease_owner = NULL, \
                 lease_token = NULL, lease_expires_at = NULL, reason = NULL, updated_at = ?4 \
                 WHERE step = ?1 AND id = ?2",
                params![step, id, requeue_target(&task.spec).as_str(), now],
            )
            .map_err(|e| map_err(OP, e))?;
            tx.commit().map_err(|e| map_err(OP, e))
        })
        .await
    }

    async fn cancel(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        const OP: &str = "cancel";
        let (step, id) = (step.to_string(), id.to_string());
        self.run(OP, move |c| {
            let tx = write_tx(c, OP)?;
            let task =
                get_task(&tx, OP, &step, &id)?.ok_or_else(|| StoreError::not_found(&step, &id))?;
            if task.state.is_final() {
                return Err(StoreError::InvalidState {
                    step,
                    id,
                    state: task.state,
                    what: "only waiting, pending or running tasks can be cancelled".into(),
                });
            }
            tx.execute(
                "UPDATE tasks SET state = 'cancelled', lease_owner = NULL, lease_token = NULL, \
                 lease_expires_at = NULL, reason = 'cancelled by user', updated_at = ?3 \
                 WHERE step = ?1 AND id = ?2",
                params![step, id, now],
            )
            .map_err(|e| map_err(OP, e))?;
            tx.commit().map_err(|e| map_err(OP, e))
        })
        .await
    }

    async fn delete(&self, step: &str, id: &str) -> Result<()> {
        const OP: &str = "delete";
        let (step, id) = (step.to_string(), id.to_string());
        self.run(OP, move |c| {
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

    async fn put_worker(&self, worker: &WorkerInfo) -> Result<()> {
        const OP: &str = "put worker";
        let body = serde_json::to_string(worker).map_err(|e| json_err(OP, "worker", e))?;
        let (wid, step) = (worker.worker_id.clone(), worker.step.clone());
        self.run(OP, move |c| {
            c.execute(
                "INSERT INTO workers (worker_id, step, body) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (worker_id) DO UPDATE SET step = excluded.step, body = excluded.body",
                params![wid, step, body],
            )
            .map(|_| ())
            .map_err(|e| map_err(OP, e))
        })
        .await
    }

    async fn remove_worker(&self, worker_id: &str) -> Result<()> {
        const OP: &str = "remove worker";
        let wid = worker_id.to_string();
        self.run(OP, move |c| {
            c.execute("DELETE FROM workers WHERE worker_id = ?1", params![wid])
                .map(|_| ())
                .map_err(|e| map_err(OP, e))
        })
        .await
    }

    async fn list_workers(&self, step: Option<&str>) -> Result<Vec<WorkerInfo>> {
        const OP: &str = "list workers";
        let step = step.map(str::to_string);
        self.run(OP, move |c| {
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

    async fn put_status(&self, doc: &StatusDoc) -> Result<()> {
        const OP: &str = "put status";
        let body = serde_json::to_string(&doc.body).map_err(|e| json_err(OP, "status", e))?;
        let (name, at) = (doc.name.clone(), doc.updated_at);
        self.run(OP, move |c| {
            c.execute(
                "INSERT INTO status (name, updated_at, body) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET updated_at = excluded.updated_at, \
                 body = excluded.body",
                params![name, at, body],
            )
            .map(|_| ())
            .map_err(|e| map_err(OP, e))
        })
        .await
    }

    async fn list_status(&self) -> Result<Vec<StatusDoc>> {
        const OP: &str = "list status";
        self.run(OP, |c| {
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
                out.push(StatusDoc {
                    name,
                    updated_at,
                    body: serde_json::from_str(&body).map_err(|e| json_err(OP, "status", e))?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn acquire_leadership(
        &self,
        cluster: &str,
        owner: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Option<Leadership>> {
        const OP: &str = "acquire leadership";
        let (cluster, owner) = (cluster.to_string(), owner.to_string());
        self.run(OP, move |c| {
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

    async fn release_leadership(&self, cluster: &str, owner: &str) -> Result<()> {
        const OP: &str = "release leadership";
        let (cluster, owner) = (cluster.to_string(), owner.to_string());
        // Keep the row (and its fencing number) but expire it, so the next holder's fencing
        // number is still higher.
        self.run(OP, move |c| {
            c.execute(
                "UPDATE leaders SET expires_at = 0 WHERE cluster = ?1 AND owner = ?2",
                params![cluster, owner],
            )
            .map(|_| ())
            .map_err(|e| map_err(OP, e))
        })
        .await
    }

    async fn current_leader(&self, cluster: &str) -> Result<Option<Leadership>> {
        const OP: &str = "current leader";
        let cluster = cluster.to_string();
        self.run(OP, move |c| {
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

    fn requests(&self) -> u64 {
        self.requests.get()
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}
