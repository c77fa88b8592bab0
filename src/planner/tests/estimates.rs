//! The planner with estimates. The ski-rental scale-in: an idle instance is kept for
//! `scaleDownDelay` only if the tasks expected within a boot time would reach it, after the
//! instances already busy have taken what they can (their running tasks end and free slots
//! within a boot). The launch: only for the waiting tasks that the instances there are would
//! not start within half a task's run time, or ten boot times if longer.

use super::*;
use crate::planner::estimate::RecentTasks;

/// One instance with both slots busy and two idle for 30 s (scaleDownDelay is 1 m), all
/// booted in 90 s; tasks of `task_s` and about one arriving every 10 s.
fn busy_and_two_idle(task_s: Millis) -> FleetInput {
    let up = 3 * 60 * MIN + 90 * SEC;
    let mut i = input(
        0,
        2,
        vec![inst("i-1", up), inst("i-2", up), inst("i-3", up)],
        vec![
            worker("i-1", 2, 0),
            worker("i-2", 0, 30 * SEC),
            worker("i-3", 0, 30 * SEC),
        ],
    );
    if let Ok(view) = i.step.as_mut() {
        view.recent = RecentTasks {
            durations: vec![task_s * SEC; 8],
            runnable_at: (0..32).map(|k| NOW - k * 10 * SEC).collect(),
            ..Default::default()
        };
    }
    i
}

fn scaled_down(input: FleetInput) -> (Vec<String>, String) {
    let plan = plan(
        &PlanInput {
            fleets: vec![input],
        },
        NOW,
    );
    let ids = plan.fleets[0].terminated_ids();
    (ids.into_iter().map(String::from).collect(), plan.describe())
}

#[test]
fn short_tasks_on_busy_instances_leave_idle_ones_nothing_to_do() {
    // 9.3 tasks expected within a boot; the busy instance's two slots start 18 (90 s / 5 s)
    // in that time, so none would reach an idle instance: both go now.
    let (ids, text) = scaled_down(busy_and_two_idle(5));
    assert_eq!(ids, ["i-2", "i-3"], "{text}");
    assert!(
        text.contains("0.0 of them beyond what the busy instances take"),
        "{text}"
    );
}

#[test]
fn long_tasks_keep_the_idle_instances_the_arrivals_would_reach() {
    // With 10-minute tasks the busy slots free none within a boot: the 9.3 expected tasks
    // would reach both idle instances, which stay for scaleDownDelay.
    let (ids, text) = scaled_down(busy_and_two_idle(600));
    assert!(ids.is_empty(), "{text}");
}

/// Two instances with both of their two slots busy (booted in 90 s) and `pending` tasks
/// waiting; `task_s`: the recent run times (none: no estimate).
fn two_busy(pending: u64, task_s: Option<Millis>) -> FleetInput {
    let up = 3 * 60 * MIN + 90 * SEC;
    let mut i = input(
        pending,
        4,
        vec![inst("i-1", up), inst("i-2", up)],
        vec![worker("i-1", 2, 0), worker("i-2", 2, 0)],
    );
    if let (Ok(view), Some(t)) = (i.step.as_mut(), task_s) {
        view.recent.durations = vec![t * SEC; 8];
    }
    i
}

fn launched(input: FleetInput) -> (u32, u32, String) {
    let plan = plan(
        &PlanInput {
            fleets: vec![input],
        },
        NOW,
    );
    let fp = &plan.fleets[0];
    (fp.desired, fp.launch_count(), plan.describe())
}

#[test]
fn without_estimates_tasks_beyond_the_busy_slots_launch_instances() {
    // 3 waiting beside 4 running, 2 an instance: 4 instances, 2 more.
    let (desired, launch, text) = launched(two_busy(3, None));
    assert_eq!((desired, launch), (4, 2), "{text}");
    assert!(
        text.contains(
            "backlog of 3 runnable tasks beside 4 running on ready instances needs 4 instances"
        ),
        "{text}"
    );
}

#[test]
fn long_tasks_wait_for_the_busy_slots_of_half_a_run_time() {
    // Tasks of 40 minutes: within half a run time (20m, longer than ten boots) each of the 4
    // busy slots frees half a task on average, so 2 waiting tasks start there and nothing
    // launches.
    let (desired, launch, text) = launched(two_busy(2, Some(2400)));
    assert_eq!((desired, launch), (2, 0), "{text}");
    assert!(
        text.contains("Ready=True: 2 of 2 desired instances ready: backlog of 2 runnable tasks beside 4 running on ready instances needs 3 instances (2 tasks per instance); with tasks of about 40m, boots of about 1m 30s, the 2 instances ready or booting start all of them within 20m (half a task's run time), so 2 instances are enough"),
        "{text}"
    );
    // 5 waiting: 3 beyond what the busy slots start; a new instance starts 2 (one a slot)
    // within the horizon: 2 instances more.
    let (desired, launch, text) = launched(two_busy(5, Some(2400)));
    assert_eq!((desired, launch), (4, 2), "{text}");
    assert!(
        text.contains("start all but 3 of them within 20m (half a task's run time)"),
        "{text}"
    );
}

#[test]
fn the_manifest_task_duration_plans_on_time_before_tasks_finish() {
    // No run time seen yet; taskDuration 10m: as with 10-minute tasks seen, 2 waiting tasks
    // start on the busy slots within half a run time.
    let mut i = two_busy(2, None);
    i.policy.task_duration = Some(10 * MIN);
    let (desired, launch, text) = launched(i);
    assert_eq!((desired, launch), (2, 0), "{text}");
    assert!(text.contains("tasks of about 10m (taskDuration)"), "{text}");
}

#[test]
fn short_tasks_are_counted_over_ten_boot_times() {
    // Tasks of 30 s, boots of 90 s: within ten boots (15m) the 4 busy slots start 120.
    let (desired, launch, text) = launched(two_busy(120, Some(30)));
    assert_eq!((desired, launch), (2, 0), "{text}");
    // The count alone would ask for 62, over maxInstances 5; the times say 2 are enough.
    assert!(!text.contains("AtMax=True"), "{text}");
    // 180 waiting: 60 left. A new instance runs its 2 slots from 90 s on, 28 tasks each
    // within the horizon (1 + 810 s / 30 s): one more instance takes 56, two take them all.
    let (desired, launch, text) = launched(two_busy(180, Some(30)));
    assert_eq!((desired, launch), (4, 2), "{text}");
    assert!(text.contains("all but 60 of them within 15m"), "{text}");
    assert!(text.contains("(10 boot times)"), "{text}");
}

#[test]
fn a_burst_on_an_empty_fleet_gets_the_instances_its_work_needs_within_ten_boots() {
    // No instance; 87 one-minute tasks arrive; boots of 90 s were seen before the fleet
    // scaled to nothing (the ledger remembers them). Each new 2-slot instance starts 2 × (1 +
    // 810 s / 60 s) = 28 within 15m: 4 instances, where the count asks for 44 (capped at 5).
    let mut i = input(87, 0, vec![], vec![]);
    if let Ok(view) = i.step.as_mut() {
        view.recent.durations = vec![60 * SEC; 8];
        view.recent.boots = vec![90 * SEC; 3];
    }
    let (desired, launch, text) = launched(i);
    assert_eq!((desired, launch), (4, 4), "{text}");
    assert!(text.contains("boots of about 1m 30s"), "{text}");
    // Without the remembered boots there is no boot estimate: the count rule, up to max.
    let (desired, _, text) = launched(input(87, 0, vec![], vec![]));
    assert_eq!(desired, 5, "{text}");
}
