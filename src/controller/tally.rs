//! The per-sample view and the failed-tasks table kept between progress refreshes, so that a
//! refresh reads what changed rather than every task. Pure: [`super::sample_census`] reads.
//!
//! Per step, one [`Cell`](super::sample_view::Cell) per sample (and one for the tasks of no
//! sample, kept in the shared view's [`Column`]) with the sample's
//! tasks by state:
//!
//! * final states (succeeded, failed, cancelled) are added up from the entries that entered
//!   them since the last refresh ([`TaskStore::entered_since`](crate::store::TaskStore::entered_since)),
//!   read again from [`SKEW_MARGIN`] before the newest entry seen, the entries already counted
//!   in that margin skipped ([`Watermark`]);
//! * running, retrying and held tasks are read whole at each refresh (bounded by the fleet's
//!   slots and by what users hold; skipped when the step's counters say there are none);
//! * waiting and pending tasks are the rest: the cell's tasks at the last full read minus the
//!   states above, split as the full read found them (waiting first): a promotion (waiting →
//!   pending) shows at the next full read.
//!
//! What no "entered since" read can see — a task leaving a final state (requeue), a delete, an
//! import, a write by another client — is repaired by a full read of the step: every
//! [`REREAD_EVERY`], and at once when the step's counters show it (its total changed, or a
//! final state's count went down since the previous refresh).

use std::collections::HashMap;

use super::failures::{newest_first, FailedTask, FAILED_SHOWN};
use super::sample_view::{slot, CellSink, Column};
use crate::clock::Millis;
use crate::model::{StepCounts, Task, TaskState};
use crate::pipeline::{is_dependency_reason, Graph};
use crate::store::Entered;

/// How often a step's per-sample view is read whole, whatever its counters say: the bound on
/// how long a change no "entered since" read sees (a requeue netted out by a completion in the
/// same refresh, a write by another client that skips the counters, an entry that reached the
/// index more than [`SKEW_MARGIN`] late) stays wrong. A full read reads the same index
/// entries as a counters' recount (about 0.3 KB each, some 40,000 read units at 1,000,000
/// tasks), so it takes the recount's interval, 10 minutes: about 70 read units per second
/// spread out, against about 40,000 every `progressInterval` when every refresh read it all.
pub const REREAD_EVERY: Millis = 10 * 60 * 1000;

/// How far before the newest entry already seen a final state is read again. An entry's time
/// is its writer's clock (the worker that completed the task), and the index is updated
/// asynchronously (usually well under a second): an entry may appear after one with a later
/// time. EC2 instances keep their clocks within about a millisecond of the Amazon Time Sync
/// Service; 10 s covers a worker that lags by seconds, or an index that does. The price is
/// re-reading the entries of those 10 s at every refresh (skipped, already counted): 10,000
/// at 1,000 completions per second. Later entries wait for the next full read.
pub const SKEW_MARGIN: Millis = 10_000;

/// The states read through their entries since the last refresh.
pub const FINALS: [TaskState; 3] = [
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Cancelled,
];

/// The states read whole at each refresh (when the counters say the step has some).
pub const LIVE: [TaskState; 3] = [TaskState::Running, TaskState::Retrying, TaskState::Held];

/// The states a full read lists by id (the others come with their times, [`FINALS`]).
pub const UNFINISHED: [TaskState; 5] = [
    TaskState::Waiting,
    TaskState::Pending,
    TaskState::Running,
    TaskState::Retrying,
    TaskState::Held,
];

/// A final state's newest entry counted, and the entries counted within [`SKEW_MARGIN`] of
/// it (by id, with their time), so that reading the margin again counts none twice.
#[derive(Debug, Clone, Default, PartialEq)]
struct Watermark {
    high: Millis,
    window: HashMap<String, Millis>,
}

impl Watermark {
    /// Whether `e` is new (then remembered).
    fn admit(&mut self, e: &Entered) -> bool {
        if self.window.get(&e.id) == Some(&e.at) {
            return false;
        }
        self.window.insert(e.id.clone(), e.at);
        self.high = self.high.max(e.at);
        true
    }

    fn prune(&mut self) {
        let floor = self.since();
        self.window.retain(|_, at| *at >= floor);
    }

