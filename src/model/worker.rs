//! A worker's registration, as the controller and `anamo status` read it.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;

/// A worker process registered in the store, so the controller can tell busy instances from
/// idle ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub slots: u32,
    pub busy_slots: u32,
    pub started_at: Millis,
    pub last_seen: Millis,
    /// When the worker last had a busy slot (or started), for idle-time decisions.
    pub last_busy_at: Millis,
    pub state: WorkerState,
    /// Why the worker stopped claiming, once it has (absent in registrations written before
    /// this field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// The controller asked this worker to drain (claim nothing, exit once idle; cleared
    /// before that, it claims again) so that the fleet's remaining tasks pack onto fewer
    /// instances. Kept by the store apart from the
    /// worker's own registration (`TaskStore::set_worker_drain`), so the worker's heartbeat
    /// never overwrites it; a worker's own write of this field is ignored.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain_requested: bool,
}

/// Why a worker stopped claiming; its registration records it, so that the controller can
/// tell interruptions and rebalances from other exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// SIGTERM/SIGINT (or `WorkerControl::drain`).
    Signal,
    /// A spot interruption notice (or `WorkerControl::hand_back`).
    SpotInterruption,
    /// A rebalance recommendation: the instance is at elevated risk of interruption, so no
    /// new claims; running tasks go on (or `WorkerControl::rebalance`).
    Rebalance,
    /// `--wall-time` passed.
    WallTime,
    /// `--max-tasks` tasks were claimed.
    MaxTasks,
    /// Nothing was claimable for `--idle-exit`.
    Idle,
    /// A store error that retrying cannot fix (e.g. the table is gone).
    Fatal,
    /// The controller asked it to drain (its drain mark in the store) so that the fleet's
    /// remaining tasks pack onto fewer instances, and its running tasks are done.
    Drain,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Signal => "signal",
            StopReason::SpotInterruption => "spot_interruption",
            StopReason::Rebalance => "rebalance",
            StopReason::WallTime => "wall_time",
            StopReason::MaxTasks => "max_tasks",
            StopReason::Idle => "idle",
            StopReason::Fatal => "fatal",
            StopReason::Drain => "drain",
        }
    }
}

impl FromStr for StopReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const ALL: [StopReason; 8] = [
            StopReason::Signal,
            StopReason::SpotInterruption,
            StopReason::Rebalance,
            StopReason::WallTime,
            StopReason::MaxTasks,
            StopReason::Idle,
            StopReason::Fatal,
            StopReason::Drain,
        ];
        ALL.into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown worker stop reason `{s}`"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    Active,
    /// Stopped claiming (SIGTERM, spot notice, idle exit in progress).
    Draining,
    /// Exited cleanly.
    Gone,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Active => "active",
            WorkerState::Draining => "draining",
            WorkerState::Gone => "gone",
        }
    }
}

impl FromStr for WorkerState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "active" => Ok(WorkerState::Active),
            "draining" => Ok(WorkerState::Draining),
            "gone" => Ok(WorkerState::Gone),
            other => Err(format!("unknown worker state `{other}`")),
        }
    }
}
