//! The task pool. One trait, two implementations (SQLite for the embedded default, DynamoDB for
//! fleets on AWS), held to the same behaviour by one conformance suite (`tests/conformance`).
//!
//! # Lease protocol
//!
//! ```text
//!            import (no deps)            claim (1 conditional write)
//!   waiting ───────────────▶ pending ─────────────────────────────▶ running ──┐
//!      │  deps succeeded ▲      ▲   ◀── release (drain, attempt not counted) ─┤ heartbeat
//!      │                 │      └──── requeue_expired / retryable failure ────┤ (token must
//!      │ dep failed      │                                                     │  match)
//!      ▼                 │                        complete (token must match)  ▼
//!   failed ◀─────────────┴──── attempts used up ────────────────────── succeeded | failed
//! ```
//!
//! * **claim** moves one pending task of a step to running in a single conditional write,
//!   setting `owner`, a fresh random `token`, `expires_at = now + ttl` and `attempts += 1`.
//!   A worker with several free slots claims a batch: it finds the candidates once (DynamoDB:
//!   one Query of the pending index) and sends one such write per task, each with its own
//!   token. On DynamoDB a claimer keeps the candidates its query found and did not take for
//!   its next claims (at most 0.5 s, and never past a task made pending through the same
//!   store), so a task that becomes pending through another client may wait that long behind
//!   them whatever its priority.
//! * **heartbeat**, **complete** and **release** succeed only while the task is running with the
//!   same token. A worker whose lease expired and whose task was re-claimed gets
//!   [`StoreError::LeaseLost`]; its result is discarded, so a result is recorded exactly once.
//! * **requeue_expired(now)** returns running tasks whose lease expired to pending, or marks
//!   them failed when `attempts == max_attempts`.
//! * **complete** of a retryable failure whose completion carries a `retry_delay` moves the
//!   task to `retrying` with `retry_at = now + delay.jittered_ms(attempts, random)` instead
//!   of pending; **retry_due(now)** (controller pass, idle worker) makes due ones pending.
//! * **hold** / **resume** (user actions) move pending or waiting tasks to `held` and back to
//!   the state they had. Claims and promotion never touch `held` or `retrying` tasks.
//!
//! A paused or partitioned worker may still finish a script whose lease it lost, so every task
//! runs *at least* once; scripts should be idempotent.

pub mod dynamo;
mod error;
pub mod fence;
pub mod graph;
pub mod instrumented;
pub mod promote;
pub mod requests;
pub mod samples;
pub mod sqlite;

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::model::{
    Backlog, Claim, ClaimRequest, Completion, ImportReport, LeaseRef, RequeueReport, StepCounts,
    Task, TaskFilter, TaskSpec, TaskState, WorkerInfo,
};
use crate::pipeline::Graph;

pub use self::error::StoreError;
pub use self::fence::{Fence, LeaderToken};
pub(crate) use self::requests::{Capacity, RequestCounter, RequestMix};
pub use self::requests::{PeakKey, RequestRecorder};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A task that entered a final state ([`TaskStore::entered_since`]): its id, when
/// (`updated_at`) and why (`reason`, e.g. `dependency failed: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entered {
    pub id: String,
    pub at: Millis,
    pub reason: Option<String>,
}

impl Entered {
    /// The error of an [`TaskStore::entered_since`] call for a state that is not final.
    pub(crate) fn not_final(state: TaskState) -> StoreError {
        StoreError::InvalidInput(format!(
            "entered_since reads final states only (succeeded, failed, cancelled), not \
             `{state}`: other states' index sort keys do not start with the time"
        ))
    }
}

/// The controller's leadership lease (only the holder reconciles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    pub owner: String,
    /// Increases every time leadership changes hands; mutating calls carry it.
    pub fencing: u64,
    pub expires_at: Millis,
}

/// A named JSON document the controller publishes (fleet status), read by `anamo status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDoc {
    pub name: String,
    pub updated_at: Millis,
    pub body: serde_json::Value,
}

#[async_trait]
pub trait TaskStore: Send + Sync + fmt::Debug {
    /// Creates the table/schema if missing and waits until it is usable. Idempotent.
    async fn create_schema(&self) -> Result<()>;
    /// Deletes the table/schema and everything in it.
    async fn delete_schema(&self) -> Result<()>;

