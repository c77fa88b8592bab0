//! Which pending shards a claim queries, so that polling a step costs what is there.
//!
//! A claimer that is taking tasks queries one pending shard, a random one of those its Queries
//! did not find empty in the last [`LEFTOVERS_FOR`] (see [`claims`](super::claims)); when that
//! does not fill its batch, it reads the step's counter items (one BatchGetItem of `shards`
//! small items, see [`counters`](super::counters)) and goes on only in the shards whose
//! `pending` count is above 0. Once a claim found nothing, the claimer is *idle*: its next
//! claims read the counters first, and the `retry_due` that follows a claim that read them
//! queries only the `retrying` shards with tasks. An idle poll of an empty step is one
//! request instead of one Query per shard and state.
//!
//! Which shard a busy claim queries first is the claimer's *lane*: a random offset, drawn again
//! whenever the claimer loses a claim race (among the lanes it has not lost one in within
//! [`CROWDED_FOR`] and whose shard it does not know to be empty), turned one shard on every
//! [`LANE_TURN`] of the claim clock (see [`ShardMemory::lane_shard`]). Claimers whose lanes
//! differ read different shards, so they do not hold the same candidates (a random shard per
//! Query puts two of `w` claimers on one shard about `(w − 1) ÷ n` of the time, and the one
//! whose kept candidates the other takes loses a whole wave of writes); claimers that share a
//! lane find out by losing a race and one of them moves. All lanes turn at the same instants
//! (the claim clock's multiples of [`LANE_TURN`], the same on every host up to clock skew), so
//! distinct lanes stay distinct, and a lone claimer comes back to each shard at least every
//! `shards × LANE_TURN`. A claimer leaves the head of a shard to that shard's lane: it drops
//! the candidates it kept when the lanes turn, and takes a page of a shard outside its lane
//! from the page's end. With more claimers than shards lanes are shared whatever is drawn, and
//! a claim behaves as with a random shard per Query.
//!
//! Counts can be wrong: a worker keeps its counter deltas up to [`FLUSH_AFTER`] before writing
//! them, and a crash between a task's write and its counter `ADD` (or another client's write
//! that does not add to the counters) drifts them until a recount. So an idle claimer still
//! queries every shard once per [`sweep_every`] (its lease TTL): a task in a shard whose
//! counter says 0 is claimed at most that much later than without counters.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

use super::candidates::PendingShard;
use super::claims::{claim_from_shard, Claimer, LEFTOVERS_FOR};
use super::counters::FLUSH_AFTER;
use super::layout::state_shard_pk;
use super::DynamoStore;
use crate::clock::Millis;
use crate::model::{Claim, ClaimRequest, TaskState};
use crate::store::Result;

/// How often an idle claimer queries every pending and retrying shard whatever the counters
/// say: its own lease TTL.
///
/// Counter drift comes from a crash between a task's write and its counter `ADD` (or a
/// worker killed with deltas kept), and such a crash already leaves the tasks it held waiting
/// up to a lease TTL before they are requeued; sweeping every TTL keeps the extra wait a
/// drifted counter can cause within the same bound. The cost is `shards − 1` more Queries per
/// TTL and state (at 8 shards and the default 60 s, 0.12 a second) beside an idle poll's one
/// counter read per `--poll-interval` (1 a second by default).
pub(super) fn sweep_every(lease_ttl_ms: Millis) -> Duration {
    Duration::from_millis(lease_ttl_ms.max(0) as u64)
}

/// How long a claimer's lane stays on one shard: [`LEFTOVERS_FOR`], the time a claimer may
/// already go on with candidates read earlier, so a turn bounds nothing new. A turn costs a
/// claimer one Query (its leftovers are dropped); a claimer taking 40 tasks a second pays one
/// per 80 tasks.
pub(super) const LANE_TURN: Millis = LEFTOVERS_FOR.as_millis() as Millis;

