use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::manifest::BudgetSpec;
use crate::model::{Backlog, WorkerInfo, WorkerState};
use crate::provider::{Instance, InstanceState};

const NOW: Millis = 1_800_000_000_000;
const SEC: Millis = 1000;
const MIN: Millis = 60 * SEC;

fn policy() -> FleetPolicy {
    FleetPolicy {
        fleet: "align".into(),
        step: "align".into(),
        min_instances: 0,
        max_instances: 5,
        slots_per_instance: 2,
        tasks_per_instance: 2,
        scale_down_delay: MIN,
        boot_timeout: 10 * MIN,
        lost_after: 45 * SEC,
        stall_after: 20 * MIN,
        budget: None,
    }
}

/// A running instance launched `ago` ms before NOW.
fn inst(id: &str, ago: Millis) -> Instance {
    Instance {
        id: id.into(),
        fleet: "align".into(),
        state: InstanceState::Running,
        launched_at: NOW - ago,
        instance_type: None,
        launch_batch: None,
        protected: false,
    }
}

/// An active worker on `instance`, seen 5s ago, with `busy` slots, last busy `idle` ago.
fn worker(instance: &str, busy: u32, idle: Millis) -> WorkerInfo {
    WorkerInfo {
        worker_id: format!("w-{instance}"),
        step: "align".into(),
        instance_id: Some(instance.into()),
        slots: 2,
        busy_slots: busy,
        started_at: NOW - 3 * 60 * MIN,
        last_seen: NOW - 5 * SEC,
        last_busy_at: if busy > 0 { NOW } else { NOW - idle },
        state: WorkerState::Active,
    }
}

fn input(
    pending: u64,
    running: u64,
    instances: Vec<Instance>,
    workers: Vec<WorkerInfo>,
) -> FleetInput {
    FleetInput {
        policy: policy(),
        step: Ok(StepView {
            backlog: Backlog {
                step: "align".into(),
                pending,
                running,
                ..Backlog::default()
            },
            workers,
        }),
        instances: Ok(instances),
        cool_off: None,
        pending_launches: Vec::new(),
    }
}

/// What a case expects of the plan.
#[derive(Default)]
struct Expect {
    desired: u32,
    launch: u32,
    /// Terminated ids, in action order.
    terminate: Vec<&'static str>,
    lost: Vec<&'static str>,
    /// Conditions that must be True (others must not be True, except as listed).
    true_conditions: Vec<ConditionType>,
    /// Text the rendered plan must contain.
    says: Vec<&'static str>,
}

struct Case {
    name: &'static str,
    input: FleetInput,
    expect: Expect,
}

