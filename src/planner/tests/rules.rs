//! The planner's rules, one case each: the plan, its conditions and what its reasons say.

use super::*;

#[test]
fn rules_scaling_up() {
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
                4,
                4,
                vec![inst("i-1", 30 * MIN), inst("i-2", 30 * MIN), inst("i-3", MIN)],
                vec![worker("i-1", 2, 0), worker("i-2", 2, 0)],
            ),
            expect: Expect {
                desired: 4,
                launch: 1,
                true_conditions: vec![ScalingUp],
                says: vec!["backlog of 4 runnable tasks beside 4 running on ready instances needs 4 instances (2 tasks per instance), 2 instances ready, 1 booting: launching 1"],
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
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn rules_launches_and_boot() {
    use ConditionType::*;
    let cases = vec![
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
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn rules_scaling_down() {
    use ConditionType::*;
    let cases = vec![
        Case {
            name: "busy instances are never terminated, even above desired",
            input: input(
                0,
                3,
                vec![inst("i-1", 2 * MIN), inst("i-2", 3 * MIN), inst("i-3", 4 * MIN)],
                vec![worker("i-1", 1, 0), worker("i-2", 1, 0), worker("i-3", 1, 0)],
            ),
            expect: Expect {
                // 3 running tasks at 2 per instance ask for 2, but each holds its own.
                desired: 2,
                true_conditions: vec![ScalingDown],
                says: vec!["1 instance above the 2 desired", "3 instances busy"],
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
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn rules_scaling_down_order() {
    use ConditionType::*;
    let cases = vec![
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
                    vec![
                        inst("i-old", 180 * MIN),
                        inst("i-mid", 120 * MIN),
                        inst("i-new", 60 * MIN),
                    ],
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
                desired: 1,
                terminate: vec!["i-1"],
                true_conditions: vec![ScalingDown],
                ..Expect::default()
            },
        },
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn rules_total_cost() {
    use ConditionType::*;
    check(Case {
        name: "the total cost cap, once reached, allows no instances and says so",
        input: FleetInput {
            policy: FleetPolicy {
                budget: Some(BudgetSpec {
                    max_instances: Some(4),
                    max_hourly_cost: None,
                    price_per_instance_hour: None,
                    max_total_cost: Some(10.0),
                }),
                spend: Some(crate::planner::Spend {
                    dollars: 10.5,
                    usd_per_hour: 0.0,
                    priced_instances: 0,
                }),
                ..policy()
            },
            ..input(5, 0, vec![], vec![])
        },
        expect: Expect {
            desired: 0,
            launch: 0,
            true_conditions: vec![Ready, BudgetLimited, Stalled],
            says: vec![
                "the budget allows 0 instances (maxTotalCost 10 reached: 10.50 spent)",
                "runnable tasks wait but the budget allows no instances",
            ],
            ..Expect::default()
        },
    });
}

#[test]
fn rules_limits() {
    use ConditionType::*;
    let cases = vec![
        Case {
            name: "budget by cost limits desired",
            input: FleetInput {
                policy: FleetPolicy {
                    budget: Some(BudgetSpec {
                        max_instances: None,
                        max_hourly_cost: Some(3.5),
                        price_per_instance_hour: Some(1.0),
                        max_total_cost: None,
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
                        max_total_cost: None,
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
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn rules_failures_and_cool_off() {
    use ConditionType::*;
    let cases = vec![
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
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn rules_workers() {
    use ConditionType::*;
    let cases = vec![
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
    ];
    for case in cases {
        check(case);
    }
}

#[test]
fn rules_conditions() {
    use ConditionType::*;
    let cases = vec![
        Case {
            name: "steady state is Ready",
            input: input(
                2,
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
                    ..StepView::default()
                }),
                ..input(0, 0, vec![inst("i-1", 50 * MIN)], vec![])
            },
            expect: Expect {
                desired: 1,
                true_conditions: vec![Ready, Stalled],
                says: vec![
                    "the oldest runnable task has waited 45m and no task of step align is running",
                ],
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