/// How long a claimer avoids a lane it lost a claim race in: the claimer it met there keeps
/// that lane until it loses a race itself, so the lane stays taken for as long as races stay
/// likely; this is the time a store already treats a lost race as recent (the claims' own
/// contention memory).
const CROWDED_FOR: Duration = super::claims::CONTENTION_MEMORY;

/// The turn of the lanes at claim time `now` on a step of `shards` shards (`None` with one
/// shard: lanes do not turn).
pub(super) fn lane_turn(now: Millis, shards: u32) -> Option<i64> {
    (shards > 1).then(|| now.div_euclid(LANE_TURN))
}

/// Which pending shards a claim queries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    /// The first shard not found empty lately from a random one, then the counted ones (a
    /// claimer taking tasks).
    Busy,
    /// Every shard (an idle claimer's periodic sweep); the claim records it.
    Sweep,
    /// Read the counters, then the shards with pending tasks (an idle claimer).
    Counted,
}

/// What a claimer remembers of a step's pending shards between its claims.
#[derive(Debug, Default, Clone)]
pub(super) struct ShardMemory {
    /// Its last claim found nothing.
    pub idle: bool,
    /// When a claim of it last queried every pending shard from the head.
    pub swept_at: Option<Instant>,
    /// Shards a Query of it found empty, and when.
    pub empty_at: HashMap<u32, Instant>,
    /// Its lane: the offset of the shard its busy claims query first (`None`: draw one).
    pub lane: Option<u32>,
    /// Lanes it lost a claim race in, and when: another claimer holds them.
    pub crowded: HashMap<u32, Instant>,
    /// Its busy claims' last counter reading (`pending`, `retrying` per shard), and when.
    pub counted: Option<(Instant, Vec<(i64, i64)>)>,
}

impl ShardMemory {
    /// The plan of the next claim at `now`.
    pub(super) fn plan(&self, now: Instant, sweep_every: Duration) -> Plan {
        if !self.idle {
            Plan::Busy
        } else if self
            .swept_at
            .is_none_or(|at| now.saturating_duration_since(at) >= sweep_every)
        {
            Plan::Sweep
        } else {
            Plan::Counted
        }
    }

    /// The shard `lane` puts first at claim time `now`: the lane's offset plus the turns
    /// since the clock's epoch.
    pub(super) fn lane_shard(lane: u32, now: Millis, shards: u32) -> u32 {
        let shards = i64::from(shards.max(1));
        (i64::from(lane) + now.div_euclid(LANE_TURN)).rem_euclid(shards) as u32
    }

    /// Its busy claims' last counter reading while younger than [`LEFTOVERS_FOR`] at `now`.
    pub(super) fn fresh_counts(&self, now: Instant) -> Option<&[(i64, i64)]> {
        self.counted
            .as_ref()
            .filter(|(read, _)| now.saturating_duration_since(*read) < LEFTOVERS_FOR)
            .map(|(_, counts)| counts.as_slice())
    }

    /// Whether the claimer knows `shard` to be empty at `now`: a busy claim passes over it
    /// ([`skips`](Self::skips)), or its [`fresh_counts`](Self::fresh_counts) count no pending
    /// task there.
    pub(super) fn known_empty(&self, shard: u32, now: Instant) -> bool {
        let counted_empty = self
            .fresh_counts(now)
            .and_then(|counts| counts.get(shard as usize))
            .is_some_and(|&(pending, _)| pending <= 0);
        self.skips(shard, now) || counted_empty
    }

    /// Whether a busy claim passes over `shard` at `now`: a Query found it empty within
    /// [`LEFTOVERS_FOR`], the time a claimer may also go on with candidates it read before
    /// (a task made pending there meanwhile by another client waits at most that long).
    pub(super) fn skips(&self, shard: u32, now: Instant) -> bool {
        self.empty_at
            .get(&shard)
            .is_some_and(|at| now.saturating_duration_since(*at) < LEFTOVERS_FOR)
    }
}