fn check(case: Case) {
    let plan = plan(
        &PlanInput {
            fleets: vec![case.input],
        },
        NOW,
    );
    let fp = &plan.fleets[0];
    let text = plan.describe();
    let ctx = format!("case `{}`:\n{text}", case.name);
    if std::env::var_os("ANAMO_SHOW_PLANS").is_some() {
        println!("== {}\n{text}", case.name);
    }
    assert_eq!(fp.desired, case.expect.desired, "desired, {ctx}");
    assert_eq!(fp.launch_count(), case.expect.launch, "launch, {ctx}");
    assert_eq!(
        fp.terminated_ids(),
        case.expect.terminate,
        "terminate, {ctx}"
    );
    let lost: Vec<&str> = fp
        .actions
        .iter()
        .flat_map(|a| match a {
            Action::MarkLost { ids, .. } => ids.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(lost, case.expect.lost, "lost, {ctx}");
    let trues: Vec<ConditionType> = fp
        .conditions
        .iter()
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.type_)
        .collect();
    assert_eq!(trues, case.expect.true_conditions, "conditions, {ctx}");
    for s in &case.expect.says {
        assert!(text.contains(s), "expected `{s}` in {ctx}");
    }
    assert_eq!(fp.conditions.len(), ConditionType::ALL.len());
}

#[test]
fn rules() {
    use ConditionType::*;
    let cases = vec![
        Case {
            name: "scale from zero",
            input: input(7, 0, vec![], vec![]),
            expect: Expect {
                desired: 4,
                launch: 4,
                true_conditions: vec![ScalingUp],
                says: vec![
                    "launch 4: backlog of 7 runnable tasks needs 4 instances (2 tasks per instance), 0 instances ready: launching 4",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "booting instances count toward capacity",
            input: input(
                8,
                4,
                vec![inst("i-1", 30 * MIN), inst("i-2", 30 * MIN), inst("i-3", MIN)],
                vec![worker("i-1", 2, 0), worker("i-2", 2, 0)],
            ),
            expect: Expect {
                desired: 4,
                launch: 1,
                true_conditions: vec![ScalingUp],
                says: vec!["needs 4 instances (2 tasks per instance), 2 instances ready, 1 booting: launching 1"],
                ..Expect::default()
            },
        },
        Case {
            name: "launches not yet listed are not launched again",
            input: FleetInput {
                pending_launches: vec![PendingLaunch {
                    batch: "b1".into(),
                    count: 4,
                    launched_at: NOW - 10 * SEC,
                }],
                ..input(
                    8,
                    0,
                    vec![Instance {
                        launch_batch: Some("b1".into()),
                        ..inst("i-1", 5 * SEC)
                    }],
                    vec![],
                )
            },
            expect: Expect {
                desired: 4,
                launch: 0,
                true_conditions: vec![ScalingUp],
                says: vec!["1 booting, 3 launched, not listed yet"],
                ..Expect::default()
            },
        },
        Case {
            name: "launches older than the boot timeout are given up",
            input: FleetInput {
                pending_launches: vec![PendingLaunch {
                    batch: "b1".into(),
                    count: 4,
                    launched_at: NOW - 11 * MIN,
                }],
                ..input(8, 0, vec![], vec![])
            },
            expect: Expect {
                desired: 4,
                launch: 4,
                true_conditions: vec![ScalingUp],
                ..Expect::default()
            },
        },
        Case {
            name: "boot timeout",
            input: input(
                2,
                0,
                vec![inst("i-1", 11 * MIN), inst("i-2", 2 * MIN)],
                vec![],
            ),
            expect: Expect {
                desired: 1,
                launch: 0,
                terminate: vec!["i-1"],
                true_conditions: vec![ScalingUp],
                says: vec![
                    "terminate i-1 [boot_timeout]: no worker registered within bootTimeout 10m: i-1 (launched 11m ago)",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "busy instances are never terminated, even far above desired",
            input: input(
                0,
                3,
                vec![inst("i-1", 2 * MIN), inst("i-2", 3 * MIN), inst("i-3", 4 * MIN)],
                vec![worker("i-1", 1, 0), worker("i-2", 1, 0), worker("i-3", 1, 0)],
            ),
            expect: Expect {
                desired: 0,
                true_conditions: vec![ScalingDown],
                says: vec!["3 instances above the 0 desired", "3 instances busy"],
                ..Expect::default()
            },
        },
        Case {
            name: "idle delay respected",
            input: input(0, 0, vec![inst("i-1", 30 * MIN)], vec![worker("i-1", 0, 20 * SEC)]),
            expect: Expect {
                desired: 0,
                true_conditions: vec![ScalingDown],
                says: vec!["once idle for scaleDownDelay 1m (next in 40s)"],
                ..Expect::default()
            },
        },
        Case {
            name: "idle past the delay is removed",
            input: input(0, 0, vec![inst("i-1", 30 * MIN)], vec![worker("i-1", 0, 61 * SEC)]),
            expect: Expect {
                desired: 0,
                terminate: vec!["i-1"],
                true_conditions: vec![ScalingDown],
                says: vec![
                    "terminate i-1 [scale_down]: no runnable tasks, 1 instance ready: desired 0, terminating 1 instance idle for at least 1m (scaleDownDelay), newest first: i-1 (idle 1m 1s)",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "newest first, down to min",
            input: FleetInput {
                policy: FleetPolicy {
                    min_instances: 1,
                    ..policy()
                },
                ..input(
                    0,
                    0,
                    vec![inst("i-old", 180 * MIN), inst("i-mid", 120 * MIN), inst("i-new", 60 * MIN)],
                    vec![
                        worker("i-old", 0, 30 * MIN),
                        worker("i-mid", 0, 30 * MIN),
                        worker("i-new", 0, 30 * MIN),
                    ],
                )
            },
            expect: Expect {
                desired: 1,
                terminate: vec!["i-new", "i-mid"],
                true_conditions: vec![ScalingDown],
                says: vec!["minInstances keeps 1"],
                ..Expect::default()
            },
        },
        Case {
            name: "only idle instances go; busy ones stay even if newer",
            input: input(
                0,
                1,
                vec![inst("i-1", 90 * MIN), inst("i-2", 10 * MIN)],
                vec![worker("i-1", 0, 5 * MIN), worker("i-2", 1, 0)],
            ),
            expect: Expect {
                desired: 0,
                terminate: vec!["i-1"],
                true_conditions: vec![ScalingDown],
                ..Expect::default()
            },
        },
        Case {
            name: "budget by cost limits desired",
            input: FleetInput {
                policy: FleetPolicy {
                    budget: Some(BudgetSpec {
                        max_instances: None,
                        max_hourly_cost: Some(3.5),
                        price_per_instance_hour: Some(1.0),
                    }),
                    ..policy()
                },
                ..input(20, 0, vec![], vec![])
            },
            expect: Expect {
                desired: 3,
                launch: 3,
                true_conditions: vec![ScalingUp, AtMax, BudgetLimited],
                says: vec![
                    "limited to 3 by the budget",
                    "the budget allows 3 instances (maxHourlyCost 3.5 at 1 per instance-hour)",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "budget of zero stalls",
            input: FleetInput {
                policy: FleetPolicy {
                    budget: Some(BudgetSpec {
                        max_instances: Some(0),
                        max_hourly_cost: None,
                        price_per_instance_hour: None,
                    }),
                    ..policy()
                },
                ..input(5, 0, vec![], vec![])
            },
            expect: Expect {
                desired: 0,
                true_conditions: vec![Ready, BudgetLimited, Stalled],
                says: vec!["5 runnable tasks wait but the budget allows no instances"],
                ..Expect::default()
            },
        },
        Case {
            name: "at max",
            input: input(100, 0, vec![], vec![]),
            expect: Expect {
                desired: 5,
                launch: 5,
                true_conditions: vec![ScalingUp, AtMax],
                says: vec![
                    "capped at maxInstances 5",
                    "backlog of 100 runnable tasks would need 50 instances but maxInstances is 5",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "instance listing failed: no launch, no scale-down",
            input: FleetInput {
                instances: Err("RequestLimitExceeded".into()),
                ..input(9, 0, vec![], vec![])
            },
            expect: Expect {
                desired: 5,
                true_conditions: vec![Stalled],
                says: vec![
                    "instances not observed",
                    "Ready=Unknown: cannot list the fleet's instances: RequestLimitExceeded",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "task store unreadable: nothing",
            input: FleetInput {
                step: Err("table not found".into()),
                ..input(0, 0, vec![inst("i-1", 20 * MIN)], vec![])
            },
            expect: Expect {
                desired: 0,
                says: vec!["Ready=Unknown: cannot read the task store: table not found"],
                ..Expect::default()
            },
        },
        Case {
            name: "cool-off stalls launches",
            input: FleetInput {
                cool_off: Some(CoolOff {
                    until: NOW + 90 * SEC,
                    reason: "insufficient capacity: c6i.4xlarge".into(),
                }),
                ..input(4, 0, vec![], vec![])
            },
            expect: Expect {
                desired: 2,
                true_conditions: vec![Stalled],
                says: vec![
                    "2 instances more needed but the provider refused capacity (insufficient capacity: c6i.4xlarge); launching again in 1m 30s",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "expired cool-off no longer blocks",
            input: FleetInput {
                cool_off: Some(CoolOff {
                    until: NOW - SEC,
                    reason: "x".into(),
                }),
                ..input(4, 0, vec![], vec![])
            },
            expect: Expect {
                desired: 2,
                launch: 2,
                true_conditions: vec![ScalingUp],
                ..Expect::default()
            },
        },
        Case {
            name: "gone worker: instance terminated at once and replaced",
            input: input(
                2,
                0,
                vec![inst("i-1", 30 * MIN)],
                vec![WorkerInfo {
                    state: WorkerState::Gone,
                    ..worker("i-1", 0, 5 * SEC)
                }],
            ),
            expect: Expect {
                desired: 1,
                launch: 1,
                terminate: vec!["i-1"],
                true_conditions: vec![ScalingUp],
                says: vec!["terminate i-1 [worker_exited]: the worker has exited"],
                ..Expect::default()
            },
        },
        Case {
            name: "lost worker: idle one is terminated, busy one only reported",
            input: input(
                0,
                1,
                vec![inst("i-1", 30 * MIN), inst("i-2", 30 * MIN)],
                vec![
                    WorkerInfo {
                        last_seen: NOW - 2 * MIN,
                        ..worker("i-1", 0, 5 * MIN)
                    },
                    WorkerInfo {
                        last_seen: NOW - 3 * MIN,
                        ..worker("i-2", 1, 0)
                    },
                ],
            ),
            expect: Expect {
                desired: 0,
                terminate: vec!["i-1"],
                lost: vec!["i-1", "i-2"],
                true_conditions: vec![Ready],
                says: vec![
                    "mark lost i-1, i-2: no heartbeat for more than 45s: worker w-i-1 on i-1 last heartbeat 2m ago, worker w-i-2 on i-2 last heartbeat 3m ago (kept: the store still shows 1 busy slot)",
                    "terminate i-1 [lost]",
                    "requeue expired leases of step align",
                ],
                ..Expect::default()
            },
        },
        Case {
            name: "draining idle worker's instance goes",
            input: input(
                0,
                0,
                vec![inst("i-1", 30 * MIN)],
                vec![WorkerInfo {
                    state: WorkerState::Draining,
                    ..worker("i-1", 0, 5 * SEC)
                }],
            ),
            expect: Expect {
                desired: 0,
                terminate: vec!["i-1"],
                true_conditions: vec![Ready],
                says: vec!["[drained]"],
                ..Expect::default()
            },
        },
        Case {
            name: "steady state is Ready",
            input: input(
                3,
                2,
                vec![inst("i-1", 30 * MIN), inst("i-2", 30 * MIN)],
                vec![worker("i-1", 1, 0), worker("i-2", 1, 0)],
            ),
            expect: Expect {
                desired: 2,
                true_conditions: vec![Ready],
                says: vec!["Ready=True: 2 of 2 desired instances ready"],
                ..Expect::default()
            },
        },
        Case {
            name: "old backlog with nothing running is Stalled",
            input: FleetInput {
                step: Ok(StepView {
                    backlog: Backlog {
                        step: "align".into(),
                        pending: 1,
                        oldest_pending_at: Some(NOW - 45 * MIN),
                        ..Backlog::default()
                    },
                    workers: vec![worker("i-1", 0, 0)],
                }),
                ..input(0, 0, vec![inst("i-1", 50 * MIN)], vec![])
            },
            expect: Expect {
                desired: 1,
                true_conditions: vec![Ready, Stalled],
                says: vec!["the oldest runnable task has waited 45m and no task of step align is running"],
                ..Expect::default()
            },
        },
        Case {
            name: "stopping instances do not count",
            input: input(
                2,
                0,
                vec![Instance {
                    state: InstanceState::Stopping,
                    ..inst("i-1", 30 * MIN)
                }],
                vec![worker("i-1", 0, 30 * MIN)],
            ),
            expect: Expect {
                desired: 1,
                launch: 1,
                true_conditions: vec![ScalingUp],
                ..Expect::default()
            },
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn policy_from_manifest() {
    let set = crate::manifest::load_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/manifests"))
        .unwrap();
    let p = FleetPolicy::from_manifest(set.fleet("call").unwrap());
    assert_eq!(p.step, "call");
    assert_eq!((p.min_instances, p.max_instances), (0, 3));
    assert_eq!(p.tasks_per_instance, 2);
    assert_eq!(p.scale_down_delay, 10 * SEC);
    // leaseTTL 15s -> heartbeat 5s -> lost after 15s.
    assert_eq!(p.lost_after, 15 * SEC);
    assert_eq!(p.instance_cap(), 3);
}

#[test]
fn plan_serializes_for_json_output() {
    let plan = plan(
        &PlanInput {
            fleets: vec![input(7, 0, vec![], vec![])],
        },
        NOW,
    );
    let v = serde_json::to_value(&plan).unwrap();
    assert_eq!(v["fleets"][0]["actions"][0]["action"], "launch");
    assert_eq!(v["fleets"][0]["actions"][0]["count"], 4);
    assert_eq!(v["fleets"][0]["conditions"][1]["type"], "ScalingUp");
    assert_eq!(v["fleets"][0]["conditions"][1]["status"], "True");
}

// ---- properties over random inputs ----

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

fn arb_input() -> impl Strategy<Value = FleetInput> {
    let instances = proptest::collection::vec(
        (arb_instance_state(), 0i64..30, proptest::option::of(0u8..3)),
        0..10,
    );
    let workers = proptest::collection::vec(
        (0usize..12, 0u32..3, 0i64..5, 0i64..10, arb_worker_state()),
        0..12,
    );
    let launches = proptest::collection::vec((0u8..3, 0u32..4, 0i64..15), 0..3);
    (
        arb_policy(),
        0u64..40,
        0u64..10,
        proptest::option::of(0i64..60),
        instances,
        workers,
        launches,
        proptest::option::of(-2i64..3),
        0u8..10,
    )
        .prop_map(
            |(policy, pending, running, oldest, instances, workers, launches, cool_off, fail)| {
                let instances: Vec<Instance> = instances
                    .into_iter()
                    .enumerate()
                    .map(|(i, (state, ago_min, batch))| Instance {
                        state,
                        launch_batch: batch.map(|b| format!("b{b}")),
                        ..inst(&format!("i-{i}"), ago_min * MIN)
                    })
                    .collect();
                let workers: Vec<WorkerInfo> = workers
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
                    .collect();
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
        | Action::RequeueExpired { reason, .. } => reason.clear(),
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
