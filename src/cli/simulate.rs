//! `anamo simulate`: replay a task trace through the real planner with a simulated clock and
//! provider, next to two baselines (see [`crate::sim`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::output::{out, outln, print_json, Table};
use super::parse_duration;
use crate::clock::ms;
use crate::manifest;
use crate::sim::{
    self, Ec2Quotas, FleetDefaults, GeneratorSpec, PolicyKind, SimReport, SimSettings, Trace,
};

const AFTER_HELP: &str = "\
Examples:
  anamo simulate --trace examples/traces/burst.csv --manifests examples/traces/manifests
  anamo simulate --generate 'tasks=2000,steps=3,duration=lognormal(7,0.5),seed=42' \\
      --max-instances 20 --slots 4 --plot docs/img/simulation.svg
  anamo simulate --trace trace.jsonl --spot-rate 0.05 --capacity-error-prob 0.1 --json

Trace files: CSV with a header naming step, submit_time_s, duration_s and optionally id, or
JSON lines with those keys. Without manifests each step depends on the step before it (same
task id), unless --independent-steps.

Generator (--generate): tasks=N, steps=K or steps=a:b:c, duration=lognormal(MU,SIGMA) (ln
seconds) | const(S) | uniform(MIN,MAX) | exp(MEAN), scale=1:0.5:.. (per-step duration
factors), arrival=burst | poisson(PER_SEC) | uniform(SPAN_S) | waves(COUNT,GAP_S), seed=S.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct SimulateArgs {
    /// Task trace to replay (CSV or JSONL).
    #[arg(
        long,
        conflicts_with_all = ["generate", "sweep"],
        required_unless_present_any = ["generate", "sweep"]
    )]
    pub trace: Option<PathBuf>,
    /// Generate a trace instead, e.g. `tasks=10000,steps=3,duration=lognormal(7,0.6),seed=42`.
    #[arg(long, conflicts_with = "sweep")]
    pub generate: Option<String>,
    /// Run N generated traces across the workload regimes (seeded by --seed) and print the
    /// distribution of anamo's figures against the lower bound, the clairvoyant reference and
    /// the static baseline. Each case draws its own slots and maxInstances.
    #[arg(long, value_name = "N", conflicts_with_all = ["manifests", "plot", "write_trace"])]
    pub sweep: Option<u32>,
    /// With --sweep: write the worst cases' traces (by instance-hours ÷ lower bound and by
    /// makespan ÷ static) to this directory, each with the command that replays it.
    #[arg(long, value_name = "DIR", requires = "sweep")]
    pub sweep_out: Option<PathBuf>,
    /// Write the (generated) trace as CSV to this file.
    #[arg(long)]
    pub write_trace: Option<PathBuf>,
    /// Fleet manifests (file or directory); each step of the trace needs a fleet. Without
    /// them, the fleet flags below apply to every step.
    #[arg(long)]
    pub manifests: Option<PathBuf>,

    /// Fleet: instances kept when there is no work.
    #[arg(
        long,
        default_value_t = 0,
        help_heading = "Fleet (without --manifests)"
    )]
    pub min_instances: u32,
    /// Fleet: upper bound on instances.
    #[arg(
        long,
        default_value_t = 20,
        help_heading = "Fleet (without --manifests)"
    )]
    pub max_instances: u32,
    /// Fleet: tasks one instance runs at a time.
    #[arg(
        long,
        default_value_t = 1,
        help_heading = "Fleet (without --manifests)"
    )]
    pub slots: u32,
    /// Fleet: backlog that justifies one instance [default: --slots].
    #[arg(long, help_heading = "Fleet (without --manifests)")]
    pub tasks_per_instance: Option<u32>,
    /// Fleet: idle time before an extra instance is removed.
    #[arg(long, value_parser = parse_duration, default_value = manifest::DEFAULT_SCALE_DOWN_DELAY_ARG, help_heading = "Fleet (without --manifests)")]
    pub scale_down_delay: Duration,
    /// Fleet: time a new instance has to register its worker.
    #[arg(long, value_parser = parse_duration, default_value = manifest::DEFAULT_BOOT_TIMEOUT_ARG, help_heading = "Fleet (without --manifests)")]
    pub boot_timeout: Duration,
    /// Fleet: task lease (a killed worker's tasks come back after it).
    #[arg(long, value_parser = parse_duration, default_value = manifest::DEFAULT_LEASE_TTL_ARG, help_heading = "Fleet (without --manifests)")]
    pub lease_ttl: Duration,
    /// Fleet: workers exit after being idle this long.
    #[arg(long, value_parser = parse_duration, help_heading = "Fleet (without --manifests)")]
    pub idle_exit: Option<Duration>,
    /// Fleet: what a task typically runs (the manifest's `taskDuration`): the planner's task
    /// duration until a few tasks have finished.
    #[arg(long, value_parser = parse_duration, help_heading = "Fleet (without --manifests)")]
    pub task_duration: Option<Duration>,
    /// Steps do not depend on each other.
    #[arg(long, help_heading = "Fleet (without --manifests)")]
    pub independent_steps: bool,
    /// Fleet: the instances' type, priced by the shipped on-demand table (us-east-1).
    #[arg(long, help_heading = "Fleet (without --manifests)")]
    pub instance_type: Option<String>,
    /// Fleet: what one instance costs per hour, in dollars [default: the --instance-type's
    /// shipped price; without either, instance time is reported unpriced].
    #[arg(long, help_heading = "Fleet (without --manifests)")]
    pub price_per_instance_hour: Option<f64>,

    /// Time between controller passes [default: the Controller manifest's, else 10s].
    #[arg(long, value_parser = parse_duration, help_heading = "Simulation")]
    pub interval: Option<Duration>,
    /// Simulated time per step of the world.
    #[arg(long, value_parser = parse_duration, default_value = "1s", help_heading = "Simulation")]
    pub tick: Duration,
    /// From launch until the instance's worker registers.
    #[arg(long, value_parser = parse_duration, default_value = "90s", help_heading = "Simulation")]
    pub boot_delay: Duration,
    /// Extra boot time, uniform between 0 and this.
    #[arg(long, value_parser = parse_duration, default_value = "0s", help_heading = "Simulation")]
    pub boot_jitter: Duration,
    /// Spot interruptions per instance-hour.
    #[arg(long, default_value_t = 0.0, help_heading = "Simulation")]
    pub spot_rate: f64,
    /// Notice before a spot instance disappears.
    #[arg(long, value_parser = parse_duration, default_value = "2m", help_heading = "Simulation")]
    pub spot_notice: Duration,
    /// Probability that a launch call fails with a capacity error.
    #[arg(long, default_value_t = 0.0, help_heading = "Simulation")]
    pub capacity_error_prob: f64,
    #[command(flatten)]
    pub capacity: super::simulate_capacity::CapacityArgs,
    /// No launches for this long after a capacity error.
    #[arg(long, value_parser = parse_duration, default_value = "2m", help_heading = "Simulation")]
    pub cool_off: Duration,
    /// Random seed (trace generator, provider faults, claim order).
    #[arg(long, default_value_t = 42, help_heading = "Simulation")]
    pub seed: u64,
    /// Give up this long after the last submission.
    #[arg(long, value_parser = parse_duration, default_value = "7days", help_heading = "Simulation")]
    pub max_time: Duration,
    /// Do not throttle the simulated provider's calls (by default it enforces EC2's
    /// documented API quotas for an account: RunInstances 5 requests and 1,000 instances,
    /// refilled at 2/s each; TerminateInstances 100 requests refilled at 5/s and 1,000
    /// instances at 20/s).
    #[arg(long, help_heading = "Simulation")]
    pub no_api_quotas: bool,

    /// Policies to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [PolicyArg::Anamo, PolicyArg::Static, PolicyArg::Keda, PolicyArg::Clairvoyant], help_heading = "Baselines")]
    pub policies: Vec<PolicyArg>,
    /// Instances per fleet of the static baseline [default: each fleet's maxInstances].
    #[arg(long, help_heading = "Baselines")]
    pub static_instances: Option<u32>,
    /// Poll interval of the KEDA-like baseline.
    #[arg(long, value_parser = parse_duration, default_value = "30s", help_heading = "Baselines")]
    pub keda_poll: Duration,
    /// Scale-down cooldown of the KEDA-like baseline.
    #[arg(long, value_parser = parse_duration, default_value = "300s", help_heading = "Baselines")]
    pub keda_cooldown: Duration,

    /// Print the report as JSON (with --sweep: the summary and every case's figures).
    #[arg(long)]
    pub json: bool,
    /// Write an SVG plot of fleet size and backlog over time.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PolicyArg {
    Anamo,
    Static,
    Keda,
    Clairvoyant,
}

