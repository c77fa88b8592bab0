//! What the progress refresh keeps per step between refreshes, so that a step's report (its
//! counts, throughput and oldest pending task) costs what changed rather than a count of the
//! index. Pure: [`super::progress`] reads.
//!
//! * **Counts**: every step's counter items in one [`TaskStore::pass_counts`] call (DynamoDB:
//!   one BatchGetItem per 100 counter items), except the steps whose recount is due: those are
//!   read through [`TaskStore::counts`], which recounts a DynamoDB step's index when its
//!   [`RECOUNT_EVERY`] has passed (the drift repair), and returns their oldest pending task too.
//! * **Throughput**: the growth of `succeeded + failed` between refreshes, summed over the
//!   last [`THROUGHPUT_WINDOW_MS`] (an interval between two refreshes that began before the
//!   window counts for its share within it; a count that went down, a requeue or a delete,
//!   adds 0). Before a step has a window's history (the controller just started), the
//!   tasks its first refresh counted in the window from the index fade out linearly over the
//!   window ([`Seed`]).
//! * **Oldest pending task**: read again only where it can have changed — the step's counts
//!   moved since it was read — and not more often than every [`OLDEST_KEPT_MS`] per step, at
//!   most [`OLDEST_READS_PER_REFRESH`] steps per refresh (those read longest ago first); a step
//!   with pending tasks whose time is unknown is always read, one without any has none.
//!
//! [`TaskStore::pass_counts`]: crate::store::TaskStore::pass_counts
//! [`TaskStore::counts`]: crate::store::TaskStore::counts
//! [`RECOUNT_EVERY`]: crate::store::dynamo::RECOUNT_EVERY

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::status::{eta_ms, throughput_per_min, StepReport, THROUGHPUT_WINDOW_MS};
use crate::clock::Millis;
use crate::model::StepCounts;

/// How long a step's oldest pending time read is kept even though its counts moved (the pass
/// keeps the time it reads for `Stalled` as long).
pub const OLDEST_KEPT_MS: Millis = 60_000;
/// At most this many steps' oldest pending times are read again per refresh (besides those
/// not known at all): each costs two Queries per shard.
pub const OLDEST_READS_PER_REFRESH: usize = 4;

/// The tasks a step's first refresh counted as finished in the window (from the index),
/// counted as the window's history until the refreshes have one of their own: `count` at
/// `at`, less a linear share of it as the window moves past `at`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Seed {
    at: Millis,
    count: u64,
}

impl Seed {
    fn left(&self, now: Millis) -> u64 {
        let gone = now.saturating_sub(self.at).clamp(0, THROUGHPUT_WINDOW_MS);
        let left = self.count as f64 * (THROUGHPUT_WINDOW_MS - gone) as f64;
        (left / THROUGHPUT_WINDOW_MS as f64).round() as u64
    }
}

/// The oldest pending task's time as read, with the counts it was read at.
#[derive(Debug, Clone, PartialEq)]
struct OldestRead {
    at: Option<Millis>,
    read_at: Millis,
    counts: StepCounts,
}

/// One step's memory.
#[derive(Debug, Clone, Default)]
struct StepMemory {
    /// `succeeded + failed` at the last refresh, and when.
    finished: Option<(Millis, u64)>,
    /// Growth of `finished` between two refreshes (from, to, tasks) that end in the window,
    /// oldest first.
    grew: VecDeque<(Millis, Millis, u64)>,
    seed: Option<Seed>,
    oldest: Option<OldestRead>,
    /// When the step's counts were last read through [`crate::store::TaskStore::counts`]
    /// (after the read: the store's own recount clock starts before it).
    counted_whole_at: Option<Instant>,
}

/// Every step's memory.
#[derive(Debug, Default)]
pub struct StepProgress {
    steps: HashMap<String, StepMemory>,
}

/// Counts without the oldest pending time (compared to see whether a step moved).
fn bare(c: &StepCounts) -> StepCounts {
    StepCounts {
        oldest_pending_at: None,
        ..c.clone()
    }
}

impl StepProgress {
    /// The steps whose counts this refresh reads through `TaskStore::counts` (with a recount
    /// when the store's is due, and the oldest pending time): never read so, or not for
    /// `recount_every`.
    pub fn counted_whole(&self, steps: &[String], recount_every: Duration) -> Vec<String> {
        steps
            .iter()
            .filter(|s| {
                self.steps
                    .get(*s)
                    .and_then(|m| m.counted_whole_at)
                    .is_none_or(|t| t.elapsed() >= recount_every)
            })
            .cloned()
            .collect()
    }

