//! Incremental progress counts: one counter item per step and shard (`C#{step}#{shard}`, one
//! N attribute per state name), moved by an `ADD` after each successful state change this
//! store makes (a second write, not a transaction: a transaction would cost twice the write
//! units of both items). `counts` reads the step's counter items (one BatchGetItem), not its
//! tasks.
//!
//! A crash (or a failed request) between a state change and its `ADD`, or a task another
//! client writes without adding to the counter, drifts the counts: [`recount`] counts the
//! index and overwrites the counters, on demand (`anamo table recount`) and in a long-running
//! store (the controller's) every [`RECOUNT_EVERY`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};

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
    /// the counter's included, were recorded with it).
    pub(super) async fn bump(&self, op: &str, change: &CountChange) -> Result<()> {
        self.add_counts(op, change.counter.clone(), &change_deltas(change))
            .await
    }

    /// Counts `step`'s tasks from the index and overwrites its counter items with the counts.
    pub async fn recount(&self, step: &str) -> Result<StepCounts> {
        const OP: &str = "recount";
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
    let mut counts = if store.recounted.due(step) {
        store.recount(step).await?
    } else {
        let shards = store.step_shards(step).await?;
        let keys = (0..shards).map(|i| key(counter_pk(step, i))).collect();
        let items = store.batch_get(OP, keys, None).await?;
        sum_counters(step, &items)?
    };
    if counts.pending > 0 {
        counts.oldest_pending_at = store.oldest_pending(step).await?;
    }
    Ok(counts)
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
}
