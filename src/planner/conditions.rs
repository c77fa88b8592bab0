//! A fleet's status conditions (Kubernetes style): `Ready`, `ScalingUp`, `ScalingDown`,
//! `AtMax`, `BudgetLimited` and `Stalled`, each with a message saying why; and the plans of
//! fleets that could not be observed.

use super::scale::{booting_phrase, count, Demand};
use super::{
    Action, Condition, ConditionStatus, ConditionType, CoolOff, FleetInput, FleetPlan, FleetPolicy,
    FleetStatus, StepView,
};
use crate::clock::{format_duration_ms, Millis};

/// What a fleet's conditions are computed from, once its plan is made.
pub(super) struct Outcome<'a> {
    pub policy: &'a FleetPolicy,
    pub view: &'a StepView,
    pub demand: &'a Demand,
    pub status: &'a FleetStatus,
    /// Instances launched this pass.
    pub launch: u32,
    /// Instances missing to reach desired, and room below the hard cap.
    pub need: u32,
    pub room: u32,
    /// The cool-off in force, if any.
    pub cooling: Option<&'a CoolOff>,
    /// Useful instances above desired, and how many of them this pass terminates.
    pub excess: u32,
    pub scaled_down: u32,
    /// Time until the next idle instance reaches `scaleDownDelay`, if one is waiting.
    pub next_idle: Option<Millis>,
}

/// The six conditions, in [`ConditionType::ALL`] order.
pub(super) fn conditions(o: &Outcome, now: Millis) -> Vec<Condition> {
    vec![
        ready(o),
        scaling_up(o),
        scaling_down(o),
        at_max_condition(o.demand),
        budget_condition(o.policy, o.demand),
        stalled(o, now),
    ]
}

fn ready(o: &Outcome) -> Condition {
    let (s, desired, launch) = (o.status, o.demand.desired, o.launch);
    let ok = s.ready == desired && s.booting == 0 && s.launching == 0 && launch == 0;
    // Why the fleet holds where counts alone would launch: the task and boot times.
    let held = match (&o.demand.timed, launch) {
        (Some(_), 0) => format!(": {}", o.demand.explain()),
        _ => String::new(),
    };
    let message = if ok {
        format!("{} of {} desired instances ready{held}", s.ready, desired)
    } else if s.ready > desired {
        format!("{} ready, {} desired", count(s.ready, "instance"), desired)
    } else {
        format!(
            "{} of {} desired instances ready{}{}",
            s.ready,
            desired,
            booting_phrase(s.booting, s.launching),
            if launch > 0 {
                format!(", launching {launch}")
            } else {
                String::new()
            }
        )
    };
    cond(ConditionType::Ready, ok, message)
}

fn scaling_up(o: &Outcome) -> Condition {
    let (s, launch) = (o.status, o.launch);
    let up = launch > 0 || s.booting > 0 || s.launching > 0;
    let message = if up {
        let mut parts = Vec::new();
        if launch > 0 {
            parts.push(format!("launching {launch}"));
        }
        if s.booting > 0 {
            parts.push(format!("{} booting", s.booting));
        }
        if s.launching > 0 {
            parts.push(format!("{} launched, not listed yet", s.launching));
        }
        parts.join(", ")
    } else {
        "nothing launching or booting".to_string()
    };
    cond(ConditionType::ScalingUp, up, message)
}

fn scaling_down(o: &Outcome) -> Condition {
    let (excess, scaled_down) = (o.excess, o.scaled_down);
    let delay = o.policy.scale_down_delay;
    let left_over = excess.saturating_sub(scaled_down);
    let down = scaled_down > 0 || left_over > 0;
    if !down {
        return cond(
            ConditionType::ScalingDown,
            false,
            "not above the desired size".to_string(),
        );
    }
    let mut msg = if scaled_down > 0 {
        format!("terminating {}", count(scaled_down, "idle instance"))
    } else {
        format!(
            "{} above the {} desired",
            count(excess, "instance"),
            o.demand.desired
        )
    };
    if left_over > 0 {
        msg.push_str(&format!(
            "; {left_over} more to remove once idle for scaleDownDelay {}",
            format_duration_ms(delay)
        ));
        if let Some(next) = o.next_idle {
            msg.push_str(&format!(" (next in {})", format_duration_ms(next)));
        }
        if o.status.busy > 0 {
            msg.push_str(&format!("; {} busy", count(o.status.busy, "instance")));
        }
    }
    cond(ConditionType::ScalingDown, true, msg)
}

fn stalled(o: &Outcome, now: Millis) -> Condition {
    let (demand, policy) = (o.demand, o.policy);
    let mut stalled = Vec::new();
    if demand.pending > 0 && demand.desired == 0 {
        stalled.push(format!(
            "{} wait but the budget allows no instances",
            demand.backlog_text()
        ));
    }
    if o.need > 0 && o.launch == 0 {
        if let Some(c) = o.cooling {
            stalled.push(format!(
                "{} more needed but the provider refused capacity ({}); launching again in {}",
                count(o.need, "instance"),
                c.reason,
                format_duration_ms(c.until - now)
            ));
        } else if o.room == 0 {
            stalled.push(format!(
                "{} more needed but the limit of {} instances is taken up by lost, draining or exited instances",
                count(o.need, "instance"),
                demand.cap
            ));
        }
    }
    if let Some(oldest) = o.view.backlog.oldest_pending_at {
        let waited = now.saturating_sub(oldest);
        if demand.pending > 0 && demand.running == 0 && waited > policy.stall_after {
            stalled.push(format!(
                "the oldest runnable task has waited {} and no task of step {} is running",
                format_duration_ms(waited),
                policy.step
            ));
        }
    }
    let message = if stalled.is_empty() {
        "making progress".to_string()
    } else {
        stalled.join("; ")
    };
    cond(ConditionType::Stalled, !stalled.is_empty(), message)
}

pub(super) fn store_unreadable(input: &FleetInput, error: &str) -> FleetPlan {
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

pub(super) fn provider_unreadable(
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
                d.demand_text(),
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
    let bound = policy
        .budget
        .as_ref()
        .and_then(|b| super::budget::bound(b, policy.spend.as_ref()));
    let message = match bound {
        Some(b) if limited => format!(
            "the budget allows {} ({}); the backlog and maxInstances would allow {}",
            count(b.instances, "instance"),
            b.why,
            d.want.max(d.min).min(d.max)
        ),
        Some(b) => format!(
            "within the budget of {} ({})",
            count(b.instances, "instance"),
            b.why
        ),
        None => "no budget set".to_string(),
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
