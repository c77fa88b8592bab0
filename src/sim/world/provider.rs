//! The simulated provider and task store as policies see them: listings, counts and
//! registrations read the world; launches and terminations change it.

use std::cmp::Reverse;

use rand::Rng;

use super::super::trace::exponential;
use super::{SimInstance, World};
use crate::clock::Millis;
use crate::model::{StepCounts, WorkerInfo};
use crate::planner::estimate::RecentTasks;
use crate::provider::offerings::Lifecycle;
use crate::provider::{Instance, ProviderError};

impl World {
    /// `FleetProvider::list`: the fleet's instances (booting ones as `pending`).
    pub fn list(&self, fleet: usize) -> Vec<Instance> {
        self.alive
            .iter()
            .filter(|&&i| self.instances[i].fleet == fleet)
            .map(|&i| self.listing(i))
            .collect()
    }

    /// The step's counts, as `TaskStore::counts` reports them.
    pub fn counts(&self, fleet: usize) -> StepCounts {
        let s = &self.steps[fleet];
        StepCounts {
            step: self.fleets[fleet].policy.step.clone(),
            waiting: s.waiting,
            pending: s.pending,
            running: s.running,
            succeeded: s.succeeded,
            failed: 0,
            cancelled: 0,
            held: 0,
            retrying: 0,
            oldest_pending_at: s.queue.peek().map(|Reverse((submit, _))| *submit),
        }
    }

    /// The step's recent run times and arrivals, as the planner's estimates take them.
    pub fn recent(&self, fleet: usize) -> RecentTasks {
        let s = &self.steps[fleet];
        RecentTasks {
            durations: s.recent_durations.iter().copied().collect(),
            runnable_at: s.recent_runnable.iter().copied().collect(),
            ..Default::default()
        }
    }

    /// The registrations of the fleet's workers, as the store has them.
    pub fn registrations(&self, fleet: usize) -> Vec<WorkerInfo> {
        self.alive_in(fleet)
            .filter_map(|inst| inst.worker.as_ref().map(|w| w.reg.clone()))
            .collect()
    }

    /// `FleetProvider::launch`: `count` instances, or a capacity error (with the configured
    /// probability, per call). `batch` is the idempotency token, as EC2's `ClientToken`: a
    /// batch issued again launches only what it lacks.
    pub fn launch(&mut self, fleet: usize, count: u32, batch: &str) -> Result<u32, ProviderError> {
        self.tally.launch_calls += 1;
        self.tally.first_launch_at.get_or_insert(self.now);
        let had = self.instances.iter().filter(|i| i.batch == batch).count() as u32;
        let count = had + self.launch_quota(count.saturating_sub(had))?;
        if let Some(cap) = self.settings.capacity.clone() {
            return self.launch_with_capacity(fleet, count, batch, &cap);
        }
        let p = self.settings.capacity_error_prob;
        if p > 0.0 && self.rng.random::<f64>() < p {
            self.tally.capacity_errors += 1;
            return Err(ProviderError::InsufficientCapacity(
                "InsufficientInstanceCapacity (simulated)".into(),
            ));
        }
        Ok(self.spawn(fleet, count, batch, None).0)
    }

    /// Starts what batch `batch` of `count` instances lacks, of `lifecycle` (`None`: no
    /// capacity type); the batch's instances and the new ones among them.
    pub(super) fn spawn(
        &mut self,
        fleet: usize,
        count: u32,
        batch: &str,
        lifecycle: Option<Lifecycle>,
    ) -> (u32, u32) {
        let now = self.now;
        let had = self.instances.iter().filter(|i| i.batch == batch).count() as u32;
        let count = count.saturating_sub(had);
        let slots = self.fleets[fleet].policy.slots_per_instance.max(1) as usize;
        let rate = self.interruption_rate(lifecycle);
        for _ in 0..count {
            let jitter = if self.settings.boot_jitter > 0 {
                self.rng.random_range(0..=self.settings.boot_jitter)
            } else {
                0
            };
            let interrupt_at = (rate > 0.0).then(|| {
                let hours = exponential(&mut self.rng, rate);
                now + (hours * 3_600_000.0) as Millis
            });
            let idx = self.instances.len();
            let id = format!("i-{idx:06}");
            self.by_id.insert(id.clone(), idx);
            self.instances.push(SimInstance {
                id,
                fleet,
                batch: batch.to_string(),
                lifecycle,
                launched_at: now,
                ready_at: now + self.settings.boot_delay + jitter,
                interrupt_at,
                vanish_at: None,
                terminated_at: None,
                worker: None,
                slots: vec![None; slots],
            });
            self.alive.push(idx);
        }
        self.tally.launches += u64::from(count);
        (had + count, count)
    }

    /// `FleetProvider::terminate`, by a policy. Terminating an instance with busy slots is
    /// counted (anamo's planner must never do it).
    pub fn terminate(&mut self, ids: &[String]) {
        let now = self.now;
        // Throttled calls terminate nothing; the policy sees the instances again next pass.
        let ids = &ids[..self.terminate_quota(ids.len())];
        for id in ids {
            let Some(&i) = self.by_id.get(id) else {
                continue;
            };
            if self.instances[i].terminated_at.is_some() {
                continue;
            }
            if self.instances[i].busy() > 0 {
                self.tally.busy_terminated += 1;
            }
            self.tally.terminations += 1;
            self.remove(i, now);
        }
    }

    /// Queue waits (runnable → first claim) of every claimed task, in milliseconds.
    pub fn waits(&self) -> Vec<Millis> {
        self.tasks.iter().filter_map(|t| t.waited).collect()
    }
}
