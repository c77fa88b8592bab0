//! Who decides launches and terminations in a simulation: anamo's controller (the real
//! planner), or one of two baselines.

use std::collections::VecDeque;

use rand::seq::IndexedRandom;

use super::world::{WorkerExit, World};
use crate::clock::Millis;
use crate::model::Backlog;
use crate::planner::execute::{self, LaunchAnswer, Step};
use crate::planner::ledger::{FleetLedger, LaunchIntent};
use crate::planner::{self, Action, FleetPlan, PlanInput, StepView};
use crate::provider::Instance;

/// A scaling policy, called once per tick after the world has advanced.
pub(crate) trait Policy {
    /// How workers end on their own under this policy.
    fn worker_exit(&self) -> WorkerExit;
    /// Whether the world promotes dependants and requeues expired leases every tick (the
    /// baselines) rather than when the policy asks (anamo's controller, once per pass).
    fn housekeeps_every_tick(&self) -> bool;
    fn act(&mut self, world: &mut World);
    /// Instances that may stay once every task is done (the simulation ends there).
    fn floor(&self, world: &World) -> u32;
}

/// anamo's controller: every `interval`, promote waiting tasks (housekeeping), observe each
/// fleet, call [`planner::plan`], and carry the plan out in the controller's own steps
/// ([`execute::steps`]: unconfirmed launches again, launches begun in the fleet's
/// [`FleetLedger`], each answer recorded by [`execute::finish_launch`], terminations and
/// requeues), with the world as the provider and the store.
pub(crate) struct Anamo {
    interval: Millis,
    cool_off: Millis,
    next_pass: Option<Millis>,
    ledgers: Vec<FleetLedger>,
    batches: u64,
}

impl Anamo {
    pub fn new(world: &World) -> Self {
        Anamo {
            interval: world.settings().interval,
            cool_off: world.settings().cool_off,
            next_pass: None,
            ledgers: world.fleets.iter().map(|_| FleetLedger::fresh()).collect(),
            batches: 0,
        }
    }
}

impl Anamo {
    /// Issues the launch of `intent` for fleet `fi` to the world (the simulated provider) and
    /// records its answer as the controller does ([`execute::finish_launch`]).
    fn issue(&mut self, world: &mut World, fi: usize, intent: &LaunchIntent) {
        let now = world.now;
        let answer = match world.launch(fi, intent.count, &intent.batch) {
            Ok(ids) => LaunchAnswer::Launched { ids },
            Err(e) => LaunchAnswer::failed(&e),
        };
        // Like EC2, the simulated provider is treated as listing new instances only on the
        // next pass.
        let ledger = &mut self.ledgers[fi];
        execute::finish_launch(ledger, intent, answer, now, self.cool_off, false);
    }

    /// Carries out fleet `fi`'s plan in the controller's steps ([`execute::steps`]).
    fn execute(&mut self, world: &mut World, fi: usize, fp: &FleetPlan, listed: &[Instance]) {
        let now = world.now;
        for step in execute::steps(fp, &self.ledgers[fi], true) {
            match step {
                Step::Reissue(intent) => self.issue(world, fi, &intent),
                Step::Act(Action::Launch { count, .. }) => {
                    self.batches += 1;
                    let unique = format!("{:06}", self.batches);
                    let ledger = &mut self.ledgers[fi];
                    let intent =
                        execute::begin_launch(ledger, &fp.fleet, &unique, *count, now, listed);
                    self.issue(world, fi, &intent);
                }
                Step::Act(Action::Terminate { ids, .. }) => world.terminate(ids),
                Step::Act(Action::RequeueExpired { .. }) => world.requeue_expired_in(Some(fi), now),
                Step::Act(Action::DrainWorkers { workers, drain, .. }) => {
                    world.set_drain(workers, *drain)
                }
                // The simulated instances have no scale-in protection, and their workers never
                // stop heartbeating while their instance is up: nothing is marked lost, retired
                // or forgotten.
                Step::Act(
                    Action::MarkLost { .. }
                    | Action::SetProtection { .. }
                    | Action::ForgetWorkers { .. }
                    | Action::RetireWorkers { .. },
                ) => {}
            }
        }
    }
}

