//! The ski-rental scale-in with estimates: an idle instance is kept for `scaleDownDelay` only
//! if the tasks expected within a boot time would reach it, after the instances already busy
//! have taken what they can (their running tasks end and free slots within a boot).

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
