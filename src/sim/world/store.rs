//! The simulated task store's housekeeping and claims, with the real semantics: dependants
//! are promoted once their dependencies succeeded, expired leases are requeued, and idle
//! slots claim the oldest pending tasks (workers in random order, like independent pollers).

use std::cmp::Reverse;

use rand::seq::SliceRandom;

use super::{TaskState, WorkerState, World};
use crate::clock::Millis;

impl World {
    /// The store's `promote_waiting`: waiting tasks whose dependencies all succeeded become
    /// pending.
    pub fn promote(&mut self, now: Millis) {
        let mut keep = Vec::new();
        let check = std::mem::take(&mut self.to_check);
        for t in check {
            if self.tasks[t].state != TaskState::Waiting {
                // Not submitted yet: it is checked again when submitted.
                continue;
            }
            let ready = self.tasks[t]
                .deps
                .iter()
                .all(|&d| self.tasks[d].state == TaskState::Succeeded);
            if ready {
                self.steps[self.tasks[t].fleet].waiting -= 1;
                self.make_pending(t, now);
            } else {
                keep.push(t);
            }
        }
        self.to_check = keep;
    }

    /// The store's `requeue_expired`: tasks whose worker vanished go back to pending once
    /// their lease has expired.
    pub fn requeue_expired(&mut self, now: Millis) {
        self.requeue_expired_in(None, now);
    }

    /// [`World::requeue_expired`] for one fleet's step only (`None`: every step).
    pub fn requeue_expired_in(&mut self, fleet: Option<usize>, now: Millis) {
        let tasks = &self.tasks;
        let (due, keep): (Vec<_>, Vec<_>) = self
            .orphans
            .iter()
            .partition(|(t, at)| *at <= now && fleet.is_none_or(|f| tasks[*t].fleet == f));
        self.orphans = keep;
        for (t, _) in due {
            self.steps[self.tasks[t].fleet].running -= 1;
            self.make_pending(t, now);
            self.tally.requeued_lease += 1;
        }
    }

    /// The store's `set_worker_drain`: the controller's drain mark on these workers, read by
    /// each at its next heartbeat.
    pub fn set_drain(&mut self, workers: &[String], drain: bool) {
        for &i in &self.alive {
            if let Some(w) = self.instances[i].worker.as_mut() {
                if workers.contains(&w.reg.worker_id) {
                    w.reg.drain_requested = drain;
                }
            }
        }
    }

    pub(super) fn claim(&mut self, now: Millis) {
        let mut order: Vec<usize> = self
            .alive
            .iter()
            .copied()
            .filter(|&i| {
                let inst = &self.instances[i];
                inst.worker
                    .as_ref()
                    .is_some_and(|w| w.state == WorkerState::Active && !w.drain_seen)
                    && inst.slots.iter().any(Option::is_none)
            })
            .collect();
        if order.is_empty() {
            return;
        }
        order.shuffle(&mut self.rng);
        for i in order {
            let f = self.instances[i].fleet;
            if self.steps[f].pending == 0 {
                continue;
            }
            self.accrue(i);
            let was_idle = self.instances[i].busy() == 0;
            let mut claimed = false;
            for s in 0..self.instances[i].slots.len() {
                if self.instances[i].slots[s].is_some() {
                    continue;
                }
                let Some(Reverse((_, t))) = self.steps[f].queue.pop() else {
                    break;
                };
                let step = &mut self.steps[f];
                step.pending -= 1;
                step.running += 1;
                let task = &mut self.tasks[t];
                task.state = TaskState::Running;
                if task.waited.is_none() {
                    task.waited = Some(now - task.runnable_at.unwrap_or(now));
                }
                self.instances[i].slots[s] = Some((t, now + task.duration));
                claimed = true;
            }
            if claimed {
                if let Some(w) = self.instances[i].worker.as_mut() {
                    w.last_busy_at = now;
                }
                if was_idle {
                    // The real worker writes its registration when an idle worker gets work.
                    self.refresh_one(i, now);
                }
            }
        }
    }
}
