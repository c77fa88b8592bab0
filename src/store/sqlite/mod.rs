//! SQLite store for the embedded default (`anamo up`). Same semantics as DynamoDB; every
//! state transition is one SQL statement (or one transaction), so concurrent workers in other
//! processes sharing the file are safe.
//!
//! This module opens the database and holds the connection, the schema and the row codec; the
//! [`TaskStore`] implementation routes each call to the module of its concern: [`claims`],
//! [`leases`] (heartbeat, complete, release), [`transitions`] (import, sweeps, user actions),
//! [`reads`], [`workers`], [`status`] documents and the [`leader`] lease.

mod claims;
mod graph;
mod hold;
mod leader;
mod leases;
mod open;
mod reads;
mod status;
mod transitions;
mod workers;

pub use open::{created_by_up, mark_created_by_up};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, Row};

use super::{
    Entered, Fence, Leadership, RequestCounter, RequestRecorder, Result, StatusDoc, StoreError,
    TaskStore,
};
use crate::clock::Millis;
use crate::model::{
    Backlog, Claim, ClaimRequest, Completion, ImportReport, Lease, LeaseRef, RequeueReport,
    StepCounts, Task, TaskFilter, TaskResult, TaskSpec, TaskState, WorkerInfo,
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
    retry_at         INTEGER,
    held_from        TEXT,
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
CREATE TABLE IF NOT EXISTS worker_drains (
    worker_id TEXT PRIMARY KEY,
    step      TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS worker_drains_removed AFTER DELETE ON workers
BEGIN DELETE FROM worker_drains WHERE worker_id = old.worker_id; END;
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
                            result, reason, created_at, updated_at, retry_at, held_from";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
    requests: Arc<RequestCounter>,
}

impl SqliteStore {
    /// The counts of the requests (SQL calls) this store makes, for benchmarks.
    pub fn recorder(&self) -> RequestRecorder {
        RequestRecorder::new(
            self.requests.clone(),
            Default::default(),
            Default::default(),
        )
    }

    /// Runs `f` on the connection off the async runtime.
    async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        self.requests.add(1);
        let conn = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::backend(op, "connection mutex poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::backend(op, e))?;
        result.map_err(|e| open::name_path(e, &self.path))
    }
}

fn map_err(op: &str, e: rusqlite::Error) -> StoreError {
    if e.sqlite_error_code() == Some(ErrorCode::ReadOnly) {
        return StoreError::unavailable(
            op,
            format!(
                "{e} (the file or its directory cannot be written: reading commands such as \
                 `status` and `task list` work, changing ones need write access)"
            ),
        );
    }
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
        retry_at: row.get(10)?,
        held_from: row.get(11)?,
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
    retry_at: Option<i64>,
    held_from: Option<String>,
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
            retry_at: self.retry_at,
            held_from: self.held_from.map(|s| parse_state(op, &s)).transpose()?,
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
                "DROP TABLE IF EXISTS tasks; DROP TABLE IF EXISTS workers; DROP TABLE IF EXISTS worker_drains; \
                 DROP TABLE IF EXISTS status; DROP TABLE IF EXISTS leaders; \
                 DROP TABLE IF EXISTS anamo_meta;",
            )
            .map_err(|e| map_err("delete schema", e))
        })
        .await
    }

    async fn import_graph(
        &self,
        tasks: &[TaskSpec],
        graph: &crate::pipeline::Graph,
        now: Millis,
    ) -> Result<ImportReport> {
        transitions::import(self, tasks, graph, now).await
    }

    async fn claim_batch(&self, req: &ClaimRequest, max: usize, now: Millis) -> Result<Vec<Claim>> {
        claims::claim_batch(self, req, max, now).await
    }

    async fn heartbeat(&self, lease: &LeaseRef, ttl_ms: Millis, now: Millis) -> Result<Millis> {
        leases::heartbeat(self, lease, ttl_ms, now).await
    }

    async fn complete(
        &self,
        lease: &LeaseRef,
        completion: &Completion,
        now: Millis,
    ) -> Result<TaskState> {
        leases::complete(self, lease, completion, now).await
    }

    async fn release(&self, lease: &LeaseRef, now: Millis) -> Result<()> {
        leases::release(self, lease, now).await
    }

    async fn requeue_expired(
        &self,
        step: &str,
        now: Millis,
        fence: Fence<'_>,
    ) -> Result<RequeueReport> {
        transitions::requeue_expired(self, step, now, fence).await
    }

    async fn task_states(&self, step: &str, ids: &[String]) -> Result<HashMap<String, TaskState>> {
        graph::task_states(self, step, ids).await
    }

    async fn step_ids(
        &self,
        step: &str,
        states: &[TaskState],
        prefix: &str,
    ) -> Result<Vec<(String, TaskState)>> {
        graph::step_ids(self, step, states, prefix).await
    }

    async fn entered_since(
        &self,
        step: &str,
        state: TaskState,
        since: Millis,
    ) -> Result<Vec<Entered>> {
        graph::entered_since(self, step, state, since).await
    }

    async fn settle_waiting(
        &self,
        step: &str,
        id: &str,
        priority: i32,
        to: TaskState,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        graph::settle_waiting(self, step, id, priority, to, reason, now).await
    }

    async fn hold_back(&self, step: &str, id: &str, now: Millis) -> Result<bool> {
        graph::hold_back(self, step, id, now).await
    }

    async fn get(&self, step: &str, id: &str) -> Result<Option<Task>> {
        reads::get(self, step, id).await
    }

    async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        reads::list(self, filter).await
    }

    async fn counts(&self, step: &str) -> Result<StepCounts> {
        reads::counts(self, step).await
    }

    async fn backlog(&self, step: &str, pending_limit: u64) -> Result<Backlog> {
        reads::backlog(self, step, pending_limit).await
    }

    async fn count_finished_since(&self, step: &str, since: Millis) -> Result<u64> {
        reads::count_finished_since(self, step, since).await
    }

    async fn recent_run_times(&self, step: &str, limit: usize) -> Result<Vec<Millis>> {
        reads::recent_run_times(self, step, limit).await
    }

    async fn steps(&self) -> Result<Vec<String>> {
        reads::steps(self).await
    }

    async fn requeue(&self, step: &str, id: &str, force: bool, now: Millis) -> Result<()> {
        transitions::requeue(self, step, id, force, now).await
    }

    async fn cancel(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        transitions::cancel(self, step, id, now).await
    }

    async fn delete(&self, step: &str, id: &str) -> Result<()> {
        transitions::delete(self, step, id).await
    }

    async fn hold(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        hold::hold(self, step, id, now).await
    }

    async fn resume(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        hold::resume(self, step, id, now).await
    }

    async fn retry_due(&self, step: &str, now: Millis) -> Result<u64> {
        hold::retry_due(self, step, now).await
    }

    async fn put_worker(&self, worker: &WorkerInfo, fence: Fence<'_>) -> Result<()> {
        workers::put_worker(self, worker, fence).await
    }

    async fn remove_worker(&self, worker_id: &str, fence: Fence<'_>) -> Result<()> {
        workers::remove_worker(self, worker_id, fence).await
    }

    async fn list_workers(&self, step: Option<&str>) -> Result<Vec<WorkerInfo>> {
        workers::list_workers(self, step).await
    }

    async fn set_worker_drain(
        &self,
        step: &str,
        worker_id: &str,
        drain: bool,
        fence: Fence<'_>,
    ) -> Result<()> {
        workers::set_worker_drain(self, step, worker_id, drain, fence).await
    }

    async fn worker_drain_requested(&self, worker_id: &str) -> Result<bool> {
        workers::worker_drain_requested(self, worker_id).await
    }

    async fn put_status(&self, doc: &StatusDoc, fence: Fence<'_>) -> Result<()> {
        status::put_status(self, doc, fence).await
    }

    async fn list_status(&self) -> Result<Vec<StatusDoc>> {
        status::list_status(self).await
    }

    async fn get_status(&self, name: &str) -> Result<Option<StatusDoc>> {
        status::get_status(self, name).await
    }

    async fn acquire_leadership(
        &self,
        cluster: &str,
        owner: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Option<Leadership>> {
        leader::acquire_leadership(self, cluster, owner, ttl_ms, now).await
    }

    async fn release_leadership(&self, cluster: &str, owner: &str) -> Result<()> {
        leader::release_leadership(self, cluster, owner).await
    }

    async fn current_leader(&self, cluster: &str) -> Result<Option<Leadership>> {
        leader::current_leader(self, cluster).await
    }

    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}
