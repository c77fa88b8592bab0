//! The lower bound with boot costs: what any scaling policy must spend to finish a trace
//! within a given makespan. The plain lower bound (task time ÷ slots per instance) charges no
//! boot; a policy must boot every instance it uses (billed, doing nothing) before it runs a
//! task, and to finish within a makespan `M` it needs enough instances: an instance launched
//! at the start at the earliest runs tasks for at most `M − boot`, so a step's task time `W`
//! on `s`-slot instances needs at least `ceil(W / (s (M − boot)))` of them, each booting once.
//!
//! `bound = Σ_steps W/s + boot × ceil(W / (s (M − boot)))`
//!
//! It ignores arrival times, dependencies, billing minimums and idle slots (a relaxation), so
//! no policy, clairvoyant or not, spends less and still finishes within `M`. With `M` the
//! makespan the issue allows (1.10 × the static baseline's), its ratio to the plain bound is
//! the least any policy meeting the makespan goal can reach on the instance-hours goal.
//!
//! [`floor_hours`] is the least any policy spends with no makespan constraint (task time ÷
//! slots plus one boot per step), and with a bound on how long a task may be held back also
//! the gaps in a step's arrivals that no such policy can fill; the sweep reports both.

use super::report::StepReport;
use super::{SimFleet, Trace};
use crate::clock::Millis;

/// The bound, in instance-hours, for finishing `steps` within `makespan_s` with instances
/// that take `boot_s` to boot (`None` when the makespan leaves no time after a boot).
pub fn boot_bound_hours(steps: &[StepReport], boot_s: f64, makespan_s: f64) -> Option<f64> {
    let usable_h = (makespan_s - boot_s) / 3600.0;
    if usable_h <= 0.0 {
        return None;
    }
    let boot_h = boot_s / 3600.0;
    Some(
        steps
            .iter()
            .filter(|s| s.task_hours > 0.0)
            .map(|s| {
                let slots = f64::from(s.slots_per_instance.max(1));
                let instances = (s.task_hours / (slots * usable_h)).ceil().max(1.0);
                s.task_hours / slots + boot_h * instances
            })
            .sum(),
    )
}

/// One step as [`floor_hours`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StepWork {
    pub slots_per_instance: u32,
    /// No upstream step: each task is runnable at its submission, whatever the policy does.
    /// (A dependent task's runnable time depends on when its upstream task ran.)
    pub independent: bool,
    /// `(runnable, duration)` of each task, in milliseconds.
    pub tasks: Vec<(Millis, Millis)>,
}

/// The steps of `trace` with the slots and dependencies of `fleets` (one per step).
pub fn steps_of(trace: &Trace, fleets: &[SimFleet]) -> Vec<StepWork> {
    fleets
        .iter()
        .map(|f| StepWork {
            slots_per_instance: f.policy.slots_per_instance.max(1),
            independent: f.depends_on.is_empty(),
            tasks: trace
                .tasks
                .iter()
                .filter(|t| t.step == f.policy.step)
                .map(|t| (t.submit_ms, t.duration_ms))
                .collect(),
        })
        .collect()
}

/// The least instance time, in hours, that any policy spends on `steps` with instances that
/// take at least `boot` to boot, among the policies that finish every task of an independent
/// step within `delay` of the earliest it could (its runnable time plus its duration); `None`
/// puts no constraint on the policy at all.
///
/// `floor = Σ_steps W/s + boot + Σ_gaps min(gap, boot)`, where `W` is the step's task time,
/// `s` its slots per instance, and the gaps (independent steps with a `delay` only) are the
/// intervals `(x, a)` between a task's runnable time `a` and the latest time `x` by which
/// every task runnable before it has finished under the constraint (the largest `a_j +
/// delay + d_j`). With no constraint there are no gaps: a policy may hold every task back
/// until the last one arrives and run them back to back (one instance, one boot), so the
/// gaps of the arrivals alone bound nothing.
///
/// **Why no policy spends less.** Take a step and any policy meeting the constraint. Its
/// instance time is, per instance, its boot (at least `boot`, billed, no task running) plus
/// its ready time; at any ready instant an instance's share of the time is at least its busy
/// slots ÷ `s`, and a whole instant when no slot is busy. Summed, the ready time is at least
/// `W/s` (every task runs for its duration at least once, more when rerun) plus the ready
/// time of instances during the gaps, when no task of the step can be running: the tasks
/// runnable before a gap have finished by its start and the others are not runnable before
/// its end. For each gap of length `g`, either an instance is ready throughout it (`g` of
/// ready time with no busy slot), or at some instant `t` in it none is; then the task
/// runnable at its end runs on an instance that became ready after `t`. That instance is not
/// the one that ran the step's first task (ready before the first gap) nor the one that ran
/// the first task after an earlier such gap (it ran that task before this gap began and was
/// not ready at `t`, so it was gone). So the policy booted at least one instance for the
/// first task plus one per gap of the second kind, each boot at least `boot`, and the ready
/// time in the gaps of the first kind is at least their lengths: at least `boot + Σ
/// min(gap, boot)` on top of `W/s`. Billing minimums and slots idle beside busy ones only
/// add to it. Steps run on their own fleets, so the steps' floors add up.
pub fn floor_hours(steps: &[StepWork], boot: Millis, delay: Option<Millis>) -> f64 {
    let ms_per_hour = 3_600_000.0;
    steps
        .iter()
        .filter(|s| !s.tasks.is_empty())
        .map(|s| {
            let work: Millis = s.tasks.iter().map(|t| t.1).sum();
            let gaps = match delay.filter(|_| s.independent) {
                Some(delay) => gap_cost(&s.tasks, boot, delay),
                None => 0,
            };
            work as f64 / f64::from(s.slots_per_instance.max(1)) / ms_per_hour
                + (boot + gaps) as f64 / ms_per_hour
        })
        .sum()
}

