//! The task model shared by every store, the worker and the controller.
//!
//! Store implementations convert their rows/items into these types at the edge; nothing above
//! the store layer sees SQLite or DynamoDB types.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// Default attempts before a task is marked failed.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Default lease TTL (a fleet's `leaseTTL`): long enough for a few missed heartbeats (a third
/// of it apart), short enough that a dead worker's task runs again within a minute.
pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// The result keeps at most this many bytes of a task's output.
pub const LOG_TAIL_BYTES: usize = 4096;

/// Tag keys by which providers recognise the instances they own (and which manifests may
/// therefore not set as tags of their own).
pub const TAG_FLEET: &str = "anamo:fleet";
pub const TAG_STEP: &str = "anamo:step";
pub const TAG_CONTROLLER: &str = "anamo:controller";
pub const TAG_LAUNCH_BATCH: &str = "anamo:launch-batch";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Dependencies (same id in earlier steps) have not succeeded yet.
    Waiting,
    /// Ready to be claimed.
    Pending,
    /// Claimed by a worker holding a lease.
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Held by the user (`sample hold`): never claimed or promoted until resumed, when it
    /// returns to the state it had (`held_from`).
    Held,
    /// A failed attempt waiting out its step's `retryDelay`; pending again at `retry_at`.
    Retrying,
}

impl TaskState {
    pub const ALL: [TaskState; 8] = [
        TaskState::Waiting,
        TaskState::Pending,
        TaskState::Running,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Held,
        TaskState::Retrying,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Waiting => "waiting",
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Held => "held",
            TaskState::Retrying => "retrying",
        }
    }

    /// Final states are never left except by an explicit user `requeue`.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // PyAnamo's states map onto ours so its tables and habits carry over.
        match s.to_ascii_lowercase().as_str() {
            "waiting" => Ok(TaskState::Waiting),
            "pending" | "todo" => Ok(TaskState::Pending),
            "running" | "locked" => Ok(TaskState::Running),
            "succeeded" | "done" => Ok(TaskState::Succeeded),
            "failed" => Ok(TaskState::Failed),
            "cancelled" | "canceled" => Ok(TaskState::Cancelled),
            "held" => Ok(TaskState::Held),
            "retrying" => Ok(TaskState::Retrying),
            other => Err(format!(
                "unknown task state `{other}` (expected one of waiting, pending, running, succeeded, failed, cancelled, held, retrying)"
            )),
        }
    }
}

/// What a user submits: everything about a task that is not state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// User-given id, typically a sample id. Unique within a step.
    pub id: String,
    /// Pipeline stage, e.g. `align`.
    pub step: String,
    /// Shell command line, run with `/bin/sh -c`.
    pub script: String,
    /// Extra arguments, passed as positional parameters `$1..` to the script.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables for the script.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    /// Attempts (claims) before the task is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Per-attempt time limit in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// Steps whose task with the same id must succeed before this one may run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Exit codes that mean "try again" (default: every non-zero code is retried).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_exit_codes: Vec<i32>,
    /// Exit codes that mean "fail now, do not retry".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_exit_codes: Vec<i32>,
    /// Nested/array task: sub-commands run with bounded parallelism instead of `script`
    /// (`script` then acts as a label).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtasks: Vec<String>,
    /// How many sub-commands run at once (PyAnamo's `-n`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtask_parallelism: Option<u32>,
}

fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}

impl TaskSpec {
    pub fn new(step: impl Into<String>, id: impl Into<String>, script: impl Into<String>) -> Self {
        TaskSpec {
            id: id.into(),
            step: step.into(),
            script: script.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            priority: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            timeout_secs: None,
            depends_on: Vec::new(),
            retry_exit_codes: Vec::new(),
            fail_exit_codes: Vec::new(),
            subtasks: Vec::new(),
            subtask_parallelism: None,
        }
    }

    /// The state a freshly imported task starts in.
    pub fn initial_state(&self) -> TaskState {
        if self.depends_on.is_empty() {
            TaskState::Pending
        } else {
            TaskState::Waiting
        }
    }

    /// Checks the fields every store relies on. Returns what is wrong, phrased for the user.
    pub fn validate(&self) -> Result<(), String> {
        validate_name("id", &self.id)?;
        validate_name("step", &self.step)?;
        if self.script.trim().is_empty() && self.subtasks.is_empty() {
            return Err("`script` is empty".into());
        }
        if self.max_attempts == 0 {
            return Err("`max_attempts` must be at least 1".into());
        }
        if self.timeout_secs == Some(0) {
            return Err("`timeout_secs` must be at least 1 (omit it for no limit)".into());
        }
        if self.subtask_parallelism == Some(0) {
            return Err("`subtask_parallelism` must be at least 1".into());
        }
        for dep in &self.depends_on {
            validate_name("depends_on", dep)?;
            if dep == &self.step {
                return Err(format!("task depends on its own step `{dep}`"));
            }
        }
        for k in self.env.keys() {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("invalid environment variable name `{k}`"));
            }
        }
        Ok(())
    }
}

