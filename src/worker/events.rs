//! One struct per observable happening in the worker. Each `emit()` writes the log line and
//! bumps the matching counter (and, with `--metrics-addr`, the Prometheus metric) together, so
//! logs, counters and metrics cannot drift apart.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::Metrics;
use crate::model::{Outcome, TaskState};
use crate::store::StoreError;

/// Live counters of one worker (or of several, when shared, as in the benchmark).
#[derive(Debug, Default)]
pub struct WorkerStats {
    claimed: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    lease_lost: AtomicU64,
    handed_back: AtomicU64,
    results_lost: AtomicU64,
    claim_errors: AtomicU64,
    heartbeat_errors: AtomicU64,
    /// Where `anamo_task_duration_seconds` and `anamo_claim_conflicts_total` go, when the
    /// worker publishes metrics.
    metrics: OnceLock<Metrics>,
    /// The store's lost claim races already added to `anamo_claim_conflicts_total`.
    conflicts_seen: AtomicU64,
}

/// A snapshot of [`WorkerStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Tasks claimed.
    pub claimed: u64,
    /// Attempts recorded as succeeded.
    pub succeeded: u64,
    /// Attempts recorded as failed (retried or not).
    pub failed: u64,
    /// Tasks abandoned because their lease was lost (nothing recorded).
    pub lease_lost: u64,
    /// Tasks handed back unfinished (drain, spot interruption).
    pub handed_back: u64,
    /// Results that could not be written before their lease expired.
    pub results_lost: u64,
    pub claim_errors: u64,
    pub heartbeat_errors: u64,
}

impl StatsSnapshot {
    /// Attempts whose result was recorded.
    pub fn recorded(&self) -> u64 {
        self.succeeded + self.failed
    }
}

impl WorkerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            claimed: g(&self.claimed),
            succeeded: g(&self.succeeded),
            failed: g(&self.failed),
            lease_lost: g(&self.lease_lost),
            handed_back: g(&self.handed_back),
            results_lost: g(&self.results_lost),
            claim_errors: g(&self.claim_errors),
            heartbeat_errors: g(&self.heartbeat_errors),
        }
    }
}

impl WorkerStats {
    /// Publishes the per-step metrics of the events emitted from now on into `metrics`
    /// (a no-op when metrics were attached already).
    pub fn attach_metrics(&self, metrics: Metrics) {
        let _ = self.metrics.set(metrics);
    }

    /// Records the end of a task attempt in `anamo_task_duration_seconds`. `outcome` is one of
    /// [`TASK_OUTCOMES`].
    fn attempt_ended(&self, step: &str, outcome: &'static str, duration: Duration) {
        debug_assert!(TASK_OUTCOMES.contains(&outcome));
        if let Some(m) = self.metrics.get() {
            m.task_duration
                .with_label_values(&[step, outcome])
                .observe(duration.as_secs_f64());
        }
    }

    /// Adds the lost claim races the store counted since the last call (`total`: the store's
    /// running count) to `anamo_claim_conflicts_total{step}`; the series exists (at 0) from the
    /// first claim on.
    pub(crate) fn claim_conflicts(&self, step: &str, total: u64) {
        let seen = self.conflicts_seen.fetch_max(total, Ordering::Relaxed);
        if let Some(m) = self.metrics.get() {
            m.claim_conflicts
                .with_label_values(&[step])
                .inc_by(total.saturating_sub(seen));
        }
    }
}

/// The `outcome` label values of `anamo_task_duration_seconds`.
pub const TASK_OUTCOMES: [&str; 7] = [
    "succeeded",
    "failed",
    "failed_permanently",
    "timeout",
    "lease_lost",
    "handed_back",
    "result_lost",
];

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

pub(crate) struct WorkerStarted<'a> {
    pub worker_id: &'a str,
    pub step: &'a str,
    pub slots: u32,
    pub instance_id: Option<&'a str>,
    pub store: &'a str,
    pub log_dir: &'a std::path::Path,
}

impl WorkerStarted<'_> {
    pub fn emit(self) {
        tracing::info!(
            worker_id = self.worker_id,
            step = self.step,
            slots = self.slots,
            instance_id = self.instance_id.unwrap_or("-"),
            store = self.store,
            log_dir = %self.log_dir.display(),
            "worker started"
        );
    }
}

