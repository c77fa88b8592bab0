//! Claiming: one Query of the step's pending index partition, then one conditional write per
//! candidate. The candidates a claim did not take are kept for the same claimer's next claims
//! (its leftovers), and a store that recently lost races spreads its claims over the page.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::candidates::{order_candidates, Candidates, Order, PendingShard};
use super::expr::Expr;
use super::items::*;
use super::layout::TaskKeys;
use super::pace;
use super::polls;
use super::{batch, DynamoStore, Sk};
use crate::clock::Millis;
use crate::model::{Claim, ClaimRequest, TaskState};
use crate::store::{new_token, Result, StoreError};

/// Fewest pending candidates read per claim query (the page grows with the claimer's pace, see
/// [`pace`]); what the claim does not take is kept for the same claimer's next claims for
/// [`LEFTOVERS_FOR`] (less when the lanes turn sooner).
///
/// A claimer pays one Query per page it uses or drops. A page of 32 is about 10 KB of index
/// entries (1.5 read units) and is what a claimer taking fewer than 16 tasks a second reads;
/// a faster one reads what it took in the last [`LEFTOVERS_FOR`], up to
/// [`pace::MAX_CLAIM_PAGE`]. Keeping more does not add claim races: a race needs another
/// claimer reading the same shard's head while this one holds it, which the claimers' lanes
/// make rare while there are fewer claimers than shards (see [`polls`]), and a claimer that
/// lost one rotates into its page and draws a new lane (see [`order_candidates`]).
const CLAIM_PAGE: usize = 32;
/// Candidates read per claim while this store is losing races: a wider page spreads concurrent
/// claimers over more tasks, so fewer conditional writes fail (one read either way).
const CONTENDED_CLAIM_PAGE: usize = 64;
/// Claim queries before giving up with a retryable error (each one after a page of lost
/// races; only reached under heavy contention).
const CLAIM_ROUNDS: u32 = 20;
/// Most tasks one `claim_batch` call takes (a worker asks for its free slots).
const MAX_CLAIM_BATCH: usize = 32;

/// How long after a lost claim race this store keeps spreading its claims over the page.
pub(super) const CONTENTION_MEMORY: Duration = Duration::from_secs(10);
/// How long a claimer may go on taking the candidates its last claim query found and left,
/// instead of querying again. It bounds how long a task that became pending meanwhile through
/// another client (however high its priority) can wait behind them.
pub(super) const LEFTOVERS_FOR: Duration = Duration::from_secs(2);
const LEFTOVERS_MS: Millis = LEFTOVERS_FOR.as_millis() as Millis;

/// Who claims: step and owner (a worker's id). Each claimer keeps its own leftovers, as it
/// would in a process of its own.
pub(super) type Claimer = (String, String);

/// Candidates of a claimer's last claim query that it did not take, in the order it would
/// have taken them.
#[derive(Debug)]
pub(super) struct Leftovers {
    read_at: Instant,
    /// The lanes' turn when they were read ([`polls::lane_turn`]): kept only within it.
    turn: Option<i64>,
    ids: VecDeque<String>,
}

/// When this store last lost a claim race (ms since `since`, plus one; 0 = never), and how
/// many it lost.
#[derive(Debug)]
pub(super) struct Contention {
    since: Instant,
    lost_at: AtomicU64,
    lost: AtomicU64,
}