impl From<PolicyArg> for PolicyKind {
    fn from(p: PolicyArg) -> Self {
        match p {
            PolicyArg::Anamo => PolicyKind::Anamo,
            PolicyArg::Static => PolicyKind::Static,
            PolicyArg::Keda => PolicyKind::Keda,
            PolicyArg::Clairvoyant => PolicyKind::Clairvoyant,
        }
    }
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.sweep {
        return super::simulate_sweep::run(&args, n);
    }
    let trace = match (&args.trace, &args.generate) {
        (Some(path), _) => Trace::load(path)?,
        (None, Some(spec)) => GeneratorSpec::parse(spec)?.generate(args.seed),
        (None, None) => anyhow::bail!("give --trace FILE or --generate SPEC"),
    };
    if let Some(path) = &args.write_trace {
        std::fs::write(path, trace.to_csv())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let manifests = match &args.manifests {
        Some(p) => Some(crate::manifest::load(p).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    if let Some(p) = args.price_per_instance_hour {
        anyhow::ensure!(
            p.is_finite() && p >= 0.0,
            "--price-per-instance-hour {p}: give dollars per instance-hour, 0 or more (e.g. 0.096)"
        );
    }
    let defaults = fleet_defaults(&args);
    let fleets = sim::fleets_for(
        &trace,
        manifests.as_ref(),
        &defaults,
        args.independent_steps,
    )?;
    let interval = args
        .interval
        .or_else(|| {
            manifests
                .as_ref()
                .and_then(|m| m.controller.as_ref().map(|c| c.spec.interval))
        })
        .unwrap_or(crate::manifest::DEFAULT_INTERVAL);
    let mut settings = sim_settings(&args, interval);
    settings.capacity = args.capacity.settings(args.spot_rate)?;
    let mut policies: Vec<PolicyKind> = args.policies.iter().map(|p| (*p).into()).collect();
    policies.sort();
    policies.dedup();
    let outcome = sim::simulate(&trace, &fleets, &settings, &policies)?;
    if let Some(path) = &args.plot {
        sim::plot_svg(path, &outcome.report, &outcome.timelines).map_err(|e| anyhow::anyhow!(e))?;
    }
    if args.json {
        print_json(&outcome.report)?;
    } else {
        out!("{}", render(&outcome.report));
        if let Some(path) = &args.plot {
            outln!("plot written to {}", path.display());
        }
    }
    let unfinished = outcome.report.policies.iter().any(|p| p.unfinished > 0);
    Ok(if unfinished {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The fleet settings of the command line (for steps no manifest describes).
pub(super) fn fleet_defaults(args: &SimulateArgs) -> FleetDefaults {
    FleetDefaults {
        min_instances: args.min_instances,
        max_instances: args.max_instances,
        slots_per_instance: args.slots,
        tasks_per_instance: args.tasks_per_instance,
        scale_down_delay: args.scale_down_delay,
        boot_timeout: args.boot_timeout,
        lease_ttl: args.lease_ttl,
        idle_exit: args.idle_exit,
        task_duration: args.task_duration,
        instance_type: args.instance_type.clone(),
        price_per_instance_hour: args.price_per_instance_hour,
    }
}

/// The simulation settings of the command line, with the controller interval chosen.
pub(super) fn sim_settings(args: &SimulateArgs, interval: Duration) -> SimSettings {
    SimSettings {
        tick: ms(args.tick),
        interval: ms(interval),
        boot_delay: ms(args.boot_delay),
        boot_jitter: ms(args.boot_jitter),
        spot_rate_per_hour: args.spot_rate,
        spot_notice: ms(args.spot_notice),
        capacity_error_prob: args.capacity_error_prob,
        cool_off: ms(args.cool_off),
        static_instances: args.static_instances,
        keda_poll: ms(args.keda_poll),
        keda_cooldown: ms(args.keda_cooldown),
        seed: args.seed,
        max_time: ms(args.max_time),
        capacity: None,
        ec2_quotas: (!args.no_api_quotas).then(Ec2Quotas::default),
    }
}

/// The report as text: the trace's steps, then one row per policy.
pub fn render(r: &SimReport) -> String {
    let mut out = format!(
        "trace {}: {} tasks; seed {}, boot delay {}s, controller interval {}s, tick {}s",
        r.trace,
        r.tasks,
        r.settings.seed,
        r.settings.boot_delay / 1000,
        r.settings.interval / 1000,
        r.settings.tick as f64 / 1000.0,
    );
    if r.settings.spot_rate_per_hour > 0.0 {
        out.push_str(&format!(
            ", spot {}/instance-hour",
            r.settings.spot_rate_per_hour
        ));
    }
    if r.settings.capacity_error_prob > 0.0 {
        out.push_str(&format!(
            ", capacity errors p={}",
            r.settings.capacity_error_prob
        ));
    }
    out.push_str("\n\n");
    out.push_str(&steps_table(r));
    out.push('\n');
    out.push_str(&policies_table(r));
    out.push('\n');
    out.push_str(&costs_table(r));
    out.push_str(&super::simulate_capacity::capacity_table(r));
    out.push_str(
        "\nRATIO = instance-hours / lower bound (sum of task time / slots per instance); \
         BUSY KILLED = instances terminated with busy slots; PEAK (after) = the \
         most instances at once, and how long after the first launch; THROTTLED = provider calls \
         refused by the EC2 API quotas. Cost as `anamo status` counts it: \
         per-second billing with a 60 s minimum, IDLE/BOOT = share of the cost with idle \
         slots/booting, $/TASK per succeeded task.\n",
    );
    for p in &r.policies {
        out.push_str(&format!("  {}: {}\n", p.policy.as_str(), p.description));
    }
    out
}

/// The trace's steps with their lower bound.
fn steps_table(r: &SimReport) -> String {
    let mut steps = Table::new([
        "STEP",
        "TASKS",
        "TASK-HOURS",
        "SLOTS",
        "LOWER BOUND (inst-h)",
    ]);
    for s in &r.steps {
        steps.row([
            s.step.clone(),
            s.tasks.to_string(),
            format!("{:.2}", s.task_hours),
            s.slots_per_instance.to_string(),
            format!("{:.2}", s.lower_bound_hours),
        ]);
    }
    steps.render()
}

/// One row per policy.
fn policies_table(r: &SimReport) -> String {
    let mut t = Table::new([
        "POLICY",
        "MAKESPAN",
        "INST-H",
        "IDLE-H",
        "BOOT-H",
        "RATIO",
        "UTIL",
        "BUSY KILLED",
        "REQUEUED spot/lease",
        "PEAK (after)",
        "THROTTLED",
        "WAIT mean/p95",
        "UNFINISHED",
    ]);
    for p in &r.policies {
        t.row([
            p.policy.as_str().to_string(),
            hms(p.makespan_s),
            format!("{:.2}", p.instance_hours),
            format!("{:.2}", p.idle_hours),
            format!("{:.2}", p.boot_hours),
            format!("{:.3}", p.ratio),
            format!("{:.0}%", p.slot_utilisation * 100.0),
            p.busy_terminated.to_string(),
            format!("{}/{}", p.requeued_spot, p.requeued_lease),
            format!("{} ({})", p.peak_instances, hms(p.time_to_peak_s)),
            p.throttled_calls.to_string(),
            format!("{}/{}", hms(p.mean_wait_s), hms(p.p95_wait_s)),
            p.unfinished.to_string(),
        ]);
    }
    t.render()
}

/// Each policy's cost, in all and per step (the fields of `anamo status`).
fn costs_table(r: &SimReport) -> String {
    let mut t = Table::new([
        "POLICY",
        "STEP",
        "COST",
        "$/TASK",
        "IDLE",
        "BOOT",
        "UNPRICED-H",
    ]);
    for p in &r.policies {
        let all = std::iter::once(("all", &p.cost));
        let steps = p.step_costs.iter().map(|s| (s.step.as_str(), &s.cost));
        for (step, c) in all.chain(steps) {
            t.row([
                p.policy.as_str().to_string(),
                step.to_string(),
                format!("${:.2}", c.totals.dollars),
                c.per_task.map_or("-".into(), |d| format!("${d:.4}")),
                format!("{:.0}%", c.idle_share * 100.0),
                format!("{:.0}%", c.boot_share * 100.0),
                format!("{:.2}", c.totals.unpriced_ms as f64 / 3_600_000.0),
            ]);
        }
    }
    t.render()
}

/// `1h02m`, `4m10s`, `12s`.
fn hms(secs: f64) -> String {
    let s = secs.round() as i64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text report shows each policy's cost in all and per step: two one-slot instances
    /// at 3.6 $/h running 660 s and 1,260 s (see `sim::tests`, where the dollars are computed
    /// by hand): $1.92, $0.96 per task, 0.12 of 1.92 (6 %) booting.
    #[test]
    fn the_text_report_has_the_cost_table() {
        let trace = Trace::parse_csv(
            "t.csv",
            "step,submit_time_s,duration_s\na,0,600\na,0,1200\n",
        )
        .unwrap();
        let defaults = FleetDefaults {
            max_instances: 2,
            slots_per_instance: 1,
            price_per_instance_hour: Some(3.6),
            ..FleetDefaults::default()
        };
        let fleets = sim::fleets_for(&trace, None, &defaults, false).unwrap();
        let settings = SimSettings {
            boot_delay: 60_000,
            static_instances: Some(2),
            ..SimSettings::default()
        };
        let out = sim::simulate(&trace, &fleets, &settings, &[PolicyKind::Static]).unwrap();
        let text = render(&out.report);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .filter(|w: &Vec<&str>| w.first() == Some(&"static") && w.len() == 7)
            .collect();
        assert_eq!(
            rows,
            [
                ["static", "all", "$1.92", "$0.9600", "0%", "6%", "0.00"],
                ["static", "a", "$1.92", "$0.9600", "0%", "6%", "0.00"],
            ],
            "{text}"
        );
    }
}
