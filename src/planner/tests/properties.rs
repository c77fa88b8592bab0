//! Promises the planner keeps on any input (proptest): never terminate a busy instance, stay
//! within max and budget, launch only what is missing, never scale below desired, change
//! nothing on a failed observation, and plan the same in any order of its input.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;

fn arb_policy() -> impl Strategy<Value = FleetPolicy> {
    (
        0u32..5,
        0u32..9,
        1u32..4,
        0u32..6,
        0i64..5,
        1i64..12,
        proptest::option::of((
            proptest::option::of(0u32..8),
            proptest::option::of((0u32..20, 1u32..4)),
        )),
    )
        .prop_map(
            |(min, max, slots, tpi, delay_min, boot_min, budget)| FleetPolicy {
                min_instances: min,
                max_instances: max,
                slots_per_instance: slots,
                tasks_per_instance: tpi,
                scale_down_delay: delay_min * MIN,
                boot_timeout: boot_min * MIN,
                budget: budget.map(|(max_instances, cost)| BudgetSpec {
                    max_instances,
                    max_hourly_cost: cost.map(|(c, _)| f64::from(c)),
                    price_per_instance_hour: cost.map(|(_, p)| f64::from(p) * 0.5),
                    max_total_cost: None,
                }),
                ..policy()
            },
        )
}

fn arb_instance_state() -> impl Strategy<Value = InstanceState> {
    prop_oneof![
        Just(InstanceState::Pending),
        Just(InstanceState::Running),
        Just(InstanceState::Stopping),
    ]
}

fn arb_worker_state() -> impl Strategy<Value = WorkerState> {
    prop_oneof![
        4 => Just(WorkerState::Active),
        1 => Just(WorkerState::Draining),
        1 => Just(WorkerState::Gone),
    ]
}

/// Up to 10 instances of any state and age, some tagged with a launch batch.
fn arb_instances() -> impl Strategy<Value = Vec<Instance>> {
    proptest::collection::vec(
        (arb_instance_state(), 0i64..30, proptest::option::of(0u8..3)),
        0..10,
    )
    .prop_map(|instances| {
        instances
            .into_iter()
            .enumerate()
            .map(|(i, (state, ago_min, batch))| Instance {
                state,
                launch_batch: batch.map(|b| format!("b{b}")),
                ..inst(&format!("i-{i}"), ago_min * MIN)
            })
            .collect()
    })
}

/// Up to 12 workers, some on instances that are not listed.
fn arb_workers() -> impl Strategy<Value = Vec<WorkerInfo>> {
    proptest::collection::vec(
        (0usize..12, 0u32..3, 0i64..5, 0i64..10, arb_worker_state()),
        0..12,
    )
    .prop_map(|workers| {
        workers
            .into_iter()
            .enumerate()
            .map(|(n, (on, busy, seen_min, idle_min, state))| WorkerInfo {
                worker_id: format!("w-{n}"),
                busy_slots: busy,
                last_seen: NOW - seen_min * 20 * SEC,
                last_busy_at: NOW - idle_min * 30 * SEC,
                state,
                // Some workers are on instances that are not listed.
                ..worker(&format!("i-{on}"), 0, 0)
            })
            .collect()
    })
}

fn arb_input() -> impl Strategy<Value = FleetInput> {
    let launches = proptest::collection::vec((0u8..3, 0u32..4, 0i64..15), 0..3);
    (
        arb_policy(),
        0u64..40,
        0u64..10,
        proptest::option::of(0i64..60),
        arb_instances(),
        arb_workers(),
        launches,
        proptest::option::of(-2i64..3),
        0u8..10,
        // Recent run times in seconds (fewer than 4: no duration estimate).
        proptest::collection::vec(1i64..7200, 0..8),
    )
        .prop_map(
            |(
                policy,
                pending,
                running,
                oldest,
                instances,
                workers,
                launches,
                cool_off,
                fail,
                runs,
            )| {
                FleetInput {
                    policy,
                    step: if fail == 0 {
                        Err("store down".into())
                    } else {
                        Ok(StepView {
                            backlog: Backlog {
                                step: "align".into(),
                                pending,
                                running,
                                oldest_pending_at: oldest.map(|m| NOW - m * MIN),
                                ..Backlog::default()
                            },
                            workers,
                            recent: crate::planner::estimate::RecentTasks {
                                durations: runs.iter().map(|r| r * SEC).collect(),
                                runnable_at: Vec::new(),
                                ..Default::default()
                            },
                        })
                    },
                    instances: if fail == 1 {
                        Err("throttled".into())
                    } else {
                        Ok(instances)
                    },
                    cool_off: cool_off.map(|m| CoolOff {
                        until: NOW + m * MIN,
                        reason: "no capacity".into(),
                    }),
                    pending_launches: launches
                        .into_iter()
                        .map(|(b, count, ago_min)| PendingLaunch {
                            batch: format!("b{b}"),
                            count,
                            launched_at: NOW - ago_min * MIN,
                        })
                        .collect(),
                    scale_in_protection: false,
                }
            },
        )
}

