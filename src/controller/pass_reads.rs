//! What a reconcile pass reads of the store besides the counts, decided from the counts
//! (pure; `observe` does the reads). A pass reads every step's counts first
//! ([`TaskStore::pass_counts`](crate::store::TaskStore::pass_counts): on DynamoDB its counter
//! items, a few BatchGetItem calls), then only what the counts say changed:
//!
//! * housekeeping ([`chores`]): promotion only for a step with waiting tasks, `retry_due` only
//!   with retrying ones, the lease expiry of a step without a fleet only with running ones;
//!   and, because counters can drift, every step in full at least every
//!   [`FULL_HOUSEKEEPING_EVERY`] ([`Sweeps`], a few steps per pass);
//! * the tasks finished since the previous pass: the difference of the succeeded + failed
//!   totals ([`StepMemory::finished_since`]), no read;
//! * the newest run times: only when the succeeded total moved since they were read, at most
//!   [`RUN_TIMES_READS_PER_PASS`] steps per pass (stalest first);
//! * the oldest pending task: only what the planner's `Stalled` condition uses (tasks pending
//!   and none running), at most [`OLDEST_READS_PER_PASS`] steps per pass, each kept for
//!   [`OLDEST_FRESH_FOR`].
//!
//! A drifted counter (a crash between a task's write and its counter's; see
//! `docs/dynamodb-table.md`) makes the planner see a wrong backlog until the store's recount
//! (every 10 minutes, or `anamo table recount`) repairs it; the housekeeping it would skip is
//! done anyway by the full sweep of each step at least as often.

use std::collections::HashMap;

use crate::clock::Millis;
use crate::model::StepCounts;

/// How long an oldest-pending time read stays in use. It matters only for `Stalled`, which
/// waits `stallAfter` (20 minutes by default) before it says anything: a minute late is fine.
pub(super) const OLDEST_FRESH_FOR: Millis = 60_000;

/// Steps whose oldest pending task one pass reads at most (stalest first): on DynamoDB each
/// costs two Queries per shard (one per priority group, and one that finds no other). With
/// 50 stalled steps and passes every 10 s, each is read every 250 s.
pub(super) const OLDEST_READS_PER_PASS: usize = 2;

/// Steps whose newest run times one pass reads at most (stalest first): on DynamoDB each
/// costs a Query (one per shard while fewer than 32 are found: a young step) and a
/// BatchGetItem of their results. With 50 busy steps and passes every 10 s, each step's are
/// read about every minute: the estimate is over the newest 32 anyway.
pub(super) const RUN_TIMES_READS_PER_PASS: usize = 8;

/// Every step is housekept in full, whatever its counts say, at least this often (and at
/// least as often as the counters are recounted): what a drifted counter can make a pass
/// skip is done by then.
pub(super) const FULL_HOUSEKEEPING_EVERY: Millis = 600_000;

/// Steps housekept in full per pass at most (stalest first): with 50 steps and passes every
/// 10 s, each step every 250 s.
pub(super) const FULL_HOUSEKEEPING_PER_PASS: usize = 2;

/// The housekeeping one step needs this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Chores {
    pub promote: bool,
    pub retry: bool,
    pub requeue: bool,
}

impl Chores {
    pub fn any(&self) -> bool {
        self.promote || self.retry || self.requeue
    }
}

/// A step's housekeeping from its counts (`None`: not read, so all of it, as without
/// counters), whether it is swept in full this pass, and whether a fleet plans for it (a
/// fleet's plan requeues its expired leases when it has running tasks).
pub(super) fn chores(counts: Option<&StepCounts>, full: bool, planned: bool) -> Chores {
    match counts {
        None => Chores {
            promote: true,
            retry: true,
            requeue: !planned,
        },
        Some(_) if full => Chores {
            promote: true,
            retry: true,
            requeue: true,
        },
        Some(c) => Chores {
            promote: c.waiting > 0,
            retry: c.retrying > 0,
            requeue: !planned && c.running > 0,
        },
    }
}

/// When each step was last housekept in full.
#[derive(Debug, Default)]
pub(super) struct Sweeps(HashMap<String, Millis>);

impl Sweeps {
    /// The steps to housekeep in full this pass: those never swept or swept
    /// [`FULL_HOUSEKEEPING_EVERY`] ago, stalest first, at most [`FULL_HOUSEKEEPING_PER_PASS`].
    pub fn due(&self, steps: &[String], now: Millis) -> Vec<String> {
        let mut due: Vec<(Option<Millis>, &String)> = steps
            .iter()
            .map(|s| (self.0.get(s).copied(), s))
            .filter(|(at, _)| at.is_none_or(|t| now - t >= FULL_HOUSEKEEPING_EVERY))
            .collect();
        due.sort();
        due.into_iter()
            .take(FULL_HOUSEKEEPING_PER_PASS)
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub fn done(&mut self, step: &str, now: Millis) {
        self.0.insert(step.to_string(), now);
    }
}

/// What the controller keeps of a fleet's step between passes to read less the next.
#[derive(Debug, Default)]
pub(super) struct StepMemory {
    /// Succeeded + failed at the previous pass's counts.
    finished: Option<u64>,
    /// The newest run times: the succeeded total and the time when they were read, and them.
    run_times: Option<(u64, Millis, Vec<Millis>)>,
    /// The oldest pending task's time, and when it was read.
    oldest: Option<(Millis, Option<Millis>)>,
}

/// The optional reads one fleet's step needs this pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Wanted {
    pub run_times: bool,
    pub oldest: bool,
}

