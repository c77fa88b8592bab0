//! The scaling rules for one fleet.

use std::collections::BTreeMap;

use super::{
    Action, Condition, ConditionStatus, ConditionType, FleetInput, FleetPlan, FleetPolicy,
    FleetStatus, StepView, TerminateCause,
};
use crate::clock::{format_duration_ms, Millis};
use crate::model::{WorkerInfo, WorkerState};
use crate::provider::{Instance, InstanceState};

/// What an instance is, judging by its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
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
struct Member<'a> {
    instance: &'a Instance,
    workers: Vec<&'a WorkerInfo>,
    /// Busy slots over all the instance's workers, as the store has them.
    busy: u32,
    class: Class,
}

/// The demand side of a fleet: how many instances the backlog asks for and what bounds them.
struct Demand {
    pending: u64,
    /// `pending` is a lower bound (counting stopped at the backlog limit).
    more_pending: bool,
    running: u64,
    tasks_per_instance: u32,
    /// ceil(pending / tasksPerInstance).
    want: u32,
    min: u32,
    max: u32,
    budget: Option<u32>,
    /// The stricter of max and budget.
    cap: u32,
    desired: u32,
}

impl Demand {
    fn new(policy: &FleetPolicy, view: &StepView) -> Self {
        let max = policy.max_instances;
        let min = policy.min_instances.min(max);
        let tasks_per_instance = policy.tasks_per_instance.max(1);
        let backlog = &view.backlog;
        let pending = backlog.pending;
        // A backlog counted only up to the limit still asks for more than the limit allows.
        let at_least = pending.saturating_add(u64::from(backlog.more_pending));
        let want =
            u32::try_from(at_least.div_ceil(u64::from(tasks_per_instance))).unwrap_or(u32::MAX);
        let budget = policy.budget_instances();
        let by_max = want.max(min).min(max);
        let desired = budget.map_or(by_max, |b| by_max.min(b));
        Demand {
            pending,
            more_pending: backlog.more_pending,
            running: backlog.running,
            tasks_per_instance,
            want,
            min,
            max,
            budget,
            cap: policy.instance_cap(),
            desired,
        }
    }

    /// `37 runnable tasks`, or `more than 200 runnable tasks` when counting stopped there.
    fn backlog_text(&self) -> String {
        let n = count(self.pending, "runnable task");
        if self.more_pending {
            format!("more than {n}")
        } else {
            n
        }
    }

    /// The instances the backlog asks for; past the counted backlog only a lower bound.
    fn want_text(&self) -> String {
        if self.more_pending {
            format!("more than {}", count(self.want - 1, "instance"))
        } else {
            count(self.want, "instance")
        }
    }

    fn at_max(&self) -> bool {
        self.want > self.max
    }

    fn budget_limited(&self) -> bool {
        self.budget
            .is_some_and(|b| b < self.want.max(self.min).min(self.max))
    }

