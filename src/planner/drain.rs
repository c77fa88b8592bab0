//! Packing the tail: when the busy instances' free slots exceed what the pending tasks and the
//! tasks expected within a boot time need, the emptiest busy instances are asked to drain
//! (stop claiming, finish what they run, exit once idle, then terminated as idle), so that the
//! remaining work packs onto fewer instances instead of every instance finishing with one busy
//! slot. Never a termination: a drained instance goes only once idle.
//!
//! The order: fewest running tasks first; ties: the one launched earliest (it has used the
//! most of its billed time). At least one busy instance stays open, and the open ones keep
//! free slots for every pending task and, with what their busy slots free within a boot time
//! at the estimated duration, room for every task expected within a boot time.
//!
//! The worker reads its mark at every heartbeat: while marked it claims nothing (its
//! registration stays `active`), and once none of its slots is busy it exits (reason
//! `drain`), and its instance is terminated.
//!
//! Taking a mark back: while a marked worker still runs tasks, its mark is cleared when tasks
//! are pending beyond the open instances' free slots, the instances with most free slots
//! first, and the worker claims again. Why this does not flap: a mark is set only when the
//! open free slots cover the pending tasks with one to spare (while tasks are expected) *and*,
//! with what the busy slots free within a boot, the expected arrivals; it is cleared only when
//! the free slots do not cover the pending tasks alone; between the two (at least one task)
//! nothing changes. A worker that has exited, or stopped for another reason
//! (`draining`), is not taken back: later work goes to the open instances or to a launch.

use std::collections::BTreeSet;

use super::estimate::Outlook;
use super::scale::{count, free_slots, live_workers, Class, Demand, Member};
use super::{Action, FleetPolicy};
use crate::model::WorkerState;

/// What the drain decision did this pass: the instances newly marked (the scale-in no longer
/// counts them as taking work) and the actions.
#[derive(Debug, Default)]
pub(super) struct Drains {
    pub drained: BTreeSet<String>,
    pub undrained: BTreeSet<String>,
    pub actions: Vec<Action>,
}

/// Whether the controller has asked `m`'s workers to drain (and any of them still claims, or
/// would once the mark is cleared).
pub(super) fn marked(m: &Member) -> bool {
    live_workers(m).any(|w| w.drain_requested)
}

/// A ready instance running tasks whose workers all claim and none is marked: it may be
/// drained, and its free slots are open to new tasks.
fn open_busy(m: &Member) -> bool {
    matches!(m.class, Class::Ready { .. })
        && m.busy > 0
        && !marked(m)
        && live_workers(m).all(|w| w.state == WorkerState::Active)
}

/// The drain marks to set or clear for one fleet.
pub(super) fn decide(
    policy: &FleetPolicy,
    demand: &Demand,
    members: &[Member],
    outlook: &Outlook,
) -> Drains {
    let mut open: Vec<&Member> = members.iter().filter(|m| open_busy(m)).collect();
    let mut free: u64 = open.iter().map(|m| free_slots(m)).sum();
    let mut out = Drains::default();
    let pending = demand
        .pending
        .saturating_add(u64::from(demand.more_pending));
    if pending > free {
        undrain(policy, members, pending, free, &mut out);
        return out;
    }
    // Without an arrival and a boot estimate the planner cannot tell what is coming.
    let Some(expected) = outlook.boot.and_then(|b| outlook.arrivals_within(b)) else {
        return out;
    };
    let need = pending as f64 + expected;
    // What an open instance takes within a boot time: its free slots, and the tasks its busy
    // slots start after the ones they run (at the estimated duration; none without one). The
    // pending tasks need free slots now, whatever frees later.
    let per_slot = outlook
        .boot
        .and_then(|b| outlook.starts_per_slot(b))
        .unwrap_or(0.0);
    let takes = |m: &Member| free_slots(m) as f64 + f64::from(m.busy) * per_slot;
    // A free slot beyond the pending tasks for the next arrival: the margin between setting a
    // mark and taking it back (see the module doc).
    let keep_free = pending + u64::from(expected > 0.0);
    let mut supply: f64 = open.iter().map(|m| takes(m)).sum();
    open.sort_by(|a, b| {
        a.busy
            .cmp(&b.busy)
            .then(a.instance.launched_at.cmp(&b.instance.launched_at))
            .then_with(|| a.instance.id.cmp(&b.instance.id))
    });
    let mut left = open.len();
    let mut chosen: Vec<&Member> = Vec::new();
    for m in open {
        if left <= 1 || free.saturating_sub(free_slots(m)) < keep_free || supply - takes(m) < need {
            continue;
        }
        supply -= takes(m);
        free -= free_slots(m);
        left -= 1;
        chosen.push(m);
    }
    if chosen.is_empty() {
        return out;
    }
    let open_left = OpenLeft { free, supply, left };
    let reason = drain_reason(&chosen, pending, expected, outlook, &open_left);
    out.drained = chosen.iter().map(|m| m.instance.id.clone()).collect();
    out.actions.push(Action::DrainWorkers {
        fleet: policy.fleet.clone(),
        step: policy.step.clone(),
        workers: chosen.iter().flat_map(|m| worker_ids(m)).collect(),
        drain: true,
        reason,
    });
    out
}