impl StepMemory {
    /// The tasks finished since the previous pass (`None` at the first), remembering this
    /// pass's total. A total that went down (a recount, finished tasks requeued) counts 0.
    pub fn finished_since(&mut self, c: &StepCounts) -> Option<u64> {
        let total = c.succeeded.saturating_add(c.failed);
        let before = self.finished.replace(total);
        before.map(|b| total.saturating_sub(b))
    }

    /// Whether the run times are to be read, because something succeeded since they were:
    /// `Some(when they were read)`.
    fn run_times_stale(&self, c: &StepCounts) -> Option<Option<Millis>> {
        match &self.run_times {
            _ if c.succeeded == 0 => None,
            Some((n, _, _)) if *n == c.succeeded => None,
            Some((_, at, _)) => Some(Some(*at)),
            None => Some(None),
        }
    }

    /// The run times for the planner: `read` when there is one (and kept), else the kept
    /// ones (none when nothing succeeded).
    pub fn run_times(
        &mut self,
        c: &StepCounts,
        read: Option<Vec<Millis>>,
        now: Millis,
    ) -> Vec<Millis> {
        if c.succeeded == 0 {
            self.run_times = Some((0, now, Vec::new()));
        } else if let Some(times) = read {
            self.run_times = Some((c.succeeded, now, times));
        }
        self.run_times
            .as_ref()
            .map(|r| r.2.clone())
            .unwrap_or_default()
    }

    /// Whether the planner uses the oldest pending task (tasks pending, none running) and
    /// the one kept is missing or older than [`OLDEST_FRESH_FOR`]: `Some(when it was read)`.
    fn oldest_stale(&self, c: &StepCounts, now: Millis) -> Option<Option<Millis>> {
        if c.pending == 0 || c.running > 0 {
            return None;
        }
        match self.oldest {
            Some((at, _)) if now - at < OLDEST_FRESH_FOR => None,
            Some((at, _)) => Some(Some(at)),
            None => Some(None),
        }
    }

    /// The oldest pending task's time for the planner: `read` when there is one (and kept),
    /// else the kept one; none when nothing is pending.
    pub fn oldest(
        &mut self,
        c: &StepCounts,
        read: Option<Option<Millis>>,
        now: Millis,
    ) -> Option<Millis> {
        if c.pending == 0 {
            self.oldest = None;
        } else if let Some(t) = read {
            self.oldest = Some((now, t));
        }
        self.oldest.and_then(|(_, t)| t)
    }
}

