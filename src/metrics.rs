//! Every Prometheus metric of the controller, defined in one place on one registry (no
//! globals). Label values are step and fleet names or small fixed sets — never task or
//! instance ids, never error messages.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    // Per step.
    pub tasks: IntGaugeVec,
    pub tasks_completed: IntCounterVec,
    pub tasks_failed: IntCounterVec,
    pub tasks_requeued: IntCounterVec,
    pub oldest_pending_age: GaugeVec,
    pub throughput: GaugeVec,
    pub task_duration: HistogramVec,
    pub claim_conflicts: IntCounterVec,
    // Per fleet.
    pub fleet_desired: IntGaugeVec,
    pub fleet_instances: IntGaugeVec,
    pub launches: IntCounterVec,
    pub terminations: IntCounterVec,
    pub provider_calls: IntCounterVec,
    pub provider_errors: IntCounterVec,
    pub provider_throttles: IntCounterVec,
    pub fleet_condition: IntGaugeVec,
    // Controller.
    pub reconcile_duration: Histogram,
    pub progress_count_duration: Histogram,
    pub reconcile_errors: IntCounterVec,
    pub last_success: Gauge,
    pub leader: IntGauge,
    pub manifest_reload_errors: IntCounter,
    pub manifest_last_reload_ok: IntGauge,
    pub store_requests: IntCounterVec,
    pub store_errors: IntCounterVec,
    pub store_latency: HistogramVec,
    names: Vec<(String, Vec<String>)>,
}

/// Instance counts exported per fleet under `anamo_fleet_instances{status=...}`.
pub const INSTANCE_STATUSES: [&str; 6] = ["actual", "ready", "busy", "idle", "booting", "lost"];

