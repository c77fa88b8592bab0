//! What the controller publishes: per-fleet status (also written to the store so `anamo status`
//! shows it), per-step progress, and the last actions. Served as `/api/status`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::model::StepCounts;
use crate::planner::{Condition, ConditionStatus, FleetStatus};
use crate::store::{SharedStore, StoreError};

/// Window over which throughput is measured.
pub const THROUGHPUT_WINDOW_MS: Millis = 10 * 60 * 1000;
/// How many recent actions are kept for display.
pub const RECENT_ACTIONS: usize = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not yet known (before the first pass).
    Starting,
    /// Reconciles (holds the leadership, or runs without leader election).
    Leader,
    /// Another controller leads; this one only serves status and metrics.
    Follower,
}

#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    pub fleet: String,
    pub step: String,
    pub provider: String,
    pub desired: u32,
    /// Instances listed (pending or running).
    pub actual: u32,
    pub idle: u32,
    pub status: FleetStatus,
    pub conditions: Vec<Condition>,
    /// `Ready, ScalingUp` — the conditions that are True, for compact display.
    pub conditions_summary: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action_at: Option<Millis>,
    /// An error observing or acting on the fleet in the last pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub observed_at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    #[serde(flatten)]
    pub counts: StepCounts,
    /// Age of the oldest pending task.
    pub oldest_pending_age_ms: Option<Millis>,
    /// Tasks finished per minute over the last 10 minutes.
    pub throughput_per_min: f64,
    /// Time to finish the unfinished tasks at the current throughput.
    pub eta_ms: Option<Millis>,
    /// When these figures were counted (the controller counts every `progressInterval`).
    #[serde(default)]
    pub counted_at: Millis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRecord {
    pub at: Millis,
    pub fleet: String,
    pub action: String,
    pub reason: String,
    /// Whether executing it succeeded (`false` with the error in `error`).
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ControllerStatus {
    pub cluster: String,
    pub identity: String,
    pub role: Role,
    pub store: String,
    pub manifests_loaded: bool,
    pub store_reachable: bool,
    pub last_reconcile_at: Option<Millis>,
    pub last_success_at: Option<Millis>,
    pub last_error: Option<String>,
    pub fleets: Vec<FleetReport>,
    pub steps: Vec<StepReport>,
    pub recent_actions: VecDeque<ActionRecord>,
}

impl ControllerStatus {
    pub fn new(cluster: &str, identity: &str, store: &str) -> Self {
        ControllerStatus {
            cluster: cluster.to_string(),
            identity: identity.to_string(),
            role: Role::Starting,
            store: store.to_string(),
            manifests_loaded: false,
            store_reachable: false,
            last_reconcile_at: None,
            last_success_at: None,
            last_error: None,
            fleets: Vec::new(),
            steps: Vec::new(),
            recent_actions: VecDeque::new(),
        }
    }

    pub fn record_action(&mut self, rec: ActionRecord) {
        if self.recent_actions.len() >= RECENT_ACTIONS {
            self.recent_actions.pop_back();
        }
        self.recent_actions.push_front(rec);
    }
}

pub fn conditions_summary(conditions: &[Condition]) -> String {
    let on: Vec<&str> = conditions
        .iter()
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.type_.as_str())
        .collect();
    if on.is_empty() {
        "-".into()
    } else {
        on.join(", ")
    }
}

/// Progress of one step from the store. Throughput is measured over the last 10 minutes, or
/// since `observed_since` (e.g. the controller's start) when that is shorter, so an estimate
/// early in a run is not diluted by minutes nobody watched.
pub async fn step_report(
    store: &SharedStore,
    step: &str,
    now: Millis,
    observed_since: Option<Millis>,
) -> Result<StepReport, StoreError> {
    const MIN_WINDOW_MS: Millis = 5_000;
    let counts = store.counts(step).await?;
    let since = observed_since
        .map_or(now - THROUGHPUT_WINDOW_MS, |t| {
            t.max(now - THROUGHPUT_WINDOW_MS)
        })
        .min(now - MIN_WINDOW_MS);
    let finished = store.count_finished_since(step, since).await?;
    let throughput_per_min = finished as f64 / ((now - since) as f64 / 60_000.0);
    let unfinished = counts.unfinished();
    let eta_ms = if unfinished == 0 {
        Some(0)
    } else if throughput_per_min > 0.0 {
        Some((unfinished as f64 / throughput_per_min * 60_000.0) as Millis)
    } else {
        None
    };
    Ok(StepReport {
        oldest_pending_age_ms: counts.oldest_pending_at.map(|t| (now - t).max(0)),
        throughput_per_min,
        eta_ms,
        counts,
        counted_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ClaimRequest, Completion, Outcome, TaskResult, TaskSpec};
    use std::sync::Arc;

    #[tokio::test]
    async fn throughput_counts_only_the_observed_window() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let t0 = 1_000_000_000;
        let tasks: Vec<TaskSpec> = (0..4)
            .map(|i| TaskSpec::new("a", format!("t{i}"), "true"))
            .collect();
        store.import(&tasks, t0).await.unwrap();
        for i in 0..2 {
            let req = ClaimRequest {
                step: "a".into(),
                owner: "w".into(),
                ttl_ms: 60_000,
            };
            let c = store.claim(&req, t0 + 10_000).await.unwrap().unwrap();
            let done = Completion {
                outcome: Outcome::Succeeded,
                result: TaskResult::default(),
            };
            store
                .complete(&c.lease(), &done, t0 + 20_000 + i)
                .await
                .unwrap();
        }
        // Watched for one minute: 2 tasks in 1 minute, 2 left → 1 minute to go.
        let r = step_report(&store, "a", t0 + 60_000, Some(t0))
            .await
            .unwrap();
        assert!(
            (r.throughput_per_min - 2.0).abs() < 1e-9,
            "{}",
            r.throughput_per_min
        );
        assert_eq!(r.eta_ms, Some(60_000));
        // Unwatched: the same 2 tasks over the full 10-minute window.
        let r = step_report(&store, "a", t0 + 60_000, None).await.unwrap();
        assert!(
            (r.throughput_per_min - 0.2).abs() < 1e-9,
            "{}",
            r.throughput_per_min
        );
    }
}