/// Ids and step names are used in keys and labels, so they are kept printable and bounded.
pub fn validate_name(field: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if value.len() > 256 {
        return Err(format!("`{field}` is longer than 256 bytes"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || *c == '#')
    {
        return Err(format!(
            "`{field}` `{value}` contains {c:?}; whitespace, control characters and `#` are not allowed"
        ));
    }
    Ok(())
}

/// The right to run a task, held by one worker until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// Fencing token: every write by the holder must present it.
    pub token: String,
    pub expires_at: Millis,
}

/// How an attempt ended, as reported by the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    /// Failed, but may be retried if attempts remain.
    Failed,
    /// Failed and must not be retried (a "fail now" exit code).
    FailedPermanently,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtaskResult {
    pub index: usize,
    pub command: String,
    pub exit_code: Option<i32>,
    pub duration_ms: i64,
}

/// The recorded result of the attempt that ended the task (or of the latest failed attempt).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TaskResult {
    pub exit_code: Option<i32>,
    pub duration_ms: i64,
    #[serde(default)]
    pub log_tail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub worker_id: String,
    pub started_at: Millis,
    pub finished_at: Millis,
    /// Short machine-readable cause for a failure, e.g. `exit 3`, `timeout`, `signal 9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subtasks: Vec<SubtaskResult>,
    /// Where the attempt's full log is (`s3://...` or `file://...`), when the worker has a
    /// `--log-url` and the log (or an earlier copy of it) got there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// Why the attempt's log is missing or incomplete at `log_url` (the upload failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_error: Option<String>,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    #[serde(flatten)]
    pub spec: TaskSpec,
    pub state: TaskState,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<TaskResult>,
    /// Why the task is in its state when that is not obvious (`dependency failed`,
    /// `lease expired after 3 attempts`, `cancelled by user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When a `retrying` task becomes pending again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Millis>,
    /// The state a `held` task returns to when resumed (`pending` or `waiting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_from: Option<TaskState>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Task {
    pub fn new(spec: TaskSpec, now: Millis) -> Self {
        let state = spec.initial_state();
        Task {
            spec,
            state,
            attempts: 0,
            lease: None,
            result: None,
            reason: None,
            retry_at: None,
            held_from: None,
            created_at: now,
            updated_at: now,
        }
    }

    pub fn id(&self) -> &str {
        &self.spec.id
    }

    pub fn step(&self) -> &str {
        &self.spec.step
    }
}

/// A successful claim: the task (state running, attempts incremented) and the lease token.
#[derive(Debug, Clone)]
pub struct Claim {
    pub task: Task,
    pub token: String,
    pub expires_at: Millis,
}

impl Claim {
    /// The lease this claim holds, for heartbeat, complete and release.
    pub fn lease(&self) -> LeaseRef {
        LeaseRef::new(self.task.step(), self.task.id(), &self.token)
    }
}

/// Which lease a heartbeat, completion or release acts on: the task, and the token its claim
/// returned. The call succeeds only while the task is still running under that token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub step: String,
    pub id: String,
    pub token: String,
}

impl LeaseRef {
    pub fn new(step: impl Into<String>, id: impl Into<String>, token: impl Into<String>) -> Self {
        LeaseRef {
            step: step.into(),
            id: id.into(),
            token: token.into(),
        }
    }
}

/// What a worker asks for when it claims.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub step: String,
    pub owner: String,
    pub ttl_ms: Millis,
}

/// The end of an attempt, written fenced by the lease token.
#[derive(Debug, Clone)]
pub struct Completion {
    pub outcome: Outcome,
    pub result: TaskResult,
    /// The step's `retryDelay`: a retried failure waits `jittered_ms(attempts)` in
    /// `retrying` instead of going straight back to pending. `None`: no delay.
    pub retry_delay: Option<RetryDelay>,
}

/// What the controller reads of a step every pass: its backlog, counted only as far as the
/// step's fleet could use it, and its running tasks. Counting every pending task each pass
/// would cost a read per task (DynamoDB reads each counted item); exact totals come from the
/// less frequent progress count ([`StepCounts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backlog {
    pub step: String,
    /// Pending tasks, counted up to the limit asked for.
    pub pending: u64,
    /// More tasks are pending than `pending`: counting stopped at the limit.
    #[serde(default)]
    pub more_pending: bool,
    pub running: u64,
    /// Creation time of the oldest pending task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_at: Option<Millis>,
}

impl Backlog {
    /// The exact backlog of `counts`, as read with `limit` (for stores whose counts are cheap).
    pub fn from_counts(counts: &StepCounts, limit: u64) -> Self {
        Backlog {
            step: counts.step.clone(),
            pending: counts.pending.min(limit),
            more_pending: counts.pending > limit,
            running: counts.running,
            oldest_pending_at: counts.oldest_pending_at,
        }
    }
}