/// The shards a claim queries, in order: from `first`, wrapping, those the plan allows
/// (`pending`: the counted pending tasks per shard, for [`Plan::Counted`]).
pub(super) fn shard_order(
    plan: &Plan,
    memory: &ShardMemory,
    shards: u32,
    first: u32,
    pending: &[i64],
    now: Instant,
) -> Vec<u32> {
    (0..shards)
        .map(|i| (first + i) % shards.max(1))
        .filter(|&shard| match plan {
            Plan::Sweep => true,
            Plan::Busy => !memory.skips(shard, now),
            Plan::Counted => pending.get(shard as usize).is_some_and(|&n| n > 0),
        })
        .collect()
}

/// A counter reading's `retrying` shards with tasks, for the `retry_due` that follows an idle
/// claim (within [`FLUSH_AFTER`] of the reading: the counters' own lag).
#[derive(Debug)]
struct RetryHint {
    read_at: Instant,
    shards: Vec<u32>,
}

/// The store's memory of each claimer's shards and of each step's last counted `retrying`
/// shards.
#[derive(Debug, Default)]
pub(super) struct Polls {
    claimers: Mutex<HashMap<Claimer, ShardMemory>>,
    retry_hints: Mutex<HashMap<String, RetryHint>>,
}

impl Polls {
    /// What `claimer` remembers; a claimer's first claim starts its sweep interval (so its
    /// first sweep is one interval after it started).
    pub(super) fn memory(&self, claimer: &Claimer) -> ShardMemory {
        let mut all = self.claimers.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(claimer.clone())
            .or_insert_with(|| ShardMemory {
                swept_at: Some(Instant::now()),
                ..Default::default()
            })
            .clone()
    }

    pub(super) fn update(&self, claimer: &Claimer, f: impl FnOnce(&mut ShardMemory)) {
        let mut all = self.claimers.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(claimer.clone()).or_default());
    }

    /// Forgets the shards found empty: this store made a task pending, and the next claims
    /// must look for it.
    pub(super) fn forget_empty(&self) {
        let mut all = self.claimers.lock().unwrap_or_else(|e| e.into_inner());
        for memory in all.values_mut() {
            memory.empty_at.clear();
            memory.counted = None;
            memory.idle = false;
        }
    }

    /// The claimer's lane, drawn when it has none: at random among the lanes it did not
    /// lose a race in within [`CROWDED_FOR`] and whose shard at claim time `now` it does not
    /// know to be empty ([`ShardMemory::known_empty`] at `at`); failing that, among those it
    /// did not lose in; failing that, among all.
    ///
    /// At the end of a step most shards are empty and a claimer redraws its lane after each
    /// race it loses: a lane drawn blindly would point at an empty shard most of the time,
    /// and cost a Query to find that out again.
    pub(super) fn lane(&self, claimer: &Claimer, shards: u32, now: Millis, at: Instant) -> u32 {
        let mut all = self.claimers.lock().unwrap_or_else(|e| e.into_inner());
        let memory = all.entry(claimer.clone()).or_default();
        if let Some(lane) = memory.lane {
            return lane;
        }
        memory
            .crowded
            .retain(|_, lost| at.saturating_duration_since(*lost) < CROWDED_FOR);
        let shards = shards.max(1);
        let free: Vec<u32> = (0..shards)
            .filter(|l| !memory.crowded.contains_key(l))
            .collect();
        let open: Vec<u32> = free
            .iter()
            .copied()
            .filter(|&l| !memory.known_empty(ShardMemory::lane_shard(l, now, shards), at))
            .collect();
        let mut rng = rand::rng();
        let lane = match (open.len(), free.len()) {
            (0, 0) => rng.random_range(0..shards),
            (0, n) => free[rng.random_range(0..n)],
            (n, _) => open[rng.random_range(0..n)],
        };
        memory.lane = Some(lane);
        lane
    }

    /// The claimer lost a claim race: another one reads the same shard; its next claim
    /// draws a new lane, away from this one while another claimer may still hold it.
    pub(super) fn lost_race(&self, claimer: &Claimer) {
        let mut all = self.claimers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(memory) = all.get_mut(claimer) {
            if let Some(lane) = memory.lane.take() {
                memory.crowded.insert(lane, Instant::now());
            }
        }
    }

    pub(super) fn hint_retrying(&self, step: &str, shards: Vec<u32>) {
        let mut all = self.retry_hints.lock().unwrap_or_else(|e| e.into_inner());
        let hint = RetryHint {
            read_at: Instant::now(),
            shards,
        };
        all.insert(step.to_string(), hint);
    }

    /// The `retrying` shards with tasks by a counter reading of the last [`FLUSH_AFTER`], if
    /// any (taken: a later `retry_due` queries every shard unless counted again).
    pub(super) fn take_retrying(&self, step: &str) -> Option<Vec<u32>> {
        let mut all = self.retry_hints.lock().unwrap_or_else(|e| e.into_inner());
        all.remove(step)
            .filter(|h| h.read_at.elapsed() < FLUSH_AFTER)
            .map(|h| h.shards)
    }
}

