//! The simulated world: a task store with the real lease and dependency semantics, a provider
//! that boots instances after a delay (and may refuse capacity or lose spot instances), and a
//! worker on every instance. A [`Policy`](super::policy::Policy) decides launches and
//! terminations; the world advances in fixed ticks.
//!
//! Per tick, in this order: running tasks finish; spot notices arrive (the worker hands its
//! tasks back and exits, as the real worker does) and noticed instances disappear after the
//! notice; booted instances register their worker; tasks are submitted; idle slots claim
//! pending tasks (oldest first, workers in random order, like independent pollers); workers
//! exit (idle exit, or the static baseline's "queue empty"); registrations refresh on their
//! heartbeat; the policy acts; the tick is billed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{SimFleet, SimSettings};
use crate::clock::Millis;
use crate::cost::ledger::CostLedger;
use crate::model::{WorkerInfo, WorkerState};
use crate::provider::offerings::Lifecycle;

pub use capacity::{CapacityUse, SimCapacity};

mod capacity;
mod cost;
mod oracle;
mod provider;
pub(crate) mod quota;
mod store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskState {
    Unsubmitted,
    Waiting,
    Pending,
    Running,
    Succeeded,
}

#[derive(Debug)]
pub(crate) struct SimTask {
    fleet: usize,
    duration: Millis,
    submit: Millis,
    deps: Vec<usize>,
    dependents: Vec<usize>,
    state: TaskState,
    /// When the task first became pending (for queue waits).
    runnable_at: Option<Millis>,
    waited: Option<Millis>,
}

/// How workers end on their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerExit {
    /// Per the fleet's `idleExit` (none: workers stay until terminated).
    IdleExit,
    /// PyAnamo's way: exit once the step has nothing pending, waiting or still to be
    /// submitted, and no slot is busy; the instance shuts itself down.
    QueueEmpty,
    /// Never (the KEDA-like scaler removes instances).
    Never,
}

#[derive(Debug)]
struct SimWorker {
    state: WorkerState,
    started_at: Millis,
    last_busy_at: Millis,
    /// What the store has (refreshed on the heartbeat, on idle → busy and on exit).
    reg: WorkerInfo,
    next_refresh: Millis,
    /// The controller's drain mark as the worker last read it: it claims nothing and exits
    /// once idle.
    drain_seen: bool,
}

#[derive(Debug)]
pub(crate) struct SimInstance {
    pub id: String,
    pub fleet: usize,
    batch: String,
    /// Spot or on-demand, with a capacity type (see `capacity.rs`).
    lifecycle: Option<Lifecycle>,
    launched_at: Millis,
    ready_at: Millis,
    interrupt_at: Option<Millis>,
    /// After a spot notice: when the cloud takes the instance away.
    vanish_at: Option<Millis>,
    terminated_at: Option<Millis>,
    worker: Option<SimWorker>,
    /// Per slot: the running task and when it finishes.
    slots: Vec<Option<(usize, Millis)>>,
}

impl SimInstance {
    pub fn busy(&self) -> u32 {
        self.slots.iter().filter(|s| s.is_some()).count() as u32
    }

    pub fn booting(&self) -> bool {
        self.worker.is_none()
    }
}

#[derive(Debug, Default)]
struct StepState {
    /// The last run times and runnable times, newest last (at most `estimate::WINDOW`).
    recent_durations: VecDeque<Millis>,
    recent_runnable: VecDeque<Millis>,
    /// Pending tasks, oldest (by submission) first.
    queue: BinaryHeap<Reverse<(Millis, usize)>>,
    unsubmitted: u64,
    waiting: u64,
    pending: u64,
    running: u64,
    succeeded: u64,
}

/// What happened, summed over the run.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tally {
    pub launches: u64,
    pub launch_calls: u64,
    pub capacity_errors: u64,
    pub spot_interruptions: u64,
    pub requeued_spot: u64,
    pub requeued_lease: u64,
    pub busy_terminated: u64,
    pub terminations: u64,
    pub peak_instances: u32,
    pub last_success: Millis,
    /// Provider calls refused by the EC2 API quotas (`quota.rs`).
    pub throttled_calls: u64,
    /// The first launch call, and when the fleet first reached its peak size.
    pub first_launch_at: Option<Millis>,
    pub peak_at: Millis,
}

/// One point of the fleet-size/backlog timeline.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub t_ms: Millis,
    /// Instances alive (booting included).
    pub instances: u32,
    pub busy: u32,
    pub pending: u64,
    pub running: u64,
}

