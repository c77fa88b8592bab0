//! The elasticity simulator behind `anamo simulate`: replays a task trace through the **real
//! planner** ([`crate::planner::plan`]) with a simulated clock, a simulated provider (boot
//! delay, spot interruptions, capacity errors) and simulated workers (slots, leases,
//! registrations with `last_busy_at`), hours of simulated time in seconds.
//!
//! The same trace is replayed under two baselines: a static fleet of N instances per step
//! whose workers exit when their queue is empty (PyAnamo's way), and a KEDA-like scaler
//! (poll every 30 s, scale to backlog, 300 s scale-down stabilization, busy-unaware
//! scale-in), and beside them a clairvoyant reference that knows every arrival and duration
//! (launches one boot ahead, stops each instance when its last task ends). Each run reports
//! makespan, the lower bound `sum(task time) / slotsPerInstance`, busy instances terminated,
//! tasks requeued, and the instance time and cost as the controller's cost ledger
//! ([`crate::cost::ledger::CostLedger`], fed every change of a simulated instance) counts
//! them: instance-hours with their booting and idle parts, their ratio to the bound, and the
//! dollars, cost per task and idle share of `anamo status`, in all and per step.
//!
//! Runs are deterministic: every random draw comes from a ChaCha8 stream seeded from
//! `--seed` and the policy, and nothing iterates a hash map.
//!
//! What is not modelled: store and API latency, the race between a worker's claim and a
//! termination decided on an older observation (a pass here observes and acts at one
//! instant), task failures and retries, spot prices (a fleet's instances cost its instance
//! type's on-demand price, or the price given) and mixed instance types. A tick (1 s by default) is the
//! resolution of claims and completions, so each task occupies its slot up to one tick
//! longer than its duration.

pub mod bound;
mod fleet;
mod plot;
mod policy;
mod report;
pub mod sweep;
pub mod trace;
mod world;

use serde::Serialize;

use crate::clock::{ms, Millis};
use crate::manifest;

pub use fleet::{fleets_for, FleetDefaults, Pricing, SimFleet};
pub use plot::plot_svg;
pub use report::{PolicyReport, SimReport, StepCost, StepReport};

use report::step_reports;
pub use trace::{GeneratorSpec, Trace, TraceError, TraceTask};
pub use world::quota::{BucketSpec, Ec2Quotas};
pub use world::{CapacityUse, Sample, SimCapacity};

use policy::{Anamo, Clairvoyant, Keda, Policy, Static};
use world::{WorkerExit, World};

/// The simulated provider, clock and baselines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimSettings {
    /// Simulated time per step of the world.
    pub tick: Millis,
    /// Time between controller passes.
    pub interval: Millis,
    /// From launch until the worker registers.
    pub boot_delay: Millis,
    /// Extra boot time, uniform in `0..=boot_jitter`.
    pub boot_jitter: Millis,
    /// Spot interruptions per instance-hour (0: none).
    pub spot_rate_per_hour: f64,
    /// Time between the interruption notice and the instance's disappearance.
    pub spot_notice: Millis,
    /// Probability that a launch call fails with a capacity error.
    pub capacity_error_prob: f64,
    /// No launches for this long after a capacity error.
    pub cool_off: Millis,
    /// Instances per fleet of the static baseline (default: each fleet's maxInstances).
    pub static_instances: Option<u32>,
    /// Poll interval of the KEDA-like baseline.
    pub keda_poll: Millis,
    /// Scale-down stabilization window of the KEDA-like baseline.
    pub keda_cooldown: Millis,
    pub seed: u64,
    /// Give up this long after the last submission.
    pub max_time: Millis,
    /// Spot and on-demand instances, as a fleet with a `capacityType` buys them (unset: one
    /// kind, interrupted at `spot_rate_per_hour`, failing at `capacity_error_prob`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<SimCapacity>,
    /// The EC2 API request quotas the simulated provider enforces (none: never throttled).
    pub ec2_quotas: Option<Ec2Quotas>,
}

impl Default for SimSettings {
    fn default() -> Self {
        SimSettings {
            tick: 1_000,
            interval: ms(manifest::DEFAULT_INTERVAL),
            boot_delay: 90_000,
            boot_jitter: 0,
            spot_rate_per_hour: 0.0,
            spot_notice: 120_000,
            capacity_error_prob: 0.0,
            cool_off: 120_000,
            static_instances: None,
            keda_poll: 30_000,
            keda_cooldown: 300_000,
            seed: 42,
            max_time: 7 * 24 * 3_600_000,
            capacity: None,
            ec2_quotas: Some(Ec2Quotas::default()),
        }
    }
}

