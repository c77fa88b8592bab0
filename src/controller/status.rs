//! What the controller publishes: per-fleet status (also written to the store so `anamo status`
//! shows it), per-step progress, and the last actions. Served as `/api/status`.
//!
//! It also holds the one definition of a step's throughput ([`throughput_per_min`]: tasks
//! finished in the last [`THROUGHPUT_WINDOW_MS`], per minute) and of its ETA, used by the CLI,
//! `/api/status`, the status page and the metrics alike, and the one rule for when published
//! figures are stale ([`staleness`]).

use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::failures::{FailedTasks, StarvedGather};
use super::interruptions::InterruptionTotals;
use super::sample_view::SharedSamples;
use crate::clock::Millis;
pub use crate::cost::ledger::FleetCost;
use crate::model::StepCounts;
use crate::planner::{Condition, ConditionStatus, FleetStatus};
use crate::store::{SharedStore, StatusDoc, StoreError};

/// Window over which throughput is measured: the tasks finished in the last 5 minutes.
pub const THROUGHPUT_WINDOW_MS: Millis = 5 * 60 * 1000;
/// The window as people read it (`done in the last 5m`).
pub const THROUGHPUT_WINDOW_TEXT: &str = "5m";
/// Published figures older than this many controller intervals are stale: the controller
/// stopped, or its passes hang.
pub const STALE_AFTER_INTERVALS: i64 = 3;
/// The cluster's name when neither `--cluster` nor a Controller manifest names one.
pub const DEFAULT_CLUSTER: &str = "anamo";
/// Name prefix of the controller's own status document in the store.
pub const CONTROLLER_DOC_PREFIX: &str = "controller/";
/// How many samples the status page and `/api/status` show (the first matching a search).
pub const SAMPLES_SHOWN: usize = 200;
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
    /// What the fleet's instances cost so far (see [`crate::cost`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<FleetCost>,
    /// Instances interrupted or rebalanced so far (see [`crate::controller::interruptions`]).
    pub interruptions: InterruptionTotals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepReport {
    #[serde(flatten)]
    pub counts: StepCounts,
    /// Age of the oldest pending task.
    pub oldest_pending_age_ms: Option<Millis>,
    /// Tasks that succeeded or failed in the last [`THROUGHPUT_WINDOW_MS`].
    #[serde(default)]
    pub finished_in_window: u64,
    /// `finished_in_window` per minute of the window (see [`throughput_per_min`]).
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
    /// Time between passes; figures older than [`STALE_AFTER_INTERVALS`] of it are stale.
    pub interval_ms: Millis,
    /// The last manifest change that was rejected (the last good manifests stay in force);
    /// cleared once the files load again.
    pub manifest_error: Option<String>,
    pub fleets: Vec<FleetReport>,
    pub steps: Vec<StepReport>,
    pub recent_actions: VecDeque<ActionRecord>,
    /// The newest tasks that failed on their own (counted with `steps`).
    pub failed_tasks: FailedTasks,
    /// Waiting tasks that gather over a step without any task (counted with `steps`).
    pub starved: Vec<StarvedGather>,
    /// Every sample × step (counted with `steps`, written in place by the progress refresh).
    /// Not serialized whole: `/api/status` and the page show a searched, bounded part of it
    /// ([`SharedSamples::view`]).
    #[serde(skip)]
    pub samples: Arc<SharedSamples>,
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
            interval_ms: 0,
            manifest_error: None,
            fleets: Vec::new(),
            steps: Vec::new(),
            recent_actions: VecDeque::new(),
            failed_tasks: FailedTasks::default(),
            starved: Vec::new(),
            samples: Arc::default(),
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

/// The throughput of a step: `finished_in_window` tasks (succeeded or failed) in the last
/// [`THROUGHPUT_WINDOW_MS`], per minute. A fixed window, so every reader (CLI, page, metrics)
/// computes the same figure from the same count, whenever and wherever it started watching.
pub fn throughput_per_min(finished_in_window: u64) -> f64 {
    finished_in_window as f64 * 60_000.0 / THROUGHPUT_WINDOW_MS as f64
}

/// Time to finish `unfinished` tasks at `throughput_per_min`: `Some(0)` when nothing is left,
/// `None` when nothing finished in the window (no rate to go by).
pub fn eta_ms(unfinished: u64, throughput_per_min: f64) -> Option<Millis> {
    if unfinished == 0 {
        Some(0)
    } else if throughput_per_min > 0.0 {
        Some((unfinished as f64 / throughput_per_min * 60_000.0) as Millis)
    } else {
        None
    }
}

/// How a step ended, once nothing is left to run: `finished`, `finished, 9 failed`,
/// `finished, 9 failed, 2 cancelled`. `None` while tasks are unfinished (or there are none).
pub fn finished_text(c: &StepCounts) -> Option<String> {
    if c.total() == 0 || c.unfinished() > 0 {
        return None;
    }
    let mut out = "finished".to_string();
    for (n, what) in [(c.failed, "failed"), (c.cancelled, "cancelled")] {
        if n > 0 {
            out.push_str(&format!(", {n} {what}"));
        }
    }
    Some(out)
}

/// The ETA as shown to people: `-` without tasks, [`finished_text`] when done, the time left,
/// or why there is no estimate.
pub fn eta_text(s: &StepReport) -> String {
    if s.counts.total() == 0 {
        return "-".into();
    }
    if let Some(done) = finished_text(&s.counts) {
        return done;
    }
    match s.eta_ms {
        Some(ms) => crate::clock::format_duration_ms(ms / 1000 * 1000),
        None => format!("unknown (nothing finished in the last {THROUGHPUT_WINDOW_TEXT})"),
    }
}

/// How old published figures are, and whether they are stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Staleness {
    pub age_ms: Millis,
    pub stale: bool,
}

