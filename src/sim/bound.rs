//! Lower bounds on what any scaling policy spends on a trace: the plain lower bound (task time
//! ÷ slots per instance) charges no boot and no slot left idle, and no policy reaches it.
//!
//! [`deadline_bound_hours`] is the least any policy spends to finish a trace within a given
//! makespan `M`. Every instance boots (billed, doing nothing) before it runs a task, and an
//! instance launched at the start runs tasks for at most `M − boot`, so a step's task time `W`
//! on `s`-slot instances needs at least `ceil(W / (s (M − boot)))` instances. And a task that
//! arrives at `a` and runs for `d` must start between `a` and `M − d`, so whatever the policy
//! it is running throughout `[M − d, a + d]` (its compulsory part, empty unless `d` is more
//! than half of `M − a`): at any instant at least `ceil(c / s)` instances are ready, `c` the
//! tasks whose compulsory part it is in. A long task holds a whole instance for most of its
//! run even when the rest of its slots have nothing left to do, which task time ÷ slots does
//! not see.
//!
//! It ignores billing minimums and the idle slots of everything but the compulsory parts (a
//! relaxation), so no policy, clairvoyant or not, spends less and still finishes within `M`.
//! With `M` the makespan the issue allows (1.10 × the static baseline's), its ratio to the
//! plain bound is the least any policy meeting the makespan goal can reach on the
//! instance-hours goal.
//!
//! [`floor_hours`] is the least any policy spends with no makespan constraint (the longer of
//! task time ÷ slots and the longest task, plus one boot per step), and with a bound on how
//! long a task may be held back also the gaps in a step's arrivals that no such policy can
//! fill; the sweep reports both.

use super::{SimFleet, Trace};
use crate::clock::Millis;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// The bound, in instance-hours, for finishing every task of `steps` by `deadline` (in the
/// trace's milliseconds) with instances that take `boot` to boot and that no policy launches
/// before `start`; `None` when the deadline leaves no time after a boot.
///
/// Per step: `ready + boot × n`, where `ready = max(W / s, ∫ ceil(c(t) / s) dt)` and `n =
/// max(1, ceil(W / (s (deadline − start − boot))), max_t ceil(c(t) / s))` (see the module
/// comment). Steps run on their own fleets, so their bounds add up. A dependent task becomes
/// runnable no earlier than its submission, so its compulsory part is at least the one
/// computed from its submission.
pub fn deadline_bound_hours(
    steps: &[StepWork],
    boot: Millis,
    start: Millis,
    deadline: Millis,
) -> Option<f64> {
    let usable = deadline - start - boot;
    if usable <= 0 {
        return None;
    }
    let mut total = 0.0;
    for step in steps.iter().filter(|s| !s.tasks.is_empty()) {
        let slots = f64::from(step.slots_per_instance.max(1));
        let work = step.tasks.iter().map(|t| t.1).sum::<Millis>() as f64;
        let (held, most) = compulsory(&step.tasks, step.slots_per_instance.max(1), deadline);
        let ready = (work / slots).max(held as f64);
        let instances = (work / (slots * usable as f64))
            .ceil()
            .max(f64::from(most))
            .max(1.0);
        total += (ready + boot as f64 * instances) / MS_PER_HOUR;
    }
    Some(total)
}