/// Counts of one step's tasks by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepCounts {
    pub step: String,
    pub waiting: u64,
    pub pending: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    #[serde(default)]
    pub held: u64,
    #[serde(default)]
    pub retrying: u64,
    /// Creation time of the oldest pending task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_at: Option<Millis>,
}

impl StepCounts {
    pub fn get(&self, s: TaskState) -> u64 {
        match s {
            TaskState::Waiting => self.waiting,
            TaskState::Pending => self.pending,
            TaskState::Running => self.running,
            TaskState::Succeeded => self.succeeded,
            TaskState::Failed => self.failed,
            TaskState::Cancelled => self.cancelled,
            TaskState::Held => self.held,
            TaskState::Retrying => self.retrying,
        }
    }

    pub fn set(&mut self, s: TaskState, n: u64) {
        match s {
            TaskState::Waiting => self.waiting = n,
            TaskState::Pending => self.pending = n,
            TaskState::Running => self.running = n,
            TaskState::Succeeded => self.succeeded = n,
            TaskState::Failed => self.failed = n,
            TaskState::Cancelled => self.cancelled = n,
            TaskState::Held => self.held = n,
            TaskState::Retrying => self.retrying = n,
        }
    }

    pub fn total(&self) -> u64 {
        TaskState::ALL.iter().map(|s| self.get(*s)).sum()
    }

    /// Tasks that are not yet in a final state.
    pub fn unfinished(&self) -> u64 {
        self.waiting + self.pending + self.running + self.held + self.retrying
    }
}

/// Filter for listing tasks.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub step: Option<String>,
    pub state: Option<TaskState>,
    pub id: Option<String>,
    pub limit: Option<usize>,
}

/// What `requeue_expired` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequeueReport {
    /// Tasks moved back to pending.
    pub requeued: Vec<String>,
    /// Tasks failed because their attempts were used up.
    pub failed: Vec<String>,
}

/// What the graph's promotion of a step's waiting tasks did (`store::promote`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PromoteReport {
    pub promoted: u64,
    /// Dependants failed because a dependency failed.
    pub failed: u64,
    /// Dependants cancelled because their dependency was cancelled (its sample dropped).
    pub cancelled: u64,
    /// Waiting tasks whose id does not fit their step's key (they stay waiting).
    pub unfit: u64,
    /// Waiting tasks of a scattered step, imported before it was scattered, replaced by the
    /// tasks the scatter makes of them.
    pub expanded: u64,
}

/// What an import did. Importing the same file twice changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub inserted: u64,
    /// Already present with the same definition.
    pub unchanged: u64,
    /// Already present with a different definition; left as they are.
    pub conflicting: Vec<String>,
}

/// Keep the last `max` bytes of `s`, cut at a character boundary.
pub fn tail_utf8(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// Exponential, capped, jittered delay before a retried attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryDelay {
    /// Delay after the first failed attempt, in milliseconds.
    pub initial_ms: u64,
    /// The delay never grows past this, in milliseconds.
    pub max_ms: u64,
}

impl RetryDelay {
    /// The delay after `attempts` failed attempts (1 = the first), before jitter: `initial`
    /// doubled per further attempt, capped at `max`.
    pub fn base_ms(&self, attempts: u32) -> u64 {
        let doublings = attempts.saturating_sub(1).min(32);
        self.initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
    }

    /// The delay with "equal jitter": half the base plus `unit` (0–1, random) times the other
    /// half, so retries of tasks that failed together spread out but never come early.
    pub fn jittered_ms(&self, attempts: u32, unit: f64) -> u64 {
        let base = self.base_ms(attempts);
        let half = base / 2;
        half + ((base - half) as f64 * unit.clamp(0.0, 1.0)) as u64
    }
}

mod worker;
pub use worker::{StopReason, WorkerInfo, WorkerState};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyanamo_states_map() {
        assert_eq!("todo".parse::<TaskState>().unwrap(), TaskState::Pending);
        assert_eq!("locked".parse::<TaskState>().unwrap(), TaskState::Running);
        assert_eq!("done".parse::<TaskState>().unwrap(), TaskState::Succeeded);
        assert!("bogus".parse::<TaskState>().is_err());
    }

    #[test]
    fn names_reject_separators() {
        assert!(validate_name("id", "S1").is_ok());
        assert!(validate_name("id", "a b").is_err());
        assert!(validate_name("id", "a#b").is_err());
        assert!(validate_name("id", "").is_err());
    }

    #[test]
    fn tail_respects_char_boundaries() {
        let s = "ééé";
        assert_eq!(tail_utf8(s, 3), "é");
        assert_eq!(tail_utf8("abc", 10), "abc");
    }

    #[test]
    fn dependent_tasks_start_waiting() {
        let mut t = TaskSpec::new("call", "S1", "true");
        assert_eq!(t.initial_state(), TaskState::Pending);
        t.depends_on.push("align".into());
        assert_eq!(t.initial_state(), TaskState::Waiting);
    }
}
