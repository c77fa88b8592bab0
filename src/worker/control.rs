//! The worker's shared state: its phase (claiming or stopping, and how), slot counters, the
//! claim gate that spaces out polls and backs off on store errors, and idle tracking.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::backoff::Backoff;
use super::events::{StatsSnapshot, WorkerStats, WorkerStopping};
use super::process::StopCause;
use crate::clock::Millis;
pub use crate::model::StopReason;

/// What the slots are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Active,
    /// No new claims. Running tasks may finish until `deadline` (never, when `None`), when
    /// they are stopped with `at_deadline`.
    Stopping {
        reason: StopReason,
        deadline: Option<Instant>,
        at_deadline: StopCause,
    },
}

impl Phase {
    pub(crate) fn is_active(&self) -> bool {
        matches!(self, Phase::Active)
    }

    pub(crate) fn reason(&self) -> Option<StopReason> {
        match self {
            Phase::Active => None,
            Phase::Stopping { reason, .. } => Some(*reason),
        }
    }

    /// When and how a task running in this phase is stopped.
    pub(crate) fn task_deadline(&self) -> Option<(Instant, StopCause)> {
        match self {
            Phase::Stopping {
                deadline: Some(d),
                at_deadline,
                ..
            } => Some((*d, *at_deadline)),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct State {
    phase: Phase,
    drain_grace: Duration,
    /// The worker's slots (a claim asks for the free ones).
    slots: u32,
    /// Slots running a task, and claimed tasks handed to a slot that has not started them yet.
    busy: u32,
    /// Busy slots whose task process has ended: they are only writing its result, so the next
    /// claim already asks on their behalf (the task waits one store write for them).
    finishing: u32,
    /// Claims in flight.
    claiming: u32,
    /// Tasks claimed so far.
    claimed: u64,
    max_tasks: Option<u64>,
    /// No claim starts before this (poll spacing after an empty claim, backoff after errors).
    next_claim_at: Instant,
    claim_backoff: Backoff,
    /// Since when no slot is busy and claims found nothing (`None`: busy, or unknown because
    /// the last claim failed).
    idle_since: Option<Instant>,
    /// A claim found nothing while every slot was idle (cleared by the next claimed task).
    idle_declared: bool,
    /// Wall-clock time a slot was last busy.
    last_busy_at: Millis,
    /// The controller's drain mark, as last read: no claims while set, and the worker stops
    /// (reason `drain`) once no slot is busy; cleared before that, claims resume.
    drain_marked: bool,
}

/// How long a free slot of a drain-marked worker waits before asking again; it is woken
/// sooner when the mark is cleared or the worker stops.
const DRAIN_RECHECK: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    phase_tx: watch::Sender<Phase>,
    stats: WorkerStats,
    /// Wakes the registration task (state change, end of an idle period).
    registration: Notify,
}

/// A handle on a running worker: lets an embedding program (or a test) do what SIGTERM and a
/// spot interruption notice do, and read live counters.
#[derive(Debug, Clone)]
pub struct WorkerControl {
    inner: Arc<Inner>,
}

impl Default for WorkerControl {
    fn default() -> Self {
        Self::new()
    }
}

/// What a slot may do next.
pub(crate) enum Gate {
    /// Claim now, up to `max` tasks (the free slots, within `--max-tasks`). The claim counts
    /// as in flight until `claimed`, `claim_empty` or `claim_failed`.
    Claim { max: usize },
    /// Wait until then and ask again.
    WaitUntil(Instant),
    /// Stop claiming.
    Stop,
}

impl WorkerControl {
    pub fn new() -> Self {
        let now = Instant::now();
        let (phase_tx, _) = watch::channel(Phase::Active);
        WorkerControl {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    phase: Phase::Active,
                    drain_grace: Duration::from_secs(30),
                    slots: 1,
                    busy: 0,
                    finishing: 0,
                    claiming: 0,
                    claimed: 0,
                    max_tasks: None,
                    next_claim_at: now,
                    claim_backoff: Backoff::new(
                        Duration::from_millis(200),
                        Duration::from_secs(30),
                    ),
                    idle_since: Some(now),
                    idle_declared: false,
                    last_busy_at: 0,
                    drain_marked: false,
                }),
                phase_tx,
                stats: WorkerStats::default(),
                registration: Notify::new(),
            }),
        }
    }

    /// Like SIGTERM: stop claiming and let running tasks finish within the drain grace, then
    /// hand them back. A second call hands them back at once.
    pub fn drain(&self) {
        let mut st = self.lock();
        let now = Instant::now();
        let deadline = match st.phase {
            Phase::Stopping {
                reason: StopReason::Signal,
                ..
            } => now,
            _ => now + st.drain_grace,
        };
        self.stop_locked(
            &mut st,
            StopReason::Signal,
            Some(deadline),
            StopCause::HandBack,
        );
    }

    /// Like a spot interruption notice: stop claiming and hand running tasks back at once.
    pub fn hand_back(&self) {
        let mut st = self.lock();
        self.stop_locked(
            &mut st,
            StopReason::SpotInterruption,
            Some(Instant::now()),
            StopCause::HandBack,
        );
    }

    /// Like a rebalance recommendation: stop claiming, let running tasks finish (no
    /// deadline; an interruption notice later still hands them back at once).
    pub fn rebalance(&self) {
        let mut st = self.lock();
        self.stop_locked(&mut st, StopReason::Rebalance, None, StopCause::HandBack);
    }

    /// Live counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Slots running a task right now.
    pub fn busy_slots(&self) -> u32 {
        self.lock().busy
    }

    /// Why the worker stopped claiming, once it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.lock().phase.reason()
    }

    // ---- crate-internal ---------------------------------------------------------------

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn configure(
        &self,
        drain_grace: Duration,
        slots: u32,
        max_tasks: Option<u64>,
        now: Millis,
    ) {
        let mut st = self.lock();
        st.drain_grace = drain_grace;
        st.slots = slots.max(1);
        st.max_tasks = max_tasks;
        st.last_busy_at = now;
        st.idle_since = Some(Instant::now());
    }

    pub(crate) fn worker_stats(&self) -> &WorkerStats {
        &self.inner.stats
    }

    pub(crate) fn phase(&self) -> Phase {
        self.lock().phase
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Phase> {
        self.inner.phase_tx.subscribe()
    }

    pub(crate) fn registration_notify(&self) -> &Notify {
        &self.inner.registration
    }

    /// Stops claiming. An earlier, stricter stop is kept: the phase only changes when the new
    /// deadline is sooner (or the worker was still active).
    pub(crate) fn stop(
        &self,
        reason: StopReason,
        deadline: Option<Instant>,
        at_deadline: StopCause,
    ) {
        let mut st = self.lock();
        self.stop_locked(&mut st, reason, deadline, at_deadline);
    }

    fn stop_locked(
        &self,
        st: &mut State,
        reason: StopReason,
        deadline: Option<Instant>,
        at_deadline: StopCause,
    ) {
        let replace = match st.phase {
            Phase::Active => true,
            Phase::Stopping {
                deadline: old_deadline,
                ..
            } => match (old_deadline, deadline) {
                (None, Some(_)) => true,
                (Some(old), Some(new)) => new < old,
                (_, None) => false,
            },
        };
        if !replace {
            return;
        }
        st.phase = Phase::Stopping {
            reason,
            deadline,
            at_deadline,
        };
        WorkerStopping {
            reason: reason.as_str(),
            busy_slots: st.busy,
            grace: deadline.map(|d| d.saturating_duration_since(Instant::now())),
        }
        .emit();
        self.inner.phase_tx.send_replace(st.phase);
        // A stop with no task running or being claimed is the worker's exit: its `Gone`
        // registration follows at once, so a `Draining` one before it would say nothing
        // (an idle worker exiting writes its registration once, not twice).
        if st.busy > 0 || st.claiming > 0 {
            self.inner.registration.notify_one();
        }
    }

    /// The controller's drain mark as read from the store: while set, no claims, and the
    /// worker stops once no slot is busy; cleared before that, the free slots claim again.
    pub(crate) fn set_drain_mark(&self, marked: bool) {
        let mut st = self.lock();
        if st.drain_marked == marked || !st.phase.is_active() {
            return;
        }
        st.drain_marked = marked;
        if !self.stop_if_drained(&mut st) {
            // Wakes the slots waiting out the mark.
            self.inner.phase_tx.send_replace(st.phase);
        }
    }

    /// Stops the worker when it is drain-marked and nothing runs or is being claimed.
    fn stop_if_drained(&self, st: &mut State) -> bool {
        let idle = st.busy == 0 && st.claiming == 0;
        if st.drain_marked && idle && st.phase.is_active() {
            self.stop_locked(st, StopReason::Drain, None, StopCause::HandBack);
            return true;
        }
        false
    }

    /// Asks whether a slot may claim now.
    pub(crate) fn begin_claim(&self) -> Gate {
        let mut st = self.lock();
        self.stop_if_drained(&mut st);
        if !st.phase.is_active() {
            return Gate::Stop;
        }
        let now = Instant::now();
        if st.drain_marked {
            return Gate::WaitUntil(now + DRAIN_RECHECK);
        }
        if now < st.next_claim_at {
            return Gate::WaitUntil(st.next_claim_at);
        }
        st.claiming += 1;
        let occupied = st.busy.saturating_sub(st.finishing);
        let free = u64::from(st.slots.saturating_sub(occupied).max(1));
        let left = st
            .max_tasks
            .map_or(free, |max| max.saturating_sub(st.claimed).max(1));
        Gate::Claim {
            max: free.min(left) as usize,
        }
    }

    /// Records a claim that got `n` tasks (each now counts as busy). Returns whether to run
    /// them: false when the worker stopped claiming while the claim was in flight (they are
    /// then handed back).
    pub(crate) fn claimed(&self, n: u32) -> bool {
        let mut st = self.lock();
        st.claiming = st.claiming.saturating_sub(1);
        let run = st.phase.is_active();
        st.claim_backoff.reset();
        st.busy += n;
        st.claimed += u64::from(n);
        st.idle_since = None;
        if std::mem::take(&mut st.idle_declared) {
            self.inner.registration.notify_one();
        }
        if st.max_tasks.is_some_and(|max| st.claimed >= max) {
            self.stop_locked(&mut st, StopReason::MaxTasks, None, StopCause::HandBack);
        }
        run
    }

    /// Records a claim that found nothing: the next one waits `poll_interval`.
    pub(crate) fn claim_empty(&self, poll_interval: Duration) {
        let mut st = self.lock();
        st.claiming = st.claiming.saturating_sub(1);
        let now = Instant::now();
        st.claim_backoff.reset();
        st.next_claim_at = st.next_claim_at.max(now + poll_interval);
        if st.busy == 0 && st.claiming == 0 {
            st.idle_declared = true;
            st.idle_since.get_or_insert(now);
        }
        self.stop_if_drained(&mut st);
    }

    /// Records a claim that found nothing but made due retries pending: the next claim may
    /// go at once, and the worker is not idle.
    pub(crate) fn claim_retry_due(&self) {
        let mut st = self.lock();
        st.claiming = st.claiming.saturating_sub(1);
        st.claim_backoff.reset();
        st.idle_since = None;
    }

    /// Records a failed claim; returns the backoff before the next one.
    pub(crate) fn claim_failed(&self) -> Duration {
        let mut st = self.lock();
        st.claiming = st.claiming.saturating_sub(1);
        let delay = st.claim_backoff.next_delay();
        st.next_claim_at = st.next_claim_at.max(Instant::now() + delay);
        st.idle_since = None;
        delay
    }

    /// A slot's task process ended; the slot goes on to record the result.
    pub(crate) fn task_exited(&self) {
        self.lock().finishing += 1;
    }

    /// A slot finished its task (`exited`: after [`Self::task_exited`]).
    pub(crate) fn task_done(&self, now: Millis, exited: bool) {
        let mut st = self.lock();
        st.busy = st.busy.saturating_sub(1);
        if exited {
            st.finishing = st.finishing.saturating_sub(1);
        }
        st.last_busy_at = now;
        if st.busy == 0 {
            st.idle_since = Some(Instant::now());
        }
        self.stop_if_drained(&mut st);
    }

    /// Stops the worker for idleness when nothing was claimable for `idle_exit` and no slot is
    /// busy. Returns true when it did.
    pub(crate) fn try_idle_stop(&self, idle_exit: Duration) -> bool {
        let mut st = self.lock();
        if !st.phase.is_active() || st.busy > 0 || st.claiming > 0 {
            return false;
        }
        match st.idle_since {
            Some(since) if since.elapsed() >= idle_exit => {
                self.stop_locked(&mut st, StopReason::Idle, None, StopCause::HandBack);
                true
            }
            _ => false,
        }
    }

    /// `(busy slots, last busy time)` for the registration.
    pub(crate) fn busy_info(&self, now: Millis) -> (u32, Millis) {
        let st = self.lock();
        let last = if st.busy > 0 { now } else { st.last_busy_at };
        (st.busy, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_twice_hands_back_at_once() {
        let c = WorkerControl::new();
        c.configure(Duration::from_secs(30), 1, None, 0);
        c.drain();
        let Phase::Stopping { deadline, .. } = c.phase() else {
            panic!("not stopping")
        };
        assert!(deadline.unwrap() > Instant::now() + Duration::from_secs(20));
        c.drain();
        let (d, cause) = c.phase().task_deadline().unwrap();
        assert!(d <= Instant::now());
        assert_eq!(cause, StopCause::HandBack);
    }

    #[tokio::test]
    async fn a_later_stop_does_not_relax_an_earlier_one() {
        let c = WorkerControl::new();
        c.hand_back();
        c.stop(StopReason::MaxTasks, None, StopCause::HandBack);
        assert_eq!(c.stop_reason(), Some(StopReason::SpotInterruption));
    }

    #[tokio::test]
    async fn idle_needs_an_empty_claim_and_no_busy_slot() {
        let c = WorkerControl::new();
        c.configure(Duration::from_secs(1), 1, None, 0);
        assert!(matches!(c.begin_claim(), Gate::Claim { .. }));
        assert!(c.claimed(1));
        assert!(!c.try_idle_stop(Duration::ZERO));
        c.task_done(1, false);
        assert!(matches!(c.begin_claim(), Gate::Claim { .. }));
        c.claim_failed();
        assert!(
            !c.try_idle_stop(Duration::ZERO),
            "unknown after a failed claim"
        );
        // The gate backs off after the failure.
        assert!(matches!(c.begin_claim(), Gate::WaitUntil(_)));
        {
            let mut st = c.lock();
            st.next_claim_at = Instant::now();
        }
        assert!(matches!(c.begin_claim(), Gate::Claim { .. }));
        c.claim_empty(Duration::from_secs(1));
        assert!(c.try_idle_stop(Duration::ZERO));
        assert_eq!(c.stop_reason(), Some(StopReason::Idle));
        assert!(matches!(c.begin_claim(), Gate::Stop));
    }

    #[tokio::test]
    async fn max_tasks_stops_claiming() {
        let c = WorkerControl::new();
        c.configure(Duration::from_secs(1), 4, Some(2), 0);
        assert!(
            matches!(c.begin_claim(), Gate::Claim { max: 2 }),
            "4 free slots, 2 tasks left"
        );
        assert!(c.claimed(1));
        assert!(matches!(c.begin_claim(), Gate::Claim { max: 1 }));
        assert!(c.claimed(1), "the claim that reaches the limit still runs");
        assert_eq!(c.stop_reason(), Some(StopReason::MaxTasks));
        assert_eq!(c.busy_slots(), 2);
    }

    #[tokio::test]
    async fn a_claim_asks_for_the_free_slots() {
        let c = WorkerControl::new();
        c.configure(Duration::from_secs(1), 8, None, 0);
        assert!(matches!(c.begin_claim(), Gate::Claim { max: 8 }));
        assert!(c.claimed(3), "a batch of 3");
        assert_eq!(c.busy_slots(), 3, "handed-over tasks count as busy at once");
        assert!(matches!(c.begin_claim(), Gate::Claim { max: 5 }));
        assert!(c.claimed(5));
        assert!(
            matches!(c.begin_claim(), Gate::Claim { max: 1 }),
            "a claim always asks for at least one"
        );
        c.claim_empty(Duration::ZERO);
        c.task_done(1, false);
        assert!(matches!(c.begin_claim(), Gate::Claim { max: 1 }));
        c.claim_empty(Duration::ZERO);
        c.task_exited();
        c.task_exited();
        assert!(
            matches!(c.begin_claim(), Gate::Claim { max: 3 }),
            "slots only recording a result are asked for"
        );
        c.claim_empty(Duration::ZERO);
        c.task_done(2, true);
        assert!(matches!(c.begin_claim(), Gate::Claim { max: 3 }));
        assert_eq!(c.busy_slots(), 6);
    }
}
