//! Incremental progress counts: one counter item per step and shard (`C#{step}#{shard}`, one
//! N attribute per state name), moved by an `ADD` after the state changes this store makes (a
//! second write, not a transaction: a transaction would cost twice the write units of both
//! items). `counts` reads the step's counter items (one BatchGetItem), not its tasks.
//!
//! A worker's store keeps its deltas per counter item, one `ADD` per item when written
//! ([`Unwritten`]): at least [`KEEP_AT_LEAST`] (2 s) from the item's oldest delta, then once
//! the item had no change for [`QUIET`] (0.5 s), at most [`FLUSH_AFTER`] (3 s): a worker
//! finishing tasks quickly writes its lane's counter item about once per lane turn, not twice
//! per task. The due deltas are written at every write, claim and heartbeat; all of them
//! before this store reads counts, and when the worker goes idle (a claim that found nothing
//! with no slot busy) or exits (`TaskStore::flush`); other readers see them at most about 3 s
//! late. A busy worker killed outright loses at most those 3 s of deltas (drift a recount
//! repairs); an idle one, which is what a scale-down terminates, has none left.
//! Other commands write each delta at once.
//!
//! A crash (or a failed request) between a state change and its `ADD`, or a task another
//! client writes without adding to the counter, drifts the counts: [`recount`] counts the
//! index and overwrites the counters, on demand (`anamo table recount`) and in a long-running
//! store (the controller's) every [`RECOUNT_EVERY`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};

use super::claims::LEFTOVERS_FOR;
use super::expr::CountChange;
use super::items::*;
use super::layout::{counter_pk, state_shard_pk};
use super::{DynamoStore, Sk};
use crate::model::{StepCounts, TaskState};
use crate::store::{Result, StoreError};

/// How often a long-running store recounts a step whose counts it reads (the first read after
/// this long since the last recount or the store's first read of the step). Drift comes only
/// from a crash between two writes or from other clients' writes, so it is rare; a recount
/// reads the step's whole index (about 0.3 KB per task), so at 1,000,000 tasks it costs some
/// 40,000 read units: every 10 minutes that is about 70 read units per second.
pub(crate) const RECOUNT_EVERY: Duration = Duration::from_secs(600);

/// How long a store keeps a counter item's deltas at least: one turn of the claim lanes
/// ([`LEFTOVERS_FOR`]). A busy worker claims from one shard per turn (its lane's, see
/// [`polls`](super::polls)) and completes most of those tasks within it, so it writes that
/// shard's counter item about once per turn instead of twice per task; and other workers
/// already find a task that becomes pending through another store up to a turn late (a
/// claimer's kept candidates come first, see [`claims`](super::claims)).
pub(crate) const KEEP_AT_LEAST: Duration = LEFTOVERS_FOR;

/// Once [`KEEP_AT_LEAST`] old, an item's deltas are written when no change touched it for this
/// long: a quarter of a lane turn, long beside a request's round trip (milliseconds), short
/// beside the turn. An item changed throughout a turn is written when it goes quiet after the
/// turn, once its last tasks have completed, not at the turn with those completions left for
/// a second write.
pub(crate) const QUIET: Duration = Duration::from_millis(500);

/// The longest a store keeps a counter item's deltas, quiet or not: [`KEEP_AT_LEAST`] and
/// twice [`QUIET`] (3 s). The controller's pass (every 10 s by default) sees counts at most
/// that late. It was one second until 2026-12-05, then 2 s for every item at once from the
/// oldest delta: `BENCHMARKS.md` has them measured.
pub(crate) const FLUSH_AFTER: Duration = KEEP_AT_LEAST.saturating_add(QUIET.saturating_mul(2));

/// Deltas per state of one counter item, and when the first and the last were added.
#[derive(Debug)]
struct Kept {
    deltas: HashMap<TaskState, i64>,
    first: Instant,
    last: Instant,
}

impl Kept {
    /// Due when `all`, when its first delta is [`KEEP_AT_LEAST`] old and it was quiet for
    /// [`QUIET`], or when its first delta is [`FLUSH_AFTER`] old.
    fn due(&self, all: bool) -> bool {
        let age = self.first.elapsed();
        all || (age >= KEEP_AT_LEAST && self.last.elapsed() >= QUIET) || age >= FLUSH_AFTER
    }
}