/// The `kind`s of `anamo_reconcile_errors_total`, exported at 0 from the start so that the
/// first error of a kind shows in `rate()` and `increase()` (a series that appears with value 1
/// has no increase).
pub const RECONCILE_ERROR_KINDS: [&str; 4] = ["leadership", "store", "observe", "provider"];

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self::define();
        m.manifest_last_reload_ok.set(1);
        for kind in RECONCILE_ERROR_KINDS {
            m.reconcile_errors.with_label_values(&[kind]).inc_by(0);
        }
        m
    }

    fn define() -> Self {
        let registry = Registry::new();
        let mut names = Vec::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definition is valid");
                names.extend(
                    prometheus::core::Collector::desc(&m)
                        .iter()
                        .map(|d| (d.fq_name.clone(), d.variable_labels.clone())),
                );
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric names are unique");
                m
            }};
        }
        let secs = vec![
            0.1,
            0.5,
            1.0,
            5.0,
            15.0,
            60.0,
            300.0,
            900.0,
            3600.0,
            4.0 * 3600.0,
            12.0 * 3600.0,
        ];
        let fast = vec![
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Metrics {
            tasks: reg!(IntGaugeVec::new(
                opts("anamo_tasks", "Tasks by step and state."),
                &["step", "state"]
            )),
            tasks_completed: reg!(IntCounterVec::new(
                opts(
                    "anamo_tasks_completed_total",
                    "Tasks that succeeded, as seen by the controller."
                ),
                &["step"]
            )),
            tasks_failed: reg!(IntCounterVec::new(
                opts(
                    "anamo_tasks_failed_total",
                    "Tasks that failed for good, as seen by the controller."
                ),
                &["step"]
            )),
            tasks_requeued: reg!(IntCounterVec::new(
                opts(
                    "anamo_tasks_requeued_total",
                    "Tasks put back to pending by the controller."
                ),
                &["step", "reason"]
            )),
            oldest_pending_age: reg!(GaugeVec::new(
                opts(
                    "anamo_oldest_pending_task_age_seconds",
                    "Age of the oldest pending task of a step."
                ),
                &["step"]
            )),
            throughput: reg!(GaugeVec::new(
                opts(
                    "anamo_step_throughput_per_minute",
                    "Tasks of a step that succeeded or failed in the last 5 minutes, per minute \
                     (the figure `anamo status` and the status page show)."
                ),
                &["step"]
            )),
            task_duration: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "anamo_task_duration_seconds",
                    "Run time of task attempts by how they ended (succeeded, failed, \
                     failed_permanently, timeout, lease_lost, handed_back, result_lost); \
                     exported by workers run with --metrics-addr."
                )
                .buckets(secs),
                &["step", "outcome"]
            )),
            claim_conflicts: reg!(IntCounterVec::new(
                opts(
                    "anamo_claim_conflicts_total",
                    "Claims that lost a race for a task and tried another (DynamoDB store); \
                     exported by workers run with --metrics-addr."
                ),
                &["step"]
            )),
            fleet_desired: reg!(IntGaugeVec::new(
                opts(
                    "anamo_fleet_desired_instances",
                    "Instances the planner wants for a fleet."
                ),
                &["fleet"]
            )),
            fleet_instances: reg!(IntGaugeVec::new(
                opts(
                    "anamo_fleet_instances",
                    "Instances of a fleet by status (actual, ready, busy, idle, booting, lost)."
                ),
                &["fleet", "status"]
            )),
            launches: reg!(IntCounterVec::new(
                opts("anamo_fleet_launches_total", "Instances launched."),
                &["fleet"]
            )),
            terminations: reg!(IntCounterVec::new(
                opts(
                    "anamo_fleet_terminations_total",
                    "Instances terminated, by cause."
                ),
                &["fleet", "reason"]
            )),
            provider_calls: reg!(IntCounterVec::new(
                opts(
                    "anamo_provider_api_calls_total",
                    "Calls to the fleet provider by operation."
                ),
                &["provider", "operation"]
            )),
            provider_errors: reg!(IntCounterVec::new(
                opts(
                    "anamo_provider_api_errors_total",
                    "Failed provider calls by operation and error kind."
                ),
                &["provider", "operation", "code"]
            )),
            provider_throttles: reg!(IntCounterVec::new(
                opts(
                    "anamo_provider_throttled_total",
                    "Provider calls refused by API throttling."
                ),
                &["provider"]
            )),
            fleet_condition: reg!(IntGaugeVec::new(
                opts(
                    "anamo_fleet_condition",
                    "1 when the fleet condition is True, else 0."
                ),
                &["fleet", "condition"]
            )),
            reconcile_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "anamo_reconcile_duration_seconds",
                    "Duration of one reconcile pass."
                )
                .buckets(fast.clone())
            )),
            progress_count_duration: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "anamo_progress_count_duration_seconds",
                    "Duration of one progress count (every step's tasks counted by state), \
                     taken beside the passes every progressInterval."
                )
                .buckets(fast.clone())
            )),
            reconcile_errors: reg!(IntCounterVec::new(
                opts(
                    "anamo_reconcile_errors_total",
                    "Errors during reconcile passes by kind."
                ),
                &["kind"]
            )),
            last_success: reg!(Gauge::with_opts(opts(
                "anamo_last_successful_reconcile_timestamp_seconds",
                "Unix time of the last reconcile pass without errors."
            ))),
            leader: reg!(IntGauge::with_opts(opts(
                "anamo_leader",
                "1 while this controller holds the leadership (or runs alone), else 0."
            ))),
            manifest_reload_errors: reg!(IntCounter::with_opts(opts(
                "anamo_manifest_reload_errors_total",
                "Manifest changes rejected as invalid (the last good manifests stay in force)."
            ))),
            manifest_last_reload_ok: reg!(IntGauge::with_opts(opts(
                "anamo_manifest_last_reload_successful",
                "1 when the manifests on disk are the ones in force, 0 while a change to them is \
                 rejected as invalid (the last good manifests stay in force)."
            ))),
            store_requests: reg!(IntCounterVec::new(
                opts(
                    "anamo_store_requests_total",
                    "Task store operations by operation."
                ),
                &["operation"]
            )),
            store_errors: reg!(IntCounterVec::new(
                opts(
                    "anamo_store_errors_total",
                    "Failed task store operations by operation and kind."
                ),
                &["operation", "kind"]
            )),
            store_latency: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "anamo_store_request_duration_seconds",
                    "Latency of task store operations."
                )
                .buckets(fast),
                &["operation"]
            )),
            registry,
            names,
        }
    }

    /// Every metric defined here with its label names (histograms without their `_bucket`,
    /// `_sum` and `_count` suffixes), whether or not it has a series yet: dashboards and alert
    /// rules are checked against this list.
    pub fn definitions(&self) -> &[(String, Vec<String>)] {
        &self.names
    }

    /// The registry in Prometheus' text format.
    pub fn render(&self) -> String {
        encode(&self.registry.gather())
    }

    /// Like [`Metrics::render`], limited to the metric families named (the worker exports
    /// only its own).
    pub fn render_only(&self, names: &[&str]) -> String {
        let mut families = self.registry.gather();
        families.retain(|f| names.contains(&f.name()));
        encode(&families)
    }
}

fn encode(families: &[prometheus::proto::MetricFamily]) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail for well-formed metric families.
    let _ = TextEncoder::new().encode(families, &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_format() {
        let m = Metrics::new();
        m.tasks.with_label_values(&["align", "pending"]).set(3);
        m.leader.set(1);
        let text = m.render();
        assert!(
            text.contains("anamo_tasks{state=\"pending\",step=\"align\"} 3"),
            "{text}"
        );
        assert!(text.contains("anamo_leader 1"));
        assert!(text.contains("anamo_manifest_last_reload_successful 1"));
        assert!(text.contains("anamo_reconcile_errors_total{kind=\"store\"} 0"));
    }

    #[test]
    fn lists_every_metric_with_its_labels() {
        let m = Metrics::new();
        let defs = m.definitions();
        let names: Vec<&str> = defs.iter().map(|(n, _)| n.as_str()).collect();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert!(names.len() >= 24, "{names:?}");
        let labels = |name: &str| {
            defs.iter()
                .find(|(n, _)| n == name)
                .map(|(_, l)| l.clone())
                .unwrap_or_else(|| panic!("{name} missing from {names:?}"))
        };
        assert_eq!(labels("anamo_tasks"), ["step", "state"]);
        assert_eq!(labels("anamo_store_errors_total"), ["operation", "kind"]);
        assert!(labels("anamo_reconcile_duration_seconds").is_empty());
        assert!(labels("anamo_manifest_last_reload_successful").is_empty());
        assert!(names.iter().all(|n| n.starts_with("anamo_")));
    }
}