    /// Inserts tasks that do not exist yet; existing ones are left untouched, so importing the
    /// same file again changes nothing. Callers validate the whole input first. New tasks
    /// start `waiting` when they have their own `depends_on`, `pending` otherwise.
    async fn import(&self, tasks: &[TaskSpec], now: Millis) -> Result<ImportReport> {
        let plain = graph::empty_graph();
        self.import_graph(tasks, &plain, now).await
    }
    /// [`TaskStore::import`] under a pipeline graph: new tasks start `waiting` when their
    /// step has upstream edges in `graph` ([`Graph::must_wait`]), `pending` otherwise.
    async fn import_graph(
        &self,
        tasks: &[TaskSpec],
        graph: &Graph,
        now: Millis,
    ) -> Result<ImportReport>;

    /// Claims up to `max` pending tasks of `req.step` (at least one when `max` is 0), best
    /// first; empty when there is none. Each claim is its own conditional write with its own
    /// lease token, so a batch is only a way to pay for finding candidates once: a worker with
    /// several free slots fills them with one call.
    async fn claim_batch(&self, req: &ClaimRequest, max: usize, now: Millis) -> Result<Vec<Claim>>;
    /// Claims one pending task of `req.step`, or `None` when there is none.
    async fn claim(&self, req: &ClaimRequest, now: Millis) -> Result<Option<Claim>> {
        Ok(self.claim_batch(req, 1, now).await?.into_iter().next())
    }
    /// Extends the lease to `now + ttl`; returns the new expiry.
    async fn heartbeat(&self, lease: &LeaseRef, ttl_ms: Millis, now: Millis) -> Result<Millis>;
    /// Records the end of an attempt; returns the state the task is now in (`pending` when a
    /// failed attempt is retried).
    async fn complete(
        &self,
        lease: &LeaseRef,
        completion: &Completion,
        now: Millis,
    ) -> Result<TaskState>;
    /// Hands a running task back to pending without counting the attempt (drain).
    async fn release(&self, lease: &LeaseRef, now: Millis) -> Result<()>;
    /// Requeues (or fails, when attempts are used up) running tasks whose lease expired; each
    /// move is fenced by `fence`.
    async fn requeue_expired(
        &self,
        step: &str,
        now: Millis,
        fence: Fence<'_>,
    ) -> Result<RequeueReport>;

    // Primitives of the pipeline graph's promotion (`store::promote`): small reads of ids and
    // states only (never specs or log tails), and conditional moves of one task.

