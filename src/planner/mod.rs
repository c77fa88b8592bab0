//! The planner: what each fleet should do now, computed from a snapshot. It is a pure function
//! (no I/O, no clock reads, no randomness): the reconciler gathers a [`PlanInput`], calls
//! [`plan`] and executes the [`Action`]s through the providers; `anamo plan` prints the same
//! plan without executing it.
//!
//! The rules, per fleet (see `scale.rs`):
//! - desired = clamp(ceil((runnable + running on ready instances) / tasksPerInstance),
//!   minInstances, maxInstances), lowered further by the budget (a running task holds its
//!   instance, so the backlog asks for instances beyond the busy ones);
//! - capacity = ready and booting instances plus launches not yet listed; launch the
//!   difference when it is positive, never above maxInstances or the budget;
//! - instances whose worker never registered within bootTimeout, whose worker exited, or whose
//!   worker stopped heartbeating (and is idle) are terminated; lost workers are reported;
//! - with estimates of task duration and boot time (`estimate.rs`), a launch is cut to what
//!   the ready and booting instances would not start within half a task's run time (or ten
//!   boot times, if longer: `estimate::launch_horizon`), each new instance counted for what it
//!   would start in that time;
//! - extra instances are removed newest first once idle for scaleDownDelay, or at once (past
//!   the billing minimum) when fewer tasks are expected within a boot time than would fill
//!   them (the ski-rental break-even);
//! - at the tail, when the busy instances' free slots exceed what the pending and expected
//!   tasks need, the emptiest busy instances are asked to drain so the rest pack
//!   (`drain.rs`); they are terminated once idle;
//! - an instance whose worker has busy slots is never terminated;
//! - when the provider's instance list could not be read, nothing is launched or terminated;
//! - busy instances are protected from a group's own scale-in, idle ones not; registrations
//!   of workers that are gone are tidied (`upkeep.rs`).
//!
//! What the controller remembers between passes (launches in flight, capacity cool-offs) is
//! kept in a [`ledger::FleetLedger`], also pure.

mod budget;
mod conditions;
mod describe;
mod drain;
pub mod estimate;
pub mod execute;
pub mod ledger;
mod scale;
mod terminate;
pub mod upkeep;

#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::clock::{ms, Millis};
use crate::manifest::{BudgetSpec, FleetManifest};
use crate::model::{Backlog, WorkerInfo};
use crate::provider::Instance;

/// Everything the planner looks at, gathered by the reconciler in one pass.
#[derive(Debug, Clone, Default)]
pub struct PlanInput {
    pub fleets: Vec<FleetInput>,
}

/// One fleet's spec and what was observed about it this pass.
#[derive(Debug, Clone)]
pub struct FleetInput {
    pub policy: FleetPolicy,
    /// The step's task counts and registered workers, or why the store could not be read.
    /// Without it the fleet is left as it is.
    pub step: Result<StepView, String>,
    /// The provider's instances of the fleet, or why listing them failed. When it failed the
    /// planner neither launches nor terminates for the fleet this pass.
    pub instances: Result<Vec<Instance>, String>,
    /// Set after capacity errors: no launches until then.
    pub cool_off: Option<CoolOff>,
    /// Launches made recently whose instances may not be listed yet.
    pub pending_launches: Vec<PendingLaunch>,
    /// The provider protects instances from its own scale-in (Auto Scaling groups): busy
    /// instances are protected, idle ones unprotected.
    pub scale_in_protection: bool,
}

/// What the task store says about a step.
#[derive(Debug, Clone, Default)]
pub struct StepView {
    /// The runnable backlog (counted up to [`FleetPolicy::backlog_limit`]) and the running
    /// tasks.
    pub backlog: Backlog,
    /// Workers registered for the step. A worker belongs to the instance its `instance_id`
    /// names; workers on no listed instance (e.g. started by hand) are not counted.
    pub workers: Vec<WorkerInfo>,
    /// The step's recent run times and arrivals, for the planner's estimates (empty: it
    /// plans on counts alone).
    pub recent: estimate::RecentTasks,
}

/// The provider refused capacity recently; no launches before `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoolOff {
    pub until: Millis,
    /// What the provider said, for messages.
    pub reason: String,
}