/// What stays open after the drains: free slots, what those and the busy slots take within a
/// boot time, and how many busy instances.
struct OpenLeft {
    free: u64,
    supply: f64,
    left: usize,
}

/// Why `chosen` drain, e.g. `3 tasks pending and 1.5 expected within a boot time (...) fit in
/// the 17 slots free on the 3 busy instances left open (18.1 tasks within a boot, with the
/// slots their running tasks free): draining ...`.
fn drain_reason(
    chosen: &[&Member],
    pending: u64,
    expected: f64,
    outlook: &Outlook,
    open: &OpenLeft,
) -> String {
    let list: Vec<String> = chosen
        .iter()
        .map(|m| {
            format!(
                "{} ({} of {} busy)",
                m.instance.id,
                m.busy,
                m.busy as u64 + free_slots(m)
            )
        })
        .collect();
    format!(
        "{} pending and {expected:.1} expected within a boot time ({}) fit in the {} free on the {} left open ({:.1} tasks within a boot, with the slots their running tasks free): draining the emptiest busy {} so the remaining tasks pack (they finish what they run and are terminated once idle): {}",
        count(pending, "task"),
        outlook.describe(),
        count(open.free, "slot"),
        count(open.left as u64, "busy instance"),
        open.supply,
        if chosen.len() == 1 { "instance" } else { "instances" },
        list.join(", ")
    )
}

/// Clears the marks of workers still running tasks, most free slots first, until the open
/// free slots cover the pending tasks.
fn undrain(policy: &FleetPolicy, members: &[Member], pending: u64, free: u64, out: &mut Drains) {
    let mut back: Vec<&Member> = members
        .iter()
        .filter(|m| {
            matches!(m.class, Class::Ready { .. })
                && marked(m)
                && live_workers(m).any(|w| w.state == WorkerState::Active)
        })
        .collect();
    back.sort_by(|a, b| {
        free_slots(b)
            .cmp(&free_slots(a))
            .then_with(|| a.instance.id.cmp(&b.instance.id))
    });
    let mut covered = free;
    let mut chosen = Vec::new();
    for m in back {
        if covered >= pending {
            break;
        }
        covered += free_slots(m);
        chosen.push(m);
    }
    if chosen.is_empty() {
        return;
    }
    let ids: Vec<String> = chosen.iter().map(|m| m.instance.id.clone()).collect();
    out.actions.push(Action::DrainWorkers {
        fleet: policy.fleet.clone(),
        step: policy.step.clone(),
        workers: chosen.iter().flat_map(|m| worker_ids(m)).collect(),
        drain: false,
        reason: format!(
            "{} pending but only {} free on the busy instances left open: taking back the drain of {} still running tasks: {}",
            count(pending, "task"),
            count(free, "slot"),
            count(chosen.len() as u64, "instance"),
            ids.join(", ")
        ),
    });
    out.undrained = ids.into_iter().collect();
}

fn worker_ids(m: &Member) -> Vec<String> {
    live_workers(m).map(|w| w.worker_id.clone()).collect()
}