/// Figures published at `at` by a controller passing every `interval_ms` are stale at `now`
/// once older than [`STALE_AFTER_INTERVALS`] intervals. An unknown interval (0) never is.
pub fn staleness(at: Millis, interval_ms: Millis, now: Millis) -> Staleness {
    let age_ms = now.saturating_sub(at).max(0);
    Staleness {
        age_ms,
        stale: interval_ms > 0 && age_ms > interval_ms.saturating_mul(STALE_AFTER_INTERVALS),
    }
}

/// What the leading controller writes to the store each pass, so `anamo status` (another
/// process) can say when it was last seen and whether a manifest change was rejected.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControllerDoc {
    pub cluster: String,
    pub identity: String,
    pub interval_ms: Millis,
    #[serde(default)]
    pub manifest_error: Option<String>,
    /// Written once when the controller shut down cleanly: its figures stay as they were.
    #[serde(default)]
    pub stopped: bool,
}

impl ControllerDoc {
    /// The store document for this report, updated at `now`.
    pub fn to_doc(&self, now: Millis) -> StatusDoc {
        StatusDoc {
            name: format!("{CONTROLLER_DOC_PREFIX}{}", self.cluster),
            updated_at: now,
            body: serde_json::to_value(self).unwrap_or_default(),
        }
    }

    /// The controller reports among the store's status documents (others are skipped).
    pub fn from_docs(docs: &[StatusDoc]) -> Vec<(ControllerDoc, Millis)> {
        docs.iter()
            .filter(|d| d.name.starts_with(CONTROLLER_DOC_PREFIX))
            .filter_map(|d| {
                serde_json::from_value::<ControllerDoc>(d.body.clone())
                    .ok()
                    .map(|c| (c, d.updated_at))
            })
            .collect()
    }
}

impl super::Controller {
    /// This controller's report for the store (see [`ControllerDoc`]).
    pub(super) fn controller_doc(&self) -> ControllerDoc {
        ControllerDoc {
            cluster: self.cfg.cluster.clone(),
            identity: self.cfg.identity.clone(),
            interval_ms: crate::clock::ms(self.cfg.interval),
            manifest_error: self.manifests.rejected().map(str::to_string),
            stopped: false,
        }
    }

    /// Says in the store that this controller stopped, if it was the one reporting (a
    /// follower must not overwrite the leader's report).
    pub(super) async fn report_stopped(&self) {
        let role = self.status.read().unwrap_or_else(|p| p.into_inner()).role;
        if role != Role::Leader {
            return;
        }
        let doc = ControllerDoc {
            stopped: true,
            ..self.controller_doc()
        };
        let doc = doc.to_doc(self.clock.now());
        if let Err(e) = self.store.put_status(&doc, self.fence()).await {
            tracing::warn!(error = %e, "cannot report in the store that the controller stopped");
        }
    }
}

