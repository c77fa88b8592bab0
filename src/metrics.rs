//! Every Prometheus metric of the controller, defined in one place on one registry (no
//! globals). Label values are step and fleet names or small fixed sets — never task or
//! instance ids, never error messages.

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
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
    pub worker_spot_notices: IntCounterVec,
    // Per fleet.
    pub fleet_desired: IntGaugeVec,
    pub fleet_instances: IntGaugeVec,
    pub launches: IntCounterVec,
    pub terminations: IntCounterVec,
    pub fleet_interruptions: IntCounterVec,
    pub provider_calls: IntCounterVec,
    pub provider_errors: IntCounterVec,
    pub provider_throttles: IntCounterVec,
    pub fleet_condition: IntGaugeVec,
    pub fleet_cost: CounterVec,
    pub fleet_cost_rate: GaugeVec,
    pub fleet_idle_cost_ratio: GaugeVec,
    pub step_cost_per_task: GaugeVec,
    // Controller.
    pub reconcile_duration: Histogram,
    pub progress_count_duration: Histogram,
    pub reconcile_errors: IntCounterVec,
    pub last_success: Gauge,
    pub leader: IntGauge,
    pub fenced_writes: IntCounter,
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

/// A metric's name, help text and label names: the table below defines every metric.
struct Def {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
}

impl Def {
    fn opts(&self) -> Opts {
        Opts::new(self.name, self.help)
    }

    fn histogram_opts(&self, buckets: Vec<f64>) -> HistogramOpts {
        HistogramOpts::new(self.name, self.help).buckets(buckets)
    }
}

