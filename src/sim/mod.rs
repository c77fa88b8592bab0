//! The elasticity simulator behind `anamo simulate`: replays a task trace through the **real
//! planner** ([`crate::planner::plan`]) with a simulated clock, a simulated provider (boot
//! delay, spot interruptions, capacity errors) and simulated workers (slots, leases,
//! registrations with `last_busy_at`), hours of simulated time in seconds.
//!
//! The same trace is replayed under two baselines: a static fleet of N instances per step
//! whose workers exit when their queue is empty (PyAnamo's way), and a KEDA-like scaler
//! (poll every 30 s, scale to backlog, 300 s scale-down stabilization, busy-unaware
//! scale-in), and beside them a clairvoyant reference that knows every arrival and duration
//! (launches one boot ahead, stops each instance when its last task ends). Each run reports makespan, instance-hours (booting and idle parts), the lower
//! bound `sum(task time) / slotsPerInstance`, their ratio, busy instances terminated and
//! tasks requeued.
//!
//! Runs are deterministic: every random draw comes from a ChaCha8 stream seeded from
//! `--seed` and the policy, and nothing iterates a hash map.
//!
//! What is not modelled: store and API latency, the race between a worker's claim and a
//! termination decided on an older observation (a pass here observes and acts at one
//! instant), task failures and retries, and instance types. A tick (1 s by default) is the
//! resolution of claims and completions, so each task occupies its slot up to one tick
//! longer than its duration.

mod plot;
mod policy;
pub mod sweep;
pub mod trace;
mod world;

use std::time::Duration;

use serde::Serialize;

use crate::clock::{ms, Millis};
use crate::manifest::{self, ManifestSet};
use crate::planner::FleetPolicy;

pub use plot::plot_svg;
pub use trace::{GeneratorSpec, Trace, TraceError, TraceTask};
pub use world::Sample;

use policy::{Anamo, Clairvoyant, Keda, Policy, Static};
use world::{WorkerExit, World};

/// A fleet as the simulator runs it: the planner's policy plus the worker settings the
/// planner does not see.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFleet {
    pub policy: FleetPolicy,
    pub lease_ttl: Millis,
    /// Registration refresh interval (the worker's heartbeat).
    pub heartbeat: Millis,
    pub idle_exit: Option<Millis>,
    /// Steps whose task of the same id must succeed first.
    pub depends_on: Vec<String>,
}

impl SimFleet {
    pub fn from_manifest(f: &manifest::FleetManifest) -> Self {
        SimFleet {
            policy: FleetPolicy::from_manifest(f),
            lease_ttl: ms(f.spec.lease_ttl),
            heartbeat: ms(f.spec.heartbeat_interval()),
            idle_exit: f.spec.idle_exit.map(ms),
            depends_on: f.spec.upstream_steps().map(str::to_string).collect(),
        }
    }
}

/// Fleet settings for steps that no manifest describes (`anamo simulate` flags). The defaults
/// are the manifest defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetDefaults {
    pub min_instances: u32,
    pub max_instances: u32,
    pub slots_per_instance: u32,
    pub tasks_per_instance: Option<u32>,
    pub scale_down_delay: Duration,
    pub boot_timeout: Duration,
    pub lease_ttl: Duration,
    pub idle_exit: Option<Duration>,
}

impl Default for FleetDefaults {
    fn default() -> Self {
        FleetDefaults {
            min_instances: 0,
            max_instances: 20,
            slots_per_instance: manifest::DEFAULT_SLOTS,
            tasks_per_instance: None,
            scale_down_delay: manifest::DEFAULT_SCALE_DOWN_DELAY,
            boot_timeout: manifest::DEFAULT_BOOT_TIMEOUT,
            lease_ttl: manifest::DEFAULT_LEASE_TTL,
            idle_exit: None,
        }
    }
}

impl FleetDefaults {
    /// A fleet named after `step`, depending on `depends_on`.
    pub fn fleet(&self, step: &str, depends_on: Vec<String>) -> SimFleet {
        let heartbeat = manifest::default_heartbeat(self.lease_ttl);
        SimFleet {
            policy: FleetPolicy {
                fleet: step.to_string(),
                step: step.to_string(),
                min_instances: self.min_instances,
                max_instances: self.max_instances,
                slots_per_instance: self.slots_per_instance,
                tasks_per_instance: self.tasks_per_instance.unwrap_or(self.slots_per_instance),
                scale_down_delay: ms(self.scale_down_delay),
                boot_timeout: ms(self.boot_timeout),
                lost_after: ms(heartbeat).saturating_mul(3),
                worker_dead_after: ms(heartbeat)
                    .saturating_mul(3)
                    .saturating_add(ms(self.lease_ttl)),
                stall_after: ms(self.boot_timeout).saturating_mul(2),
                budget: None,
                spend: None,
            },
            lease_ttl: ms(self.lease_ttl),
            heartbeat: ms(heartbeat),
            idle_exit: self.idle_exit.map(ms),
            depends_on,
        }
    }
}

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

/// The fleets for a trace: the manifests' fleets when given (every step of the trace must
/// have one), else one fleet per step from `defaults`, each step depending on the one before
/// it in the trace unless `independent`.
pub fn fleets_for(
    trace: &Trace,
    manifests: Option<&ManifestSet>,
    defaults: &FleetDefaults,
    independent: bool,
) -> Result<Vec<SimFleet>, SimError> {
    match manifests {
        Some(set) => {
            let missing: Vec<&str> = trace
                .steps
                .iter()
                .filter(|s| set.fleet_for_step(s).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(SimError::NoFleet {
                    steps: missing.join(", "),
                    have: set.steps().collect::<Vec<_>>().join(", "),
                });
            }
            Ok(set
                .in_dependency_order()
                .into_iter()
                .map(SimFleet::from_manifest)
                .collect())
        }
        None => Ok(trace
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let deps = if i == 0 || independent {
                    Vec::new()
                } else {
                    vec![trace.steps[i - 1].clone()]
                };
                defaults.fleet(step, deps)
            })
            .collect()),
    }
}

