//! Reads of tasks: one task, lists, exact counts, the bounded backlog a reconcile pass needs,
//! finished counts and the step registry.

use futures::{StreamExt, TryStreamExt};

use super::items::*;
use super::{DynamoStore, Sk, SWEEP_CONCURRENCY};
use crate::clock::Millis;
use crate::model::{Backlog, StepCounts, Task, TaskFilter, TaskResult, TaskState};
use crate::store::{Result, StoreError, TaskStore};

impl DynamoStore {
    /// When the longest-waiting pending task became pending. The pending index is ordered by
    /// priority, then by that time, so each priority group's first entry is its oldest: one
    /// one-item Query per distinct priority instead of reading the whole backlog.
    async fn oldest_pending(&self, step: &str) -> Result<Option<Millis>> {
        const OP: &str = "oldest pending";
        const MAX_PRIORITY_GROUPS: usize = 64;
        let gsi_pk = state_pk(step, TaskState::Pending);
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
                    &gsi_pk,
                    &sk,
                    Some(&[PK, GSI1SK, UPDATED_AT]),
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
            let group_key = r.s(GSI1SK)?;
            let group = group_key.split('#').next().unwrap_or_default();
            after = Some(format!("{group}$"));
        }
        Ok(oldest)
    }

    /// The tasks of one step in one state.
    async fn tasks_in(&self, op: &str, step: &str, state: TaskState) -> Result<Vec<Task>> {
        let items = self
            .query_all(op, &state_pk(step, state), Sk::Any, None)
            .await?;
        items.iter().map(|i| Reader::new(op, i).task()).collect()
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
        let pairs: Vec<(String, TaskState)> = steps
            .iter()
            .flat_map(|step| states.iter().map(move |s| (step.clone(), *s)))
            .collect();
        let pages: Vec<Vec<Task>> = futures::stream::iter(pairs)
            .map(|(step, state)| async move { store.tasks_in(OP, &step, state).await })
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

pub(super) async fn counts(store: &DynamoStore, step: &str) -> Result<StepCounts> {
    const OP: &str = "counts";
    let per_state: Vec<(TaskState, u64)> =
        futures::future::try_join_all(TaskState::ALL.iter().map(|&state| async move {
            let gsi_pk = state_pk(step, state);
            Ok::<_, StoreError>((state, store.count(OP, &gsi_pk, Sk::Any, None).await?))
        }))
        .await?;
    let mut counts = StepCounts {
        step: step.to_string(),
        ..Default::default()
    };
    for (state, count) in per_state {
        counts.set(state, count);
    }
    if counts.pending > 0 {
        counts.oldest_pending_at = store.oldest_pending(step).await?;
    }
    Ok(counts)
}

pub(super) async fn backlog(
    store: &DynamoStore,
    step: &str,
    pending_limit: u64,
) -> Result<Backlog> {
    const OP: &str = "backlog";
    let (pending_pk, running_pk) = (
        state_pk(step, TaskState::Pending),
        state_pk(step, TaskState::Running),
    );
    // One more than the limit tells whether there are more; the oldest is read only when
    // something is pending, after the count says so.
    let pending = async {
        let pending = store
            .count(
                OP,
                &pending_pk,
                Sk::Any,
                Some(pending_limit.saturating_add(1)),
            )
            .await?;
        let oldest = if pending > 0 {
            store.oldest_pending(step).await?
        } else {
            None
        };
        Ok::<_, StoreError>((pending, oldest))
    };
    let ((pending, oldest), running) =
        futures::try_join!(pending, store.count(OP, &running_pk, Sk::Any, None))?;
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
    let (ok_pk, failed_pk) = (
        state_pk(step, TaskState::Succeeded),
        state_pk(step, TaskState::Failed),
    );
    let (ok, failed) = futures::try_join!(
        store.count(OP, &ok_pk, Sk::AtLeast(ts13(since)), None),
        store.count(OP, &failed_pk, Sk::AtLeast(ts13(since)), None),
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

/// Run times of the step's newest succeeded tasks: one Query of the succeeded index partition
/// (sorted by the time each task got there) from its end, `Limit` items, only their results.
pub(super) async fn recent_run_times(
    store: &DynamoStore,
    step: &str,
    limit: usize,
) -> Result<Vec<Millis>> {
    const OP: &str = "recent run times";
    if limit == 0 {
        return Ok(Vec::new());
    }
    let (names, values) = (
        std::collections::HashMap::from([
            ("#gpk".to_string(), GSI1PK.to_string()),
            ("#r".to_string(), RESULT.to_string()),
        ]),
        std::collections::HashMap::from([(
            ":gpk".to_string(),
            aws_sdk_dynamodb::types::AttributeValue::S(state_pk(step, TaskState::Succeeded)),
        )]),
    );
    store.mix.add(&format!("{OP} query"));
    let out = store
        .client
        .query()
        .table_name(&store.table)
        .index_name(GSI1)
        .key_condition_expression("#gpk = :gpk")
        .projection_expression("#r")
        .set_expression_attribute_names(Some(names))
        .set_expression_attribute_values(Some(values))
        .scan_index_forward(false)
        .limit(i32::try_from(limit).unwrap_or(i32::MAX))
        .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
        .send()
        .await
        .map_err(|e| store.err(OP, e))?;
    store.consumed(out.consumed_capacity(), false);
    let mut times = Vec::new();
    for item in out.items() {
        let Some(json) = Reader::new(OP, item).opt_s(RESULT)? else {
            continue;
        };
        let result = serde_json::from_str::<TaskResult>(&json).map_err(|e| {
            StoreError::backend(OP, format!("a task's `{RESULT}` is not a task result: {e}"))
        })?;
        times.push(result.duration_ms.max(0));
    }
    Ok(times)
}
