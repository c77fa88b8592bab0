//! The scaling rules for one fleet: how many instances the backlog asks for ([`Demand`]),
//! what each listed instance is ([`Class`]), and the plan that follows — requeues, reports of
//! lost workers, terminations (`terminate.rs`), a launch, and the conditions (`conditions.rs`).

use std::collections::BTreeMap;

use super::conditions::{conditions, provider_unreadable, store_unreadable, Outcome};
use super::drain;
use super::estimate::{launch_horizon, starts_within, Outlook, BOOTS_PER_LAUNCH};
use super::terminate;
use super::{Action, FleetInput, FleetPlan, FleetPolicy, FleetStatus, StepView};
use crate::clock::{format_duration_ms, Millis};
use crate::model::{WorkerInfo, WorkerState};
use crate::provider::{Instance, InstanceState};

/// What an instance is, judging by its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Class {
    /// No worker registered yet, within the boot timeout.
    Booting,
    /// No worker registered within the boot timeout.
    BootTimedOut,
    /// Every worker exited and none has busy slots.
    Finished,
    /// No heartbeat for `lost_after`.
    Lost { last_seen: Millis },
    /// An active, heartbeating worker.
    Ready { last_busy_at: Millis },
    /// Workers draining (or exited while the store still shows busy slots).
    Draining,
}

/// A listed instance with its workers.
#[derive(Debug)]
pub(super) struct Member<'a> {
    pub instance: &'a Instance,
    pub workers: Vec<&'a WorkerInfo>,
    /// Busy slots over all the instance's workers, as the store has them.
    pub busy: u32,
    pub class: Class,
}

/// The demand side of a fleet: how many instances the backlog asks for and what bounds them.
pub(super) struct Demand {
    pub pending: u64,
    /// `pending` is a lower bound (counting stopped at the backlog limit).
    pub more_pending: bool,
    pub running: u64,
    /// Busy slots on the ready instances: tasks that hold their instance until they end.
    pub occupied: u64,
    pub tasks_per_instance: u32,
    /// ceil((occupied + pending) / tasksPerInstance).
    pub want: u32,
    pub min: u32,
    pub max: u32,
    pub budget: Option<u32>,
    /// The stricter of max and budget.
    pub cap: u32,
    pub desired: u32,
    /// Why the task and boot times lowered `desired`, if they did.
    pub timed: Option<String>,
}

impl Demand {
    /// `occupied`: the busy slots of the ready instances. The instances they hold stay until
    /// their tasks end, so the backlog asks for instances beyond what they fill: with 6
    /// instances of 8 slots all busy and 40 tasks pending, 11, not 5.
    fn new(policy: &FleetPolicy, view: &StepView, occupied: u64) -> Self {
        let max = policy.max_instances;
        let min = policy.min_instances.min(max);
        let tasks_per_instance = policy.tasks_per_instance.max(1);
        let backlog = &view.backlog;
        let pending = backlog.pending;
        // A backlog counted only up to the limit still asks for more than the limit allows.
        let at_least = pending
            .saturating_add(u64::from(backlog.more_pending))
            .saturating_add(occupied);
        let want =
            u32::try_from(at_least.div_ceil(u64::from(tasks_per_instance))).unwrap_or(u32::MAX);
        let budget = policy.budget_instances();
        let by_max = want.max(min).min(max);
        let desired = budget.map_or(by_max, |b| by_max.min(b));
        Demand {
            pending,
            more_pending: backlog.more_pending,
            running: backlog.running,
            occupied,
            tasks_per_instance,
            want,
            min,
            max,
            budget,
            cap: policy.instance_cap(),
            desired,
            timed: None,
        }
    }