    /// Why `desired` is what it is, e.g. `backlog of 37 runnable tasks needs 5 instances (8
    /// tasks per instance)`.
    fn explain(&self) -> String {
        let mut s = if self.pending == 0 {
            "no runnable tasks".to_string()
        } else {
            format!(
                "backlog of {} needs {} ({} per instance)",
                self.backlog_text(),
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
        s
    }
}

pub(super) fn plan_fleet(input: &FleetInput, now: Millis) -> FleetPlan {
    let policy = &input.policy;
    let view = match &input.step {
        Ok(view) => view,
        Err(e) => return store_unreadable(input, e),
    };
    let demand = Demand::new(policy, view);
    let mut status = FleetStatus {
        observed: input.instances.is_ok(),
        pending_tasks: demand.pending,
        more_pending: demand.more_pending,
        running_tasks: demand.running,
        ..FleetStatus::default()
    };
    let mut actions = Vec::new();
    if demand.running > 0 {
        actions.push(Action::RequeueExpired {
            step: policy.step.clone(),
            reason: format!(
                "{} running: any whose lease has expired goes back to pending (checked every pass)",
                count(demand.running, "task"),
            ),
        });
    }
    let instances = match &input.instances {
        Ok(list) => list,
        Err(e) => return provider_unreadable(input, &demand, status, actions, e),
    };

    let members = classify(policy, instances, &view.workers, now);
    let outstanding = outstanding_launches(input, instances, now);
    for m in &members {
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
    status.launching = outstanding;

    // Broken or finished instances go regardless of demand (never busy ones).
    let mut terminations: Vec<(TerminateCause, Vec<String>, String)> = Vec::new();
    let of = |pred: &dyn Fn(&Member) -> bool| -> Vec<&Member> {
        members.iter().filter(|m| pred(m) && m.busy == 0).collect()
    };

    let timed_out = of(&|m| m.class == Class::BootTimedOut);
    if !timed_out.is_empty() {
        let list: Vec<String> = timed_out
            .iter()
            .map(|m| {
                format!(
                    "{} (launched {} ago)",
                    m.instance.id,
                    ago(now, m.instance.launched_at)
                )
            })
            .collect();
        terminations.push((
            TerminateCause::BootTimeout,
            ids(&timed_out),
            format!(
                "no worker registered within bootTimeout {}: {}",
                format_duration_ms(policy.boot_timeout),
                list.join(", ")
            ),
        ));
    }

    let finished = of(&|m| m.class == Class::Finished);
    if !finished.is_empty() {
        terminations.push((
            TerminateCause::WorkerExited,
            ids(&finished),
            format!(
                "the worker has exited (idle exit or shutdown) but the instance is still there: {}",
                ids(&finished).join(", ")
            ),
        ));
    }

    let drained = of(&|m| m.class == Class::Draining);
    if !drained.is_empty() {
        terminations.push((
            TerminateCause::Drained,
            ids(&drained),
            format!(
                "the worker is draining and has no running tasks: {}",
                ids(&drained).join(", ")
            ),
        ));
    }

    let lost: Vec<&Member> = members
        .iter()
        .filter(|m| matches!(m.class, Class::Lost { .. }))
        .collect();
    if !lost.is_empty() {
        let details: Vec<String> = lost
            .iter()
            .map(|m| {
                let Class::Lost { last_seen } = m.class else {
                    unreachable!()
                };
                let workers: Vec<&str> = live_workers(m).map(|w| w.worker_id.as_str()).collect();
                let mut d = format!(
                    "worker {} on {} last heartbeat {} ago",
                    workers.join("+"),
                    m.instance.id,
                    ago(now, last_seen)
                );
                if m.busy > 0 {
                    d.push_str(&format!(
                        " (kept: the store still shows {})",
                        count(m.busy, "busy slot")
                    ));
                }
                d
            })
            .collect();
        actions.push(Action::MarkLost {
            fleet: policy.fleet.clone(),
            ids: ids(&lost),
            workers: lost
                .iter()
                .flat_map(|m| live_workers(m).map(|w| w.worker_id.clone()))
                .collect(),
            reason: format!(
                "no heartbeat for more than {}: {}; their tasks return to pending when the leases expire",
                format_duration_ms(policy.lost_after),
                details.join(", ")
            ),
        });
        let idle_lost = of(&|m| matches!(m.class, Class::Lost { .. }));
        if !idle_lost.is_empty() {
            terminations.push((
                TerminateCause::Lost,
                ids(&idle_lost),
                format!(
                    "the worker stopped heartbeating and had no running tasks: {}",
                    ids(&idle_lost).join(", ")
                ),
            ));
        }
    }

    // Scale down: idle-long-enough ready instances, newest first, never below desired.
    let useful = status.ready + status.booting + outstanding;
    let excess = useful.saturating_sub(demand.desired);
    let mut idle_ready: Vec<(&Member, Millis)> = members
        .iter()
        .filter_map(|m| match m.class {
            Class::Ready { last_busy_at } if m.busy == 0 => {
                Some((m, now.saturating_sub(last_busy_at)))
            }
            _ => None,
        })
        .collect();
    idle_ready.sort_by(|(a, _), (b, _)| {
        b.instance
            .launched_at
            .cmp(&a.instance.launched_at)
            .then_with(|| a.instance.id.cmp(&b.instance.id))
    });
    let eligible: Vec<&(&Member, Millis)> = idle_ready
        .iter()
        .filter(|(_, idle)| *idle >= policy.scale_down_delay)
        .collect();
    let chosen: Vec<&(&Member, Millis)> = eligible.iter().copied().take(excess as usize).collect();
    if !chosen.is_empty() {
        let list: Vec<String> = chosen
            .iter()
            .map(|(m, idle)| format!("{} (idle {})", m.instance.id, format_duration_ms(*idle)))
            .collect();
        terminations.push((
            TerminateCause::ScaleDown,
            chosen.iter().map(|(m, _)| m.instance.id.clone()).collect(),
            format!(
                "{}, {} ready{}: desired {}, terminating {} idle for at least {} (scaleDownDelay), newest first: {}",
                demand.explain(),
                count(u64::from(status.ready), "instance"),
                booting_phrase(status.booting, outstanding),
                demand.desired,
                count(chosen.len() as u64, "instance"),
                format_duration_ms(policy.scale_down_delay),
                list.join(", ")
            ),
        ));
    }
    let scaled_down = chosen.len() as u32;
    let terminated: u32 = terminations
        .iter()
        .map(|(_, ids, _)| ids.len() as u32)
        .sum();
    for (cause, ids, reason) in terminations {
        actions.push(Action::Terminate {
            fleet: policy.fleet.clone(),
            ids,
            cause,
            reason,
        });
    }

    // Launch what is missing, within the hard cap.
    let occupied_after = status.instances - terminated + outstanding;
    let need = demand.desired.saturating_sub(useful);
    let room = demand.cap.saturating_sub(occupied_after);
    let cooling = input.cool_off.as_ref().filter(|c| c.until > now);
    let launch = if cooling.is_some() { 0 } else { need.min(room) };
    if launch > 0 {
        let mut reason = format!(
            "{}, {} ready{}: launching {}",
            demand.explain(),
            count(u64::from(status.ready), "instance"),
            booting_phrase(status.booting, outstanding),
            launch
        );
        if launch < need {
            reason.push_str(&format!(
                " (not {need}: {} lost or draining but still busy count toward the limit of {})",
                count(occupied_after.saturating_sub(useful), "instance"),
                demand.cap,
            ));
        }
        actions.push(Action::Launch {
            fleet: policy.fleet.clone(),
            step: policy.step.clone(),
            count: launch,
            reason,
        });
    }

    // Conditions.
    let mut conditions = Vec::with_capacity(ConditionType::ALL.len());
    let ready_ok =
        status.ready == demand.desired && status.booting == 0 && outstanding == 0 && launch == 0;
    let ready_message = if ready_ok {
        format!(
            "{} of {} desired instances ready",
            status.ready, demand.desired
        )
    } else if status.ready > demand.desired {
        format!(
            "{} ready, {} desired",
            count(status.ready, "instance"),
            demand.desired
        )
    } else {
        format!(
            "{} of {} desired instances ready{}{}",
            status.ready,
            demand.desired,
            booting_phrase(status.booting, outstanding),
            if launch > 0 {
                format!(", launching {launch}")
            } else {
                String::new()
            }
        )
    };
    conditions.push(cond(ConditionType::Ready, ready_ok, ready_message));

    let scaling_up = launch > 0 || status.booting > 0 || outstanding > 0;
    conditions.push(cond(
        ConditionType::ScalingUp,
        scaling_up,
        if scaling_up {
            let mut parts = Vec::new();
            if launch > 0 {
                parts.push(format!("launching {launch}"));
            }
            if status.booting > 0 {
                parts.push(format!("{} booting", status.booting));
            }
            if outstanding > 0 {
                parts.push(format!("{outstanding} launched, not listed yet"));
            }
            parts.join(", ")
        } else {
            "nothing launching or booting".to_string()
        },
    ));

    let left_over = excess.saturating_sub(scaled_down);
    let scaling_down = scaled_down > 0 || left_over > 0;
    conditions.push(cond(
        ConditionType::ScalingDown,
        scaling_down,
        if scaling_down {
            let mut msg = if scaled_down > 0 {
                format!("terminating {}", count(scaled_down, "idle instance"))
            } else {
                format!(
                    "{} above the {} desired",
                    count(excess, "instance"),
                    demand.desired
                )
            };
            if left_over > 0 {
                let waiting_idle: Vec<Millis> = idle_ready
                    .iter()
                    .filter(|(_, idle)| *idle < policy.scale_down_delay)
                    .map(|(_, idle)| policy.scale_down_delay - idle)
                    .collect();
                msg.push_str(&format!(
                    "; {left_over} more to remove once idle for scaleDownDelay {}",
                    format_duration_ms(policy.scale_down_delay)
                ));
                if let Some(next) = waiting_idle.iter().min() {
                    msg.push_str(&format!(" (next in {})", format_duration_ms(*next)));
                }
                if status.busy > 0 {
                    msg.push_str(&format!("; {} busy", count(status.busy, "instance")));
                }
            }
            msg
        } else {
            "not above the desired size".to_string()
        },
    ));

    conditions.push(at_max_condition(&demand));
    conditions.push(budget_condition(policy, &demand));

    let mut stalled = Vec::new();
    if demand.pending > 0 && demand.desired == 0 {
        stalled.push(format!(
            "{} wait but the budget allows no instances",
            demand.backlog_text()
        ));
    }
    if need > 0 && launch == 0 {
        if let Some(c) = cooling {
            stalled.push(format!(
                "{} more needed but the provider refused capacity ({}); launching again in {}",
                count(need, "instance"),
                c.reason,
                format_duration_ms(c.until - now)
            ));
        } else if room == 0 {
            stalled.push(format!(
                "{} more needed but the limit of {} instances is taken up by lost, draining or exited instances",
                count(need, "instance"),
                demand.cap
            ));
        }
    }
    if let Some(oldest) = view.backlog.oldest_pending_at {
        let waited = now.saturating_sub(oldest);
        if demand.pending > 0 && demand.running == 0 && waited > policy.stall_after {
            stalled.push(format!(
                "the oldest runnable task has waited {} and no task of step {} is running",
                format_duration_ms(waited),
                policy.step
            ));
        }
    }
    conditions.push(cond(
        ConditionType::Stalled,
        !stalled.is_empty(),
        if stalled.is_empty() {
            "making progress".to_string()
        } else {
            stalled.join("; ")
        },
    ));

    FleetPlan {
        fleet: policy.fleet.clone(),
        step: policy.step.clone(),
        desired: demand.desired,
        status,
        actions,
        conditions,
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

fn store_unreadable(input: &FleetInput, error: &str) -> FleetPlan {
    let message = format!("cannot read the task store: {error}; leaving the fleet as it is");
    FleetPlan {
        fleet: input.policy.fleet.clone(),
        step: input.policy.step.clone(),
        desired: 0,
        status: FleetStatus::default(),
        actions: Vec::new(),
        conditions: ConditionType::ALL
            .iter()
            .map(|t| Condition {
                type_: *t,
                status: ConditionStatus::Unknown,
                message: message.clone(),
            })
            .collect(),
    }
}

fn provider_unreadable(
    input: &FleetInput,
    demand: &Demand,
    status: FleetStatus,
    actions: Vec<Action>,
    error: &str,
) -> FleetPlan {
    let policy = &input.policy;
    let unknown = |t| Condition {
        type_: t,
        status: ConditionStatus::Unknown,
        message: format!(
            "cannot list the fleet's instances: {error}; not launching or terminating this pass"
        ),
    };
    let stalled = demand.pending > 0;
    FleetPlan {
        fleet: policy.fleet.clone(),
        step: policy.step.clone(),
        desired: demand.desired,
        status,
        actions,
        conditions: vec![
            unknown(ConditionType::Ready),
            unknown(ConditionType::ScalingUp),
            unknown(ConditionType::ScalingDown),
            at_max_condition(demand),
            budget_condition(policy, demand),
            cond(
                ConditionType::Stalled,
                stalled,
                if stalled {
                    format!(
                        "{} wait but no instance can be added: cannot list the fleet's instances: {error}",
                        demand.backlog_text()
                    )
                } else {
                    "no runnable tasks".to_string()
                },
            ),
        ],
    }
}

fn at_max_condition(d: &Demand) -> Condition {
    cond(
        ConditionType::AtMax,
        d.at_max(),
        if d.at_max() {
            format!(
                "backlog of {} would need {} but maxInstances is {}",
                d.backlog_text(),
                d.want_text(),
                d.max
            )
        } else {
            format!("the backlog needs {} of at most {}", d.want, d.max)
        },
    )
}

fn budget_condition(policy: &FleetPolicy, d: &Demand) -> Condition {
    let limited = d.budget_limited();
    let message = match (d.budget, &policy.budget) {
        (Some(b), Some(spec)) => {
            let how = match (spec.max_hourly_cost, spec.price_per_instance_hour) {
                (Some(cost), Some(price)) => format!(
                    "maxHourlyCost {cost} at {price} per instance-hour{}",
                    spec.max_instances
                        .map(|m| format!(", maxInstances {m}"))
                        .unwrap_or_default()
                ),
                _ => format!("budget.maxInstances {b}"),
            };
            if limited {
                format!(
                    "the budget allows {} ({how}); the backlog and maxInstances would allow {}",
                    count(b, "instance"),
                    d.want.max(d.min).min(d.max)
                )
            } else {
                format!("within the budget of {} ({how})", count(b, "instance"))
            }
        }
        _ => "no budget set".to_string(),
    };
    cond(ConditionType::BudgetLimited, limited, message)
}

fn cond(type_: ConditionType, status: bool, message: String) -> Condition {
    Condition {
        type_,
        status: if status {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        message,
    }
}

fn live_workers<'a>(m: &'a Member<'a>) -> impl Iterator<Item = &'a WorkerInfo> + 'a {
    m.workers
        .iter()
        .copied()
        .filter(|w| w.state != WorkerState::Gone)
}

fn ids(members: &[&Member]) -> Vec<String> {
    members.iter().map(|m| m.instance.id.clone()).collect()
}

fn ago(now: Millis, then: Millis) -> String {
    format_duration_ms(now.saturating_sub(then))
}

/// `, 1 booting, 2 launched (not listed yet)` or nothing.
fn booting_phrase(booting: u32, outstanding: u32) -> String {
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