/// The rest of a claim after the claimer's leftovers: the step's pending shards from a random
/// one, moving on while the batch is not full (priority order holds within a shard); which
/// shards, this module decides.
pub(super) async fn claim_from_index(
    store: &DynamoStore,
    req: &ClaimRequest,
    claimer: Claimer,
    want: usize,
    now: Millis,
    claims: Vec<Claim>,
) -> Result<Vec<Claim>> {
    let shards = store.step_shards(&req.step).await?;
    let memory = store.polls.memory(&claimer);
    let started = Instant::now();
    let epoch = store.leftovers_epoch.load(Ordering::SeqCst);
    let plan = memory.plan(started, sweep_every(req.ttl_ms));
    let pending = match plan {
        Plan::Counted => counted_pending(store, &req.step, shards).await?,
        Plan::Busy | Plan::Sweep => Vec::new(),
    };
    // A busy claim starts in its lane; a sweep or a counted claim, and a busy claim's way on
    // when its lane's shard did not fill the batch, from a random shard (the lanes of other
    // claimers are anywhere).
    let lane = store.polls.lane(&claimer, shards, now, started);
    let lane = ShardMemory::lane_shard(lane, now, shards);
    let first = rand::rng().random_range(0..shards.max(1));
    let order = match plan {
        Plan::Busy if !memory.skips(lane, started) => vec![lane],
        _ => shard_order(&plan, &memory, shards, first, &pending, started),
    };
    let mut visit = Visit {
        lane: (plan == Plan::Busy).then_some(lane),
        turn: lane_turn(now, shards),
        claims,
        queried: Vec::new(),
        found_empty: Vec::new(),
    };
    // A busy claim queries its first shard; when that does not fill the batch, the counters
    // say where to go on (at the end of a step most shards are empty), if anywhere is left.
    let head = match plan {
        Plan::Busy => order.len().min(1),
        Plan::Sweep | Plan::Counted => order.len(),
    };
    visit
        .shards(store, req, &claimer, &order[..head], want, now)
        .await?;
    if plan == Plan::Busy && visit.claims.len() < want && visit.queried.len() < shards as usize {
        let pending = busy_counts(store, &claimer, &memory, &req.step, shards, started).await?;
        // The counters lag other workers' deltas (up to FLUSH_AFTER): at the end of a step
        // they still count tasks in shards this claimer found empty a moment ago, which a busy
        // claim passes over here as it does its first shard.
        let more: Vec<u32> = shard_order(&Plan::Counted, &memory, shards, first, &pending, started)
            .into_iter()
            .filter(|&s| !visit.queried.contains(&s) && !memory.skips(s, started))
            .collect();
        visit.shards(store, req, &claimer, &more, want, now).await?;
    }
    // Unless this store made a task pending meanwhile (it may be in a shard found empty).
    let unchanged = store.leftovers_epoch.load(Ordering::SeqCst) == epoch;
    let idle = visit.claims.is_empty() && unchanged;
    let swept = visit.queried.len() == shards as usize;
    store.polls.update(&claimer, |m| {
        let at = Instant::now();
        if unchanged {
            for shard in visit.found_empty {
                m.empty_at.insert(shard, at);
            }
        }
        m.idle = idle;
        if swept {
            m.swept_at = Some(started);
        }
    });
    Ok(visit.claims)
}