    /// Plans on the time the backlog needs: instances beyond the ready and booting ones are
    /// wanted only for the tasks those would not start within the launch horizon
    /// ([`launch_horizon`]: half a task's run time, or ten boot times if longer) — each free
    /// slot one now and one per run time after, each booting instance what a new one would
    /// start, and each busy slot its expected completions within the horizon; a new instance
    /// counts for what it would start within the horizon once booted. Never raises `desired`,
    /// nor lowers it below the instances there are (so it never causes a scale-in), nor
    /// applies to a backlog counted only up to the limit (it is beyond what the fleet can
    /// hold at once).
    fn plan_on_time(&mut self, o: &Outlook, members: &[Member], s: &FleetStatus, slots: u32) {
        let (Some(duration), Some(boot)) = (o.duration, o.boot) else {
            return;
        };
        let useful = s.ready + s.booting + s.launching;
        if self.more_pending || self.desired <= useful {
            return;
        }
        let free: u64 = members
            .iter()
            .filter(|m| matches!(m.class, Class::Ready { .. }))
            .map(free_slots)
            .sum();
        let horizon = launch_horizon(duration, boot);
        // A booting instance is counted as if launched now (it may start more).
        let per_new = starts_within(horizon, boot, duration, slots);
        let booting = u64::from(s.booting + s.launching) * per_new;
        let per_free = starts_within(horizon, 0, duration, 1);
        let per_slot = o.starts_per_slot(horizon).unwrap_or(0.0);
        let started = free.saturating_mul(per_free)
            + booting
            + (self.occupied as f64 * per_slot).floor() as u64;
        let left = self.pending.saturating_sub(started);
        let extra = u32::try_from(left.div_ceil(per_new.max(u64::from(self.tasks_per_instance))))
            .unwrap_or(u32::MAX);
        let timed = useful.saturating_add(extra).max(self.min);
        if timed >= self.desired {
            return;
        }
        self.desired = timed;
        self.timed = Some(format!(
            "; with {}, the {} ready or booting start {} of them within {} ({}), so {} {}",
            o.describe(),
            count(useful, "instance"),
            if left == 0 {
                "all".to_string()
            } else {
                format!("all but {left}")
            },
            format_duration_ms(horizon),
            if horizon > boot.saturating_mul(BOOTS_PER_LAUNCH) {
                "half a task's run time".to_string()
            } else {
                format!("{BOOTS_PER_LAUNCH} boot times")
            },
            count(timed, "instance"),
            if timed == 1 {
                "is enough"
            } else {
                "are enough"
            },
        ));
    }

    /// `37 runnable tasks`, or `more than 200 runnable tasks` when counting stopped there.
    pub(super) fn backlog_text(&self) -> String {
        let n = count(self.pending, "runnable task");
        if self.more_pending {
            format!("more than {n}")
        } else {
            n
        }
    }

    /// `37 runnable tasks`, with `beside 48 running on ready instances` when tasks hold
    /// ready instances (they count toward what the backlog needs).
    pub(super) fn demand_text(&self) -> String {
        if self.occupied == 0 {
            self.backlog_text()
        } else {
            format!(
                "{} beside {} running on ready instances",
                self.backlog_text(),
                self.occupied
            )
        }
    }

    /// The instances the backlog asks for; past the counted backlog only a lower bound.
    pub(super) fn want_text(&self) -> String {
        if self.more_pending {
            format!("more than {}", count(self.want - 1, "instance"))
        } else {
            count(self.want, "instance")
        }
    }

    /// The backlog asks for more than maxInstances, and the task and boot times did not say
    /// fewer are enough (then the limit does not bind).
    pub(super) fn at_max(&self) -> bool {
        self.want > self.max && self.timed.is_none()
    }

    pub(super) fn budget_limited(&self) -> bool {
        self.budget
            .is_some_and(|b| b < self.want.max(self.min).min(self.max))
    }