/// One step's share of the work.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    pub step: String,
    pub fleet: String,
    pub tasks: u64,
    pub task_hours: f64,
    pub slots_per_instance: u32,
    /// `task_hours / slots_per_instance`.
    pub lower_bound_hours: f64,
}

/// What one policy did with the trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyReport {
    pub policy: PolicyKind,
    pub description: String,
    /// First submission to last success, in seconds.
    pub makespan_s: f64,
    /// Tasks not succeeded when the simulation stopped (0 unless it hit `max_time`).
    pub unfinished: u64,
    /// Instance time billed, launch to termination.
    pub instance_hours: f64,
    /// The part of it spent booting.
    pub boot_hours: f64,
    /// The part with a registered worker and no busy slot.
    pub idle_hours: f64,
    /// Sum of task time divided by slots per instance.
    pub lower_bound_hours: f64,
    /// instance_hours / lower_bound_hours.
    pub ratio: f64,
    /// Busy slot time over slot time billed.
    pub slot_utilisation: f64,
    /// Instances the policy terminated while they had busy slots.
    pub busy_terminated: u64,
    /// Tasks handed back on a spot interruption notice.
    pub requeued_spot: u64,
    /// Tasks killed with their instance, back to pending when their lease expired.
    pub requeued_lease: u64,
    pub launches: u64,
    pub terminations: u64,
    pub capacity_errors: u64,
    pub spot_interruptions: u64,
    pub peak_instances: u32,
    /// Runnable to first claim.
    pub mean_wait_s: f64,
    pub p95_wait_s: f64,
    pub max_wait_s: f64,
}

/// The result of `anamo simulate`.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    pub trace: String,
    pub tasks: u64,
    pub steps: Vec<StepReport>,
    pub settings: SimSettings,
    pub policies: Vec<PolicyReport>,
}

impl SimReport {
    pub fn policy(&self, kind: PolicyKind) -> Option<&PolicyReport> {
        self.policies.iter().find(|p| p.policy == kind)
    }
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

/// Each step's tasks, task time and lower bound.
fn step_reports(trace: &Trace, fleets: &[SimFleet]) -> Vec<StepReport> {
    fleets
        .iter()
        .filter(|f| trace.steps.contains(&f.policy.step))
        .map(|f| {
            let task_ms = trace.task_ms(&f.policy.step);
            let slots = f.policy.slots_per_instance.max(1);
            StepReport {
                step: f.policy.step.clone(),
                fleet: f.policy.fleet.clone(),
                tasks: trace
                    .tasks
                    .iter()
                    .filter(|t| t.step == f.policy.step)
                    .count() as u64,
                task_hours: hours(task_ms),
                slots_per_instance: slots,
                lower_bound_hours: hours(task_ms) / f64::from(slots),
            }
        })
        .collect()
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
    let end = world.now;
    let t = &world.tally;
    let unfinished = world.unfinished();
    let makespan = if unfinished == 0 {
        t.last_success - start
    } else {
        end - start
    };
    let (mean_wait, p95_wait, max_wait) = wait_stats(world.waits());
    // Slot time billed: each fleet's instance time times its slots.
    let billed_slot_ms: i64 = t
        .instance_ms_by_fleet
        .iter()
        .zip(fleets)
        .map(|(ms, f)| ms * i64::from(f.policy.slots_per_instance.max(1)))
        .sum();
    let report = PolicyReport {
        policy: kind,
        description: kind.description(settings),
        makespan_s: round(makespan as f64 / 1000.0, 1),
        unfinished,
        instance_hours: round(hours(t.instance_ms), 4),
        boot_hours: round(hours(t.boot_ms), 4),
        idle_hours: round(hours(t.idle_ms), 4),
        lower_bound_hours: round(lower_bound_hours, 4),
        ratio: round(hours(t.instance_ms) / lower_bound_hours.max(1e-9), 4),
        slot_utilisation: round(t.slot_busy_ms as f64 / (billed_slot_ms as f64).max(1.0), 4),
        busy_terminated: t.busy_terminated,
        requeued_spot: t.requeued_spot,
        requeued_lease: t.requeued_lease,
        launches: t.launches,
        terminations: t.terminations,
        capacity_errors: t.capacity_errors,
        spot_interruptions: t.spot_interruptions,
        peak_instances: t.peak_instances,
        mean_wait_s: round(mean_wait, 1),
        p95_wait_s: round(p95_wait, 1),
        max_wait_s: round(max_wait, 1),
    };
    (report, world.timeline)
}

/// Mean, 95th percentile and maximum of the queue waits, in seconds.
fn wait_stats(mut waits: Vec<Millis>) -> (f64, f64, f64) {
    waits.sort_unstable();
    let mean_wait = if waits.is_empty() {
        0.0
    } else {
        waits.iter().sum::<i64>() as f64 / waits.len() as f64 / 1000.0
    };
    let pct = |p: f64| -> f64 {
        if waits.is_empty() {
            return 0.0;
        }
        let idx = ((waits.len() as f64 * p).ceil() as usize).clamp(1, waits.len()) - 1;
        waits[idx] as f64 / 1000.0
    };
    (mean_wait, pct(0.95), pct(1.0))
}

fn hours(ms: Millis) -> f64 {
    ms as f64 / 3_600_000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[cfg(test)]
mod tests;
