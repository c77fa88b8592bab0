//! Upkeep decisions beside scaling: scale-in protection that follows what each instance's
//! worker does (on providers that have it), and tidying of worker registrations. Like the
//! scaling rules they are actions with reasons, planned only from a complete view (task store
//! read and instances listed), so that a failed read never unprotects or forgets anything.

use std::collections::HashSet;

use super::scale::count;
use super::{Action, FleetInput};
use crate::clock::Millis;
use crate::model::WorkerState;

/// A worker that exited (or vanished) and whose instance is not listed any more is forgotten
/// after this long without a heartbeat, even if it never said it exited.
pub const FORGET_AFTER: Millis = 10 * 60 * 1000;

/// The upkeep actions of one fleet (none unless its store and instances were both read).
pub(super) fn actions(input: &FleetInput, now: Millis) -> Vec<Action> {
    let mut actions = Vec::new();
    if input.scale_in_protection {
        actions.extend(protection(input));
    }
    actions.extend(workers(input, now));
    actions
}

/// Scale-in protection on while an instance's worker is busy, off when it is idle.
fn protection(input: &FleetInput) -> Vec<Action> {
    let (Ok(view), Ok(instances)) = (&input.step, &input.instances) else {
        return Vec::new();
    };
    let busy: HashSet<&str> = view
        .workers
        .iter()
        .filter(|w| w.busy_slots > 0)
        .filter_map(|w| w.instance_id.as_deref())
        .collect();
    let (mut protect, mut unprotect) = (Vec::new(), Vec::new());
    for i in instances {
        let is_busy = busy.contains(i.id.as_str());
        if is_busy && !i.protected {
            protect.push(i.id.clone());
        } else if !is_busy && i.protected {
            unprotect.push(i.id.clone());
        }
    }
    // Sorted: the plan does not depend on the order of the listing.
    protect.sort();
    unprotect.sort();
    let fleet = &input.policy.fleet;
    let mut actions = Vec::new();
    if !protect.is_empty() {
        actions.push(Action::SetProtection {
            fleet: fleet.clone(),
            reason: format!(
                "{} now running tasks: protected from the group's scale-in",
                count(protect.len() as u64, "instance")
            ),
            ids: protect,
            protected: true,
        });
    }
    if !unprotect.is_empty() {
        actions.push(Action::SetProtection {
            fleet: fleet.clone(),
            reason: format!(
                "{} idle now: the group may remove them again",
                count(unprotect.len() as u64, "instance")
            ),
            ids: unprotect,
            protected: false,
        });
    }
    actions
}

/// Removes the registrations of workers that exited (or vanished long ago) whose instance is
/// gone, and marks as gone a worker silent for longer than the lost threshold plus a lease
/// TTL: every lease it held has expired by then, so its instance no longer counts as busy and
/// can be replaced. A worker that was only cut off registers again with its next heartbeat.
fn workers(input: &FleetInput, now: Millis) -> Vec<Action> {
    let (Ok(view), Ok(instances)) = (&input.step, &input.instances) else {
        return Vec::new();
    };
    let dead_after = input.policy.worker_dead_after;
    // A set: a fleet of a thousand instances and workers is a million comparisons per pass
    // otherwise.
    let listed_ids: HashSet<&str> = instances.iter().map(|i| i.id.as_str()).collect();
    let (mut forget, mut retire) = (Vec::new(), Vec::new());
    for w in &view.workers {
        let listed = w
            .instance_id
            .as_deref()
            .is_some_and(|id| listed_ids.contains(id));
        let exited = w.state == WorkerState::Gone;
        let silent = now - w.last_seen;
        if !listed && (exited || silent > FORGET_AFTER) {
            forget.push(w.worker_id.clone());
        } else if listed && !exited && silent > dead_after {
            retire.push(w.worker_id.clone());
        }
    }
    forget.sort();
    retire.sort();
    let fleet = &input.policy.fleet;
    let mut actions = Vec::new();
    if !forget.is_empty() {
        actions.push(Action::ForgetWorkers {
            fleet: fleet.clone(),
            reason: format!(
                "{} exited or silent for over {} s on no listed instance",
                count(forget.len() as u64, "worker"),
                FORGET_AFTER / 1000
            ),
            workers: forget,
        });
    }
    if !retire.is_empty() {
        actions.push(Action::RetireWorkers {
            fleet: fleet.clone(),
            reason: format!(
                "{} silent for over {} s (lost threshold plus a lease TTL): presumed dead, \
                 every lease it held has expired",
                count(retire.len() as u64, "worker"),
                dead_after / 1000
            ),
            workers: retire,
        });
    }
    actions
}