    /// Why `desired` is what it is, e.g. `backlog of 37 runnable tasks needs 5 instances (8
    /// tasks per instance)`.
    pub(super) fn explain(&self) -> String {
        let mut s = if self.pending == 0 {
            "no runnable tasks".to_string()
        } else {
            format!(
                "backlog of {} needs {} ({} per instance)",
                self.demand_text(),
                self.want_text(),
                count(self.tasks_per_instance, "task"),
            )
        };
        if self.want < self.min {
            s.push_str(&format!(", minInstances keeps {}", self.min));
        }
        if self.at_max() {
            s.push_str(&format!(", capped at maxInstances {}", self.max));
        }
        if let Some(b) = self.budget.filter(|_| self.budget_limited()) {
            s.push_str(&format!(", limited to {b} by the budget"));
        }
        if let Some(t) = &self.timed {
            s.push_str(t);
        }
        s
    }
}

pub(super) fn plan_fleet(input: &FleetInput, now: Millis) -> FleetPlan {
    let policy = &input.policy;
    let view = match &input.step {
        Ok(view) => view,
        Err(e) => return store_unreadable(input, e),
    };
    let members = match &input.instances {
        Ok(list) => classify(policy, list, &view.workers, now),
        Err(_) => Vec::new(),
    };
    let mut demand = Demand::new(policy, view, occupied(&members));
    let mut status = FleetStatus {
        observed: input.instances.is_ok(),
        pending_tasks: demand.pending,
        more_pending: demand.more_pending,
        running_tasks: demand.running,
        ..FleetStatus::default()
    };
    let mut actions: Vec<Action> = requeue(policy, &demand).into_iter().collect();
    let instances = match &input.instances {
        Ok(list) => list,
        Err(e) => return provider_unreadable(input, &demand, status, actions, e),
    };
    count_members(&mut status, &members);
    status.launching = outstanding_launches(input, instances, now);
    // The ledger's memory of boots covers the listed instances; a view built without it
    // (tests, `anamo plan` before a pass) plans on the listing's.
    let listed_boots = boot_times(&members);
    let boots = if view.recent.boots.is_empty() {
        &listed_boots
    } else {
        &view.recent.boots
    };
    let outlook = Outlook::new(&view.recent, boots, now).with_prior(policy.task_duration);
    demand.plan_on_time(&outlook, &members, &status, policy.slots_per_instance);

    let useful = status.ready + status.booting + status.launching;
    let drains = drain::decide(policy, &demand, &members, &outlook);
    let scaled_in = scale_in(
        policy,
        &demand,
        &status,
        &members,
        &outlook,
        &drains,
        now,
        &mut actions,
    );
    actions.extend(drains.actions);

    // Launch what is missing, within the hard cap.
    let occupied_after = status.instances - scaled_in.terminated + status.launching;
    let need = demand.desired.saturating_sub(useful);
    let room = demand.cap.saturating_sub(occupied_after);
    let cooling = input.cool_off.as_ref().filter(|c| c.until > now);
    let launch = if cooling.is_some() { 0 } else { need.min(room) };
    if launch > 0 {
        let surplus = occupied_after.saturating_sub(useful);
        actions.push(launch_action(
            policy, &demand, &status, launch, need, surplus,
        ));
    }

    let outcome = Outcome {
        policy,
        view,
        demand: &demand,
        status: &status,
        launch,
        need,
        room,
        cooling,
        excess: scaled_in.excess,
        scaled_down: scaled_in.scaled_down,
        next_idle: scaled_in.next_idle,
    };
    FleetPlan {
        fleet: policy.fleet.clone(),
        step: policy.step.clone(),
        desired: demand.desired,
        conditions: conditions(&outcome, now),
        status,
        actions,
    }
}

/// What scaling in decided, for the conditions.
struct ScaledIn {
    /// Instances terminated, for any cause.
    terminated: u32,
    /// Useful instances beyond the desired number.
    excess: u32,
    /// Of those, the ones terminated as idle.
    scaled_down: u32,
    /// When the next idle instance has been idle for `scaleDownDelay`.
    next_idle: Option<Millis>,
}