/// The scaling policies a simulation compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    /// anamo's controller with the real planner.
    Anamo,
    /// N instances from the start, exiting when the queue is empty.
    Static,
    /// Poll every 30 s, scale to backlog, 300 s cooldown, busy-unaware scale-in.
    Keda,
    /// Knows the future arrivals and durations: launches one boot ahead, terminates each
    /// instance when its last task has ended (the achievable reference with boot costs).
    Clairvoyant,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Anamo,
        PolicyKind::Static,
        PolicyKind::Keda,
        PolicyKind::Clairvoyant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Anamo => "anamo",
            PolicyKind::Static => "static",
            PolicyKind::Keda => "keda",
            PolicyKind::Clairvoyant => "clairvoyant",
        }
    }

    fn description(self, s: &SimSettings) -> String {
        match self {
            PolicyKind::Anamo => "anamo's controller and planner".into(),
            PolicyKind::Static => format!(
                "static {} instances per fleet, exit when the queue is empty",
                s.static_instances
                    .map_or("maxInstances".to_string(), |n| n.to_string())
            ),
            PolicyKind::Keda => format!(
                "poll every {}s, scale to backlog, {}s cooldown",
                s.keda_poll / 1000,
                s.keda_cooldown / 1000
            ),
            PolicyKind::Clairvoyant => {
                "knows arrivals and durations: launches one boot ahead, stops instances when their last task ends".into()
            }
        }
    }
}

/// Why a simulation could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("no fleet runs step {steps} of the trace (the manifests have {have})")]
    NoFleet { steps: String, have: String },
    #[error("invalid simulation settings: {0}")]
    Invalid(String),
}

/// A report and the timelines of each policy (for plots).
#[derive(Debug, Clone)]
pub struct SimOutcome {
    pub report: SimReport,
    pub timelines: Vec<(PolicyKind, Vec<Sample>)>,
}

/// Replays `trace` on `fleets` under each of `policies`.
pub fn simulate(
    trace: &Trace,
    fleets: &[SimFleet],
    settings: &SimSettings,
    policies: &[PolicyKind],
) -> Result<SimOutcome, SimError> {
    check_settings(settings)?;
    let mut tasks = Vec::with_capacity(trace.tasks.len());
    let mut missing = Vec::new();
    for t in &trace.tasks {
        match fleets.iter().position(|f| f.policy.step == t.step) {
            Some(fi) => tasks.push((fi, t.id.clone(), t.submit_ms, t.duration_ms)),
            None => {
                if !missing.contains(&t.step) {
                    missing.push(t.step.clone());
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(SimError::NoFleet {
            steps: missing.join(", "),
            have: fleets
                .iter()
                .map(|f| f.policy.step.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let steps = step_reports(trace, fleets);
    let lower_bound: f64 = steps.iter().map(|s| s.lower_bound_hours).sum();

    let mut reports = Vec::new();
    let mut timelines = Vec::new();
    for (stream, kind) in policies.iter().enumerate() {
        let (report, timeline) = run_one(
            *kind,
            &tasks,
            fleets,
            settings,
            stream as u64 + 1,
            lower_bound,
        );
        reports.push(report);
        timelines.push((*kind, timeline));
    }
    Ok(SimOutcome {
        report: SimReport {
            trace: trace.name.clone(),
            tasks: trace.tasks.len() as u64,
            steps,
            settings: settings.clone(),
            policies: reports,
        },
        timelines,
    })
}

/// Refuses settings the simulation cannot run with.
fn check_settings(settings: &SimSettings) -> Result<(), SimError> {
    if settings.tick <= 0 || settings.interval <= 0 {
        return Err(SimError::Invalid(
            "tick and interval must be positive".into(),
        ));
    }
    if !(0.0..=1.0).contains(&settings.capacity_error_prob) {
        return Err(SimError::Invalid(
            "the capacity error probability must be within 0..1".into(),
        ));
    }
    if settings.spot_rate_per_hour < 0.0 || !settings.spot_rate_per_hour.is_finite() {
        return Err(SimError::Invalid(
            "the spot interruption rate must be 0 or more".into(),
        ));
    }
    Ok(())
}

fn run_one(
    kind: PolicyKind,
    tasks: &[(usize, String, Millis, Millis)],
    fleets: &[SimFleet],
    settings: &SimSettings,
    stream: u64,
    lower_bound_hours: f64,
) -> (PolicyReport, Vec<Sample>) {
    let exit = match kind {
        PolicyKind::Anamo => WorkerExit::IdleExit,
        PolicyKind::Static => WorkerExit::QueueEmpty,
        PolicyKind::Keda | PolicyKind::Clairvoyant => WorkerExit::Never,
    };
    let mut world = World::new(fleets.to_vec(), settings.clone(), tasks, exit, stream);
    let mut policy: Box<dyn Policy> = match kind {
        PolicyKind::Anamo => Box::new(Anamo::new(&world)),
        PolicyKind::Static => Box::new(Static::new(&world, settings.static_instances)),
        PolicyKind::Keda => Box::new(Keda::new(&world)),
        PolicyKind::Clairvoyant => Box::new(Clairvoyant::new(&world)),
    };
    debug_assert_eq!(policy.worker_exit(), exit);
    world.housekeep_every_tick = policy.housekeeps_every_tick();
    let start = world.start();
    let last_submit = tasks.iter().map(|t| t.2).max().unwrap_or(start);
    let deadline = last_submit + settings.max_time;
    loop {
        world.advance();
        policy.act(&mut world);
        let floor = policy.floor(&world);
        let settled = world.alive().count() as u32 <= floor && world.alive().all(|i| !i.booting());
        if world.all_done() && settled {
            break;
        }
        world.finish_tick();
        if world.now > deadline {
            break;
        }
    }
    world.account_all();
    let report = report::policy_report(kind, &world, settings, start, lower_bound_hours);
    (report, std::mem::take(&mut world.timeline))
}

#[cfg(test)]
mod capacity_tests;
#[cfg(test)]
mod tests;
