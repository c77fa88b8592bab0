//! What the planner expects of the near future, from what it has seen recently: how long the
//! step's tasks run, how long an instance takes to boot, and how fast tasks become runnable.
//! Pure; every estimate is `None` until there is something to estimate it from, and the
//! planner then plans on counts alone (its rules before these estimates existed).
//!
//! - **Duration**: the 75th percentile of the last [`WINDOW`] run times; until 4 (`MIN_SAMPLES`)
//!   of them, the manifest's `taskDuration` if it sets one ([`Outlook::with_prior`]). A
//!   quantile is not moved by a few outliers; the upper quartile rather than the median
//!   because it is used to judge how fast running tasks free their slots within a boot, and
//!   erring long errs towards launching (over the launch horizon of half a run time it is
//!   neutral: the busy slots are counted to start half a task each whatever the duration).
//! - **Boot**: the median, over the listed instances whose worker registered, of launch to
//!   registration.
//! - **Arrivals**: the last [`WINDOW`] times at which a task became runnable, as a rate from
//!   the oldest of them to now (it decays on its own when tasks stop arriving).

use crate::clock::{format_duration_ms, Millis};

/// Recent tasks kept for the estimates.
pub const WINDOW: usize = 32;

/// What an instance is billed at the least once launched (EC2's per-second billing has a
/// one-minute minimum): stopping an instance younger than this saves nothing.
pub const BILLING_MINIMUM: Millis = 60_000;

/// What the observer knows about a step's recent tasks (both at most [`WINDOW`] long; empty
/// when it knows nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecentTasks {
    /// Run times of the step's most recently finished tasks.
    pub durations: Vec<Millis>,
    /// When the step's most recent tasks became runnable.
    pub runnable_at: Vec<Millis>,
    /// Launch to first registration of the fleet's most recently booted instances, kept by
    /// the launch ledger across passes (`FleetLedger::reconcile`), so that a fleet that
    /// scaled to nothing still knows its boot time when the next batch of work arrives.
    pub boots: Vec<Millis>,
}

/// The planner's expectations for one fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Outlook {
    /// A task's run time (upper quartile of the recent ones, or the manifest's
    /// `taskDuration` before there are enough of them).
    pub duration: Option<Millis>,
    /// `duration` is the manifest's `taskDuration`.
    pub prior: bool,
    /// Launch to a registered worker.
    pub boot: Option<Millis>,
    /// Tasks becoming runnable per millisecond.
    pub arrival_rate: Option<f64>,
}

/// Arrivals as the controller infers them between its passes (the simulator sees each one):
/// tasks that became runnable between two passes are the growth of pending + running plus
/// the tasks that finished in between (conservation; a requeue moves a task between the two
/// and adds nothing). Each pass's arrivals are spread evenly over the time since the previous
/// pass, and the last [`WINDOW`] kept, the [`RecentTasks::runnable_at`] the planner takes.
/// A pass whose backlog was counted only up to the limit, or whose finished count is unknown,
/// infers nothing (the backlog then asks for more than the fleet holds anyway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArrivalLog {
    last: Option<BacklogSample>,
    times: std::collections::VecDeque<Millis>,
}

/// What a pass counted of a step, for [`ArrivalLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogSample {
    pub at: Millis,
    pub pending: u64,
    pub running: u64,
    /// `pending` is only a lower bound.
    pub more_pending: bool,
}

impl ArrivalLog {
    /// The previous pass's time: the finished tasks to count for the next one are those at or
    /// after it (`None` before a first pass).
    pub fn since(&self) -> Option<Millis> {
        self.last.map(|l| l.at)
    }

    /// Adds this pass: `finished` is the count of tasks that finished since [`Self::since`].
    pub fn observe(&mut self, now: BacklogSample, finished: Option<u64>) {
        let prev = self.last.replace(now);
        let (Some(prev), Some(finished)) = (prev, finished) else {
            return;
        };
        if prev.more_pending || now.more_pending || now.at <= prev.at {
            return;
        }
        let before = prev.pending.saturating_add(prev.running);
        let after = now.pending.saturating_add(now.running);
        let arrived = after.saturating_add(finished).saturating_sub(before);
        let kept = arrived.min(WINDOW as u64);
        let span = (now.at - prev.at) as f64;
        for k in (arrived - kept)..arrived {
            let at = prev.at + (span * (k + 1) as f64 / arrived as f64).round() as Millis;
            if self.times.len() == WINDOW {
                self.times.pop_front();
            }
            self.times.push_back(at);
        }
    }

    /// The inferred runnable times, oldest first.
    pub fn runnable_at(&self) -> Vec<Millis> {
        self.times.iter().copied().collect()
    }
}