/// The optional reads of each fleet's step (`None`: its counts are unknown, nothing to read):
/// the run times of the [`RUN_TIMES_READS_PER_PASS`] stalest whose succeeded total moved,
/// the oldest pending task of the [`OLDEST_READS_PER_PASS`] stalest that need it.
pub(super) fn wanted(
    steps: &[(Option<&StepMemory>, Option<&StepCounts>)],
    now: Millis,
) -> Vec<Wanted> {
    let fresh = StepMemory::default();
    let mut out = vec![Wanted::default(); steps.len()];
    let stalest = |f: &dyn Fn(&StepMemory, &StepCounts) -> Option<Option<Millis>>, n: usize| {
        let mut stale: Vec<(Option<Millis>, usize)> = steps
            .iter()
            .enumerate()
            .filter_map(|(i, (mem, c))| Some((f(mem.unwrap_or(&fresh), (*c)?)?, i)))
            .collect();
        stale.sort();
        stale.truncate(n);
        stale.into_iter().map(|(_, i)| i).collect::<Vec<_>>()
    };
    for i in stalest(&|m, c| m.run_times_stale(c), RUN_TIMES_READS_PER_PASS) {
        out[i].run_times = true;
    }
    for i in stalest(&|m, c| m.oldest_stale(c, now), OLDEST_READS_PER_PASS) {
        out[i].oldest = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(pending: u64, running: u64, succeeded: u64, failed: u64) -> StepCounts {
        StepCounts {
            step: "s".into(),
            pending,
            running,
            succeeded,
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn housekeeping_follows_the_counts_unless_swept_or_unknown() {
        let idle = counts(5, 0, 3, 0);
        let none = Chores {
            promote: false,
            retry: false,
            requeue: false,
        };
        assert_eq!(chores(Some(&idle), false, false), none);
        assert!(!chores(Some(&idle), false, true).any());
        let busy = StepCounts {
            waiting: 2,
            retrying: 1,
            running: 4,
            ..idle.clone()
        };
        let all = Chores {
            promote: true,
            retry: true,
            requeue: true,
        };
        assert_eq!(chores(Some(&busy), false, false), all);
        // A fleet's plan requeues its step's expired leases.
        assert!(!chores(Some(&busy), false, true).requeue);
        // A full sweep does everything; unknown counts everything housekeeping did before.
        assert_eq!(chores(Some(&idle), true, true), all);
        assert_eq!(chores(None, false, false), all);
        assert!(!chores(None, false, true).requeue);
    }

    #[test]
    fn sweeps_take_the_stalest_few_and_come_back_after_the_period() {
        let steps: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut sweeps = Sweeps::default();
        let first = sweeps.due(&steps, 0);
        assert_eq!(first.len(), FULL_HOUSEKEEPING_PER_PASS);
        for s in &first {
            sweeps.done(s, 0);
        }
        let second = sweeps.due(&steps, 10_000);
        assert!(second.iter().all(|s| !first.contains(s)), "{second:?}");
        for s in &second {
            sweeps.done(s, 10_000);
        }
        assert!(sweeps.due(&steps, 20_000).is_empty());
        let again = sweeps.due(&steps, FULL_HOUSEKEEPING_EVERY);
        assert_eq!(again, first, "the stalest first");
    }

    #[test]
    fn finished_is_the_growth_of_the_finished_total_clamped_at_zero() {
        let mut m = StepMemory::default();
        assert_eq!(m.finished_since(&counts(9, 1, 3, 1)), None);
        assert_eq!(m.finished_since(&counts(5, 1, 6, 2)), Some(4));
        assert_eq!(m.finished_since(&counts(5, 1, 6, 2)), Some(0));
        // A recount that lowers the total (drift repaired) counts nothing, not a wrap.
        assert_eq!(m.finished_since(&counts(5, 1, 4, 1)), Some(0));
        assert_eq!(m.finished_since(&counts(5, 1, 5, 1)), Some(1));
    }

    #[test]
    fn run_times_are_read_again_only_when_the_succeeded_total_moves() {
        let mut m = StepMemory::default();
        assert_eq!(m.run_times_stale(&counts(3, 0, 0, 0)), None);
        assert!(m.run_times(&counts(3, 0, 0, 0), None, 10).is_empty());
        let c = counts(3, 1, 2, 0);
        assert_eq!(m.run_times_stale(&c), Some(Some(10)));
        assert_eq!(m.run_times(&c, Some(vec![7, 9]), 20), vec![7, 9]);
        assert_eq!(m.run_times_stale(&c), None);
        // A failed read keeps planning with the times read before.
        let more = counts(3, 1, 4, 0);
        assert_eq!(m.run_times_stale(&more), Some(Some(20)));
        assert_eq!(m.run_times(&more, None, 30), vec![7, 9]);
        // Few steps per pass, those never read first, then the stalest.
        let old = StepMemory {
            run_times: Some((1, 5, Vec::new())),
            ..Default::default()
        };
        let mut input: Vec<(Option<&StepMemory>, Option<&StepCounts>)> =
            vec![(Some(&m), Some(&more)), (Some(&old), Some(&more))];
        input.extend((0..RUN_TIMES_READS_PER_PASS - 1).map(|_| (None, Some(&more))));
        let w = wanted(&input, 40);
        assert_eq!(
            w.iter().filter(|w| w.run_times).count(),
            RUN_TIMES_READS_PER_PASS
        );
        assert!(w[1].run_times && !w[0].run_times, "{w:?}");
        assert!(w.iter().all(|w| !w.oldest));
    }

    #[test]
    fn the_oldest_is_read_only_when_stalled_could_use_it_and_few_per_pass() {
        let stalled = counts(10, 0, 0, 0);
        let running = counts(10, 2, 0, 0);
        let empty = counts(0, 0, 5, 0);
        let mut fresh = StepMemory::default();
        assert_eq!(fresh.oldest(&stalled, Some(Some(100)), 1_000), Some(100));
        let fresh_ref = &fresh;
        let mut input: Vec<(Option<&StepMemory>, Option<&StepCounts>)> = vec![
            (None, Some(&running)),
            (None, Some(&empty)),
            (None, None),
            (Some(fresh_ref), Some(&stalled)),
        ];
        input.extend((0..OLDEST_READS_PER_PASS + 2).map(|_| (None, Some(&stalled))));
        let w = wanted(&input, 1_000 + OLDEST_FRESH_FOR - 1);
        assert!(!w[0].oldest && !w[1].oldest && !w[2].oldest && !w[3].oldest);
        assert_eq!(w.iter().filter(|w| w.oldest).count(), OLDEST_READS_PER_PASS);
        // Once stale it competes again, after the never-read ones.
        let w = wanted(&input, 1_000 + OLDEST_FRESH_FOR);
        assert!(!w[3].oldest);
        let w = wanted(&input[..5], 1_000 + OLDEST_FRESH_FOR);
        assert!(w[3].oldest && w[4].oldest);
        // Nothing pending: no oldest, and nothing kept.
        assert_eq!(fresh.oldest(&empty, None, 2_000), None);
        assert_eq!(fresh.oldest(&stalled, None, 2_000), None);
    }
}