/// `(∫ ceil(c(t) / slots) dt, max_t ceil(c(t) / slots))` over the compulsory parts `[deadline −
/// d, a + d]` of `tasks` (`(a, d)` pairs), in milliseconds and instances.
fn compulsory(tasks: &[(Millis, Millis)], slots: u32, deadline: Millis) -> (Millis, u32) {
    let mut edges: Vec<(Millis, i64)> = Vec::new();
    for &(arrival, duration) in tasks {
        let (from, to) = ((deadline - duration).max(arrival), arrival + duration);
        if from < to {
            edges.push((from, 1));
            edges.push((to, -1));
        }
    }
    edges.sort_unstable();
    let per = i64::from(slots);
    let (mut held, mut most, mut running, mut at) = (0, 0, 0i64, 0);
    for (t, change) in edges {
        let instances = (running + per - 1) / per;
        held += instances * (t - at);
        running += change;
        most = most.max((running + per - 1) / per);
        at = t;
    }
    (held, u32::try_from(most).unwrap_or(u32::MAX))
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
/// `floor = Σ_steps max(W/s, d_max) + boot + Σ_gaps min(gap, boot)`, where `W` is the step's
/// task time, `s` its slots per instance, `d_max` its longest task, and the gaps (independent
/// steps with a `delay` only) are the intervals `(x, a)` between a task's runnable time `a`
/// and the latest time `x` by which every task runnable before it has finished under the
/// constraint (the largest `a_j + delay + d_j`). With no constraint there are no gaps: a policy may hold every task back
/// until the last one arrives and run them back to back (one instance, one boot), so the
/// gaps of the arrivals alone bound nothing.
///
/// **Why no policy spends less.** Take a step and any policy meeting the constraint. Its
/// instance time is, per instance, its boot (at least `boot`, billed, no task running) plus
/// its ready time; at any ready instant an instance's share of the time is at least its busy
/// slots ÷ `s`, and a whole instant when no slot is busy. Summed, the ready time is at least
/// `W/s` (every task runs for its duration at least once, more when rerun) and at least
/// `d_max` (the instance that runs the longest task is ready while it runs), plus the ready
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
/// min(gap, boot)` on top of `max(W/s, d_max)` (the gaps hold no running task). Billing
/// minimums and slots idle beside busy ones only add to it. Steps run on their own fleets, so
/// the steps' floors add up.
pub fn floor_hours(steps: &[StepWork], boot: Millis, delay: Option<Millis>) -> f64 {
    steps
        .iter()
        .filter(|s| !s.tasks.is_empty())
        .map(|s| {
            let work: Millis = s.tasks.iter().map(|t| t.1).sum();
            let longest = s.tasks.iter().map(|t| t.1).max().unwrap_or(0);
            let gaps = match delay.filter(|_| s.independent) {
                Some(delay) => gap_cost(&s.tasks, boot, delay),
                None => 0,
            };
            let ready = (work as f64 / f64::from(s.slots_per_instance.max(1))).max(longest as f64);
            (ready + (boot + gaps) as f64) / MS_PER_HOUR
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

    fn work(independent: bool, tasks: &[(Millis, Millis)]) -> StepWork {
        StepWork {
            slots_per_instance: 1,
            independent,
            tasks: tasks.to_vec(),
        }
    }

    const H: Millis = 3_600_000;
    const BOOT: Millis = 90_000;

    fn slots(step: StepWork, slots: u32) -> StepWork {
        StepWork {
            slots_per_instance: slots,
            ..step
        }
    }

    #[test]
    fn a_short_makespan_needs_many_boots() {
        // 64 tasks of 450 s at the start: 8 task-hours, 1 instance-hour on 8 slots without
        // boots. Within 1 h 1m30s with 90 s boots one instance does (one boot); no task has
        // a compulsory part longer than its share.
        let tasks = vec![(0, 450_000); 64];
        let step = slots(work(true, &tasks), 8);
        let one = deadline_bound_hours(std::slice::from_ref(&step), BOOT, 0, H + BOOT).unwrap();
        assert!((one - (1.0 + 0.025)).abs() < 1e-9, "{one}");
        // Within 9 minutes each task runs throughout [90 s, 450 s]: all 64 at once, on 8
        // instances, and W / (s (M − boot)) = 8 h / (8 × 7.5 min) asks for 8 as well.
        let short = deadline_bound_hours(std::slice::from_ref(&step), BOOT, 0, 540_000).unwrap();
        assert!((short - (1.0 + 8.0 * 0.025)).abs() < 1e-9, "{short}");
        assert_eq!(deadline_bound_hours(&[step], BOOT, 0, BOOT), None);
    }

    #[test]
    fn a_long_task_holds_a_whole_instance_until_the_deadline_allows_otherwise() {
        // One 8-hour task and 56 tasks of 8 minutes, all at the start, 8 slots: task time ÷
        // slots is 1 h 56 min, but within 9 h the long task runs throughout [1 h, 8 h] on an
        // instance of its own: 7 h at least.
        let mut tasks = vec![(0, 8 * H)];
        tasks.extend(vec![(0, 8 * 60_000); 56]);
        let step = slots(work(true, &tasks), 8);
        let tight = deadline_bound_hours(std::slice::from_ref(&step), BOOT, 0, 9 * H).unwrap();
        assert!((tight - (7.0 + 0.025)).abs() < 1e-9, "{tight}");
        // With twice the time the long task may start anywhere in [0, 10 h]: no compulsory
        // part, only task time ÷ slots and a boot; with no deadline at all the floor still
        // counts the long task's own run.
        let loose = deadline_bound_hours(std::slice::from_ref(&step), BOOT, 0, 18 * H).unwrap();
        let per_slot = (8.0 + 56.0 * 8.0 / 60.0) / 8.0;
        assert!((loose - (per_slot + 0.025)).abs() < 1e-9, "{loose}");
        let floor = floor_hours(&[step], BOOT, None);
        assert!((floor - (8.0 + 0.025)).abs() < 1e-9, "{floor}");
    }

    #[test]
    fn compulsory_parts_count_whole_instances_over_time() {
        // Deadline 10: tasks (0, 8) and (2, 7) run throughout [2, 8] and [3, 9]; (0, 3) has
        // none. On 1-slot instances: one over [2, 3) and [8, 9), two over [3, 8).
        let tasks = [(0, 8), (2, 7), (0, 3)];
        assert_eq!(compulsory(&tasks, 1, 10), (12, 2));
        // On 2-slot instances one instance covers both: 7.
        assert_eq!(compulsory(&tasks, 2, 10), (7, 1));
        assert_eq!(compulsory(&[], 2, 10), (0, 0));
    }

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