/// Samples needed before a duration or a rate is trusted.
const MIN_SAMPLES: usize = 4;

impl Outlook {
    /// The outlook from a step's recent tasks and the boot times seen (launch to registration
    /// of the listed instances' workers).
    pub fn new(recent: &RecentTasks, boots: &[Millis], now: Millis) -> Outlook {
        Outlook {
            duration: quantile(&recent.durations, 0.75, MIN_SAMPLES),
            prior: false,
            boot: quantile(boots, 0.5, 1),
            arrival_rate: arrival_rate(&recent.runnable_at, now),
        }
    }

    /// The duration `prior` (the manifest's `taskDuration`) where too few tasks have finished
    /// to estimate it.
    pub fn with_prior(mut self, prior: Option<Millis>) -> Outlook {
        if self.duration.is_none() {
            self.duration = prior;
            self.prior = prior.is_some();
        }
        self
    }

    /// Tasks one busy slot starts within `within` after the one it runs (it frees `within ÷
    /// duration` times at the estimated duration); `None` without a duration.
    pub fn starts_per_slot(&self, within: Millis) -> Option<f64> {
        self.duration.map(|d| within as f64 / d.max(1) as f64)
    }

    /// Tasks expected to become runnable within `within`.
    pub fn arrivals_within(&self, within: Millis) -> Option<f64> {
        self.arrival_rate.map(|r| r * within as f64)
    }

    /// `tasks of about 4m10s, boots of about 1m30s`, for reasons.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = self.duration {
            let from = if self.prior { " (taskDuration)" } else { "" };
            parts.push(format!("tasks of about {}{from}", format_duration_ms(d)));
        }
        if let Some(b) = self.boot {
            parts.push(format!("boots of about {}", format_duration_ms(b)));
        }
        if let Some(r) = self.arrival_rate {
            parts.push(format!("{:.1} tasks arriving per hour", r * 3_600_000.0));
        }
        parts.join(", ")
    }
}