/// A launch request already made whose instances may not all be listed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingLaunch {
    /// Launch batch token; listed instances carrying it (`Instance::launch_batch`) are no
    /// longer pending.
    pub batch: String,
    pub count: u32,
    pub launched_at: Millis,
}

/// The scaling settings of a fleet, in the planner's units (milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct FleetPolicy {
    pub fleet: String,
    pub step: String,
    pub min_instances: u32,
    pub max_instances: u32,
    pub slots_per_instance: u32,
    /// Runnable tasks that justify one instance.
    pub tasks_per_instance: u32,
    /// Idle time before an extra instance is removed.
    pub scale_down_delay: Millis,
    /// Time a new instance has to register its worker.
    pub boot_timeout: Millis,
    /// A registered worker not seen for this long is lost (3 heartbeats by default).
    pub lost_after: Millis,
    /// A worker on a listed instance silent for this long is presumed dead (the lost
    /// threshold plus a lease TTL: every lease it held has expired by then).
    pub worker_dead_after: Millis,
    /// The fleet is `Stalled` when its oldest runnable task has waited this long while no task
    /// of the step runs (2 boot timeouts by default).
    pub stall_after: Millis,
    pub budget: Option<BudgetSpec>,
    /// What the fleet has spent, when its cost is accounted (the controller's cost ledger).
    pub spend: Option<Spend>,
    /// The manifest's `taskDuration`: the task duration until enough tasks have finished.
    pub task_duration: Option<Millis>,
}

/// A fleet's cost so far and now, for its budget.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// Everything its instances cost so far.
    pub dollars: f64,
    /// What its listed instances with a known price cost per hour together.
    pub usd_per_hour: f64,
    /// How many listed instances have a known price.
    pub priced_instances: u32,
}

impl FleetPolicy {
    /// The policy a fleet manifest describes.
    pub fn from_manifest(f: &FleetManifest) -> Self {
        let s = &f.spec;
        FleetPolicy {
            fleet: f.name().to_string(),
            step: s.step.clone(),
            min_instances: s.min_instances,
            max_instances: s.max_instances,
            slots_per_instance: s.slots_per_instance,
            tasks_per_instance: s.tasks_per_instance(),
            scale_down_delay: ms(s.scale_down_delay),
            boot_timeout: ms(s.boot_timeout),
            lost_after: ms(s.heartbeat_interval()).saturating_mul(3),
            worker_dead_after: ms(s.heartbeat_interval())
                .saturating_mul(3)
                .saturating_add(ms(s.lease_ttl)),
            stall_after: ms(s.boot_timeout).saturating_mul(2),
            budget: s.budget.clone(),
            spend: None,
            task_duration: s.task_duration.map(ms),
        }
    }

    /// The policy with `slots` per instance derived from the fleet's instance types (see
    /// [`crate::provider::FleetProvider::slots_per_instance`]): instances whose worker has not
    /// registered count that many slots, and `tasksPerInstance` defaults to it too.
    pub fn with_derived_slots(mut self, slots: u32, tasks_per_instance: Option<u32>) -> Self {
        self.slots_per_instance = slots.max(1);
        self.tasks_per_instance = tasks_per_instance.unwrap_or(self.slots_per_instance);
        self
    }

    /// The instance limit the budget sets, if any.
    pub fn budget_instances(&self) -> Option<u32> {
        budget::bound(self.budget.as_ref()?, self.spend.as_ref()).map(|b| b.instances)
    }

    /// The hard upper bound on instances: the stricter of `maxInstances` and the budget.
    pub fn instance_cap(&self) -> u32 {
        self.budget_instances()
            .map_or(self.max_instances, |b| b.min(self.max_instances))
    }

    /// How many pending tasks the plan can tell apart: a backlog beyond `maxInstances` full
    /// instances plans the same as one of exactly that size plus one, so a pass counts no
    /// further (see [`Backlog::more_pending`]). At least one, so that "nothing pending" is
    /// always told apart.
    pub fn backlog_limit(&self) -> u64 {
        u64::from(self.max_instances)
            .saturating_mul(u64::from(self.tasks_per_instance.max(1)))
            .max(1)
    }
}