/// Busy slots per instance id, over every worker of the input.
fn busy_by_instance(input: &FleetInput) -> BTreeMap<String, u32> {
    let mut busy = BTreeMap::new();
    if let Ok(view) = &input.step {
        for w in &view.workers {
            if let Some(id) = &w.instance_id {
                *busy.entry(id.clone()).or_insert(0) += w.busy_slots;
            }
        }
    }
    busy
}

/// Live instances plus launches not yet listed, before any action.
fn occupied(input: &FleetInput) -> (u32, u32) {
    let Ok(instances) = &input.instances else {
        return (0, 0);
    };
    let live: BTreeSet<&str> = instances
        .iter()
        .filter(|i| i.state != InstanceState::Stopping)
        .map(|i| i.id.as_str())
        .collect();
    let outstanding: u32 = input
        .pending_launches
        .iter()
        .filter(|b| NOW - b.launched_at < input.policy.boot_timeout)
        .map(|b| {
            let listed = instances
                .iter()
                .filter(|i| i.launch_batch.as_deref() == Some(&b.batch))
                .count() as u32;
            b.count.saturating_sub(listed)
        })
        .sum();
    (live.len() as u32, outstanding)
}

fn shuffled<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
    let mut out = v.to_vec();
    let mut x = seed | 1;
    for i in (1..out.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.swap(i, (x % (i as u64 + 1)) as usize);
    }
    out
}

