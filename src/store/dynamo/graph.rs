//! The primitives the pipeline graph's promotion (`store::promote`) is built from, each a
//! small read or one conditional write:
//!
//! * `task_states`: BatchGetItem of the tasks' keys with a projection of `id` and `state`
//!   (100 keys a request, consistent reads).
//! * `step_ids`: one Query per state and shard of the step's `S#step#state#shard` index
//!   partitions, projected
//!   to `id` and `state` (never specs or log tails), filtered by the id prefix.
//! * `entered_since`: one Query per shard of a final state's `S#step#state#shard` partitions
//!   for the sort keys from `{since:013}` on, projected to `id`, `updated_at` and `reason`.
//! * `settle_waiting` / `hold_back`: one UpdateItem conditional on the task's state.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{ReturnConsumedCapacity, Select};
use futures::{FutureExt, StreamExt, TryStreamExt};

use super::expr::Expr;
use super::items::*;
use super::layout::TaskKeys;
use super::{DynamoStore, Sk};
use crate::clock::Millis;
use crate::model::TaskState;
use crate::store::{Entered, Result};

pub(super) async fn task_states(
    store: &DynamoStore,
    step: &str,
    ids: &[String],
) -> Result<HashMap<String, TaskState>> {
    const OP: &str = "task states";
    let keys = ids.iter().map(|id| key(task_pk(step, id))).collect();
    let items = store.batch_get(OP, keys, Some(&[PK, ID, STATE])).await?;
    let mut out = HashMap::with_capacity(items.len());
    for item in &items {
        let r = Reader::new(OP, item);
        out.insert(r.s(ID)?, r.state()?);
    }
    Ok(out)
}

pub(super) async fn step_ids(
    store: &DynamoStore,
    step: &str,
    states: &[TaskState],
    prefix: &str,
) -> Result<Vec<(String, TaskState)>> {
    let mut out = Vec::new();
    for &state in states {
        for pk in store.state_pks(step, state).await? {
            state_ids(store, &pk, prefix, &mut |ids| {
                out.extend(ids.into_iter().map(|id| (id, state)))
            })
            .await?;
        }
    }
    out.sort();
    Ok(out)
}

/// [`step_ids`] of every task in `states`, a Query page at a time.
pub(super) async fn step_ids_paged(
    store: &DynamoStore,
    step: &str,
    states: &[TaskState],
    page: &mut (dyn FnMut(Vec<(String, TaskState)>) + Send),
) -> Result<()> {
    for &state in states {
        for pk in store.state_pks(step, state).await? {
            state_ids(store, &pk, "", &mut |ids| {
                page(ids.into_iter().map(|id| (id, state)).collect())
            })
            .await?;
        }
    }
    Ok(())
}

/// The ids in one index partition (every page), filtered by `prefix`, handed to `page` a page
/// at a time.
async fn state_ids(
    store: &DynamoStore,
    partition: &str,
    prefix: &str,
    page: &mut (dyn FnMut(Vec<String>) + Send),
) -> Result<()> {
    const OP: &str = "step ids";
    let mut names = HashMap::from([
        ("#gpk".to_string(), INDEX_PK.to_string()),
        ("#id".to_string(), ID.to_string()),
    ]);
    let mut values = HashMap::from([(":gpk".to_string(), s(partition))]);
    let filter = (!prefix.is_empty()).then(|| {
        values.insert(":prefix".to_string(), s(prefix));
        "begins_with(#id, :prefix)".to_string()
    });
    names.insert("#st".to_string(), STATE.to_string());
    let mut start = None;
    loop {
        store.mix.add(&format!("{OP} query"));
        let out = store
            .client
            .query()
            .table_name(&store.table)
            .index_name(INDEX)
            .key_condition_expression("#gpk = :gpk")
            .set_filter_expression(filter.clone())
            .select(Select::SpecificAttributes)
            .projection_expression("#id, #st")
            .set_expression_attribute_names(Some(names.clone()))
            .set_expression_attribute_values(Some(values.clone()))
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| store.err(OP, e))?;
        store.consumed(out.consumed_capacity(), false);
        let items = out.items.unwrap_or_default();
        let ids = items
            .iter()
            .map(|item| Reader::new(OP, item).s(ID))
            .collect::<Result<Vec<_>>>()?;
        drop(items);
        page(ids);
        match out.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(k) => start = Some(k),
            None => return Ok(()),
        }
    }
}

pub(super) async fn entered_since(
    store: &DynamoStore,
    step: &str,
    state: TaskState,
    since: Millis,
) -> Result<Vec<Entered>> {
    if !state.is_final() {
        return Err(Entered::not_final(state));
    }
    let pks = store.state_pks(step, state).await?;
    // The shards at once: a refresh waits for the slowest, not for their sum.
    let reads: Vec<_> = pks
        .iter()
        .map(|pk| entered_in(store, pk, since).boxed())
        .collect();
    let mut out: Vec<Entered> = futures::stream::iter(reads)
        .buffer_unordered(SHARDS_AT_ONCE)
        .try_concat()
        .await?;
    out.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
    Ok(out)
}

/// How many shards `entered_since` reads at once.
const SHARDS_AT_ONCE: usize = 16;

/// The entries of one final-state partition whose sort key (`{updated_at:013}#{id}`) is from
/// `since` on (every page).
async fn entered_in(store: &DynamoStore, partition: &str, since: Millis) -> Result<Vec<Entered>> {
    const OP: &str = "entered since";
    let from = Sk::AtLeast(ts13(since.max(0)));
    let items = store
        .query_all(OP, partition, from, Some(&[ID, UPDATED_AT, REASON]))
        .await?;
    items
        .iter()
        .map(|item| {
            let r = Reader::new(OP, item);
            Ok(Entered {
                id: r.s(ID)?,
                at: r.n(UPDATED_AT)?,
                reason: r.opt_s(REASON)?,
            })
        })
        .collect()
}

pub(super) async fn settle_waiting(
    store: &DynamoStore,
    step: &str,
    id: &str,
    priority: i32,
    to: TaskState,
    reason: Option<&str>,
    now: Millis,
) -> Result<bool> {
    const OP: &str = "settle waiting";
    let shards = store.step_shards(step).await?;
    let mut e = Expr::new()
        .transition(&TaskKeys::moved(step, id, to, priority, now, shards))
        .cond_eq(STATE, s(TaskState::Waiting.as_str()));
    e = match reason {
        Some(r) => e.set(REASON, s(r)),
        None => e.remove(REASON),
    };
    let moved = store
        .update(OP, task_pk(step, id), e, false)
        .await?
        .is_some();
    if moved && to == TaskState::Pending {
        store.forget_leftovers();
    }
    Ok(moved)
}

pub(super) async fn hold_back(
    store: &DynamoStore,
    step: &str,
    id: &str,
    now: Millis,
) -> Result<bool> {
    const OP: &str = "hold back";
    let shards = store.step_shards(step).await?;
    let e = Expr::new()
        .transition(&TaskKeys::moved(
            step,
            id,
            TaskState::Waiting,
            0,
            now,
            shards,
        ))
        .cond_eq(STATE, s(TaskState::Pending.as_str()))
        .cond_eq(ATTEMPTS, n(0));
    Ok(store
        .update(OP, task_pk(step, id), e, false)
        .await?
        .is_some())
}