impl Policy for Anamo {
    fn worker_exit(&self) -> WorkerExit {
        WorkerExit::IdleExit
    }

    fn housekeeps_every_tick(&self) -> bool {
        false
    }

    fn act(&mut self, world: &mut World) {
        let now = world.now;
        if self.next_pass.is_some_and(|t| now < t) {
            return;
        }
        self.next_pass = Some(now + self.interval);
        // Housekeeping: expired leases are requeued by the plan's actions, as the controller
        // does for steps with a fleet (every step here has one).
        world.promote(now);

        let mut input = PlanInput::default();
        for fi in 0..world.fleets.len() {
            let mut policy = world.fleets[fi].policy.clone();
            if policy.budget.is_some() {
                // As the controller hands its cost ledger's figures to the plan.
                policy.spend = Some(world.spend(fi));
            }
            let step = StepView {
                // As a controller reads it: counted up to the fleet's backlog limit.
                backlog: Backlog::from_counts(&world.counts(fi), policy.backlog_limit()),
                workers: world.registrations(fi),
                recent: world.recent(fi),
            };
            let instances = world.list(fi);
            // The simulated provider has no scale-in protection.
            let fleet = self.ledgers[fi].reconcile(policy, Ok(step), Ok(instances), false, now);
            input.fleets.push(fleet);
        }
        let plan = planner::plan(&input, now);

        for (fi, fp) in plan.fleets.iter().enumerate() {
            let listed = input.fleets[fi].instances.as_deref().unwrap_or(&[]);
            self.execute(world, fi, fp, listed);
        }
    }

    fn floor(&self, world: &World) -> u32 {
        world.fleets.iter().map(|f| f.policy.min_instances).sum()
    }
}

/// PyAnamo's way: `n` instances per fleet from the start; each worker exits (and its
/// instance shuts down) once its step has nothing pending, waiting or still to come.
/// Instances lost to spot interruptions are replaced while work remains, as a spot fleet
/// request keeps its target capacity; a capacity error is retried after the cool-off.
pub(crate) struct Static {
    per_fleet: Vec<u32>,
    retry_at: Vec<Millis>,
    cool_off: Millis,
}

impl Static {
    pub fn new(world: &World, n: Option<u32>) -> Self {
        Static {
            per_fleet: world
                .fleets
                .iter()
                .map(|f| n.unwrap_or(f.policy.max_instances))
                .collect(),
            retry_at: vec![Millis::MIN; world.fleets.len()],
            cool_off: world.settings().cool_off,
        }
    }
}

impl Policy for Static {
    fn worker_exit(&self) -> WorkerExit {
        WorkerExit::QueueEmpty
    }

    fn housekeeps_every_tick(&self) -> bool {
        true
    }

    fn act(&mut self, world: &mut World) {
        let now = world.now;
        for fi in 0..world.fleets.len() {
            if world.remaining(fi) == 0 || now < self.retry_at[fi] {
                continue;
            }
            let alive = world.alive_in(fi).count() as u32;
            let missing = self.per_fleet[fi].saturating_sub(alive);
            if missing > 0 {
                let batch = format!("static-{fi}-{now}");
                if world.launch(fi, missing, &batch).is_err() {
                    self.retry_at[fi] = now + self.cool_off;
                }
            }
        }
    }

    fn floor(&self, _: &World) -> u32 {
        0
    }
}

/// A KEDA-like scaler over an Auto Scaling group: every `poll`, desired =
/// ceil((pending + running) / tasksPerInstance) within [min, max]; scale up at once, scale down
/// to the highest desired of the last `cooldown` (the HPA stabilization window), removing
/// instances chosen without regard to what they run (as an ASG does), whose tasks come back
/// when their leases expire.
pub(crate) struct Keda {
    poll: Millis,
    cooldown: Millis,
    next_poll: Option<Millis>,
    history: Vec<VecDeque<(Millis, u32)>>,
}

impl Keda {
    pub fn new(world: &World) -> Self {
        Keda {
            poll: world.settings().keda_poll,
            cooldown: world.settings().keda_cooldown,
            next_poll: None,
            history: world.fleets.iter().map(|_| VecDeque::new()).collect(),
        }
    }
}