    /// Where the next read starts.
    fn since(&self) -> Millis {
        self.high.saturating_sub(SKEW_MARGIN).max(0)
    }
}

/// What a refresh reads of a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Refresh {
    /// Every task ([`FullRead`]).
    Full,
    /// Only what changed ([`Changes`]).
    Changes(ChangesPlan),
}

/// The reads of an incremental refresh.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChangesPlan {
    /// Live states to read whole; the others of [`LIVE`] have no task (by the counters).
    pub live: Vec<TaskState>,
    /// Final states to read from a time on; the others did not change (by the counters).
    pub finals: Vec<(TaskState, Millis)>,
}

/// A step's tasks read whole: ids and states of the unfinished ones (or none, when they were
/// counted page by page as read: [`StepTally::count_unfinished`]), the final ones with their
/// times.
#[derive(Debug, Clone, Default)]
pub struct FullRead {
    pub unfinished: Vec<(String, TaskState)>,
    pub finals: Vec<(TaskState, Vec<Entered>)>,
}

/// What an incremental refresh read ([`ChangesPlan`]).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// The live states read, with their tasks' ids.
    pub live: Vec<(TaskState, Vec<String>)>,
    pub finals: Vec<(TaskState, Vec<Entered>)>,
}

/// What a step's view needs kept between refreshes besides its cells (a [`Column`] of the
/// shared [`super::sample_view::SampleView`]).
#[derive(Debug, Clone, Default)]
pub struct StepTally {
    marks: [Watermark; 3],
    /// Failed tasks that failed only because a dependency did.
    dependency_failed: u64,
    /// The newest tasks that failed on their own, newest first, at most [`FAILED_SHOWN`].
    newest_failed: Vec<FailedTask>,
    /// When the step was last read whole.
    read_at: Millis,
    /// Its counters at the last refresh.
    counts: Option<StepCounts>,
    /// The final states whose count changed at the last refresh: read again at the next one,
    /// for the entries the index shows after their counter (it is updated asynchronously).
    read_again: Vec<TaskState>,
}

/// The final states to read again at the next refresh: those whose count moved between
/// `before` and `now` (all of them when the counters were not read; those with tasks when
/// there were no counters before).
fn changed_finals(before: Option<&StepCounts>, now: Option<&StepCounts>) -> Vec<TaskState> {
    FINALS
        .into_iter()
        .filter(|&s| match (before, now) {
            (Some(before), Some(now)) => before.get(s) != now.get(s),
            (None, Some(now)) => now.get(s) > 0,
            (_, None) => true,
        })
        .collect()
}

/// Whether the counters show a change no "entered since" read sees: tasks added or deleted
/// (the total moved) or a task leaving a final state (its count went down).
fn unseen_change(before: &StepCounts, now: &StepCounts) -> bool {
    before.total() != now.total() || FINALS.iter().any(|&s| now.get(s) < before.get(s))
}

impl StepTally {
    /// The view of a step read whole at `now`, with its counters `counts` (and `before`, those
    /// of the previous refresh); returns it and the ids of the failed tasks to get for the
    /// failed-tasks table ([`StepTally::add_failed`]).
    pub fn from_full(
        sink: &mut CellSink<'_>,
        read: FullRead,
        (before, counts): (Option<&StepCounts>, Option<StepCounts>),
        now: Millis,
    ) -> (StepTally, Vec<String>) {
        let mut t = StepTally {
            read_at: now,
            read_again: changed_finals(before, counts.as_ref()),
            counts,
            ..Default::default()
        };
        Self::count_unfinished(sink, &read.unfinished);
        for (_, entries) in &read.finals {
            for e in entries {
                sink.update(&e.id, |c| c.total = c.total.saturating_add(1));
            }
        }
        let fetch = t.merge_finals(sink, read.finals);
        (t, fetch)
    }

    /// Counts a page of a full read's unfinished tasks into its new column.
    pub fn count_unfinished(sink: &mut CellSink<'_>, tasks: &[(String, TaskState)]) {
        for (id, state) in tasks {
            sink.update(id, |cell| {
                cell.total = cell.total.saturating_add(1);
                match state {
                    TaskState::Waiting => {
                        cell.waiting_at_read = cell.waiting_at_read.saturating_add(1)
                    }
                    TaskState::Pending => {}
                    s => cell.known[slot(*s)] = cell.known[slot(*s)].saturating_add(1),
                }
            });
        }
    }