    /// The steps that need a throughput seed (no refresh counted them yet).
    pub fn unseeded(&self, steps: &[String]) -> Vec<String> {
        steps
            .iter()
            .filter(|s| self.steps.get(*s).is_none_or(|m| m.finished.is_none()))
            .cloned()
            .collect()
    }

    /// Of `counts` (read by `pass_counts`, without oldest pending times), the steps whose oldest
    /// pending time to read now: unknown with tasks pending, all of them; moved since it was
    /// read and kept [`OLDEST_KEPT_MS`], at most [`OLDEST_READS_PER_REFRESH`], read longest ago
    /// first.
    pub fn oldest_to_read(&self, counts: &[StepCounts], now: Millis) -> Vec<String> {
        let mut unknown = Vec::new();
        let mut moved = Vec::new();
        for c in counts.iter().filter(|c| c.pending > 0) {
            match self.steps.get(&c.step).and_then(|m| m.oldest.as_ref()) {
                Some(o) if o.counts.pending > 0 => {
                    if bare(&o.counts) != bare(c) && now.saturating_sub(o.read_at) >= OLDEST_KEPT_MS
                    {
                        moved.push((o.read_at, c.step.clone()));
                    }
                }
                _ => unknown.push(c.step.clone()),
            }
        }
        moved.sort();
        unknown.extend(
            moved
                .into_iter()
                .take(OLDEST_READS_PER_REFRESH)
                .map(|(_, s)| s),
        );
        unknown
    }

    /// Notes a step's counts read whole (recount and oldest pending time) at `now`, the read
    /// having returned at `returned`.
    pub fn note_counted_whole(&mut self, counts: &StepCounts, now: Millis, returned: Instant) {
        let m = self.steps.entry(counts.step.clone()).or_default();
        m.counted_whole_at = Some(returned);
        m.oldest = Some(OldestRead {
            at: counts.oldest_pending_at,
            read_at: now,
            counts: bare(counts),
        });
    }

    /// Notes an oldest pending time read at `now` with the step's counts `counts`.
    pub fn note_oldest(&mut self, counts: &StepCounts, at: Option<Millis>, now: Millis) {
        let m = self.steps.entry(counts.step.clone()).or_default();
        m.oldest = Some(OldestRead {
            at,
            read_at: now,
            counts: bare(counts),
        });
    }

    /// Seeds a step's throughput with `count` tasks finished in the window before `now`.
    pub fn seed(&mut self, step: &str, count: u64, now: Millis) {
        let m = self.steps.entry(step.to_string()).or_default();
        m.seed = Some(Seed { at: now, count });
    }

    /// The step's report from `counts` read at `now`, its finished tasks' growth noted.
    pub fn report(&mut self, counts: StepCounts, now: Millis) -> StepReport {
        let m = self.steps.entry(counts.step.clone()).or_default();
        let finished = counts.succeeded + counts.failed;
        if let Some((at, before)) = m.finished {
            // A clock that did not move still makes an interval (of 1 ms).
            let from = at.min(now - 1);
            m.grew
                .push_back((from, now, finished.saturating_sub(before)));
        }
        m.finished = Some((now, finished));
        let start = now - THROUGHPUT_WINDOW_MS;
        while m.grew.front().is_some_and(|(_, to, _)| *to <= start) {
            m.grew.pop_front();
        }
        let seeded = m.seed.map_or(0, |s| s.left(now));
        if seeded == 0 {
            m.seed = None;
        }
        // The oldest growth counts for the share of its interval within the window.
        let in_window: f64 = m
            .grew
            .iter()
            .map(|&(from, to, n)| {
                let share = (to - from.max(start)) as f64 / (to - from) as f64;
                n as f64 * share
            })
            .sum();
        let finished_in_window = in_window.round() as u64 + seeded;
        let oldest = if counts.pending == 0 {
            None
        } else {
            m.oldest.as_ref().and_then(|o| o.at)
        };
        let throughput = throughput_per_min(finished_in_window);
        StepReport {
            oldest_pending_age_ms: oldest.map(|t| (now - t).max(0)),
            finished_in_window,
            throughput_per_min: throughput,
            eta_ms: eta_ms(counts.unfinished(), throughput),
            counts: StepCounts {
                oldest_pending_at: oldest,
                ..counts
            },
            counted_at: now,
        }
    }

    /// Forgets the steps not in `steps` (deleted).
    pub fn retain(&mut self, steps: &[String]) {
        self.steps.retain(|s, _| steps.contains(s));
    }
}

#[cfg(test)]
#[path = "step_progress_tests.rs"]
mod tests;
