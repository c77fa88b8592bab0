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

use super::report::StepReport;

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
}