    /// What the next refresh at `now` reads, given the step's counters just read (`None`: not
    /// read; then every change is read).
    pub fn plan(&self, counts: Option<&StepCounts>, now: Millis) -> Refresh {
        if now.saturating_sub(self.read_at) >= REREAD_EVERY {
            return Refresh::Full;
        }
        let both = self.counts.as_ref().zip(counts);
        if both.is_some_and(|(before, now)| unseen_change(before, now)) {
            return Refresh::Full;
        }
        let live = LIVE
            .into_iter()
            .filter(|&s| counts.is_none_or(|c| c.get(s) > 0))
            .collect();
        let finals = FINALS
            .into_iter()
            .zip(&self.marks)
            .filter(|(s, _)| {
                self.read_again.contains(s)
                    || both.is_none_or(|(before, now)| before.get(*s) != now.get(*s))
            })
            .map(|(s, m)| (s, m.since()))
            .collect();
        Refresh::Changes(ChangesPlan { live, finals })
    }

    /// Applies what an incremental refresh read; `counts` are the step's counters it was
    /// planned with. Returns the ids of new failed tasks to get ([`StepTally::add_failed`]).
    pub fn apply(
        &mut self,
        sink: &mut CellSink<'_>,
        changes: Changes,
        counts: Option<StepCounts>,
    ) -> Vec<String> {
        for s in LIVE {
            sink.column.clear_slot(slot(s));
        }
        for (s, ids) in changes.live {
            for id in ids {
                sink.update(&id, |c| {
                    c.known[slot(s)] = c.known[slot(s)].saturating_add(1)
                });
            }
        }
        self.read_again = changed_finals(self.counts.as_ref(), counts.as_ref());
        self.counts = counts;
        self.merge_finals(sink, changes.finals)
    }

    /// Counts the new entries of final states; returns the new own failures to get (the
    /// newest [`FAILED_SHOWN`]).
    fn merge_finals(
        &mut self,
        sink: &mut CellSink<'_>,
        finals: Vec<(TaskState, Vec<Entered>)>,
    ) -> Vec<String> {
        let mut own_failed = Vec::new();
        for (state, entries) in finals {
            let Some(at) = FINALS.iter().position(|s| *s == state) else {
                continue;
            };
            for e in entries {
                if !self.marks[at].admit(&e) {
                    continue;
                }
                sink.update(&e.id, |c| {
                    c.known[slot(state)] = c.known[slot(state)].saturating_add(1)
                });
                if state == TaskState::Failed {
                    if e.reason.as_deref().is_some_and(is_dependency_reason) {
                        self.dependency_failed += 1;
                    } else {
                        own_failed.push(e);
                    }
                }
            }
            self.marks[at].prune();
        }
        own_failed.sort_by(|a, b| (b.at, &a.id).cmp(&(a.at, &b.id)));
        own_failed.truncate(FAILED_SHOWN);
        own_failed.into_iter().map(|e| e.id).collect()
    }

    /// Adds tasks got for the failed-tasks table (those no longer failed are left out).
    pub fn add_failed(&mut self, graph: &Graph, tasks: &[Task]) {
        let failed: Vec<FailedTask> = tasks
            .iter()
            .filter(|t| t.state == TaskState::Failed)
            .map(|t| FailedTask::of(graph, t))
            .collect();
        self.newest_failed = newest_first(std::mem::take(&mut self.newest_failed), failed);
    }

    /// The step's counters at the last refresh.
    pub fn last_counts(&self) -> Option<&StepCounts> {
        self.counts.as_ref()
    }

    /// Failed tasks, the step's cells being `column`: in all, failed because of a dependency,
    /// the newest own ones.
    pub fn failed(&self, column: &Column) -> (u64, u64, &[FailedTask]) {
        let at = slot(TaskState::Failed);
        let total = column
            .cells()
            .map(|(_, c)| u64::from(c.known[at]))
            .sum::<u64>()
            + u64::from(column.none().known[at]);
        (total, self.dependency_failed, &self.newest_failed)
    }
}

#[cfg(test)]
#[path = "tally_tests.rs"]
mod tests;