/// What to do, for every fleet of the input (same order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The time the plan was computed for.
    pub at: Millis,
    pub fleets: Vec<FleetPlan>,
}

impl Plan {
    /// Every action of every fleet, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.fleets.iter().flat_map(|f| f.actions.iter())
    }

    /// The plan of the fleet named `fleet`.
    pub fn fleet(&self, fleet: &str) -> Option<&FleetPlan> {
        self.fleets.iter().find(|f| f.fleet == fleet)
    }
}

/// One fleet's target, actions and conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPlan {
    pub fleet: String,
    pub step: String,
    /// The number of instances the fleet should have.
    pub desired: u32,
    /// What the planner saw (after classifying instances and workers).
    pub status: FleetStatus,
    pub actions: Vec<Action>,
    /// One condition of each [`ConditionType`], in a fixed order.
    pub conditions: Vec<Condition>,
}

impl FleetPlan {
    /// Instances this plan launches.
    pub fn launch_count(&self) -> u32 {
        self.actions
            .iter()
            .map(|a| match a {
                Action::Launch { count, .. } => *count,
                _ => 0,
            })
            .sum()
    }

    /// Instances this plan terminates.
    pub fn terminated_ids(&self) -> Vec<&str> {
        self.actions
            .iter()
            .flat_map(|a| match a {
                Action::Terminate { ids, .. } => ids.as_slice(),
                _ => &[],
            })
            .map(String::as_str)
            .collect()
    }

    /// The condition of type `t`.
    pub fn condition(&self, t: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == t)
    }

    /// Whether condition `t` is `True`.
    pub fn is(&self, t: ConditionType) -> bool {
        self.condition(t)
            .is_some_and(|c| c.status == ConditionStatus::True)
    }
}

/// What the planner counted for a fleet. Instance counts cover listed instances that are not
/// stopping; `launching` counts launches not listed yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// Whether the fleet was observed this pass (task store read and instances listed); when
    /// not, the instance counts are zero.
    pub observed: bool,
    /// Runnable tasks of the step (counted up to the fleet's backlog limit).
    pub pending_tasks: u64,
    /// More tasks are runnable than `pending_tasks`: the count stopped at the backlog limit.
    #[serde(default)]
    pub more_pending: bool,
    /// Running tasks of the step.
    pub running_tasks: u64,
    /// Instances listed (pending or running, not stopping).
    pub instances: u32,
    /// Instances with an active, heartbeating worker.
    pub ready: u32,
    /// Ready instances with at least one busy slot.
    pub busy: u32,
    /// Instances without a registered worker, still within the boot timeout.
    pub booting: u32,
    /// Instances launched but not listed yet.
    pub launching: u32,
    /// Instances whose workers are all draining.
    pub draining: u32,
    /// Instances whose worker stopped heartbeating.
    pub lost: u32,
    /// Instances whose worker has exited.
    pub finished: u32,
    /// Instances whose worker never registered within the boot timeout.
    pub boot_timed_out: u32,
}

/// A change the reconciler makes. Each carries a sentence saying why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Action {
    /// Launch `count` instances.
    Launch {
        fleet: String,
        step: String,
        count: u32,
        reason: String,
    },
    /// Terminate exactly these instances.
    Terminate {
        fleet: String,
        ids: Vec<String>,
        cause: TerminateCause,
        reason: String,
    },
    /// These instances' workers stopped heartbeating: report them (their tasks come back
    /// through lease expiry). Idle ones also get a `Terminate`.
    MarkLost {
        fleet: String,
        ids: Vec<String>,
        /// The lost workers' ids.
        workers: Vec<String>,
        reason: String,
    },
    /// Requeue the step's tasks whose lease has expired.
    RequeueExpired { step: String, reason: String },
    /// Turn scale-in protection on (busy instances) or off (idle ones).
    SetProtection {
        fleet: String,
        ids: Vec<String>,
        protected: bool,
        reason: String,
    },
    /// Remove these workers' registrations (exited, on no listed instance).
    ForgetWorkers {
        fleet: String,
        workers: Vec<String>,
        reason: String,
    },
    /// Mark these workers as gone (silent far beyond their leases), so that their instances no
    /// longer count as busy.
    RetireWorkers {
        fleet: String,
        workers: Vec<String>,
        reason: String,
    },
    /// Ask these workers to drain (`drain`: stop claiming, finish what they run, exit once
    /// idle) or take the request back (`!drain`), through their drain mark in the store.
    DrainWorkers {
        fleet: String,
        step: String,
        workers: Vec<String>,
        drain: bool,
        reason: String,
    },
}