pub(crate) struct TaskStarted<'a> {
    pub step: &'a str,
    pub id: &'a str,
    pub attempt: u32,
    pub log: &'a std::path::Path,
}

impl TaskStarted<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        bump(&stats.claimed);
        tracing::info!(
            step = self.step,
            id = self.id,
            attempt = self.attempt,
            log = %self.log.display(),
            "task started"
        );
    }
}

pub(crate) struct TaskFinished<'a> {
    pub step: &'a str,
    pub id: &'a str,
    pub attempt: u32,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub error: Option<&'a str>,
    pub duration: Duration,
    /// The state the store moved the task to.
    pub state: TaskState,
}

impl TaskFinished<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        let outcome = match self.outcome {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::FailedPermanently => "failed_permanently",
        };
        let metric_outcome = if self.outcome == Outcome::Failed && self.error == Some("timeout") {
            "timeout"
        } else {
            outcome
        };
        stats.attempt_ended(self.step, metric_outcome, self.duration);
        let exit_code = self.exit_code.map(i64::from).unwrap_or(-1);
        if self.outcome == Outcome::Succeeded {
            bump(&stats.succeeded);
            tracing::info!(
                step = self.step,
                id = self.id,
                attempt = self.attempt,
                outcome,
                exit_code,
                duration_ms = ms(self.duration),
                state = self.state.as_str(),
                "task finished"
            );
        } else {
            bump(&stats.failed);
            tracing::warn!(
                step = self.step,
                id = self.id,
                attempt = self.attempt,
                outcome,
                exit_code,
                error = self.error.unwrap_or("-"),
                duration_ms = ms(self.duration),
                state = self.state.as_str(),
                "task finished"
            );
        }
    }
}

pub(crate) struct TaskLeaseLost<'a> {
    pub step: &'a str,
    pub id: &'a str,
    pub attempt: u32,
    /// `taken over` (the store said so) or `expired` (no heartbeat got through in time).
    pub cause: &'a str,
    pub duration: Duration,
}

impl TaskLeaseLost<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        bump(&stats.lease_lost);
        stats.attempt_ended(self.step, "lease_lost", self.duration);
        tracing::warn!(
            step = self.step,
            id = self.id,
            attempt = self.attempt,
            cause = self.cause,
            duration_ms = ms(self.duration),
            "lease lost: task killed, its result is discarded"
        );
    }
}

pub(crate) struct TaskHandedBack<'a> {
    pub step: &'a str,
    pub id: &'a str,
    pub attempt: u32,
    pub reason: &'a str,
    /// False when the release did not reach the store (the lease then simply expires).
    pub released: bool,
    pub duration: Duration,
}

impl TaskHandedBack<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        bump(&stats.handed_back);
        stats.attempt_ended(self.step, "handed_back", self.duration);
        if self.released {
            tracing::info!(
                step = self.step,
                id = self.id,
                attempt = self.attempt,
                reason = self.reason,
                "task handed back unfinished"
            );
        } else {
            tracing::warn!(
                step = self.step,
                id = self.id,
                attempt = self.attempt,
                reason = self.reason,
                "task stopped but could not be released; it is requeued when its lease expires"
            );
        }
    }
}

pub(crate) struct ResultLost<'a> {
    pub step: &'a str,
    pub id: &'a str,
    pub attempt: u32,
    pub last_error: Option<&'a StoreError>,
    pub duration: Duration,
}

impl ResultLost<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        bump(&stats.results_lost);
        stats.attempt_ended(self.step, "result_lost", self.duration);
        tracing::error!(
            step = self.step,
            id = self.id,
            attempt = self.attempt,
            error = self
                .last_error
                .map(|e| e.to_string())
                .unwrap_or_else(|| "-".into()),
            "result not recorded: the store did not accept it before the lease expired"
        );
    }
}

pub(crate) struct ClaimFailed<'a> {
    pub step: &'a str,
    pub error: &'a StoreError,
    pub retry_in: Duration,
}