/// `Σ min(gap, boot)` over the gaps of `tasks` (see [`floor_hours`]).
fn gap_cost(tasks: &[(Millis, Millis)], boot: Millis, delay: Millis) -> Millis {
    let mut sorted = tasks.to_vec();
    sorted.sort_unstable();
    let mut done: Option<Millis> = None;
    let mut cost: Millis = 0;
    for (runnable, duration) in sorted {
        if let Some(done) = done.filter(|d| runnable > *d) {
            cost = cost.saturating_add((runnable - done).min(boot));
        }
        let finish = runnable.saturating_add(delay).saturating_add(duration);
        done = Some(done.map_or(finish, |d| d.max(finish)));
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(task_hours: f64, slots: u32) -> StepReport {
        StepReport {
            step: "a".into(),
            fleet: "a".into(),
            tasks: 1,
            task_hours,
            slots_per_instance: slots,
            lower_bound_hours: task_hours / f64::from(slots),
        }
    }

    #[test]
    fn a_short_makespan_needs_many_boots() {
        // 8 task-hours on 8 slots: 1 instance-hour without boots. Within 1 h 1m30s with 90 s
        // boots: one instance suffices (1 h of work after its boot).
        let one = boot_bound_hours(&[step(8.0, 8)], 90.0, 3_690.0).unwrap();
        assert!((one - (1.0 + 0.025)).abs() < 1e-9, "{one}");
        // Within 6 minutes: 4.5 usable minutes per instance, so 14 instances, 14 boots.
        let short = boot_bound_hours(&[step(8.0, 8)], 90.0, 360.0).unwrap();
        assert!((short - (1.0 + 14.0 * 0.025)).abs() < 1e-9, "{short}");
        assert_eq!(boot_bound_hours(&[step(8.0, 8)], 90.0, 90.0), None);
    }

    fn work(independent: bool, tasks: &[(Millis, Millis)]) -> StepWork {
        StepWork {
            slots_per_instance: 1,
            independent,
            tasks: tasks.to_vec(),
        }
    }

    const H: Millis = 3_600_000;
    const BOOT: Millis = 90_000;

    #[test]
    fn the_floor_counts_one_boot_and_the_gaps_a_delay_cannot_fill() {
        // One hour of work at 0 and one at 2 h, 1 slot: with no delay allowed, the first is
        // done at 1 h and nothing can run until 2 h: someone idles or boots again.
        let two = [(0, H), (2 * H, H)];
        let tight = floor_hours(&[work(true, &two)], BOOT, Some(0));
        assert!((tight - (2.0 + 2.0 * 0.025)).abs() < 1e-9, "{tight}");
        // A gap shorter than a boot costs the gap: 30 s.
        let close = floor_hours(&[work(true, &[(0, H), (H + 30_000, H)])], BOOT, Some(0));
        assert!(
            (close - (2.0 + (90.0 + 30.0) / 3600.0)).abs() < 1e-9,
            "{close}"
        );
        // A policy allowed to hold the first task back an hour runs both back to back on one
        // instance booted once (launched at 1 h − boot): no gap is left.
        let held = floor_hours(&[work(true, &two)], BOOT, Some(H));
        assert!((held - 2.025).abs() < 1e-9, "{held}");
        // With no constraint at all, or on a dependent step, only the one boot counts.
        assert_eq!(floor_hours(&[work(true, &two)], BOOT, None), held);
        assert_eq!(floor_hours(&[work(false, &two)], BOOT, Some(0)), held);
    }

    #[test]
    fn overlapping_tasks_leave_no_gap_and_steps_add_up() {
        // The second task arrives before the first could have finished.
        let overlap = [(0, H), (H / 2, H), (H + H / 4, H / 4)];
        let one = floor_hours(&[work(true, &overlap)], BOOT, Some(0));
        assert!((one - (2.25 + 0.025)).abs() < 1e-9, "{one}");
        let both = floor_hours(&[work(true, &overlap), work(true, &overlap)], BOOT, Some(0));
        assert!((both - 2.0 * one).abs() < 1e-9, "{both}");
        assert_eq!(floor_hours(&[work(true, &[])], BOOT, Some(0)), 0.0);
    }
}