impl Action {
    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Launch { .. } => "launch",
            Action::Terminate { .. } => "terminate",
            Action::MarkLost { .. } => "mark_lost",
            Action::RequeueExpired { .. } => "requeue_expired",
            Action::SetProtection { .. } => "set_protection",
            Action::ForgetWorkers { .. } => "forget_workers",
            Action::RetireWorkers { .. } => "retire_workers",
            Action::DrainWorkers { drain: true, .. } => "drain_workers",
            Action::DrainWorkers { drain: false, .. } => "undrain_workers",
        }
    }

    pub fn reason(&self) -> &str {
        match self {
            Action::Launch { reason, .. }
            | Action::Terminate { reason, .. }
            | Action::MarkLost { reason, .. }
            | Action::RequeueExpired { reason, .. }
            | Action::SetProtection { reason, .. }
            | Action::ForgetWorkers { reason, .. }
            | Action::RetireWorkers { reason, .. }
            | Action::DrainWorkers { reason, .. } => reason,
        }
    }
}

/// Why an instance is terminated (a fixed set, usable as a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum TerminateCause {
    /// Its worker never registered within the boot timeout.
    BootTimeout,
    /// Its worker exited (idle exit or shutdown).
    WorkerExited,
    /// Its worker is draining and has nothing left to do.
    Drained,
    /// Its worker stopped heartbeating and had no running tasks.
    Lost,
    /// The fleet is larger than needed and the instance has been idle long enough.
    ScaleDown,
}

impl TerminateCause {
    pub const ALL: [TerminateCause; 5] = [
        TerminateCause::BootTimeout,
        TerminateCause::WorkerExited,
        TerminateCause::Drained,
        TerminateCause::Lost,
        TerminateCause::ScaleDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TerminateCause::BootTimeout => "boot_timeout",
            TerminateCause::WorkerExited => "worker_exited",
            TerminateCause::Drained => "drained",
            TerminateCause::Lost => "lost",
            TerminateCause::ScaleDown => "scale_down",
        }
    }
}

/// Kubernetes-style status conditions of a fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConditionType {
    /// The fleet has the desired number of ready instances and nothing is booting.
    Ready,
    /// Instances are being launched or are booting.
    ScalingUp,
    /// The fleet is larger than desired and shrinking (or waiting for instances to be idle).
    ScalingDown,
    /// The backlog wants more instances than `maxInstances`.
    AtMax,
    /// The budget holds the fleet below what the backlog (and `maxInstances`) would allow.
    BudgetLimited,
    /// Tasks wait but no capacity can be added, or nothing has run for a long time.
    Stalled,
}

impl ConditionType {
    pub const ALL: [ConditionType; 6] = [
        ConditionType::Ready,
        ConditionType::ScalingUp,
        ConditionType::ScalingDown,
        ConditionType::AtMax,
        ConditionType::BudgetLimited,
        ConditionType::Stalled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::ScalingUp => "ScalingUp",
            ConditionType::ScalingDown => "ScalingDown",
            ConditionType::AtMax => "AtMax",
            ConditionType::BudgetLimited => "BudgetLimited",
            ConditionType::Stalled => "Stalled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    /// Not known this pass (the store or the provider could not be read).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub message: String,
}

/// Computes the plan of every fleet of `input` at time `now`. Pure and deterministic: the same
/// input (in any order of instances and workers) gives the same plan.
pub fn plan(input: &PlanInput, now: Millis) -> Plan {
    Plan {
        at: now,
        fleets: input
            .fleets
            .iter()
            .map(|f| {
                let mut fp = scale::plan_fleet(f, now);
                fp.actions.extend(upkeep::actions(f, now));
                fp
            })
            .collect(),
    }
}