/// Terminates broken or finished instances regardless of demand (never busy ones), and scales
/// down: idle-long-enough ready instances, newest first, never below desired. Pushes the
/// actions.
#[allow(clippy::too_many_arguments)]
fn scale_in(
    policy: &FleetPolicy,
    demand: &Demand,
    status: &FleetStatus,
    members: &[Member],
    outlook: &Outlook,
    drains: &drain::Drains,
    now: Millis,
    actions: &mut Vec<Action>,
) -> ScaledIn {
    let (mut terminations, lost) = terminate::broken(policy, members, now);
    actions.extend(lost);
    let useful = status.ready + status.booting + status.launching;
    let excess = useful.saturating_sub(demand.desired);
    let idle_ready = terminate::idle_ready(members, now);
    let busy = terminate::BusyInstances::of(members, drains);
    let scaled_down = terminate::scale_down(
        policy,
        demand,
        status,
        excess,
        &idle_ready,
        busy,
        outlook,
        now,
    );
    let scaled_down_count = scaled_down.as_ref().map_or(0, |t| t.ids.len() as u32);
    terminations.extend(scaled_down);
    let terminated: u32 = terminations.iter().map(|t| t.ids.len() as u32).sum();
    actions.extend(terminations.into_iter().map(|t| Action::Terminate {
        fleet: policy.fleet.clone(),
        ids: t.ids,
        cause: t.cause,
        reason: t.reason,
    }));
    ScaledIn {
        terminated,
        excess,
        scaled_down: scaled_down_count,
        next_idle: idle_ready
            .iter()
            .filter(|(_, idle)| *idle < policy.scale_down_delay)
            .map(|(_, idle)| policy.scale_down_delay - idle)
            .min(),
    }
}

/// Busy slots on the ready instances.
fn occupied(members: &[Member]) -> u64 {
    members
        .iter()
        .filter(|m| matches!(m.class, Class::Ready { .. }))
        .map(|m| u64::from(m.busy))
        .sum()
}

/// Launch to registration of every listed instance whose worker registered.
fn boot_times(members: &[Member]) -> Vec<Millis> {
    members
        .iter()
        .filter_map(|m| {
            let registered = m.workers.iter().map(|w| w.started_at).min()?;
            (registered >= m.instance.launched_at).then(|| registered - m.instance.launched_at)
        })
        .collect()
}

/// Requeueing the step's expired leases, while any task runs.
fn requeue(policy: &FleetPolicy, demand: &Demand) -> Option<Action> {
    (demand.running > 0).then(|| Action::RequeueExpired {
        step: policy.step.clone(),
        reason: format!(
            "{} running: any whose lease has expired goes back to pending (checked every pass)",
            count(demand.running, "task"),
        ),
    })
}

/// The launch of `launch` instances, `need` being missing (`surplus`: lost or draining but
/// busy instances that take up room below the cap).
fn launch_action(
    policy: &FleetPolicy,
    demand: &Demand,
    status: &FleetStatus,
    launch: u32,
    need: u32,
    surplus: u32,
) -> Action {
    let mut reason = format!(
        "{}, {} ready{}: launching {}",
        demand.explain(),
        count(u64::from(status.ready), "instance"),
        booting_phrase(status.booting, status.launching),
        launch
    );
    if launch < need {
        reason.push_str(&format!(
            " (not {need}: {} lost or draining but still busy count toward the limit of {})",
            count(surplus, "instance"),
            demand.cap,
        ));
    }
    Action::Launch {
        fleet: policy.fleet.clone(),
        step: policy.step.clone(),
        count: launch,
        reason,
    }
}

/// Counts the members by class into `status`.
fn count_members(status: &mut FleetStatus, members: &[Member]) {
    for m in members {
        status.instances += 1;
        match m.class {
            Class::Booting => status.booting += 1,
            Class::BootTimedOut => status.boot_timed_out += 1,
            Class::Finished => status.finished += 1,
            Class::Lost { .. } => status.lost += 1,
            Class::Draining => status.draining += 1,
            Class::Ready { .. } => {
                status.ready += 1;
                if m.busy > 0 {
                    status.busy += 1;
                }
            }
        }
    }
}