/// Progress of one step from the store at `now`, with the throughput over the last
/// [`THROUGHPUT_WINDOW_MS`] (see [`throughput_per_min`]).
pub async fn step_report(
    store: &SharedStore,
    step: &str,
    now: Millis,
) -> Result<StepReport, StoreError> {
    let counts = store.counts(step).await?;
    let finished_in_window = store
        .count_finished_since(step, now - THROUGHPUT_WINDOW_MS)
        .await?;
    let throughput_per_min = throughput_per_min(finished_in_window);
    Ok(StepReport {
        oldest_pending_age_ms: counts.oldest_pending_at.map(|t| (now - t).max(0)),
        finished_in_window,
        throughput_per_min,
        eta_ms: eta_ms(counts.unfinished(), throughput_per_min),
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
    async fn throughput_counts_the_tasks_finished_in_the_last_five_minutes() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let t0 = 1_000_000_000;
        let mut tasks: Vec<TaskSpec> = (0..6)
            .map(|i| TaskSpec::new("a", format!("t{i}"), "true"))
            .collect();
        tasks.push(TaskSpec::new("b", "t0", "true"));
        store.import(&tasks, t0).await.unwrap();
        // Step a: one task finished 6 minutes before `now` (outside the window), three inside.
        let finish = |step: &'static str, at: Millis| {
            let store = store.clone();
            async move {
                let req = ClaimRequest {
                    step: step.into(),
                    owner: "w".into(),
                    ttl_ms: 600_000,
                };
                let c = store.claim(&req, at - 1).await.unwrap().unwrap();
                let done = Completion {
                    retry_delay: None,
                    outcome: Outcome::Succeeded,
                    result: TaskResult::default(),
                };
                store.complete(&c.lease(), &done, at).await.unwrap();
            }
        };
        let now = t0 + 10 * 60_000;
        finish("a", now - 6 * 60_000).await;
        for k in 1..=3 {
            finish("a", now - k * 60_000).await;
        }
        finish("b", now - 1_000).await;
        let a = step_report(&store, "a", now).await.unwrap();
        assert_eq!(a.finished_in_window, 3);
        assert!(
            (a.throughput_per_min - 0.6).abs() < 1e-9,
            "{}",
            a.throughput_per_min
        );
        // 2 left at 0.6/min: 200 s.
        assert_eq!(a.eta_ms, Some(200_000));
        assert_eq!(eta_text(&a), "3m 20s");
        // Every step has its own figure.
        let b = step_report(&store, "b", now).await.unwrap();
        assert_eq!(b.finished_in_window, 1);
        assert!((b.throughput_per_min - 0.2).abs() < 1e-9);
        assert_eq!(eta_text(&b), "finished");
    }

    fn counts(succeeded: u64, failed: u64, cancelled: u64, pending: u64) -> StepCounts {
        StepCounts {
            step: "s".into(),
            pending,
            succeeded,
            failed,
            cancelled,
            ..Default::default()
        }
    }

    #[test]
    fn a_finished_step_says_how_many_failed() {
        assert_eq!(
            finished_text(&counts(91, 9, 0, 0)).as_deref(),
            Some("finished, 9 failed")
        );
        assert_eq!(
            finished_text(&counts(90, 9, 1, 0)).as_deref(),
            Some("finished, 9 failed, 1 cancelled")
        );
        assert_eq!(
            finished_text(&counts(100, 0, 0, 0)).as_deref(),
            Some("finished")
        );
        assert_eq!(finished_text(&counts(90, 9, 0, 1)), None);
        assert_eq!(finished_text(&counts(0, 0, 0, 0)), None);
        let r = StepReport {
            counts: counts(1, 0, 0, 3),
            oldest_pending_age_ms: None,
            finished_in_window: 0,
            throughput_per_min: 0.0,
            eta_ms: None,
            counted_at: 0,
        };
        assert_eq!(eta_text(&r), "unknown (nothing finished in the last 5m)");
    }

    #[test]
    fn figures_older_than_three_intervals_are_stale() {
        let s = staleness(1_000, 1_000, 4_000);
        assert_eq!(
            s,
            Staleness {
                age_ms: 3_000,
                stale: false
            }
        );
        assert!(staleness(1_000, 1_000, 4_001).stale);
        assert!(!staleness(1_000, 0, 1_000_000).stale, "unknown interval");
        assert_eq!(staleness(5_000, 1_000, 4_000).age_ms, 0, "clock skew");
    }

    #[test]
    fn controller_docs_round_trip_through_status_documents() {
        let doc = ControllerDoc {
            cluster: "c".into(),
            identity: "h".into(),
            interval_ms: 1_000,
            manifest_error: Some("m.yaml:3: bad".into()),
            stopped: false,
        };
        let other = StatusDoc {
            name: "fleet/a".into(),
            updated_at: 1,
            body: serde_json::json!({}),
        };
        let found = ControllerDoc::from_docs(&[other, doc.to_doc(42)]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1, 42);
        assert_eq!(found[0].0.manifest_error.as_deref(), Some("m.yaml:3: bad"));
    }
}
