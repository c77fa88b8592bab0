//! Reads of tasks: one task, lists, counts of index partitions, the bounded backlog a reconcile pass needs,
//! finished counts and the step registry.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};

use super::items::*;
use super::{DynamoStore, Sk, SWEEP_CONCURRENCY};
use crate::clock::Millis;
use crate::model::{Backlog, Task, TaskFilter, TaskResult, TaskState};
use crate::store::{Result, StoreError, TaskStore};

impl DynamoStore {
    /// When the longest-waiting pending task became pending (the oldest of every shard's).
    pub(super) async fn read_oldest_pending(&self, step: &str) -> Result<Option<Millis>> {
        let shards = self.state_pks(step, TaskState::Pending).await?;
        let per_shard =
            futures::future::try_join_all(shards.iter().map(|pk| self.oldest_in(pk))).await?;
        Ok(per_shard.into_iter().flatten().min())
    }

    /// The oldest of one pending index partition. It is ordered by priority, then by the time
    /// the task became pending, so each priority group's first entry is its oldest: one
    /// one-item Query per distinct priority instead of reading the whole backlog.
    async fn oldest_in(&self, gsi_pk: &str) -> Result<Option<Millis>> {
        const OP: &str = "oldest pending";
        const MAX_PRIORITY_GROUPS: usize = 64;
        let mut oldest = None::<Millis>;
        let mut after: Option<String> = None;
        for _ in 0..MAX_PRIORITY_GROUPS {
            let sk = match after.take() {
                Some(a) => Sk::GreaterThan(a),
                None => Sk::Any,
            };
            let (page, _, _) = self
                .query_page(
                    OP,
                    gsi_pk,
                    &sk,
                    Some(&[PK, INDEX_SK, UPDATED_AT]),
                    false,
                    Some(1),
                    None,
                )
                .await?;
            let Some(item) = page.first() else { break };
            let r = Reader::new(OP, item);
            if let Some(t) = r.opt_n::<Millis>(UPDATED_AT)? {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
            // Skip the rest of this priority group: `$` sorts right after the `#` separator.
            let group_key = r.s(INDEX_SK)?;
            let group = group_key.split('#').next().unwrap_or_default();
            after = Some(format!("{group}$"));
        }
        Ok(oldest)
    }

    /// The tasks of one step in these states: their keys from the index (every shard of every
    /// state), then the whole items by key (the index does not project specs and results).
    /// A task that moves between two of the states while they are read is listed once, in
    /// its state at the item read — unless it moves back into a state already read from one
    /// not read yet (a requeue during the listing): that listing misses it.
    async fn tasks_in(&self, op: &str, step: &str, states: &[TaskState]) -> Result<Vec<Task>> {
        let mut pks = std::collections::BTreeSet::new();
        for &state in states {
            for pk in self.state_pks(step, state).await? {
                for item in self.query_all(op, &pk, Sk::Any, Some(&[PK])).await? {
                    pks.insert(Reader::new(op, &item).s(PK)?);
                }
            }
        }
        let items = self
            .batch_get(op, pks.into_iter().map(key).collect(), None)
            .await?;
        let tasks = items
            .iter()
            .map(|i| Reader::new(op, i).task())
            .collect::<Result<Vec<_>>>()?;
        Ok(tasks
            .into_iter()
            .filter(|t| states.contains(&t.state))
            .collect())
    }

    /// `step`'s tasks in `state`, counted over every shard (up to `limit` in all).
    async fn count_state(
        &self,
        op: &str,
        step: &str,
        state: TaskState,
        sk: Sk,
        limit: Option<u64>,
    ) -> Result<u64> {
        let mut total = 0;
        for pk in self.state_pks(step, state).await? {
            let left = match limit {
                Some(l) if total >= l => break,
                Some(l) => Some(l - total),
                None => None,
            };
            total += self.count(op, &pk, sk.clone(), left).await?;
        }
        Ok(total)
    }
}

pub(super) async fn get(store: &DynamoStore, step: &str, id: &str) -> Result<Option<Task>> {
    const OP: &str = "get";
    store
        .get_task_item(OP, step, id)
        .await?
        .map(|item| Reader::new(OP, &item).task())
        .transpose()
}

pub(super) async fn list(store: &DynamoStore, filter: &TaskFilter) -> Result<Vec<Task>> {
    const OP: &str = "list";
    let steps = match &filter.step {
        Some(step) => vec![step.clone()],
        None => store.steps().await?,
    };
    let mut tasks: Vec<Task> = if let Some(id) = &filter.id {
        let found: Vec<Option<Task>> = futures::stream::iter(steps)
            .map(|step| async move { store.get(&step, id).await })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .try_collect()
            .await?;
        found
            .into_iter()
            .flatten()
            .filter(|t| filter.state.is_none_or(|s| t.state == s))
            .collect()
    } else {
        let states = match filter.state {
            Some(s) => vec![s],
            None => TaskState::ALL.to_vec(),
        };
        let states = &states;
        let pages: Vec<Vec<Task>> = futures::stream::iter(steps)
            .map(|step| async move { store.tasks_in(OP, &step, states).await })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .try_collect()
            .await?;
        pages.into_iter().flatten().collect()
    };
    tasks.sort_by(|a, b| (a.step(), a.id()).cmp(&(b.step(), b.id())));
    if let Some(limit) = filter.limit {
        tasks.truncate(limit);
    }
    Ok(tasks)
}

pub(super) async fn backlog(
    store: &DynamoStore,
    step: &str,
    pending_limit: u64,
) -> Result<Backlog> {
    const OP: &str = "backlog";
    // One more than the limit tells whether there are more; the oldest is read only when
    // something is pending, after the count says so.
    let pending = async {
        let pending = store
            .count_state(
                OP,
                step,
                TaskState::Pending,
                Sk::Any,
                Some(pending_limit.saturating_add(1)),
            )
            .await?;
        let oldest = if pending > 0 {
            store.read_oldest_pending(step).await?
        } else {
            None
        };
        Ok::<_, StoreError>((pending, oldest))
    };
    let ((pending, oldest), running) = futures::try_join!(
        pending,
        store.count_state(OP, step, TaskState::Running, Sk::Any, None)
    )?;
    Ok(Backlog {
        step: step.to_string(),
        pending: pending.min(pending_limit),
        more_pending: pending > pending_limit,
        running,
        oldest_pending_at: oldest,
    })
}

pub(super) async fn count_finished_since(
    store: &DynamoStore,
    step: &str,
    since: Millis,
) -> Result<u64> {
    const OP: &str = "count finished";
    // Final states are sorted by the time they were reached: a range Query, no reads of
    // older tasks.
    let since = Sk::AtLeast(ts13(since));
    let (ok, failed) = futures::try_join!(
        store.count_state(OP, step, TaskState::Succeeded, since.clone(), None),
        store.count_state(OP, step, TaskState::Failed, since.clone(), None),
    )?;
    Ok(ok + failed)
}

pub(super) async fn steps(store: &DynamoStore) -> Result<Vec<String>> {
    const OP: &str = "steps";
    let items = store
        .query_all(OP, STEPS_GSI, Sk::Any, Some(&[PK, STEP]))
        .await?;
    let mut steps = items
        .iter()
        .map(|i| Reader::new(OP, i).s(STEP))
        .collect::<Result<Vec<_>>>()?;
    steps.sort();
    steps.dedup();
    Ok(steps)
}

/// Run times of the step's newest succeeded tasks. Each succeeded index partition is sorted
/// by the time its tasks got there, and a shard holds a hash-uniform share of the step's
/// tasks, so the newest of one shard stand for the step's: one Query from the end of a shard
/// (a random one first, the next only while fewer than `limit` are found, as on a young step),
/// projected to the key, then the results by key (the index does not project them).
pub(super) async fn recent_run_times(
    store: &DynamoStore,
    step: &str,
    limit: usize,
) -> Result<Vec<Millis>> {
    const OP: &str = "recent run times";
    use rand::Rng;
    let pks = store.state_pks(step, TaskState::Succeeded).await?;
    if limit == 0 || pks.is_empty() {
        return Ok(Vec::new());
    }
    let first = rand::rng().random_range(0..pks.len());
    // (range key, task key): the range key starts with the time the task succeeded.
    let mut newest: Vec<(String, String)> = Vec::new();
    for pk in pks.iter().cycle().skip(first).take(pks.len()) {
        let want = limit.saturating_sub(newest.len());
        if want == 0 {
            break;
        }
        for item in newest_keys(store, OP, pk, want).await? {
            let r = Reader::new(OP, &item);
            newest.push((r.s(INDEX_SK)?, r.s(PK)?));
        }
    }
    newest.sort_by(|a, b| b.0.cmp(&a.0));
    let keys = newest.iter().map(|(_, pk)| key(pk.clone())).collect();
    let items = store.batch_get(OP, keys, Some(&[PK, RESULT])).await?;
    let mut results = HashMap::new();
    for item in &items {
        let r = Reader::new(OP, item);
        if let Some(json) = r.opt_s(RESULT)? {
            results.insert(r.s(PK)?, json);
        }
    }
    let mut times = Vec::new();
    for (_, pk) in &newest {
        let Some(json) = results.get(pk) else {
            continue;
        };
        let result = serde_json::from_str::<TaskResult>(json).map_err(|e| {
            StoreError::backend(OP, format!("a task's `{RESULT}` is not a task result: {e}"))
        })?;
        times.push(result.duration_ms.max(0));
    }
    Ok(times)
}

/// The keys (table and range key) of the newest `limit` items of one index partition (one
/// Query, read backwards).
async fn newest_keys(
    store: &DynamoStore,
    op: &str,
    gsi_pk: &str,
    limit: usize,
) -> Result<Vec<Item>> {
    use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
    let names = HashMap::from([
        ("#gpk".to_string(), INDEX_PK.to_string()),
        ("#pk".to_string(), PK.to_string()),
        ("#sk".to_string(), INDEX_SK.to_string()),
    ]);
    let values = HashMap::from([(":gpk".to_string(), AttributeValue::S(gsi_pk.into()))]);
    store.mix.add(&format!("{op} query"));
    let out = store
        .client
        .query()
        .table_name(&store.table)
        .index_name(INDEX)
        .key_condition_expression("#gpk = :gpk")
        .projection_expression("#pk, #sk")
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .scan_index_forward(false)
        .limit(i32::try_from(limit).unwrap_or(i32::MAX))
        .return_consumed_capacity(ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| store.err(op, e))?;
    store.consumed(out.consumed_capacity(), false);
    Ok(out.items().to_vec())
}