impl Contention {
    pub(super) fn new() -> Self {
        Contention {
            since: Instant::now(),
            lost_at: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.since.elapsed().as_millis().min(u64::MAX as u128 - 1) as u64 + 1
    }

    fn lost_race(&self) {
        self.lost_at.store(self.elapsed_ms(), Ordering::Relaxed);
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    /// Claim races lost so far.
    pub(super) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    fn recent(&self) -> bool {
        let lost_at = self.lost_at.load(Ordering::Relaxed);
        lost_at != 0
            && self.elapsed_ms().saturating_sub(lost_at) < CONTENTION_MEMORY.as_millis() as u64
    }
}

/// A claim's write: `id` running for `owner` with `token` until `expires_at`, attempts + 1,
/// on condition that it is pending.
pub(crate) fn claim_update(
    step: &str,
    owner: &str,
    id: &str,
    token: &str,
    expires_at: Millis,
    now: Millis,
    shards: u32,
) -> Expr {
    let mut e = Expr::new()
        .transition(&TaskKeys {
            step,
            id,
            state: TaskState::Running,
            priority: 0,
            updated_at: now,
            retry_at: 0,
            lease_owner: Some(owner),
            shards,
        })
        .set(LEASE_OWNER, s(owner))
        .set(LEASE_TOKEN, s(token))
        .set(LEASE_EXPIRES_AT, n(expires_at));
    let (attempts, zero, one) = (e.name(ATTEMPTS), e.value(n(0)), e.value(n(1)));
    e.set_raw(format!(
        "{attempts} = if_not_exists({attempts}, {zero}) + {one}"
    ))
    .cond_eq(STATE, s(TaskState::Pending.as_str()))
}

impl DynamoStore {
    /// One conditional claim write; `kept`: the candidate was kept from an earlier query.
    async fn try_claim(
        &self,
        req: &ClaimRequest,
        id: &str,
        kept: bool,
        now: Millis,
    ) -> Result<Option<Claim>> {
        const OP: &str = "claim";
        let expires_at = now + req.ttl_ms;
        let token = new_token();
        let shards = self.step_shards(&req.step).await?;
        let e = claim_update(&req.step, &req.owner, id, &token, expires_at, now, shards);
        let kind = if kept { "claim kept" } else { OP };
        match self
            .update_as(OP, kind, task_pk(&req.step, id), e, true)
            .await?
        {
            None => Ok(None),
            Some(item) => Ok(Some(Claim {
                task: Reader::new(OP, &item).task()?,
                token,
                expires_at,
            })),
        }
    }

    /// [`claim_wave`](Self::claim_wave), but while this store is losing races a wave of
    /// several goes out as its first write alone and then, if that one won, the rest: a
    /// stretch another claimer is taking is lost whole, so a lost first write stands for the
    /// wave (the others stay pending for a later query) and costs one write instead of up to
    /// a worker's free slots. One round trip more per wave, only while contended.
    async fn claim_probed(
        &self,
        req: &ClaimRequest,
        mut ids: Vec<String>,
        kept: bool,
        now: Millis,
        claims: &mut Vec<Claim>,
    ) -> (usize, Option<StoreError>) {
        if ids.len() < 2 || !self.contention.recent() {
            return self.claim_wave(req, ids, kept, now, claims).await;
        }
        let rest = ids.split_off(1);
        let (lost, failure) = self.claim_wave(req, ids, kept, now, claims).await;
        if lost > 0 || failure.is_some() {
            return (lost, failure);
        }
        self.claim_wave(req, rest, kept, now, claims).await
    }

    /// Sends one conditional claim write per id, together; the tasks won are added to
    /// `claims`. Returns how many were lost to another claimer, and the error of a write that
    /// failed otherwise (the others' claims stand).
    async fn claim_wave(
        &self,
        req: &ClaimRequest,
        ids: Vec<String>,
        kept: bool,
        now: Millis,
        claims: &mut Vec<Claim>,
    ) -> (usize, Option<StoreError>) {
        let tries = ids.iter().map(|id| self.try_claim(req, id, kept, now));
        let (mut lost, mut failure) = (0, None);
        for tried in futures::future::join_all(tries).await {
            match tried {
                Ok(Some(claim)) => claims.push(claim),
                Ok(None) => {
                    lost += 1;
                    self.contention.lost_race();
                }
                Err(e) => failure = Some(e),
            }
        }
        if lost > 0 {
            self.polls.lost_race(&(req.step.clone(), req.owner.clone()));
        }
        (lost, failure)
    }

    /// How many candidates the claimer's next claim query reads: room for the batch and for
    /// losing some races on the way, wider while this store is losing races, and what the
    /// claimer will take while it may keep the rest (see [`pace`]; `turns`: the step's lanes
    /// turn).
    fn claim_page(
        &self,
        claimer: &Claimer,
        want: usize,
        contended: bool,
        now: Millis,
        turns: bool,
    ) -> usize {
        let fewest = if contended {
            CONTENDED_CLAIM_PAGE
        } else {
            CLAIM_PAGE
        };
        let floor = fewest.max(2 * want);
        let keep_for = pace::keep_for(now, LEFTOVERS_MS, turns.then_some(polls::LANE_TURN));
        let paces = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        paces
            .get(claimer)
            .map_or(floor, |p| p.page(now, want, keep_for, LEFTOVERS_MS, floor))
    }

    /// Records the claimer's `taken` tasks at `now` for the size of its next claim queries.
    fn record_pace(&self, claimer: &Claimer, now: Millis, taken: usize) {
        let mut paces = self.paces.lock().unwrap_or_else(|e| e.into_inner());
        let pace = paces.entry(claimer.clone()).or_default();
        pace.record(now, taken, LEFTOVERS_MS);
    }

    fn leftovers(&self) -> std::sync::MutexGuard<'_, HashMap<Claimer, Leftovers>> {
        self.leftovers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `n` of the claimer's leftovers while they are fresh and of the lanes' current
    /// `turn` (the rest stay kept).
    fn take_leftovers(&self, claimer: &Claimer, n: usize, turn: Option<i64>) -> Vec<String> {
        let mut all = self.leftovers();
        let Some(kept) = all.get_mut(claimer) else {
            return Vec::new();
        };
        if kept.read_at.elapsed() >= LEFTOVERS_FOR || kept.turn != turn {
            all.remove(claimer);
            return Vec::new();
        }
        let taken = kept.ids.drain(..n.min(kept.ids.len())).collect();
        if kept.ids.is_empty() {
            all.remove(claimer);
        }
        taken
    }

    /// Keeps what a claim query found and the claim did not take (`kept`, read at its
    /// `read_at`), for the claimer's next claims (replacing what it kept before), unless the
    /// leftovers were forgotten since `epoch` (read before the query).
    fn keep_leftovers(&self, claimer: Claimer, epoch: u64, kept: Leftovers) {
        let mut all = self.leftovers();
        all.retain(|_, kept| kept.read_at.elapsed() < LEFTOVERS_FOR);
        if kept.ids.is_empty() || self.leftovers_epoch.load(Ordering::SeqCst) != epoch {
            all.remove(&claimer);
        } else {
            all.insert(claimer, kept);
        }
    }

    /// Forgets every claimer's leftovers: a task became pending through this store, and the
    /// next claims must see it (it may come before them).
    pub(super) fn forget_leftovers(&self) {
        let mut all = self.leftovers();
        self.leftovers_epoch.fetch_add(1, Ordering::SeqCst);
        all.clear();
        self.polls.forget_empty();
    }
}

pub(super) async fn claim_batch(
    store: &DynamoStore,
    req: &ClaimRequest,
    max: usize,
    now: Millis,
) -> Result<Vec<Claim>> {
    let want = max.clamp(1, MAX_CLAIM_BATCH);
    store.lease_ttls.note(&req.owner, req.ttl_ms);
    let claimer: Claimer = (req.step.clone(), req.owner.clone());
    let claims = take_batch(store, req, &claimer, want, now).await?;
    store.record_pace(&claimer, now, claims.len());
    Ok(claims)
}

/// Up to `want` claims: the claimer's leftovers first, then the pending index.
async fn take_batch(
    store: &DynamoStore,
    req: &ClaimRequest,
    claimer: &Claimer,
    want: usize,
    now: Millis,
) -> Result<Vec<Claim>> {
    let mut claims = Vec::with_capacity(want);
    // First what this claimer's last query found and left, while fresh: no query at all.
    // A kept candidate lost means others are taking from the same page: the rest is dropped
    // and the shard read again (one Query, which finds only what is left). Going on from a
    // random point of the page instead lost again about two times in three at the end of a
    // step, where the claimers whose lanes ran empty all hold pages of the last shards.
    let turn = polls::lane_turn(now, store.step_shards(&req.step).await?);
    loop {
        let kept = store.take_leftovers(claimer, want - claims.len(), turn);
        if kept.is_empty() {
            break;
        }
        let (lost, failure) = store.claim_probed(req, kept, true, now, &mut claims).await;
        if let Some(e) = failure {
            return taken_or(claims, e);
        }
        if claims.len() >= want {
            return Ok(claims);
        }
        if lost > 0 {
            store.leftovers().remove(claimer);
        }
    }
    polls::claim_from_index(store, req, claimer.clone(), want, now, claims).await
}

/// Claims from one pending shard: pages of it from the head, each tried in waves of
/// conditional writes until the batch is full; the rest of a page read from the head
/// (without lost races) is kept as the claimer's leftovers.
pub(super) async fn claim_from_shard(
    store: &DynamoStore,
    req: &ClaimRequest,
    claimer: &Claimer,
    shard: PendingShard<'_>,
    want: usize,
    now: Millis,
    mut claims: Vec<Claim>,
) -> Result<Vec<Claim>> {
    const OP: &str = "claim";
    let mut start: Option<Item> = None;
    for round in 0..CLAIM_ROUNDS {
        let from_head = start.is_none();
        let contended = store.contention.recent();
        let read_at = Instant::now();
        let epoch = store.leftovers_epoch.load(Ordering::SeqCst);
        let size = store.claim_page(claimer, want, contended, now, shard.turn.is_some());
        let (page, next) = pending_page(store, shard.pk, size, start.take()).await?;
        if page.is_empty() {
            if from_head {
                return Ok(claims);
            }
            continue; // ran off the end after lost races: start over from the head
        }
        // The batch's conditional writes go out together; candidates lost to another
        // worker are replaced by the next ones of the page. A store losing races spreads
        // over the page wherever it reads (see `Order`).
        let order = if contended {
            Order::Spread
        } else if !shard.in_lane {
            Order::Tail
        } else {
            Order::Head
        };
        let mut candidates = Candidates::new(order_candidates(&page, order));
        let mut lost_here = 0;
        while claims.len() < want {
            let wave = candidates.take(want - claims.len());
            if wave.is_empty() {
                break;
            }
            let (lost, failure) = store.claim_probed(req, wave, false, now, &mut claims).await;
            if let Some(e) = failure {
                return taken_or(claims, e);
            }
            if lost > 0 {
                lost_here += lost;
                // Someone is taking the tasks right after the one lost: go on elsewhere.
                candidates.jump();
            }
        }
        if !claims.is_empty() {
            // The rest of a page read from the head is the claimer's next candidates
            // (not after lost races: others are taking from it too).
            if from_head && lost_here == 0 {
                let kept = Leftovers {
                    read_at,
                    turn: shard.turn,
                    ids: candidates.rest(),
                };
                store.keep_leftovers(claimer.clone(), epoch, kept);
            }
            return Ok(claims);
        }
        // Every candidate was taken (or the index was stale): look further down the queue,
        // wrapping to the head at its end; back off a little under sustained contention.
        start = next;
        if round >= 2 {
            batch::backoff(round.min(6) - 2).await;
        }
    }
    Err(StoreError::unavailable(
        OP,
        format!(
            "lost the race for every pending task of step `{}` in {CLAIM_ROUNDS} rounds",
            req.step
        ),
    ))
}

/// One page of `size` entries of the pending index partition `pending` from `start`.
async fn pending_page(
    store: &DynamoStore,
    pending: &str,
    size: usize,
    start: Option<Item>,
) -> Result<(Vec<Item>, Option<Item>)> {
    let limit = i32::try_from(size).unwrap_or(i32::MAX);
    let (page, _, next) = store
        .query_page(
            "claim",
            pending,
            &Sk::Any,
            Some(&[PK, ID, INDEX_SK]),
            false,
            Some(limit),
            start,
        )
        .await?;
    Ok((page, next))
}

/// After a claim write failed for another reason than a lost race: hands over what the call
/// took (its leases are held); the next call meets the error again if it lasts.
fn taken_or(claims: Vec<Claim>, e: StoreError) -> Result<Vec<Claim>> {
    if claims.is_empty() {
        Err(e)
    } else {
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_races_are_counted() {
        let c = Contention::new();
        assert!(!c.recent());
        c.lost_race();
        c.lost_race();
        assert!(c.recent());
        assert_eq!(c.lost.load(Ordering::Relaxed), 2);
    }
}
