//! Lease expiry without heartbeats in the index. A running task's index entry is
//! `{lease_owner}#{id}` in `S#{step}#running#{shard}` and a heartbeat writes only
//! `lease_expires_at`, which the index does not project; so expired leases are found through
//! the owners:
//!
//! 1. the step's worker registrations (`W#…`, refreshed by every live worker each heartbeat):
//!    for each one marked gone, not refreshed for its worker's lease TTL (which it records;
//!    [`STALE_AFTER`] for one that records none), or deleted since the last pass, its running
//!    tasks are one Query per running shard, `begins_with(g2sk, "{owner}#")`;
//! 2. a task can be claimed by an owner without a registration (another client, a
//!    registration lost in a crash), so every [`FULL_SWEEP_EVERY`] (and at a store's first
//!    pass) all running shards are read, and the tasks of owners without a fresh registration
//!    are taken too;
//! 3. tasks found so but not expired yet are remembered and looked at again each pass, by key.
//!
//! The candidates are read by key (BatchGetItem, consistent: their lease expiry is not in the
//! index) and each expired one is requeued with the fenced condition `lease_token = :seen AND
//! lease_expires_at < :now`: a lease renewed, completed or taken over meanwhile is skipped.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};

use super::expr::Expr;
use super::fence::Write;
use super::items::*;
use super::layout::{owner_prefix, TaskKeys};
use super::{DynamoStore, Sk, SWEEP_CONCURRENCY};
use crate::clock::Millis;
use crate::model::{
    RequeueReport, TaskState, WorkerState, DEFAULT_LEASE_TTL, DEFAULT_MAX_ATTEMPTS,
};
use crate::store::{Fence, Result};

/// How often every running shard is read for tasks of unregistered owners: once per default
/// lease TTL, so such a task's expired lease is found at most about one TTL late (two TTLs
/// after its last heartbeat).
pub(crate) const FULL_SWEEP_EVERY: Millis = DEFAULT_LEASE_TTL.as_millis() as Millis;
/// A worker registration that records no lease TTL (written before registrations recorded it)
/// is stale when older than this, the default lease TTL; one that records its worker's TTL is
/// stale when older than that TTL (a live worker refreshes it every heartbeat, a fraction of
/// its TTL). The running tasks of a stale registration's worker are looked at.
pub(crate) const STALE_AFTER: Millis = DEFAULT_LEASE_TTL.as_millis() as Millis;

/// The lease TTL each claimer of this store asked for (its worker told it before registering,
/// and each claim asks for it), recorded on the claimer's registration.
#[derive(Debug, Default)]
pub(super) struct LeaseTtls(Mutex<HashMap<String, Millis>>);

impl LeaseTtls {
    pub(super) fn note(&self, owner: &str, ttl_ms: Millis) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if all.get(owner) != Some(&ttl_ms) {
            all.insert(owner.to_string(), ttl_ms);
        }
    }

    pub(super) fn of(&self, owner: &str) -> Option<Millis> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(owner).copied()
    }
}

/// Per step: when all running shards were last read, and the running tasks of owners without
/// a fresh registration whose lease had not expired yet.
#[derive(Debug, Default)]
pub(super) struct Memory(Mutex<HashMap<String, StepMemory>>);

#[derive(Debug, Default, Clone)]
struct StepMemory {
    full_sweep_at: Option<Millis>,
    watched: BTreeSet<String>,
    /// The workers registered at the last pass: one missing now has gone.
    registered: BTreeSet<String>,
}

impl Memory {
    fn get(&self, step: &str) -> StepMemory {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.get(step).cloned().unwrap_or_default()
    }

    fn put(&self, step: &str, m: StepMemory) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(step.to_string(), m);
    }
}

/// Whether a pass at `now` reads every running shard.
pub(crate) fn full_sweep_due(last: Option<Millis>, now: Millis) -> bool {
    last.is_none_or(|at| now - at >= FULL_SWEEP_EVERY || now < at)
}

/// A worker's registration and the lease TTL it records, if any.
pub(crate) type Registration = (crate::model::WorkerInfo, Option<Millis>);

/// The owners whose running tasks a pass trusts to be heartbeated: registered, not gone, and
/// seen within their own lease TTL ([`STALE_AFTER`] for a registration that records none).
pub(crate) fn fresh_owners(workers: &[Registration], now: Millis) -> HashSet<String> {
    workers
        .iter()
        .filter(|(w, ttl)| {
            w.state != WorkerState::Gone && now - w.last_seen <= ttl.unwrap_or(STALE_AFTER)
        })
        .map(|(w, _)| w.worker_id.clone())
        .collect()
}