/// The counted pending tasks per shard of `step`; its counted `retrying` shards are kept for
/// the `retry_due` that follows.
async fn counted_pending(store: &DynamoStore, step: &str, shards: u32) -> Result<Vec<i64>> {
    let counted = super::counters::shard_counts(store, step, shards).await?;
    Ok(hinted(store, step, &counted))
}

/// The pending counts of a reading, its `retrying` shards kept for the next `retry_due`.
fn hinted(store: &DynamoStore, step: &str, counted: &[(i64, i64)]) -> Vec<i64> {
    let retrying = (0u32..)
        .zip(counted)
        .filter(|(_, (_, retrying))| *retrying > 0)
        .map(|(shard, _)| shard)
        .collect();
    store.polls.hint_retrying(step, retrying);
    counted.iter().map(|c| c.0).collect()
}

/// [`counted_pending`] for a busy claim going on past its lane's shard: the claimer's last
/// reading while it is younger than [`LEFTOVERS_FOR`], else a new one. The counters lag other
/// workers' changes by up to [`FLUSH_AFTER`] anyway, so a reading of the last 2 s says about
/// as much of where tasks are left; the shards the claimer found empty since are skipped
/// whatever it says. At the end of a step every claim of a claimer whose lane's shard is empty
/// comes here: one reading per 2 s, not one per claim.
async fn busy_counts(
    store: &DynamoStore,
    claimer: &Claimer,
    memory: &ShardMemory,
    step: &str,
    shards: u32,
    now: Instant,
) -> Result<Vec<i64>> {
    if let Some(counted) = memory.fresh_counts(now) {
        if counted.len() == shards as usize {
            return Ok(hinted(store, step, counted));
        }
    }
    let counted = super::counters::shard_counts(store, step, shards).await?;
    let pending = hinted(store, step, &counted);
    store
        .polls
        .update(claimer, |m| m.counted = Some((Instant::now(), counted)));
    Ok(pending)
}

/// A claim's way through the pending shards: what it took, which shards it queried and which
/// it found empty.
struct Visit {
    /// The claimer's lane's shard (`None`: the claim is not a busy one, and reads every shard
    /// from its head as a lane's owner would).
    lane: Option<u32>,
    /// The lanes' turn at claim time ([`lane_turn`]).
    turn: Option<i64>,
    claims: Vec<Claim>,
    queried: Vec<u32>,
    found_empty: Vec<u32>,
}

impl Visit {
    async fn shards(
        &mut self,
        store: &DynamoStore,
        req: &ClaimRequest,
        claimer: &Claimer,
        order: &[u32],
        want: usize,
        now: Millis,
    ) -> Result<()> {
        for &shard in order {
            if self.claims.len() >= want {
                break;
            }
            let pk = state_shard_pk(&req.step, TaskState::Pending, shard);
            let before = self.claims.len();
            let claims = std::mem::take(&mut self.claims);
            let in_lane = self.lane.is_none_or(|lane| lane == shard);
            let pending = PendingShard {
                pk: &pk,
                in_lane,
                turn: self.turn,
            };
            self.claims = claim_from_shard(store, req, claimer, pending, want, now, claims).await?;
            self.queried.push(shard);
            if self.claims.len() == before {
                self.found_empty.push(shard);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "polls_tests.rs"]
mod tests;