impl Policy for Keda {
    fn worker_exit(&self) -> WorkerExit {
        WorkerExit::Never
    }

    fn housekeeps_every_tick(&self) -> bool {
        true
    }

    fn act(&mut self, world: &mut World) {
        let now = world.now;
        if self.next_poll.is_some_and(|t| now < t) {
            return;
        }
        self.next_poll = Some(now + self.poll);
        for fi in 0..world.fleets.len() {
            let p = &world.fleets[fi].policy;
            let c = world.counts(fi);
            let tpi = u64::from(p.tasks_per_instance.max(1));
            let want = u32::try_from((c.pending + c.running).div_ceil(tpi))
                .unwrap_or(u32::MAX)
                .clamp(p.min_instances.min(p.max_instances), p.max_instances);
            let h = &mut self.history[fi];
            h.push_back((now, want));
            while h.front().is_some_and(|(t, _)| now - t > self.cooldown) {
                h.pop_front();
            }
            let desired = h.iter().map(|(_, w)| *w).max().unwrap_or(want);
            let alive: Vec<String> = world.alive_in(fi).map(|i| i.id.clone()).collect();
            let current = alive.len() as u32;
            if desired > current {
                let batch = format!("keda-{fi}-{now}");
                let _ = world.launch(fi, desired - current, &batch);
            } else if desired < current {
                let n = (current - desired) as usize;
                let victims: Vec<String> = alive.choose_multiple(world.rng(), n).cloned().collect();
                world.terminate(&victims);
            }
        }
    }

    fn floor(&self, world: &World) -> u32 {
        world.fleets.iter().map(|f| f.policy.min_instances).sum()
    }
}

/// The clairvoyant reference: it knows every task's submission time and duration. Every
/// `interval` (the controller's, so that it is held to the same granularity) it sizes each
/// fleet for the tasks that will be running or runnable one boot from now (launching exactly
/// one boot ahead, never above maxInstances), and terminates idle instances once nothing is
/// pending and fewer instances are needed one boot ahead: an instance goes when its last task
/// has ended and no task will want it before a replacement could boot. Workers never exit on
/// their own.
pub(crate) struct Clairvoyant {
    interval: Millis,
    next_pass: Option<Millis>,
    batches: u64,
}

impl Clairvoyant {
    pub fn new(world: &World) -> Self {
        Clairvoyant {
            interval: world.settings().interval,
            next_pass: None,
            batches: 0,
        }
    }
}

impl Policy for Clairvoyant {
    fn worker_exit(&self) -> WorkerExit {
        WorkerExit::Never
    }

    fn housekeeps_every_tick(&self) -> bool {
        true
    }

    fn act(&mut self, world: &mut World) {
        let now = world.now;
        if self.next_pass.is_some_and(|t| now < t) {
            return;
        }
        self.next_pass = Some(now + self.interval);
        let ahead = now + world.settings().boot_delay;
        for fi in 0..world.fleets.len() {
            let p = &world.fleets[fi].policy;
            let slots = u64::from(p.slots_per_instance.max(1));
            let (min, max) = (p.min_instances.min(p.max_instances), p.max_instances);
            let wanted = u32::try_from(world.foresee(fi, ahead).div_ceil(slots))
                .unwrap_or(u32::MAX)
                .clamp(min, max);
            let alive = world.alive_in(fi).count() as u32;
            if wanted > alive {
                self.batches += 1;
                let batch = format!("clairvoyant-{fi}-{}", self.batches);
                // A refused launch is tried again at the next pass.
                let _ = world.launch(fi, wanted - alive, &batch);
            } else if alive > wanted && world.counts(fi).pending == 0 {
                let idle: Vec<String> = world
                    .alive_in(fi)
                    .filter(|i| !i.booting() && i.busy() == 0)
                    .map(|i| i.id.clone())
                    .take((alive - wanted) as usize)
                    .collect();
                world.terminate(&idle);
            }
        }
    }

    fn floor(&self, world: &World) -> u32 {
        world.fleets.iter().map(|f| f.policy.min_instances).sum()
    }
}
