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
