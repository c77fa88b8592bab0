//! The planner alone, timed on the reconcile benchmark's input: `steps` fleets with their
//! pending tasks and ready instances, no store and no provider.

use std::time::Instant;

use serde::Serialize;

use crate::clock::Millis;
use crate::model::{Backlog, StepCounts, WorkerInfo, WorkerState};
use crate::planner::{self, FleetInput, FleetPolicy, PlanInput, StepView};
use crate::provider::{Instance, InstanceState};

#[derive(Debug, Serialize)]
pub(super) struct PlannerTime {
    fleets: usize,
    instances_per_fleet: usize,
    pub iterations: u32,
    pub mean_us: f64,
}

/// The policy of the `k`-th benchmark fleet.
fn bench_policy(k: u32) -> FleetPolicy {
    FleetPolicy {
        fleet: format!("f{k:02}"),
        step: format!("s{k:02}"),
        min_instances: 0,
        max_instances: 50,
        slots_per_instance: 4,
        tasks_per_instance: 4,
        scale_down_delay: 300_000,
        boot_timeout: 600_000,
        lost_after: 60_000,
        worker_dead_after: 90_000,
        stall_after: 1_200_000,
        budget: None,
        spend: None,
        task_duration: None,
    }
}

/// The planner alone on `steps` fleets with `pending` tasks each and `instances` ready
/// instances (with workers) per fleet.
pub(super) fn planner_time(steps: u32, pending: u64, instances: usize) -> PlannerTime {
    let now: Millis = 1_700_000_000_000;
    let mut input = PlanInput::default();
    for k in 0..steps {
        let policy = bench_policy(k);
        let list: Vec<Instance> = (0..instances)
            .map(|i| Instance {
                id: format!("i-{k:02}-{i:04}"),
                fleet: policy.fleet.clone(),
                state: InstanceState::Running,
                launched_at: now - 3_600_000,
                instance_type: None,
                launch_batch: Some(format!("b-{k}")),
                protected: false,
                market: Default::default(),
            })
            .collect();
        let workers: Vec<WorkerInfo> = list
            .iter()
            .enumerate()
            .map(|(i, inst)| WorkerInfo {
                worker_id: format!("w-{}", inst.id),
                step: policy.step.clone(),
                instance_id: Some(inst.id.clone()),
                slots: 4,
                busy_slots: (i % 5) as u32,
                started_at: now - 3_500_000,
                last_seen: now - 5_000,
                last_busy_at: now - (i as i64 % 7) * 60_000,
                state: WorkerState::Active,
                stop_reason: None,
                drain_requested: false,
            })
            .collect();
        input.fleets.push(FleetInput {
            step: Ok(StepView {
                // As the controller reads it: counted up to the fleet's backlog limit.
                backlog: Backlog::from_counts(
                    &StepCounts {
                        step: policy.step.clone(),
                        pending,
                        oldest_pending_at: Some(now - 600_000),
                        ..StepCounts::default()
                    },
                    policy.backlog_limit(),
                ),
                workers,
                recent: Default::default(),
            }),
            policy,
            instances: Ok(list),
            cool_off: None,
            pending_launches: Vec::new(),
            scale_in_protection: false,
        });
    }
    let iterations = 200;
    let t = Instant::now();
    let mut launches = 0u32;
    for i in 0..iterations {
        let plan = planner::plan(&input, now + i64::from(i));
        launches += plan.fleets.iter().map(|f| f.launch_count()).sum::<u32>();
    }
    std::hint::black_box(launches);
    PlannerTime {
        fleets: steps as usize,
        instances_per_fleet: instances,
        iterations,
        mean_us: t.elapsed().as_secs_f64() * 1e6 / f64::from(iterations),
    }
}