/// Joins instances with their workers and classifies them; sorted by instance id.
fn classify<'a>(
    policy: &FleetPolicy,
    instances: &'a [Instance],
    workers: &'a [WorkerInfo],
    now: Millis,
) -> Vec<Member<'a>> {
    let mut by_instance: BTreeMap<&str, Vec<&WorkerInfo>> = BTreeMap::new();
    for w in workers {
        if let Some(id) = w.instance_id.as_deref() {
            by_instance.entry(id).or_default().push(w);
        }
    }
    let mut live: Vec<&Instance> = instances
        .iter()
        .filter(|i| i.state != InstanceState::Stopping)
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id).then(a.launched_at.cmp(&b.launched_at)));
    live.dedup_by(|a, b| a.id == b.id);
    live.into_iter()
        .map(|instance| {
            let mut ws = by_instance
                .get(instance.id.as_str())
                .cloned()
                .unwrap_or_default();
            ws.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
            let busy = ws.iter().fold(0u32, |n, w| n.saturating_add(w.busy_slots));
            let class = if ws.is_empty() {
                if now.saturating_sub(instance.launched_at) >= policy.boot_timeout {
                    Class::BootTimedOut
                } else {
                    Class::Booting
                }
            } else {
                let alive: Vec<&&WorkerInfo> =
                    ws.iter().filter(|w| w.state != WorkerState::Gone).collect();
                if alive.is_empty() {
                    if busy == 0 {
                        Class::Finished
                    } else {
                        Class::Draining
                    }
                } else {
                    let last_seen = alive.iter().map(|w| w.last_seen).max().unwrap_or(0);
                    if now.saturating_sub(last_seen) > policy.lost_after {
                        Class::Lost { last_seen }
                    } else if alive.iter().any(|w| w.state == WorkerState::Active) {
                        Class::Ready {
                            last_busy_at: ws.iter().map(|w| w.last_busy_at).max().unwrap_or(0),
                        }
                    } else {
                        Class::Draining
                    }
                }
            };
            Member {
                instance,
                workers: ws,
                busy,
                class,
            }
        })
        .collect()
}

/// Instances launched but not yet listed (launches older than the boot timeout are given up).
fn outstanding_launches(input: &FleetInput, instances: &[Instance], now: Millis) -> u32 {
    input
        .pending_launches
        .iter()
        .filter(|b| now.saturating_sub(b.launched_at) < input.policy.boot_timeout)
        .map(|b| {
            let listed = instances
                .iter()
                .filter(|i| i.launch_batch.as_deref() == Some(b.batch.as_str()))
                .count();
            b.count
                .saturating_sub(u32::try_from(listed).unwrap_or(u32::MAX))
        })
        .fold(0u32, u32::saturating_add)
}

pub(super) fn live_workers<'a>(m: &'a Member<'a>) -> impl Iterator<Item = &'a WorkerInfo> + 'a {
    m.workers
        .iter()
        .copied()
        .filter(|w| w.state != WorkerState::Gone)
}

/// The slots of `m`'s live workers that run nothing.
pub(super) fn free_slots(m: &Member) -> u64 {
    let total: u32 = live_workers(m).map(|w| w.slots).sum();
    u64::from(total.saturating_sub(m.busy))
}

pub(super) fn ids(members: &[&Member]) -> Vec<String> {
    members.iter().map(|m| m.instance.id.clone()).collect()
}

pub(super) fn ago(now: Millis, then: Millis) -> String {
    format_duration_ms(now.saturating_sub(then))
}

/// `, 1 booting, 2 launched (not listed yet)` or nothing.
pub(super) fn booting_phrase(booting: u32, outstanding: u32) -> String {
    let mut s = String::new();
    if booting > 0 {
        s.push_str(&format!(", {booting} booting"));
    }
    if outstanding > 0 {
        s.push_str(&format!(", {outstanding} launched but not listed yet"));
    }
    s
}

/// `1 instance`, `2 instances`, `3 runnable tasks` (the last word takes the plural `s`).
pub(super) fn count(n: impl Into<u64>, noun: &str) -> String {
    match n.into() {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}