pub(crate) struct World {
    pub now: Millis,
    pub fleets: Vec<SimFleet>,
    settings: SimSettings,
    tasks: Vec<SimTask>,
    /// Task indices by submission time.
    arrivals: Vec<usize>,
    next_arrival: usize,
    steps: Vec<StepState>,
    pub instances: Vec<SimInstance>,
    by_id: BTreeMap<String, usize>,
    /// Indices of instances not yet terminated.
    alive: Vec<usize>,
    /// Waiting tasks to look at on the next promotion.
    to_check: Vec<usize>,
    /// Tasks whose instance was terminated under them: back to pending at lease expiry.
    orphans: Vec<(usize, Millis)>,
    exit: WorkerExit,
    /// Promote and requeue every tick (baselines) instead of when the policy asks (anamo's
    /// controller does it once per pass).
    pub housekeep_every_tick: bool,
    rng: ChaCha8Rng,
    pub tally: Tally,
    /// What each fleet's instances cost (see `cost.rs`).
    pub cost: Vec<CostLedger>,
    pub timeline: Vec<Sample>,
    next_sample: Millis,
    /// Offerings caches and what each capacity type cost (see `capacity.rs`).
    capacity: capacity::CapacityWorld,
    /// The account's EC2 API buckets (none: calls are never throttled).
    quotas: Option<quota::QuotaState>,
}

/// Keeps the last `estimate::WINDOW` values.
fn remember(window: &mut VecDeque<Millis>, value: Millis) {
    if window.len() == crate::planner::estimate::WINDOW {
        window.pop_front();
    }
    window.push_back(value);
}

/// Time between timeline samples.
const SAMPLE_EVERY: Millis = 30_000;

impl World {
    /// A world for `fleets` (one per step) and the trace's tasks, already mapped to fleet
    /// indices: `(fleet, id, submit, duration)`.
    pub fn new(
        fleets: Vec<SimFleet>,
        settings: SimSettings,
        tasks: &[(usize, String, Millis, Millis)],
        exit: WorkerExit,
        stream: u64,
    ) -> World {
        let mut by_key: BTreeMap<(usize, &str), usize> = BTreeMap::new();
        for (i, (f, id, _, _)) in tasks.iter().enumerate() {
            by_key.insert((*f, id.as_str()), i);
        }
        let dep_fleets: Vec<Vec<usize>> = fleets
            .iter()
            .map(|f| {
                f.depends_on
                    .iter()
                    .filter_map(|d| fleets.iter().position(|g| &g.policy.step == d))
                    .collect()
            })
            .collect();
        let mut sim_tasks: Vec<SimTask> = tasks
            .iter()
            .map(|(f, id, submit, duration)| SimTask {
                fleet: *f,
                duration: *duration,
                submit: *submit,
                deps: dep_fleets[*f]
                    .iter()
                    .filter_map(|d| by_key.get(&(*d, id.as_str())).copied())
                    .collect(),
                dependents: Vec::new(),
                state: TaskState::Unsubmitted,
                runnable_at: None,
                waited: None,
            })
            .collect();
        for i in 0..sim_tasks.len() {
            for d in sim_tasks[i].deps.clone() {
                sim_tasks[d].dependents.push(i);
            }
        }
        let mut steps: Vec<StepState> = fleets.iter().map(|_| StepState::default()).collect();
        for t in &sim_tasks {
            steps[t.fleet].unsubmitted += 1;
        }
        let mut arrivals: Vec<usize> = (0..sim_tasks.len()).collect();
        arrivals.sort_by_key(|&i| (sim_tasks[i].submit, i));
        let start = arrivals.first().map_or(0, |&i| sim_tasks[i].submit);
        let n_fleets = fleets.len();
        let settings_quotas = settings.ec2_quotas;
        World {
            now: start,
            fleets,
            rng: ChaCha8Rng::seed_from_u64(
                settings.seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ),
            settings,
            tasks: sim_tasks,
            arrivals,
            next_arrival: 0,
            steps,
            instances: Vec::new(),
            by_id: BTreeMap::new(),
            alive: Vec::new(),
            to_check: Vec::new(),
            orphans: Vec::new(),
            exit,
            housekeep_every_tick: false,
            tally: Tally::default(),
            cost: vec![CostLedger::default(); n_fleets],
            timeline: Vec::new(),
            next_sample: start,
            capacity: Default::default(),
            quotas: settings_quotas.map(|q| quota::QuotaState::new(&q, start)),
        }
    }

    pub fn start(&self) -> Millis {
        self.arrivals.first().map_or(0, |&i| self.tasks[i].submit)
    }

