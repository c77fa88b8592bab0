//! What only the clairvoyant reference may ask the world: how many of a fleet's tasks will
//! hold or want a slot at a future time, from the tasks' submission times, the running tasks'
//! end times and the dependencies.

use super::{TaskState, World};
use crate::clock::Millis;

impl World {
    /// Tasks of `fleet` that will be running or runnable at `at`, as far as it can be known
    /// now: running tasks that end after `at`; pending tasks; tasks submitted by `at` whose
    /// dependencies have succeeded or are running and end by `at`.
    pub fn foresee(&self, fleet: usize, at: Millis) -> u64 {
        let ends: Vec<Option<Millis>> = self.running_ends();
        let mut n = 0u64;
        for (t, task) in self.tasks.iter().enumerate() {
            if task.fleet != fleet {
                continue;
            }
            let wants = match task.state {
                TaskState::Succeeded => false,
                TaskState::Pending => true,
                TaskState::Running => ends[t].is_none_or(|end| end > at),
                TaskState::Unsubmitted | TaskState::Waiting => {
                    task.submit <= at
                        && task.deps.iter().all(|&d| match self.tasks[d].state {
                            TaskState::Succeeded => true,
                            TaskState::Running => ends[d].is_some_and(|end| end <= at),
                            _ => false,
                        })
                }
            };
            n += u64::from(wants);
        }
        n
    }

    /// For every task, when it ends if it is running on an instance.
    fn running_ends(&self) -> Vec<Option<Millis>> {
        let mut ends = vec![None; self.tasks.len()];
        for &i in &self.alive {
            for (t, end) in self.instances[i].slots.iter().flatten() {
                ends[*t] = Some(*end);
            }
        }
        ends
    }
}