/// The `q` quantile (nearest rank) of `values`, if there are at least `min` of them.
fn quantile(values: &[Millis], q: f64, min: usize) -> Option<Millis> {
    if values.len() < min.max(1) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

/// Arrivals per millisecond: the runnable times seen over the time since the oldest of them.
fn arrival_rate(runnable_at: &[Millis], now: Millis) -> Option<f64> {
    if runnable_at.len() < MIN_SAMPLES {
        return None;
    }
    let oldest = runnable_at.iter().copied().min()?;
    let span = now.saturating_sub(oldest).max(1);
    Some(runnable_at.len() as f64 / span as f64)
}

/// How far ahead the planner counts on the ready and booting instances before it launches
/// more: half a task's run time, or [`BOOTS_PER_LAUNCH`] boot times if that is longer. Half a
/// run time is what a task in progress has left on average (tasks started at a steady rate
/// are, at any moment, halfway through on average): a task left waiting for a busy slot waits
/// about as long as the tasks ahead of it still run. Counting on a whole run time (measured in
/// BENCHMARKS.md) queues tasks behind long ones: once the duration is known, sweeps finish
/// 1.12× later than static at the p90.
pub(super) fn launch_horizon(duration: Millis, boot: Millis) -> Millis {
    (duration / 2).max(boot.saturating_mul(BOOTS_PER_LAUNCH))
}

/// The launch horizon is at least this many boot times: the fleet launches for the work its
/// instances would not start within ten boots, so an instance launched for short tasks gets
/// about ten boots' worth of them to start and spends at most about a tenth of its time
/// booting — the boot's share of an instance's time that keeps a fleet within 1.1× of the
/// task time it serves. A horizon of one boot (no instance launched could start a task
/// sooner) launched an instance for every `slots` waiting tasks, however short: a burst of
/// 87 one-minute tasks on 4-slot instances took 22 instances, each booting for 90 s to run
/// about two minutes of work. Shorter horizons were measured side by side (BENCHMARKS.md):
/// cost falls as the horizon grows, the makespan rises.
pub(super) const BOOTS_PER_LAUNCH: Millis = 10;

/// Tasks `slots` free slots that are ready in `ready_in` (a new instance: a boot; a free slot
/// of a ready one: now) start within `horizon`: each its first task once ready, then one per
/// run time (the slots start together, so whole tasks, not a rate).
pub(super) fn starts_within(
    horizon: Millis,
    ready_in: Millis,
    duration: Millis,
    slots: u32,
) -> u64 {
    let per_slot = 1 + (horizon - ready_in).max(0) / duration.max(1);
    u64::from(slots.max(1)) * u64::try_from(per_slot).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_samples_and_ignore_outliers() {
        let few = RecentTasks {
            durations: vec![1_000, 2_000],
            runnable_at: vec![],
            ..Default::default()
        };
        assert_eq!(Outlook::new(&few, &[], 0).duration, None);
        let mut durations = vec![60_000; 30];
        durations.extend([36_000_000, 72_000_000]);
        let many = RecentTasks {
            durations,
            runnable_at: vec![],
            ..Default::default()
        };
        assert_eq!(Outlook::new(&many, &[], 0).duration, Some(60_000));
    }

    #[test]
    fn the_arrival_rate_decays_when_tasks_stop_coming() {
        let recent = RecentTasks {
            durations: vec![],
            runnable_at: (0..10).map(|i| i * 1_000).collect(),
            ..Default::default()
        };
        let soon = Outlook::new(&recent, &[], 10_000).arrival_rate.unwrap();
        let later = Outlook::new(&recent, &[], 1_000_000).arrival_rate.unwrap();
        assert!((soon - 0.001).abs() < 1e-12, "{soon}");
        assert!(later < soon / 50.0, "{later}");
    }

    fn sample(at: Millis, pending: u64, running: u64) -> BacklogSample {
        BacklogSample {
            at,
            pending,
            running,
            more_pending: false,
        }
    }

    #[test]
    fn arrivals_between_passes_are_what_pending_running_and_finished_do_not_explain() {
        let mut log = ArrivalLog::default();
        log.observe(sample(0, 10, 0), None);
        assert_eq!(log.since(), Some(0));
        // 10 pending became 4 pending + 4 running with 5 finished: 3 arrived.
        log.observe(sample(10_000, 4, 4), Some(5));
        assert_eq!(log.runnable_at(), vec![3_333, 6_667, 10_000]);
        // A pass counted only up to the limit, or without a finished count, infers nothing.
        log.observe(
            BacklogSample {
                more_pending: true,
                ..sample(20_000, 400, 4)
            },
            Some(0),
        );
        log.observe(sample(30_000, 4, 4), None);
        assert_eq!(log.runnable_at().len(), 3);
        // Many arrivals keep the window's newest.
        log.observe(sample(40_000, 104, 4), Some(0));
        let times = log.runnable_at();
        assert_eq!(times.len(), WINDOW);
        assert_eq!(times.last(), Some(&40_000));
        let rate = Outlook::new(
            &RecentTasks {
                durations: vec![],
                runnable_at: times,
                ..Default::default()
            },
            &[],
            40_000,
        )
        .arrival_rate
        .unwrap();
        assert!((rate * 10_000.0 - 100.0).abs() < 5.0, "{rate}");
    }

    #[test]
    fn the_manifest_prior_stands_in_until_enough_tasks_finished() {
        let few = RecentTasks {
            durations: vec![1_000, 2_000, 3_000],
            runnable_at: vec![],
            ..Default::default()
        };
        let o = Outlook::new(&few, &[], 0).with_prior(Some(600_000));
        assert_eq!((o.duration, o.prior), (Some(600_000), true));
        assert!(
            o.describe().contains("tasks of about 10m (taskDuration)"),
            "{o:?}"
        );
        let enough = RecentTasks {
            durations: vec![1_000, 2_000, 3_000, 4_000],
            runnable_at: vec![],
            ..Default::default()
        };
        let o = Outlook::new(&enough, &[], 0).with_prior(Some(600_000));
        assert_eq!((o.duration, o.prior), (Some(3_000), false));
        let o = Outlook::new(&few, &[], 0).with_prior(None);
        assert_eq!((o.duration, o.prior), (None, false));
    }

    #[test]
    fn boots_are_the_median_seen() {
        let o = Outlook::new(&RecentTasks::default(), &[80_000, 90_000, 400_000], 0);
        assert_eq!(o.boot, Some(90_000));
        assert_eq!(Outlook::new(&RecentTasks::default(), &[], 0).boot, None);
    }

    #[test]
    fn the_launch_horizon_is_ten_boots_or_half_a_run_time() {
        let (sec, boot) = (1_000, 90_000);
        assert_eq!(launch_horizon(30 * sec, boot), 900 * sec);
        assert_eq!(launch_horizon(2_400 * sec, boot), 1_200 * sec);
        // A new 2-slot instance: ready after 90 s, then a 30 s task per slot every 30 s.
        assert_eq!(starts_within(900 * sec, boot, 30 * sec, 2), 56);
        // Tasks longer than what is left of the horizon after the boot: one per slot.
        assert_eq!(starts_within(1_200 * sec, boot, 2_400 * sec, 8), 8);
        // (Never less than one a slot, even for a horizon shorter than the boot.)
        assert_eq!(starts_within(boot / 2, boot, 30 * sec, 4), 4);
    }
}