    pub fn settings(&self) -> &SimSettings {
        &self.settings
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// Every task succeeded.
    pub fn all_done(&self) -> bool {
        self.steps
            .iter()
            .all(|s| s.unsubmitted + s.waiting + s.pending + s.running == 0)
    }

    pub fn unfinished(&self) -> u64 {
        self.steps
            .iter()
            .map(|s| s.unsubmitted + s.waiting + s.pending + s.running)
            .sum()
    }

    /// Whether the trace has tasks of the fleet's step.
    pub fn has_tasks(&self, fleet: usize) -> bool {
        self.tasks.iter().any(|t| t.fleet == fleet)
    }

    /// Work of a fleet's step that is not running yet (pending, waiting, not yet submitted).
    pub fn remaining(&self, fleet: usize) -> u64 {
        let s = &self.steps[fleet];
        s.unsubmitted + s.waiting + s.pending
    }

    pub fn alive(&self) -> impl Iterator<Item = &SimInstance> {
        self.alive.iter().map(|&i| &self.instances[i])
    }

    pub fn alive_in(&self, fleet: usize) -> impl Iterator<Item = &SimInstance> {
        self.alive().filter(move |i| i.fleet == fleet)
    }

    /// First part of a tick: finishing tasks, spot events, boots, submissions, claims, worker
    /// exits and registration refreshes.
    pub fn advance(&mut self) {
        let now = self.now;
        self.finish_tasks(now);
        self.spot_events(now);
        self.boot(now);
        self.submit(now);
        if self.housekeep_every_tick {
            self.promote(now);
            self.requeue_expired(now);
        }
        self.claim(now);
        self.worker_exits(now);
        self.refresh_registrations(now);
    }

    /// Last part of a tick: sample the timeline; then move the clock on.
    pub fn finish_tick(&mut self) {
        let tick = self.settings.tick;
        let alive = self.alive.len() as u32;
        if alive > self.tally.peak_instances {
            self.tally.peak_at = self.now;
        }
        self.tally.peak_instances = self.tally.peak_instances.max(alive);
        if self.now >= self.next_sample {
            self.next_sample = self.now + SAMPLE_EVERY;
            self.timeline.push(Sample {
                t_ms: self.now - self.start(),
                instances: alive,
                busy: self.alive().filter(|i| i.busy() > 0).count() as u32,
                pending: self.steps.iter().map(|s| s.pending).sum(),
                running: self.steps.iter().map(|s| s.running).sum(),
            });
        }
        self.now += tick;
    }

    fn finish_tasks(&mut self, now: Millis) {
        for k in 0..self.alive.len() {
            let i = self.alive[k];
            let ends = |s: &Option<(usize, Millis)>| matches!(s, Some((_, at)) if *at <= now);
            if !self.instances[i].slots.iter().any(ends) {
                continue;
            }
            self.accrue(i);
            let mut finished = Vec::new();
            let inst = &mut self.instances[i];
            for slot in inst.slots.iter_mut() {
                if let Some((task, at)) = *slot {
                    if at <= now {
                        finished.push(task);
                        *slot = None;
                    }
                }
            }
            if finished.is_empty() {
                continue;
            }
            if inst.busy() == 0 {
                if let Some(w) = inst.worker.as_mut() {
                    w.last_busy_at = now;
                }
            }
            for t in finished {
                self.succeed(t, now);
            }
        }
    }

    fn succeed(&mut self, t: usize, now: Millis) {
        let task = &mut self.tasks[t];
        task.state = TaskState::Succeeded;
        let s = &mut self.steps[task.fleet];
        s.running -= 1;
        s.succeeded += 1;
        remember(&mut s.recent_durations, task.duration);
        self.tally.last_success = self.tally.last_success.max(now);
        let dependents = task.dependents.clone();
        self.to_check.extend(dependents);
    }

    fn make_pending(&mut self, t: usize, now: Millis) {
        let task = &mut self.tasks[t];
        task.state = TaskState::Pending;
        task.runnable_at.get_or_insert(now);
        let s = &mut self.steps[task.fleet];
        s.pending += 1;
        remember(&mut s.recent_runnable, now);
        s.queue.push(Reverse((task.submit, t)));
    }

    fn spot_events(&mut self, now: Millis) {
        let notice = self.settings.spot_notice;
        for k in 0..self.alive.len() {
            let i = self.alive[k];
            let inst = &self.instances[i];
            if inst.vanish_at.is_none() && inst.interrupt_at.is_some_and(|at| at <= now) {
                self.tally.spot_interruptions += 1;
                self.note_interruption(i);
                self.accrue(i);
                let handed_back: Vec<usize> = self.instances[i]
                    .slots
                    .iter_mut()
                    .filter_map(|s| s.take().map(|(t, _)| t))
                    .collect();
                for t in handed_back {
                    self.steps[self.tasks[t].fleet].running -= 1;
                    self.make_pending(t, now);
                    self.tally.requeued_spot += 1;
                }
                let inst = &mut self.instances[i];
                inst.vanish_at = Some(now + notice);
                if let Some(w) = inst.worker.as_mut() {
                    w.state = WorkerState::Gone;
                    w.last_busy_at = now;
                }
                self.refresh_one(i, now);
            }
        }
        let vanished: Vec<usize> = self
            .alive
            .iter()
            .copied()
            .filter(|&i| self.instances[i].vanish_at.is_some_and(|at| at <= now))
            .collect();
        for i in vanished {
            self.remove(i, now);
        }
    }

    fn boot(&mut self, now: Millis) {
        let heartbeat = |f: &SimFleet| f.heartbeat;
        for k in 0..self.alive.len() {
            let i = self.alive[k];
            let inst = &self.instances[i];
            if inst.worker.is_none() && inst.vanish_at.is_none() && inst.ready_at <= now {
                let f = &self.fleets[inst.fleet];
                let reg = WorkerInfo {
                    worker_id: format!("w-{}", inst.id),
                    step: f.policy.step.clone(),
                    instance_id: Some(inst.id.clone()),
                    slots: f.policy.slots_per_instance,
                    busy_slots: 0,
                    started_at: now,
                    last_seen: now,
                    last_busy_at: now,
                    state: WorkerState::Active,
                    stop_reason: None,
                    drain_requested: false,
                };
                let next_refresh = now + heartbeat(f);
                self.instances[i].worker = Some(SimWorker {
                    state: WorkerState::Active,
                    started_at: now,
                    last_busy_at: now,
                    reg,
                    next_refresh,
                    drain_seen: false,
                });
            }
        }
    }

    fn submit(&mut self, now: Millis) {
        while let Some(&t) = self.arrivals.get(self.next_arrival) {
            if self.tasks[t].submit > now {
                break;
            }
            self.next_arrival += 1;
            let f = self.tasks[t].fleet;
            self.steps[f].unsubmitted -= 1;
            if self.tasks[t].deps.is_empty() {
                self.make_pending(t, now);
            } else {
                self.tasks[t].state = TaskState::Waiting;
                self.steps[f].waiting += 1;
                // Dependencies may have succeeded already: looked at on the next promotion.
                self.to_check.push(t);
            }
        }
    }

    fn worker_exits(&mut self, now: Millis) {
        let mut self_shutdown = Vec::new();
        for k in 0..self.alive.len() {
            let i = self.alive[k];
            let inst = &self.instances[i];
            let Some(w) = inst.worker.as_ref() else {
                continue;
            };
            if w.state != WorkerState::Active || inst.busy() > 0 {
                continue;
            }
            let exits = w.drain_seen
                || match self.exit {
                    WorkerExit::Never => false,
                    WorkerExit::QueueEmpty => self.remaining(inst.fleet) == 0,
                    WorkerExit::IdleExit => self.fleets[inst.fleet]
                        .idle_exit
                        .is_some_and(|idle| now - w.last_busy_at >= idle),
                };
            if exits {
                if let Some(w) = self.instances[i].worker.as_mut() {
                    w.state = WorkerState::Gone;
                }
                self.refresh_one(i, now);
                if self.exit == WorkerExit::QueueEmpty {
                    self_shutdown.push(i);
                }
            }
        }
        for i in self_shutdown {
            self.remove(i, now);
        }
    }

    fn refresh_registrations(&mut self, now: Millis) {
        for k in 0..self.alive.len() {
            let i = self.alive[k];
            let due = self.instances[i]
                .worker
                .as_ref()
                .is_some_and(|w| w.state != WorkerState::Gone && w.next_refresh <= now);
            if due {
                self.refresh_one(i, now);
            }
        }
    }

    fn refresh_one(&mut self, i: usize, now: Millis) {
        let inst = &mut self.instances[i];
        let busy = inst.slots.iter().filter(|s| s.is_some()).count() as u32;
        let hb = self.fleets[inst.fleet].heartbeat;
        if let Some(w) = inst.worker.as_mut() {
            // The worker reads its drain mark when it heartbeats: no claims while set.
            w.drain_seen = w.reg.drain_requested;
            w.reg.busy_slots = busy;
            w.reg.last_seen = now;
            w.reg.last_busy_at = if busy > 0 { now } else { w.last_busy_at };
            w.reg.state = w.state;
            w.reg.started_at = w.started_at;
            w.next_refresh = now + hb;
        }
    }

    /// Takes an instance out of the fleet (terminated by the policy, by itself, or by the
    /// cloud). Tasks still running on it return to pending when their lease expires.
    fn remove(&mut self, i: usize, now: Millis) {
        self.close(i);
        let lease = self.fleets[self.instances[i].fleet].lease_ttl;
        let inst = &mut self.instances[i];
        inst.terminated_at = Some(now);
        let orphaned: Vec<usize> = inst
            .slots
            .iter_mut()
            .filter_map(|s| s.take().map(|(t, _)| t))
            .collect();
        for t in orphaned {
            self.orphans.push((t, now + lease));
        }
        self.alive.retain(|&k| k != i);
    }
}