/// The owner and id of a running index entry (`{owner}#{id}`; ids contain no `#`).
fn owner_and_id(sk: &str) -> Option<(&str, &str)> {
    sk.rsplit_once('#')
}

impl DynamoStore {
    /// The `(owner, id)` of running entries in every running shard of `step`, all of them or
    /// those of one owner.
    async fn running_entries(
        &self,
        step: &str,
        owner: Option<&str>,
    ) -> Result<Vec<(String, String)>> {
        const OP: &str = "requeue expired";
        let mut out = Vec::new();
        for pk in self.state_pks(step, TaskState::Running).await? {
            let sk = match owner {
                Some(o) => Sk::BeginsWith(owner_prefix(o)),
                None => Sk::Any,
            };
            for item in self.query_all(OP, &pk, sk, Some(&[PK, INDEX_SK])).await? {
                let sk = Reader::new(OP, &item).s(INDEX_SK)?;
                if let Some((o, id)) = owner_and_id(&sk) {
                    out.push((o.to_string(), id.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// The ids whose leases this pass looks at, and the owners trusted.
    async fn expiry_candidates(
        &self,
        step: &str,
        now: Millis,
        memory: &mut StepMemory,
    ) -> Result<(BTreeSet<String>, HashSet<String>)> {
        let workers = super::workers::list_registrations(self, Some(step)).await?;
        let fresh = fresh_owners(&workers, now);
        let registered: BTreeSet<String> =
            workers.iter().map(|(w, _)| w.worker_id.clone()).collect();
        let gone = memory.registered.difference(&registered).cloned();
        let stale = registered.iter().filter(|w| !fresh.contains(*w)).cloned();
        let suspects: BTreeSet<String> = gone.chain(stale).collect();
        memory.registered = registered;
        let mut ids = std::mem::take(&mut memory.watched);
        for owner in &suspects {
            let entries = self.running_entries(step, Some(owner)).await?;
            ids.extend(entries.into_iter().map(|(_, id)| id));
        }
        if full_sweep_due(memory.full_sweep_at, now) {
            let entries = self.running_entries(step, None).await?;
            ids.extend(
                entries
                    .into_iter()
                    .filter(|(owner, _)| !fresh.contains(owner))
                    .map(|(_, id)| id),
            );
            memory.full_sweep_at = Some(now);
        }
        Ok((ids, fresh))
    }
}

pub(super) async fn requeue_expired(
    store: &DynamoStore,
    step: &str,
    now: Millis,
    fence: Fence<'_>,
) -> Result<RequeueReport> {
    const OP: &str = "requeue expired";
    let mut memory = store.expiry.get(step);
    let (ids, fresh) = store.expiry_candidates(step, now, &mut memory).await?;
    let keys = ids.iter().map(|id| key(task_pk(step, id))).collect();
    let attrs = [
        PK,
        ID,
        STATE,
        LEASE_OWNER,
        LEASE_TOKEN,
        LEASE_EXPIRES_AT,
        ATTEMPTS,
        MAX_ATTEMPTS,
        PRIORITY,
    ];
    let items = store.batch_get(OP, keys, Some(&attrs)).await?;
    let shards = store.step_shards(step).await?;
    let mut expired = Vec::new();
    for item in items {
        let r = Reader::new(OP, &item);
        if r.state()? != TaskState::Running {
            continue;
        }
        match r.opt_n::<Millis>(LEASE_EXPIRES_AT)? {
            Some(at) if at >= now => {
                let owner = r.opt_s(LEASE_OWNER)?.unwrap_or_default();
                if !fresh.contains(&owner) {
                    memory.watched.insert(r.s(ID)?);
                }
            }
            _ => expired.push(item),
        }
    }
    store.expiry.put(step, memory);
    let outcomes: Vec<Option<(String, TaskState)>> = futures::stream::iter(expired)
        .map(|item| requeue_one(store, step, item, shards, now, fence))
        .buffer_unordered(SWEEP_CONCURRENCY)
        .try_collect()
        .await?;
    let mut report = RequeueReport::default();
    for (id, state) in outcomes.into_iter().flatten() {
        if state == TaskState::Failed {
            report.failed.push(id);
        } else {
            report.requeued.push(id);
        }
    }
    report.requeued.sort();
    report.failed.sort();
    if !report.requeued.is_empty() {
        store.forget_leftovers();
    }
    Ok(report)
}

/// Where a task whose lease expired goes: pending, or failed after its last attempt.
pub(super) struct Expiry {
    pub target: TaskState,
    pub priority: i32,
    pub reason: String,
}

/// The [`Expiry`] of the running task `r` reads (also used by `table migrate` for the
/// expired leases of layout-1 workers).
pub(super) fn expiry_of(r: &Reader) -> Result<Expiry> {
    let attempts: u32 = r.opt_n(ATTEMPTS)?.unwrap_or(0);
    let max: u32 = r.opt_n(MAX_ATTEMPTS)?.unwrap_or(DEFAULT_MAX_ATTEMPTS);
    let priority: i32 = r.opt_n(PRIORITY)?.unwrap_or(0);
    let (target, reason) = if attempts >= max {
        (
            TaskState::Failed,
            format!("lease expired on attempt {attempts} of {max}"),
        )
    } else {
        (TaskState::Pending, "lease expired".to_string())
    };
    Ok(Expiry {
        target,
        priority,
        reason,
    })
}

/// The fenced requeue (or failure, after the last attempt) of one expired lease; `None` when
/// the lease was renewed, completed or taken over meanwhile.
async fn requeue_one(
    store: &DynamoStore,
    step: &str,
    item: Item,
    shards: u32,
    now: Millis,
    fence: Fence<'_>,
) -> Result<Option<(String, TaskState)>> {
    const OP: &str = "requeue expired";
    let r = Reader::new(OP, &item);
    let id = r.s(ID)?;
    let Expiry {
        target,
        priority,
        reason,
    } = expiry_of(&r)?;
    let mut e = Expr::new()
        .transition(&TaskKeys::moved(step, &id, target, priority, now, shards))
        .remove_lease()
        .set(REASON, s(reason))
        .cond_eq(STATE, s(TaskState::Running.as_str()));
    let (token, expires, now_v) = (
        e.name(LEASE_TOKEN),
        e.name(LEASE_EXPIRES_AT),
        e.value(n(now)),
    );
    e = match r.opt_s(LEASE_TOKEN)? {
        Some(seen) => {
            let seen = e.value(s(seen));
            e.cond(format!("{token} = {seen}"))
        }
        None => e.cond(format!("attribute_not_exists({token})")),
    };
    e = e.cond(format!(
        "attribute_not_exists({expires}) OR {expires} < {now_v}"
    ));
    let write = Write::Update {
        pk: task_pk(step, &id),
        expr: Box::new(e),
    };
    let moved = store.write_fenced(OP, OP, fence, write).await?;
    Ok(moved.then_some((id, target)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkerInfo;

    fn worker(id: &str, last_seen: Millis, state: WorkerState) -> Registration {
        (worker_info(id, last_seen, state), None)
    }

    fn worker_info(id: &str, last_seen: Millis, state: WorkerState) -> WorkerInfo {
        WorkerInfo {
            worker_id: id.into(),
            step: "align".into(),
            instance_id: None,
            slots: 1,
            busy_slots: 1,
            started_at: 0,
            last_seen,
            last_busy_at: 0,
            state,
            stop_reason: None,
            drain_requested: false,
        }
    }

    #[test]
    fn stale_and_gone_registrations_are_not_trusted() {
        let now = 10 * STALE_AFTER;
        let workers = [
            worker("live", now - 1_000, WorkerState::Active),
            worker("draining", now - STALE_AFTER, WorkerState::Draining),
            worker("stale", now - STALE_AFTER - 1, WorkerState::Active),
            worker("gone", now, WorkerState::Gone),
        ];
        let mut fresh: Vec<String> = fresh_owners(&workers, now).into_iter().collect();
        fresh.sort();
        assert_eq!(fresh, ["draining", "live"]);
    }

    #[test]
    fn a_registration_is_trusted_for_its_own_lease_ttl() {
        let now = 10 * STALE_AFTER;
        let ttl = |id, seen_ago, ttl| (worker_info(id, now - seen_ago, WorkerState::Active), ttl);
        let workers = [
            ttl("short-live", 2_000, Some(3_000)),
            ttl("short-stale", 3_001, Some(3_000)),
            ttl("long-live", STALE_AFTER + 1, Some(2 * STALE_AFTER)),
            ttl("old-item", STALE_AFTER + 1, None),
        ];
        let mut fresh: Vec<String> = fresh_owners(&workers, now).into_iter().collect();
        fresh.sort();
        assert_eq!(fresh, ["long-live", "short-live"]);
    }

    #[test]
    fn full_sweeps_come_once_per_interval() {
        assert!(full_sweep_due(None, 5));
        assert!(!full_sweep_due(Some(5), 5 + FULL_SWEEP_EVERY - 1));
        assert!(full_sweep_due(Some(5), 5 + FULL_SWEEP_EVERY));
        assert!(full_sweep_due(Some(5), 4), "a clock that went back");
        assert_eq!(owner_and_id("w#1#S42"), Some(("w#1", "S42")));
    }
}