    /// The states of these tasks of `step`; tasks that do not exist are absent.
    async fn task_states(&self, step: &str, ids: &[String]) -> Result<HashMap<String, TaskState>>;
    /// Ids and states of the tasks of `step` in one of `states` whose id starts with `prefix`
    /// (`""`: all of them).
    async fn step_ids(
        &self,
        step: &str,
        states: &[TaskState],
        prefix: &str,
    ) -> Result<Vec<(String, TaskState)>>;
    /// [`Self::step_ids`] of every task of `step` in one of `states`, handed to `page` a page
    /// at a time as read instead of collected (the progress refresh's full read of a step).
    /// On DynamoDB one call per Query page (up to 1 MB of index entries read, their `id` and
    /// `state` returned); this default hands them over in one call.
    async fn step_ids_paged(
        &self,
        step: &str,
        states: &[TaskState],
        page: &mut (dyn FnMut(Vec<(String, TaskState)>) + Send),
    ) -> Result<()> {
        page(self.step_ids(step, states, "").await?);
        Ok(())
    }
    /// The tasks of `step` that entered `state`, a final state ([`TaskState::is_final`]), at
    /// or after `since` (their `updated_at`), by time then id: what the controller's progress
    /// refresh reads instead of every task ([`Entered`]). On DynamoDB one Query per shard of
    /// `S#{step}#{state}#{shard}` for the sort keys from `{since:013}` on (a final state's
    /// sort key starts with the time it was entered), so it reads only those entries.
    /// Fails with [`StoreError::InvalidInput`] for a state that is not final.
    async fn entered_since(
        &self,
        step: &str,
        state: TaskState,
        since: Millis,
    ) -> Result<Vec<Entered>>;
    /// Moves a task that is still `waiting` to `to` (pending, failed or cancelled), with
    /// `reason`; `priority` is the task's (DynamoDB sorts pending tasks by it). Returns whether it moved (`false`: it was no longer waiting, or is gone).
    async fn settle_waiting(
        &self,
        step: &str,
        id: &str,
        priority: i32,
        to: TaskState,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool>;
    /// Moves a task that is still `pending` and was never claimed (`attempts == 0`) back to
    /// `waiting` (a graph arrived that gives its step upstream edges). Returns whether it moved.
    async fn hold_back(&self, step: &str, id: &str, now: Millis) -> Result<bool>;

    async fn get(&self, step: &str, id: &str) -> Result<Option<Task>>;
    async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>>;
    /// Exact counts by state (every page is read).
    async fn counts(&self, step: &str) -> Result<StepCounts>;
    /// The step's pending tasks counted up to `pending_limit` (`more_pending` says whether
    /// there are more), its running tasks, and its oldest pending task: what a reconcile pass
    /// needs, at a cost bounded by the limit rather than by the backlog.
    async fn backlog(&self, step: &str, pending_limit: u64) -> Result<Backlog>;
    /// The counts by state of each of `steps` (in that order) as cheaply as the store keeps
    /// them, for a reconcile pass; `oldest_pending_at` is left out ([`Self::oldest_pending`]).
    /// DynamoDB reads its per-shard counter items, every step's together (100 per
    /// BatchGetItem), never recounting here: they may lag a worker's batched deltas by about
    /// 2 s and drift until the next recount. Others: [`Self::counts`] of each step.
    async fn pass_counts(&self, steps: &[String]) -> Result<Vec<StepCounts>> {
        let mut out = Vec::with_capacity(steps.len());
        for step in steps {
            let mut c = self.counts(step).await?;
            c.oldest_pending_at = None;
            out.push(c);
        }
        Ok(out)
    }
    /// When the longest-waiting pending task of `step` became pending (`None`: none is).
    async fn oldest_pending(&self, step: &str) -> Result<Option<Millis>> {
        Ok(self.counts(step).await?.oldest_pending_at)
    }
    /// Every step that has tasks.
    async fn steps(&self) -> Result<Vec<String>>;
    /// Tasks of `step` that reached succeeded or failed at or after `since` (throughput).
    async fn count_finished_since(&self, step: &str, since: Millis) -> Result<u64> {
        let mut n = 0;
        for state in [TaskState::Succeeded, TaskState::Failed] {
            let tasks = self
                .list(&TaskFilter {
                    step: Some(step.to_string()),
                    state: Some(state),
                    ..Default::default()
                })
                .await?;
            n += tasks.iter().filter(|t| t.updated_at >= since).count() as u64;
        }
        Ok(n)
    }

    /// Run times (`result.duration_ms`) of the step's most recently succeeded tasks, newest
    /// first, at most `limit`: the planner's duration estimate reads them every pass, so a
    /// backend answers it at a cost bounded by `limit`. This default reads every succeeded
    /// task of the step; both stores answer it with one bounded read instead.
    async fn recent_run_times(&self, step: &str, limit: usize) -> Result<Vec<Millis>> {
        let mut tasks = self
            .list(&TaskFilter {
                step: Some(step.to_string()),
                state: Some(TaskState::Succeeded),
                ..Default::default()
            })
            .await?;
        tasks.sort_by_key(|t| std::cmp::Reverse(t.updated_at));
        Ok(tasks
            .iter()
            .filter_map(|t| t.result.as_ref().map(|r| r.duration_ms.max(0)))
            .take(limit)
            .collect())
    }

    /// User action: put a finished (or stuck waiting) task back to pending with its attempts
    /// reset. Running tasks are refused unless `force` (which revokes the lease).
    async fn requeue(&self, step: &str, id: &str, force: bool, now: Millis) -> Result<()>;
    /// User action: cancel a waiting, pending or running task (a running one loses its lease).
    async fn cancel(&self, step: &str, id: &str, now: Millis) -> Result<()>;
    async fn delete(&self, step: &str, id: &str) -> Result<()>;
    /// User action: hold a pending or waiting task: it is neither claimed nor promoted until
    /// resumed. Holding a held task changes nothing; other states are refused.
    async fn hold(&self, step: &str, id: &str, now: Millis) -> Result<()>;
    /// User action: return a held task to the state it was held in (pending or waiting).
    async fn resume(&self, step: &str, id: &str, now: Millis) -> Result<()>;
    /// Housekeeping (controller pass, idle worker): moves `retrying` tasks of `step` whose
    /// `retry_at` has come to pending. Returns how many.
    async fn retry_due(&self, step: &str, now: Millis) -> Result<u64>;

    /// Creates or replaces a worker's registration (a worker's own: [`Fence::Unfenced`]; the
    /// controller retiring one: its leader fence).
    async fn put_worker(&self, worker: &WorkerInfo, fence: Fence<'_>) -> Result<()>;
    async fn remove_worker(&self, worker_id: &str, fence: Fence<'_>) -> Result<()>;
    /// Workers of one step, or all when `step` is `None`, each with the controller's drain
    /// mark (`drain_requested`).
    async fn list_workers(&self, step: Option<&str>) -> Result<Vec<WorkerInfo>>;
    /// The controller's drain mark on worker `worker_id` of `step` (its leader fence): set, the
    /// worker stops claiming and exits once idle; cleared before the worker has read it, the
    /// worker goes on. Kept apart from the registration, so the worker's heartbeat keeps it;
    /// removing the worker removes it.
    async fn set_worker_drain(
        &self,
        step: &str,
        worker_id: &str,
        drain: bool,
        fence: Fence<'_>,
    ) -> Result<()>;
    /// Whether the controller asked worker `worker_id` to drain (one point read; the worker
    /// asks at every heartbeat).
    async fn worker_drain_requested(&self, worker_id: &str) -> Result<bool>;
    /// A worker's own registration refresh ([`put_worker`](TaskStore::put_worker), unfenced)
    /// that also returns the controller's drain mark on it: where the store can return the
    /// item it wrote (DynamoDB), one request instead of a write and a read.
    async fn refresh_worker(&self, worker: &WorkerInfo) -> Result<bool> {
        self.put_worker(worker, Fence::Unfenced).await?;
        self.worker_drain_requested(&worker.worker_id).await
    }

    /// Creates or replaces a status document, fenced by `fence`.
    async fn put_status(&self, doc: &StatusDoc, fence: Fence<'_>) -> Result<()>;
    async fn list_status(&self) -> Result<Vec<StatusDoc>>;
    /// One status document by name (`None` when there is none): a point read, for a reader
    /// that needs one document often (a worker's pipeline graph), not the listing.
    async fn get_status(&self, name: &str) -> Result<Option<StatusDoc>>;

    /// Takes or renews the leadership of `cluster` for `owner`. Returns the lease when `owner`
    /// holds it afterwards, `None` when someone else holds an unexpired one.
    async fn acquire_leadership(
        &self,
        cluster: &str,
        owner: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Option<Leadership>>;
    /// Gives up leadership if `owner` holds it (so a follower can take over at once).
    async fn release_leadership(&self, cluster: &str, owner: &str) -> Result<()>;
    async fn current_leader(&self, cluster: &str) -> Result<Option<Leadership>>;

    /// Lets the store keep derived writes (DynamoDB's progress counter deltas, for up to 3 s)
    /// and write them together. A long-running writer (a worker) turns it on and calls
    /// [`flush`](TaskStore::flush) before it exits; short commands write at once.
    fn batch_counts(&self) {}

    /// Writes what the store keeps to write together (see [`batch_counts`](TaskStore::batch_counts)).
    async fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Claim races this store lost so far (a candidate task was taken by someone else between
    /// the query and the conditional write, and another was tried). Stores whose claims are
    /// a single atomic statement (SQLite) never lose one.
    fn claim_conflicts(&self) -> u64 {
        0
    }
    /// The lease TTL `owner`'s claims ask for, told before it registers: a store whose lease
    /// expiry looks at a task only once its owner's registration is stale records it on the
    /// registration, so that a dead worker's leases are found about one TTL after it stopped
    /// (DynamoDB, docs/dynamodb-table.md "Lease expiry"). Claims record it too.
    fn note_lease_ttl(&self, _owner: &str, _ttl_ms: Millis) {}
    /// Short description for logs, e.g. `sqlite:///tmp/anamo.db`.
    fn describe(&self) -> String;
}

pub type SharedStore = Arc<dyn TaskStore>;

/// Where the tasks live: `sqlite://PATH` or `dynamodb://TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(std::path::PathBuf),
    Dynamo { table: String },
}

impl FromStr for StoreUrl {
    type Err = StoreError;
    fn from_str(url: &str) -> Result<Self> {
        let bad = |why: &str| StoreError::BadUrl {
            url: url.to_string(),
            why: why.to_string(),
        };
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(bad("the path is empty"));
            }
            Ok(StoreUrl::Sqlite(path.into()))
        } else if let Some(table) = url.strip_prefix("dynamodb://") {
            let table = table.trim_end_matches('/');
            let valid = (3..=255).contains(&table.len())
                && table
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
            if !valid {
                return Err(bad(
                    "DynamoDB table names are 3-255 characters of a-z, A-Z, 0-9, `_`, `-` and `.`",
                ));
            }
            Ok(StoreUrl::Dynamo {
                table: table.to_string(),
            })
        } else {
            Err(bad("unknown scheme"))
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            StoreUrl::Dynamo { table } => write!(f, "dynamodb://{table}"),
        }
    }
}

/// Whether opening a store may create it. Only `table create`, imports and `up` create a
/// store; every other command needs one that exists, so a mistyped SQLite path is an error
/// rather than a new empty database. (A DynamoDB table is never created by opening: a missing
/// one is reported as [`StoreError::NoTable`] by the first call.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the SQLite file (and its directory) and schema when missing.
    Create,
    /// The SQLite file must exist with its task table ([`StoreError::NoStore`] otherwise);
    /// a file that cannot be written is opened read-only.
    Existing,
}

/// Opens the store a URL names, creating a missing SQLite store. DynamoDB uses the default
/// AWS credential chain and honours `AWS_ENDPOINT_URL`, `AWS_PROFILE` and `AWS_REGION`.
pub async fn open(url: &StoreUrl) -> Result<SharedStore> {
    open_with(url, None, OpenMode::Create).await
}

/// Like [`open`], with the AWS region given explicitly (the Controller manifest's `region`).
pub async fn open_in(url: &StoreUrl, region: Option<&str>) -> Result<SharedStore> {
    open_with(url, region, OpenMode::Create).await
}

/// Opens the store a URL names in `mode`, in an explicit AWS region when given.
pub async fn open_with(
    url: &StoreUrl,
    region: Option<&str>,
    mode: OpenMode,
) -> Result<SharedStore> {
    Ok(open_recorded_with(url, region, mode).await?.0)
}

/// Like [`open_in`], with the store's request counts (for benchmarks).
pub async fn open_recorded(
    url: &StoreUrl,
    region: Option<&str>,
) -> Result<(SharedStore, RequestRecorder)> {
    open_recorded_with(url, region, OpenMode::Create).await
}

/// Opens the store a URL names in `mode`, with its request counts.
async fn open_recorded_with(
    url: &StoreUrl,
    region: Option<&str>,
    mode: OpenMode,
) -> Result<(SharedStore, RequestRecorder)> {
    match url {
        StoreUrl::Sqlite(path) => {
            let store = sqlite::SqliteStore::open_mode(path, mode)?;
            let requests = store.recorder();
            Ok((Arc::new(store), requests))
        }
        StoreUrl::Dynamo { table } => {
            let store = dynamo::DynamoStore::from_env_in(table, region).await;
            // One GetItem: a table of another layout version is refused at once (a store
            // opened to create its table is checked at its first use instead).
            if mode == OpenMode::Existing {
                store.check_layout().await?;
            }
            let requests = store.recorder();
            Ok((Arc::new(store), requests))
        }
    }
}

/// The state a task imported under `graph` starts in.
pub(crate) fn initial_state(graph: &Graph, spec: &TaskSpec) -> TaskState {
    if graph.must_wait(spec) {
        TaskState::Waiting
    } else {
        TaskState::Pending
    }
}

/// A fresh random lease token.
pub(crate) fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        assert_eq!(
            "sqlite://a/b.db".parse::<StoreUrl>().unwrap(),
            StoreUrl::Sqlite("a/b.db".into())
        );
        assert_eq!(
            "dynamodb://anamo-tasks".parse::<StoreUrl>().unwrap(),
            StoreUrl::Dynamo {
                table: "anamo-tasks".into()
            }
        );
        let err = "postgres://x".parse::<StoreUrl>().unwrap_err().to_string();
        assert!(err.contains("sqlite://PATH"), "{err}");
        assert!("dynamodb://a b".parse::<StoreUrl>().is_err());
        assert!("sqlite://".parse::<StoreUrl>().is_err());
    }
}