/// Counter deltas not written yet, per counter item; kept only once
/// [`batch`](Unwritten::batch) is on (a worker's store), written at once otherwise.
#[derive(Debug, Default)]
pub(super) struct Unwritten {
    kept: Mutex<HashMap<String, Kept>>,
    batch: std::sync::atomic::AtomicBool,
}

impl Unwritten {
    pub(super) fn batch(&self) {
        self.batch.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Kept>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, counter: &str, deltas: &[(TaskState, i64)]) {
        let now = Instant::now();
        let mut all = self.lock();
        let kept = all.entry(counter.to_string()).or_insert_with(|| Kept {
            deltas: HashMap::new(),
            first: now,
            last: now,
        });
        for (state, delta) in deltas {
            *kept.deltas.entry(*state).or_default() += delta;
        }
        kept.last = now;
    }

    /// The delta kept for `state` on the counter item `counter`.
    fn kept(&self, counter: &str, state: TaskState) -> i64 {
        self.lock()
            .get(counter)
            .and_then(|kept| kept.deltas.get(&state))
            .copied()
            .unwrap_or(0)
    }

    /// Takes the deltas of every item when `all`, else of the items that are due
    /// ([`Kept::due`]).
    fn take(&self, all: bool) -> Vec<(String, Vec<(TaskState, i64)>)> {
        let all = all || !self.batch.load(std::sync::atomic::Ordering::Relaxed);
        let mut kept = self.lock();
        let due: Vec<String> = kept
            .iter()
            .filter(|(_, k)| k.due(all))
            .map(|(counter, _)| counter.clone())
            .collect();
        let mut out: Vec<(String, Vec<(TaskState, i64)>)> = due
            .into_iter()
            .filter_map(|counter| kept.remove_entry(&counter))
            .map(|(counter, k)| {
                let mut deltas: Vec<_> = k.deltas.into_iter().filter(|(_, d)| *d != 0).collect();
                deltas.sort_by_key(|(state, _)| state.as_str());
                (counter, deltas)
            })
            .filter(|(_, deltas)| !deltas.is_empty())
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// When each step was last recounted (or first counted) by this store.
#[derive(Debug, Default)]
pub(super) struct Recounted(Mutex<HashMap<String, Instant>>);

impl Recounted {
    /// True when `step` is due for a recount; remembers the first read as a recount.
    fn due(&self, step: &str) -> bool {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let last = all.entry(step.to_string()).or_insert_with(Instant::now);
        last.elapsed() >= RECOUNT_EVERY
    }

    fn done(&self, step: &str) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.insert(step.to_string(), Instant::now());
    }
}

/// The `ADD` of `deltas` to one counter item: its update expression, names and values.
pub(crate) fn add_expression(
    deltas: &[(TaskState, i64)],
) -> (
    String,
    HashMap<String, String>,
    HashMap<String, AttributeValue>,
) {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut parts = Vec::new();
    for (i, (state, delta)) in deltas.iter().enumerate() {
        names.insert(format!("#c{i}"), state.as_str().to_string());
        values.insert(format!(":c{i}"), n(delta));
        parts.push(format!("#c{i} :c{i}"));
    }
    (format!("ADD {}", parts.join(", ")), names, values)
}

/// The deltas of one state change.
pub(crate) fn change_deltas(change: &CountChange) -> [(TaskState, i64); 2] {
    [(change.from, -1), (change.to, 1)]
}

/// Sums counter items into a step's counts (missing states count 0; a drifted negative
/// total counts 0 until the next recount).
pub(crate) fn sum_counters(step: &str, items: &[Item]) -> Result<StepCounts> {
    let mut totals = [0i64; TaskState::ALL.len()];
    for item in items {
        let r = Reader::new("counts", item);
        for (total, state) in totals.iter_mut().zip(TaskState::ALL) {
            *total += r.opt_n::<i64>(state.as_str())?.unwrap_or(0);
        }
    }
    let mut counts = StepCounts {
        step: step.to_string(),
        ..Default::default()
    };
    for (total, state) in totals.into_iter().zip(TaskState::ALL) {
        counts.set(state, total.max(0) as u64);
    }
    Ok(counts)
}

impl DynamoStore {
    /// Adds `deltas` to the counter item `counter`.
    pub(super) async fn add_counts(
        &self,
        op: &str,
        counter: String,
        deltas: &[(TaskState, i64)],
    ) -> Result<()> {
        let (expr, names, values) = add_expression(deltas);
        self.mix.add(&format!("{op} count write"));
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(counter)))
            .update_expression(expr)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.err(op, e))?;
        self.consumed(out.consumed_capacity(), true);
        Ok(())
    }

    /// Moves one task between two states in its shard's counter item (the item write's keys,
    /// the counter's included, were recorded with it): kept with this store's other deltas,
    /// written when the oldest is [`FLUSH_AFTER`] old.
    /// Never fails: the task's write succeeded, and a counter write that fails is kept for
    /// the next one.
    pub(super) async fn bump(&self, op: &str, change: &CountChange) -> Result<()> {
        self.unwritten.add(&change.counter, &change_deltas(change));
        self.write_due_counts(op).await;
        Ok(())
    }

    /// Writes the kept counter deltas if the oldest is due; a failure is logged and the deltas
    /// kept (the operation that called this succeeded without them).
    pub(super) async fn write_due_counts(&self, op: &str) {
        if let Err(e) = self.write_counts(op, false).await {
            tracing::warn!(error = %e, "progress counters not written yet; kept for the next write");
        }
    }

    /// Writes the kept counter deltas (all of them, or only when the oldest is due), one
    /// `ADD` per counter item. A failed write keeps what it could not write for the next one.
    pub(super) async fn write_counts(&self, op: &str, all: bool) -> Result<()> {
        let mut pending = self.unwritten.take(all).into_iter();
        while let Some((counter, deltas)) = pending.next() {
            if let Err(e) = self.add_counts(op, counter.clone(), &deltas).await {
                self.unwritten.add(&counter, &deltas);
                for (counter, deltas) in pending {
                    self.unwritten.add(&counter, &deltas);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Counts `step`'s tasks from the index and overwrites its counter items with the counts.
    pub async fn recount(&self, step: &str) -> Result<StepCounts> {
        const OP: &str = "recount";
        self.write_counts(OP, true).await?;
        let shards = self.step_shards(step).await?;
        let mut items = Vec::new();
        for shard in 0..shards {
            let per_state =
                futures::future::try_join_all(TaskState::ALL.iter().map(|&state| async move {
                    let pk = state_shard_pk(step, state, shard);
                    Ok::<_, StoreError>((state, self.count(OP, &pk, Sk::Any, None).await?))
                }))
                .await?;
            let mut item = key(counter_pk(step, shard));
            for (state, count) in per_state {
                item.insert(state.as_str().to_string(), n(count));
            }
            self.mix.add(&format!("{OP} write"));
            let out = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| self.err(OP, e))?;
            self.consumed(out.consumed_capacity(), true);
            self.wrote([counter_pk(step, shard).as_str()]);
            items.push(item);
        }
        self.recounted.done(step);
        sum_counters(step, &items)
    }
}

/// A step's counts from its counter items (recounted first when due), with the oldest pending
/// task's time.
pub(super) async fn counts(store: &DynamoStore, step: &str) -> Result<StepCounts> {
    const OP: &str = "counts";
    store.write_counts(OP, true).await?;
    let mut counts = if store.recounted.due(step) {
        store.recount(step).await?
    } else {
        let shards = store.step_shards(step).await?;
        let keys = (0..shards).map(|i| key(counter_pk(step, i))).collect();
        let items = store.batch_get(OP, keys, None).await?;
        sum_counters(step, &items)?
    };
    if counts.pending > 0 {
        counts.oldest_pending_at = store.read_oldest_pending(step).await?;
    }
    Ok(counts)
}

/// Per shard of `step`, its `(pending, retrying)` counts: the counter items (one BatchGetItem,
/// eventually consistent) plus this store's deltas not written yet, for an idle claim
/// ([`polls`](super::polls)). A missing item counts 0.
pub(super) async fn shard_counts(
    store: &DynamoStore,
    step: &str,
    shards: u32,
) -> Result<Vec<(i64, i64)>> {
    const OP: &str = "claim counts";
    // One BatchGetItem per 100 shards (the most a step has is 256).
    let keys = (0..shards).map(|i| key(counter_pk(step, i))).collect();
    let items = store.batch_get_eventually(OP, keys).await?;
    let mut by_pk: HashMap<String, (i64, i64)> = HashMap::new();
    for item in &items {
        let r = Reader::new(OP, item);
        let pending = r.opt_n::<i64>(TaskState::Pending.as_str())?.unwrap_or(0);
        let retrying = r.opt_n::<i64>(TaskState::Retrying.as_str())?.unwrap_or(0);
        by_pk.insert(r.s(PK)?, (pending, retrying));
    }
    Ok((0..shards)
        .map(|i| {
            let pk = counter_pk(step, i);
            let (pending, retrying) = by_pk.get(&pk).copied().unwrap_or_default();
            let kept = |state| store.unwritten.kept(&pk, state);
            (
                pending + kept(TaskState::Pending),
                retrying + kept(TaskState::Retrying),
            )
        })
        .collect())
}

/// Several steps' counts from their counter items, for a reconcile pass: every step's
/// counter items together, 100 keys per BatchGetItem (50 steps × 8
/// shards: 4 calls; eventually consistent reads: 0.5 read unit per item), no recount (the progress count's [`counts`] recounts when due) and no
/// oldest pending task.
pub(super) async fn pass_counts(store: &DynamoStore, steps: &[String]) -> Result<Vec<StepCounts>> {
    const OP: &str = "pass counts";
    store.write_counts(OP, true).await?;
    // Known after a step's first read (one GetItem of its registry item, then kept).
    let shards =
        futures::future::try_join_all(steps.iter().map(|step| store.step_shards(step))).await?;
    let mut owner = HashMap::new();
    let mut keys = Vec::new();
    for (i, (step, shards)) in steps.iter().zip(shards).enumerate() {
        for shard in 0..shards {
            let pk = counter_pk(step, shard);
            keys.push(key(pk.clone()));
            owner.insert(pk, i);
        }
    }
    let mut per_step: Vec<Vec<Item>> = vec![Vec::new(); steps.len()];
    // Eventually consistent: half the read units, and the counters lag a worker's kept
    // deltas by up to FLUSH_AFTER anyway.
    for item in store.batch_get_eventually(OP, keys).await? {
        let pk = Reader::new(OP, &item).s(PK)?;
        if let Some(&i) = owner.get(&pk) {
            per_step[i].push(item);
        }
    }
    steps
        .iter()
        .zip(&per_step)
        .map(|(step, items)| sum_counters(step, items))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_shards_and_clamp_drift() {
        let a = Item::from([
            (PK.to_string(), s("C#x#0")),
            ("pending".to_string(), n(3)),
            ("running".to_string(), n(-1)),
        ]);
        let b = Item::from([
            (PK.to_string(), s("C#x#1")),
            ("pending".to_string(), n(2)),
            ("succeeded".to_string(), n(4)),
        ]);
        let c = sum_counters("x", &[a, b]).unwrap();
        assert_eq!((c.pending, c.running, c.succeeded), (5, 0, 4));
        let (expr, names, values) =
            add_expression(&[(TaskState::Pending, -1), (TaskState::Running, 1)]);
        assert_eq!(expr, "ADD #c0 :c0, #c1 :c1");
        assert_eq!(names["#c1"], "running");
        assert_eq!(values[":c0"], n(-1));
    }

    fn kept(first_ms: u64, last_ms: u64) -> Kept {
        let ago = |ms| Instant::now() - Duration::from_millis(ms);
        Kept {
            deltas: HashMap::from([(TaskState::Pending, -1)]),
            first: ago(first_ms),
            last: ago(last_ms),
        }
    }

    #[test]
    fn an_item_is_written_once_quiet_after_a_turn_and_never_later_than_the_bound() {
        assert!(!kept(1_000, 900).due(false), "younger than a turn");
        assert!(kept(1_000, 900).due(true), "a flush takes everything");
        assert!(!kept(2_100, 100).due(false), "a turn old, still changing");
        assert!(kept(2_100, 600).due(false), "a turn old and quiet");
        assert!(kept(3_000, 0).due(false), "the bound, however busy");
        assert_eq!(FLUSH_AFTER, Duration::from_secs(3));
        let u = Unwritten::default();
        u.batch();
        u.kept.lock().unwrap().extend([
            ("C#s#0".to_string(), kept(2_100, 600)),
            ("C#s#1".to_string(), kept(2_100, 100)),
        ]);
        let taken = u.take(false);
        assert_eq!(
            taken,
            vec![("C#s#0".to_string(), vec![(TaskState::Pending, -1)])]
        );
        assert_eq!(
            u.kept("C#s#1", TaskState::Pending),
            -1,
            "the busy item stays kept"
        );
        assert_eq!(u.take(true).len(), 1);
        assert!(u.lock().is_empty());
    }
}
