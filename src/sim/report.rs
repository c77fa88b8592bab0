//! What `anamo simulate` reports: each step's work and lower bound, and per policy the
//! makespan, the instance time and cost (from the controller's cost ledger, see
//! [`crate::cost::ledger`]), terminations, requeues and queue waits.

use serde::Serialize;

use super::world::World;
use super::{CapacityUse, PolicyKind, SimFleet, SimSettings, Trace};
use crate::clock::Millis;
use crate::cost::ledger::{CostTotals, FleetCost};

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

/// One step's cost under one policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepCost {
    pub step: String,
    pub fleet: String,
    #[serde(flatten)]
    pub cost: FleetCost,
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
    /// Instance time billed, launch to termination, at least a minute per instance (the cost
    /// ledger's `instance_ms`).
    pub instance_hours: f64,
    /// The part of it spent booting (before the worker registered).
    pub boot_hours: f64,
    /// The part with idle slots, in instance time (one of two slots idle for an hour counts
    /// half an hour), the billing minimum's top-up included.
    pub idle_hours: f64,
    /// The part of `idle_hours` with no slot busy (whole instances idle).
    pub empty_hours: f64,
    /// Sum of task time divided by slots per instance.
    pub lower_bound_hours: f64,
    /// instance_hours / lower_bound_hours.
    pub ratio: f64,
    /// Busy slot time over slot time billed.
    pub slot_utilisation: f64,
    /// What the instances of every fleet cost together, as `anamo status` shows a fleet's:
    /// the controller's cost ledger fed with the simulated instances.
    pub cost: FleetCost,
    /// The same per step.
    pub step_costs: Vec<StepCost>,
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
    /// From the first launch call until the fleets first reached `peak_instances` (0 without
    /// launches): how long the scale-up took, the EC2 API quotas included.
    pub time_to_peak_s: f64,
    /// Provider calls refused by the EC2 API quotas (`SimSettings::ec2_quotas`).
    pub throttled_calls: u64,
    /// Runnable to first claim.
    pub mean_wait_s: f64,
    pub p95_wait_s: f64,
    pub max_wait_s: f64,
    /// Per capacity type (spot, on-demand), with `--capacity-type`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capacity: Vec<CapacityUse>,
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

/// What `world` did under `kind`, once the run is over and its instances are accounted.
pub(super) fn policy_report(
    kind: PolicyKind,
    world: &World,
    settings: &SimSettings,
    start: Millis,
    lower_bound_hours: f64,
) -> PolicyReport {
    let t = &world.tally;
    let unfinished = world.unfinished();
    let makespan = if unfinished == 0 {
        t.last_success - start
    } else {
        world.now - start
    };
    let (mean_wait, p95_wait, max_wait) = wait_stats(world.waits());
    let step_costs = step_costs(world);
    let mut totals = CostTotals::default();
    let mut closed = CostTotals::default();
    let (mut usd_per_hour, mut finished) = (0.0, 0);
    // Slot time billed and busy: each fleet's instance time times its slots.
    let (mut slot_ms, mut busy_slot_ms) = (0i64, 0i64);
    for (fi, ledger) in world.cost.iter().enumerate() {
        let fleet_totals = ledger.totals();
        let slots = i64::from(world.fleets[fi].policy.slots_per_instance.max(1));
        slot_ms += fleet_totals.instance_ms * slots;
        busy_slot_ms += fleet_totals.busy_ms * slots;
        totals.add(&fleet_totals);
        closed.add(ledger.closed());
        usd_per_hour += ledger.usd_per_hour();
        finished += world.counts(fi).succeeded;
    }
    PolicyReport {
        policy: kind,
        description: kind.description(settings),
        makespan_s: round(makespan as f64 / 1000.0, 1),
        unfinished,
        instance_hours: round(hours(totals.instance_ms), 4),
        boot_hours: round(hours(totals.boot_ms), 4),
        idle_hours: round(hours(totals.idle_ms), 4),
        empty_hours: round(hours(totals.empty_ms), 4),
        lower_bound_hours: round(lower_bound_hours, 4),
        ratio: round(hours(totals.instance_ms) / lower_bound_hours.max(1e-9), 4),
        slot_utilisation: round(busy_slot_ms as f64 / (slot_ms as f64).max(1.0), 4),
        cost: FleetCost::new(totals, closed, usd_per_hour, Some(finished)),
        step_costs,
        busy_terminated: t.busy_terminated,
        requeued_spot: t.requeued_spot,
        requeued_lease: t.requeued_lease,
        launches: t.launches,
        terminations: t.terminations,
        capacity_errors: t.capacity_errors,
        spot_interruptions: t.spot_interruptions,
        peak_instances: t.peak_instances,
        time_to_peak_s: t.first_launch_at.map_or(0.0, |f| {
            round(t.peak_at.saturating_sub(f) as f64 / 1000.0, 1)
        }),
        throttled_calls: t.throttled_calls,
        mean_wait_s: round(mean_wait, 1),
        p95_wait_s: round(p95_wait, 1),
        max_wait_s: round(max_wait, 1),
        capacity: world.capacity_use(),
    }
}

/// Each fleet's cost figures, per succeeded task of its step (fleets that had neither tasks
/// nor instances left out).
fn step_costs(world: &World) -> Vec<StepCost> {
    world
        .cost
        .iter()
        .zip(&world.fleets)
        .enumerate()
        .filter(|(fi, (ledger, _))| ledger.totals().instances > 0 || world.has_tasks(*fi))
        .map(|(fi, (ledger, f))| StepCost {
            step: f.policy.step.clone(),
            fleet: f.policy.fleet.clone(),
            cost: FleetCost::new(
                ledger.totals(),
                ledger.closed().clone(),
                ledger.usd_per_hour(),
                Some(world.counts(fi).succeeded),
            ),
        })
        .collect()
}

/// Each step's tasks, task time and lower bound.
pub(super) fn step_reports(trace: &Trace, fleets: &[SimFleet]) -> Vec<StepReport> {
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

pub(super) fn hours(ms: Millis) -> f64 {
    ms as f64 / 3_600_000.0
}

pub(super) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}