const TASKS: Def = Def {
    name: "anamo_tasks",
    help: "Tasks by step and state.",
    labels: &["step", "state"],
};
const TASKS_COMPLETED: Def = Def {
    name: "anamo_tasks_completed_total",
    help: "Tasks that succeeded, as seen by the controller.",
    labels: &["step"],
};
const TASKS_FAILED: Def = Def {
    name: "anamo_tasks_failed_total",
    help: "Tasks that failed for good, as seen by the controller.",
    labels: &["step"],
};
const TASKS_REQUEUED: Def = Def {
    name: "anamo_tasks_requeued_total",
    help: "Tasks put back to pending by the controller.",
    labels: &["step", "reason"],
};
const OLDEST_PENDING_AGE: Def = Def {
    name: "anamo_oldest_pending_task_age_seconds",
    help: "Age of the oldest pending task of a step.",
    labels: &["step"],
};
const THROUGHPUT: Def = Def {
    name: "anamo_step_throughput_per_minute",
    help: "Tasks of a step that succeeded or failed in the last 5 minutes, per minute \
                     (the figure `anamo status` and the status page show).",
    labels: &["step"],
};
const TASK_DURATION: Def = Def {
    name: "anamo_task_duration_seconds",
    help: "Run time of task attempts by how they ended (succeeded, failed, \
                     failed_permanently, timeout, lease_lost, handed_back, result_lost); \
                     exported by workers run with --metrics-addr.",
    labels: &["step", "outcome"],
};
const CLAIM_CONFLICTS: Def = Def {
    name: "anamo_claim_conflicts_total",
    help: "Claims that lost a race for a task and tried another (DynamoDB store); \
                     exported by workers run with --metrics-addr.",
    labels: &["step"],
};
const WORKER_SPOT_NOTICES: Def = Def {
    name: "anamo_worker_spot_notices_total",
    help: "Spot notices a worker read from the instance metadata, by kind: rebalance (a \
                     rebalance recommendation: claims stop, running tasks finish) or \
                     interruption (an interruption notice: running tasks are handed back); \
                     exported by workers run with --metrics-addr.",
    labels: &["step", "kind"],
};
const FLEET_DESIRED: Def = Def {
    name: "anamo_fleet_desired_instances",
    help: "Instances the planner wants for a fleet.",
    labels: &["fleet"],
};
const FLEET_INSTANCES: Def = Def {
    name: "anamo_fleet_instances",
    help: "Instances of a fleet by status (actual, ready, busy, idle, booting, lost).",
    labels: &["fleet", "status"],
};
const LAUNCHES: Def = Def {
    name: "anamo_fleet_launches_total",
    help: "Instances launched.",
    labels: &["fleet"],
};
const TERMINATIONS: Def = Def {
    name: "anamo_fleet_terminations_total",
    help: "Instances terminated, by cause.",
    labels: &["fleet", "reason"],
};
const FLEET_INTERRUPTIONS: Def = Def {
    name: "anamo_fleet_interruptions_total",
    help: "Instances whose worker stopped for a spot interruption notice (kind interruption) \
                     or a rebalance recommendation (kind rebalance), by instance type and zone \
                     (unknown when the listing does not say); each instance counted once.",
    labels: &["fleet", "instance_type", "zone", "kind"],
};
const PROVIDER_CALLS: Def = Def {
    name: "anamo_provider_api_calls_total",
    help: "Calls to the fleet provider by operation.",
    labels: &["provider", "operation"],
};
const PROVIDER_ERRORS: Def = Def {
    name: "anamo_provider_api_errors_total",
    help: "Failed provider calls by operation and error kind.",
    labels: &["provider", "operation", "code"],
};
const PROVIDER_THROTTLES: Def = Def {
    name: "anamo_provider_throttled_total",
    help: "Provider calls refused by API throttling.",
    labels: &["provider"],
};
const FLEET_CONDITION: Def = Def {
    name: "anamo_fleet_condition",
    help: "1 when the fleet condition is True, else 0.",
    labels: &["fleet", "condition"],
};
const FLEET_COST: Def = Def {
    name: "anamo_fleet_cost_dollars_total",
    help: "What a fleet's instances cost so far: each instance's hourly price (spot, the \
                     Controller manifest's onDemandPrices, budget.pricePerInstanceHour, or the \
                     shipped table) from launch to the last pass that listed it, billed at least \
                     60 s.",
    labels: &["fleet"],
};
const FLEET_COST_RATE: Def = Def {
    name: "anamo_fleet_cost_dollars_per_hour",
    help: "What a fleet's listed instances cost per hour together.",
    labels: &["fleet"],
};
const FLEET_IDLE_COST_RATIO: Def = Def {
    name: "anamo_fleet_idle_cost_ratio",
    help: "Share of a fleet's cost spent on idle slots (booted, no task running).",
    labels: &["fleet"],
};
const STEP_COST_PER_TASK: Def = Def {
    name: "anamo_step_cost_per_task_dollars",
    help: "A step's fleet cost so far divided by its finished (succeeded or failed) tasks.",
    labels: &["step"],
};
const RECONCILE_DURATION: Def = Def {
    name: "anamo_reconcile_duration_seconds",
    help: "Duration of one reconcile pass.",
    labels: &[],
};
const PROGRESS_COUNT_DURATION: Def = Def {
    name: "anamo_progress_count_duration_seconds",
    help: "Duration of one progress count (every step's tasks counted by state), \
                     taken beside the passes every progressInterval.",
    labels: &[],
};
const RECONCILE_ERRORS: Def = Def {
    name: "anamo_reconcile_errors_total",
    help: "Errors during reconcile passes by kind.",
    labels: &["kind"],
};
const LAST_SUCCESS: Def = Def {
    name: "anamo_last_successful_reconcile_timestamp_seconds",
    help: "Unix time of the last reconcile pass without errors.",
    labels: &[],
};
const LEADER: Def = Def {
    name: "anamo_leader",
    help: "1 while this controller holds the leadership (or runs alone), else 0.",
    labels: &[],
};
const FENCED_WRITES: Def = Def {
    name: "anamo_controller_fenced_writes_total",
    help: "Leader writes the store refused because another controller had taken the \
                 leadership (this one then stops its pass and acts no more until it leads again).",
    labels: &[],
};
const MANIFEST_RELOAD_ERRORS: Def = Def {
    name: "anamo_manifest_reload_errors_total",
    help: "Manifest changes rejected as invalid (the last good manifests stay in force).",
    labels: &[],
};
const MANIFEST_LAST_RELOAD_OK: Def = Def {
    name: "anamo_manifest_last_reload_successful",
    help: "1 when the manifests on disk are the ones in force, 0 while a change to them is \
                 rejected as invalid (the last good manifests stay in force).",
    labels: &[],
};
const STORE_REQUESTS: Def = Def {
    name: "anamo_store_requests_total",
    help: "Task store operations by operation.",
    labels: &["operation"],
};
const STORE_ERRORS: Def = Def {
    name: "anamo_store_errors_total",
    help: "Failed task store operations by operation and kind.",
    labels: &["operation", "kind"],
};
const STORE_LATENCY: Def = Def {
    name: "anamo_store_request_duration_seconds",
    help: "Latency of task store operations.",
    labels: &["operation"],
};

/// Registers metrics on one registry, noting each one's name and label names.
struct Registrar {
    registry: Registry,
    names: Vec<(String, Vec<String>)>,
}