impl ClaimFailed<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        bump(&stats.claim_errors);
        tracing::warn!(
            step = self.step,
            error = %self.error,
            error_kind = self.error.kind(),
            retry_in_ms = ms(self.retry_in),
            "claim failed; backing off"
        );
    }
}

pub(crate) struct HeartbeatFailed<'a> {
    pub step: &'a str,
    pub id: &'a str,
    pub error: &'a str,
    pub lease_left: Duration,
}

impl HeartbeatFailed<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        bump(&stats.heartbeat_errors);
        tracing::warn!(
            step = self.step,
            id = self.id,
            error = self.error,
            lease_left_ms = ms(self.lease_left),
            "heartbeat failed; retrying while the lease lasts"
        );
    }
}

pub(crate) struct StoreCallFailed<'a> {
    pub operation: &'a str,
    pub step: &'a str,
    pub id: &'a str,
    pub error: &'a str,
}

impl StoreCallFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            operation = self.operation,
            step = self.step,
            id = self.id,
            error = self.error,
            "store call failed; retrying while the lease lasts"
        );
    }
}

pub(crate) struct RegistrationFailed<'a> {
    pub worker_id: &'a str,
    pub error: &'a StoreError,
}

impl RegistrationFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            worker_id = self.worker_id,
            error = %self.error,
            error_kind = self.error.kind(),
            "worker registration not written"
        );
    }
}

/// The `kind` label values of `anamo_worker_spot_notices_total`.
pub const SPOT_NOTICE_KINDS: [&str; 2] = ["interruption", "rebalance"];

impl WorkerStats {
    /// Starts `anamo_worker_spot_notices_total{step,kind}` at 0 for every kind, so that the
    /// first notice shows in `increase()` (called once the instance metadata answered).
    pub(crate) fn spot_notices_watched(&self, step: &str) {
        if let Some(m) = self.metrics.get() {
            for kind in SPOT_NOTICE_KINDS {
                m.worker_spot_notices
                    .with_label_values(&[step, kind])
                    .inc_by(0);
            }
        }
    }

    fn spot_notice(&self, step: &str, kind: &'static str) {
        debug_assert!(SPOT_NOTICE_KINDS.contains(&kind));
        if let Some(m) = self.metrics.get() {
            m.worker_spot_notices.with_label_values(&[step, kind]).inc();
        }
    }
}

/// A spot interruption notice (`spot/instance-action`): running tasks are handed back.
pub(crate) struct SpotInterruption<'a> {
    pub step: &'a str,
    pub notice: &'a str,
}

impl SpotInterruption<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        stats.spot_notice(self.step, "interruption");
        tracing::warn!(
            notice = self.notice,
            "spot interruption notice: handing back running tasks"
        );
    }
}

/// A rebalance recommendation (`events/recommendations/rebalance`): claims stop, running
/// tasks finish. Emitted once per worker.
pub(crate) struct RebalanceRecommendation<'a> {
    pub step: &'a str,
    pub notice: &'a str,
}

impl RebalanceRecommendation<'_> {
    pub fn emit(self, stats: &WorkerStats) {
        stats.spot_notice(self.step, "rebalance");
        tracing::warn!(
            notice = self.notice,
            "rebalance recommendation: no new claims, running tasks go on"
        );
    }
}

pub(crate) struct WorkerStopping<'a> {
    pub reason: &'a str,
    pub busy_slots: u32,
    pub grace: Option<Duration>,
}

impl WorkerStopping<'_> {
    pub fn emit(self) {
        tracing::info!(
            reason = self.reason,
            busy_slots = self.busy_slots,
            grace_ms = self.grace.map(ms),
            "worker stopped claiming"
        );
    }
}

pub(crate) struct WorkerExited<'a> {
    pub worker_id: &'a str,
    pub reason: &'a str,
    pub stats: &'a StatsSnapshot,
}

impl WorkerExited<'_> {
    pub fn emit(self) {
        tracing::info!(
            worker_id = self.worker_id,
            reason = self.reason,
            claimed = self.stats.claimed,
            succeeded = self.stats.succeeded,
            failed = self.stats.failed,
            lease_lost = self.stats.lease_lost,
            handed_back = self.stats.handed_back,
            results_lost = self.stats.results_lost,
            "worker exited"
        );
    }
}