/// An action without its reason (reasons quote the counted backlog).
fn without_reason(a: &Action) -> Action {
    let mut a = a.clone();
    match &mut a {
        Action::Launch { reason, .. }
        | Action::Terminate { reason, .. }
        | Action::MarkLost { reason, .. }
        | Action::RequeueExpired { reason, .. }
        | Action::SetProtection { reason, .. }
        | Action::ForgetWorkers { reason, .. }
        | Action::RetireWorkers { reason, .. }
        | Action::DrainWorkers { reason, .. } => reason.clear(),
    }
    a
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The controller counts a backlog only up to the fleet's limit: whatever lies beyond
    /// must not change the plan.
    #[test]
    fn a_backlog_counted_to_the_limit_plans_like_the_whole_one(
        input in arb_input(),
        extra in 0u64..5_000,
    ) {
        let Ok(view) = &input.step else { return Ok(()) };
        let whole = view.backlog.pending + extra;
        let limit = input.policy.backlog_limit();
        let mut exact = input.clone();
        let mut counted = input.clone();
        if let (Ok(e), Ok(c)) = (&mut exact.step, &mut counted.step) {
            e.backlog.pending = whole;
            c.backlog.pending = whole.min(limit);
            c.backlog.more_pending = whole > limit;
        }
        let e = plan(&PlanInput { fleets: vec![exact] }, NOW).fleets.remove(0);
        let c = plan(&PlanInput { fleets: vec![counted] }, NOW).fleets.remove(0);
        prop_assert_eq!(e.desired, c.desired, "exact:\n{}\ncounted:\n{}", e, c);
        let (ea, ca): (Vec<Action>, Vec<Action>) = (
            e.actions.iter().map(without_reason).collect(),
            c.actions.iter().map(without_reason).collect(),
        );
        prop_assert_eq!(ea, ca, "exact:\n{}\ncounted:\n{}", e, c);
        let statuses = |p: &FleetPlan| -> Vec<(ConditionType, ConditionStatus)> {
            p.conditions.iter().map(|c| (c.type_, c.status)).collect()
        };
        prop_assert_eq!(statuses(&e), statuses(&c), "exact:\n{}\ncounted:\n{}", e, c);
    }

    #[test]
    fn never_terminates_a_busy_instance(input in arb_input()) {
        let busy = busy_by_instance(&input);
        let fp = plan(&PlanInput { fleets: vec![input.clone()] }, NOW).fleets.remove(0);
        for id in fp.terminated_ids() {
            prop_assert_eq!(busy.get(id).copied().unwrap_or(0), 0, "terminated busy {}:\n{}", id, fp);
        }
    }

    #[test]
    fn launches_stay_within_max_and_budget(input in arb_input()) {
        let fp = plan(&PlanInput { fleets: vec![input.clone()] }, NOW).fleets.remove(0);
        let launched = fp.launch_count();
        let launches: Vec<&Action> = fp.actions.iter().filter(|a| matches!(a, Action::Launch { .. })).collect();
        prop_assert!(launches.len() <= 1);
        let zero = launches.iter().any(|a| matches!(a, Action::Launch { count: 0, .. }));
        prop_assert!(!zero, "a launch of 0 instances:\n{}", fp);
        if launched > 0 {
            let (live, outstanding) = occupied(&input);
            let terminated = fp.terminated_ids().len() as u32;
            let after = live - terminated + outstanding + launched;
            prop_assert!(after <= input.policy.max_instances, "{} > max:\n{}", after, fp);
            if let Some(b) = input.policy.budget_instances() {
                prop_assert!(after <= b, "{} > budget {}:\n{}", after, b, fp);
            }
        }
    }

    #[test]
    fn launches_only_what_is_missing(input in arb_input()) {
        let fp = plan(&PlanInput { fleets: vec![input.clone()] }, NOW).fleets.remove(0);
        let s = fp.status;
        let capacity = s.ready + s.booting + s.launching;
        let launched = fp.launch_count();
        if capacity >= fp.desired {
            prop_assert_eq!(launched, 0, "{}", fp);
        } else {
            prop_assert!(launched <= fp.desired - capacity, "{}", fp);
        }
        if input.cool_off.as_ref().is_some_and(|c| c.until > NOW) {
            prop_assert_eq!(launched, 0);
        }
    }

    #[test]
    fn scale_down_never_goes_below_desired(input in arb_input()) {
        let fp = plan(&PlanInput { fleets: vec![input.clone()] }, NOW).fleets.remove(0);
        let scaled: usize = fp.actions.iter().map(|a| match a {
            Action::Terminate { cause: TerminateCause::ScaleDown, ids, .. } => ids.len(),
            _ => 0,
        }).sum();
        if scaled > 0 {
            let s = fp.status;
            prop_assert!(s.ready + s.booting + s.launching - scaled as u32 >= fp.desired, "{}", fp);
        }
    }

    #[test]
    fn failed_observation_changes_nothing(input in arb_input()) {
        let fp = plan(&PlanInput { fleets: vec![input.clone()] }, NOW).fleets.remove(0);
        if input.instances.is_err() || input.step.is_err() {
            prop_assert!(fp.actions.iter().all(|a| matches!(a, Action::RequeueExpired { .. })), "{}", fp);
        }
    }

    #[test]
    fn deterministic_and_order_independent(input in arb_input(), seed in any::<u64>()) {
        let a = plan(&PlanInput { fleets: vec![input.clone()] }, NOW);
        let b = plan(&PlanInput { fleets: vec![input.clone()] }, NOW);
        prop_assert_eq!(&a, &b);
        let mut c_input = input.clone();
        if let Ok(list) = &mut c_input.instances {
            *list = shuffled(list, seed);
        }
        if let Ok(view) = &mut c_input.step {
            view.workers = shuffled(&view.workers, seed.rotate_left(17));
        }
        c_input.pending_launches = shuffled(&c_input.pending_launches, seed.rotate_left(31));
        let c = plan(&PlanInput { fleets: vec![c_input] }, NOW);
        prop_assert_eq!(&a, &c);
        // Rendering never panics and mentions the fleet.
        prop_assert!(a.describe().contains("fleet align"));
    }
}