impl Registrar {
    fn add<M: Collector + Clone + 'static>(&mut self, m: prometheus::Result<M>) -> M {
        let m = m.expect("metric definition is valid");
        self.names.extend(
            m.desc()
                .iter()
                .map(|d| (d.fq_name.clone(), d.variable_labels.clone())),
        );
        self.registry
            .register(Box::new(m.clone()))
            .expect("metric names are unique");
        m
    }

    fn int_gauge_vec(&mut self, d: &Def) -> IntGaugeVec {
        self.add(IntGaugeVec::new(d.opts(), d.labels))
    }

    fn int_counter_vec(&mut self, d: &Def) -> IntCounterVec {
        self.add(IntCounterVec::new(d.opts(), d.labels))
    }

    fn counter_vec(&mut self, d: &Def) -> CounterVec {
        self.add(CounterVec::new(d.opts(), d.labels))
    }

    fn gauge_vec(&mut self, d: &Def) -> GaugeVec {
        self.add(GaugeVec::new(d.opts(), d.labels))
    }

    fn histogram_vec(&mut self, d: &Def, buckets: Vec<f64>) -> HistogramVec {
        self.add(HistogramVec::new(d.histogram_opts(buckets), d.labels))
    }

    fn histogram(&mut self, d: &Def, buckets: Vec<f64>) -> Histogram {
        self.add(Histogram::with_opts(d.histogram_opts(buckets)))
    }

    fn gauge(&mut self, d: &Def) -> Gauge {
        self.add(Gauge::with_opts(d.opts()))
    }

    fn int_gauge(&mut self, d: &Def) -> IntGauge {
        self.add(IntGauge::with_opts(d.opts()))
    }

    fn int_counter(&mut self, d: &Def) -> IntCounter {
        self.add(IntCounter::with_opts(d.opts()))
    }
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
        let mut r = Registrar {
            registry: Registry::new(),
            names: Vec::new(),
        };
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
            tasks: r.int_gauge_vec(&TASKS),
            tasks_completed: r.int_counter_vec(&TASKS_COMPLETED),
            tasks_failed: r.int_counter_vec(&TASKS_FAILED),
            tasks_requeued: r.int_counter_vec(&TASKS_REQUEUED),
            oldest_pending_age: r.gauge_vec(&OLDEST_PENDING_AGE),
            throughput: r.gauge_vec(&THROUGHPUT),
            task_duration: r.histogram_vec(&TASK_DURATION, secs),
            claim_conflicts: r.int_counter_vec(&CLAIM_CONFLICTS),
            worker_spot_notices: r.int_counter_vec(&WORKER_SPOT_NOTICES),
            fleet_desired: r.int_gauge_vec(&FLEET_DESIRED),
            fleet_instances: r.int_gauge_vec(&FLEET_INSTANCES),
            launches: r.int_counter_vec(&LAUNCHES),
            terminations: r.int_counter_vec(&TERMINATIONS),
            fleet_interruptions: r.int_counter_vec(&FLEET_INTERRUPTIONS),
            provider_calls: r.int_counter_vec(&PROVIDER_CALLS),
            provider_errors: r.int_counter_vec(&PROVIDER_ERRORS),
            provider_throttles: r.int_counter_vec(&PROVIDER_THROTTLES),
            fleet_condition: r.int_gauge_vec(&FLEET_CONDITION),
            fleet_cost: r.counter_vec(&FLEET_COST),
            fleet_cost_rate: r.gauge_vec(&FLEET_COST_RATE),
            fleet_idle_cost_ratio: r.gauge_vec(&FLEET_IDLE_COST_RATIO),
            step_cost_per_task: r.gauge_vec(&STEP_COST_PER_TASK),
            reconcile_duration: r.histogram(&RECONCILE_DURATION, fast.clone()),
            progress_count_duration: r.histogram(&PROGRESS_COUNT_DURATION, fast.clone()),
            reconcile_errors: r.int_counter_vec(&RECONCILE_ERRORS),
            last_success: r.gauge(&LAST_SUCCESS),
            leader: r.int_gauge(&LEADER),
            fenced_writes: r.int_counter(&FENCED_WRITES),
            manifest_reload_errors: r.int_counter(&MANIFEST_RELOAD_ERRORS),
            manifest_last_reload_ok: r.int_gauge(&MANIFEST_LAST_RELOAD_OK),
            store_requests: r.int_counter_vec(&STORE_REQUESTS),
            store_errors: r.int_counter_vec(&STORE_ERRORS),
            store_latency: r.histogram_vec(&STORE_LATENCY, fast),
            registry: r.registry,
            names: r.names,
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
