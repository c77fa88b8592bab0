//! The planner's rules, case by case (`rules.rs`), its upkeep actions (`upkeep.rs`), and the
//! promises it keeps on any input (`properties.rs`).

mod drain;
mod estimates;
mod properties;
mod rules;
mod upkeep;

use super::*;
use crate::manifest::BudgetSpec;
use crate::model::{Backlog, WorkerInfo, WorkerState};
use crate::provider::{Instance, InstanceState};

pub(super) const NOW: Millis = 1_800_000_000_000;
pub(super) const SEC: Millis = 1000;
pub(super) const MIN: Millis = 60 * SEC;

pub(super) fn policy() -> FleetPolicy {
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
        worker_dead_after: 75 * SEC,
        stall_after: 20 * MIN,
        budget: None,
        spend: None,
        task_duration: None,
    }
}

/// A running instance launched `ago` ms before NOW.
pub(super) fn inst(id: &str, ago: Millis) -> Instance {
    Instance {
        id: id.into(),
        fleet: "align".into(),
        state: InstanceState::Running,
        launched_at: NOW - ago,
        instance_type: None,
        launch_batch: None,
        protected: false,
        market: Default::default(),
    }
}

/// An active worker on `instance`, seen 5s ago, with `busy` slots, last busy `idle` ago.
pub(super) fn worker(instance: &str, busy: u32, idle: Millis) -> WorkerInfo {
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
        stop_reason: None,
        drain_requested: false,
    }
}

pub(super) fn input(
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
            recent: Default::default(),
        }),
        instances: Ok(instances),
        cool_off: None,
        pending_launches: Vec::new(),
        scale_in_protection: false,
    }
}

/// What a case expects of the plan.
#[derive(Default)]
pub(super) struct Expect {
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

pub(super) struct Case {
    name: &'static str,
    input: FleetInput,
    expect: Expect,
}

pub(super) fn check(case: Case) {
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
    assert_eq!(p.task_duration, None);
    let docs = crate::manifest::load_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/examples/genomics-ec2.yaml"
    ))
    .unwrap();
    let align = FleetPolicy::from_manifest(docs.fleet("align").unwrap());
    assert_eq!(align.task_duration, Some(40 * MIN));
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
