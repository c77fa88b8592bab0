//! State changes other than a worker's own: import and user actions (requeue, cancel,
//! delete). Lease expiry is in [`super::lease_expiry`].

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use futures::{StreamExt, TryStreamExt};

use super::error::is_condition_failed;
use super::expr::Expr;
use super::items::*;
use super::layout::{counter_pk, shard_of, TaskKeys};
use super::{DynamoStore, SWEEP_CONCURRENCY, USER_ACTION_TRIES};
use crate::clock::Millis;
use crate::model::{ImportReport, Task, TaskSpec, TaskState};
use crate::store::{initial_state, Result, StoreError};

impl DynamoStore {
    /// A user action (requeue, cancel): read the task, let `decide` pick the update (or finish
    /// early), write it conditionally on the task being unchanged since the read; retry a few
    /// times when something else changed it in between.
    pub(super) async fn user_action<F>(
        &self,
        op: &str,
        step: &str,
        id: &str,
        decide: F,
    ) -> Result<()>
    where
        F: Fn(&Task) -> Result<Option<Expr>>,
    {
        for _ in 0..USER_ACTION_TRIES {
            let item = self
                .get_task_item(op, step, id)
                .await?
                .ok_or_else(|| StoreError::not_found(step, id))?;
            let task = Reader::new(op, &item).task()?;
            let Some(mut e) = decide(&task)? else {
                return Ok(());
            };
            e = e.cond_eq(STATE, s(task.state.as_str()));
            if item.contains_key(UPDATED_AT) {
                e = e.cond_eq(UPDATED_AT, n(task.updated_at));
            }
            e = match task.lease.as_ref().map(|l| l.token.as_str()) {
                Some(token) => e.cond_eq(LEASE_TOKEN, s(token)),
                None => {
                    let mut e = e;
                    let name = e.name(LEASE_TOKEN);
                    e.cond(format!("attribute_not_exists({name})"))
                }
            };
            if self
                .update(op, task_pk(step, id), e, false)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(StoreError::unavailable(
            op,
            format!("task {step}/{id} kept changing concurrently; try again"),
        ))
    }
}

pub(super) async fn import(
    store: &DynamoStore,
    tasks: &[TaskSpec],
    graph: &crate::pipeline::Graph,
    now: Millis,
) -> Result<ImportReport> {
    const OP: &str = "import";
    // The first occurrence of each key in the input; later ones compare against it.
    let mut first: HashMap<String, usize> = HashMap::new();
    let mut keys = Vec::new();
    for (i, spec) in tasks.iter().enumerate() {
        let pk = task_pk(&spec.step, &spec.id);
        if !first.contains_key(&pk) {
            first.insert(pk.clone(), i);
            keys.push(key(pk));
        }
    }
    let existing: HashMap<String, Item> = store
        .batch_get(OP, keys, None)
        .await?
        .into_iter()
        .filter_map(|item| match item.get(PK) {
            Some(AttributeValue::S(pk)) => Some((pk.clone(), item)),
            _ => None,
        })
        .collect();

    let mut shards: HashMap<&str, u32> = HashMap::new();
    for spec in tasks {
        if !shards.contains_key(spec.step.as_str()) {
            shards.insert(&spec.step, store.step_shards(&spec.step).await?);
        }
    }
    let mut report = ImportReport::default();
    let mut new_items = Vec::new();
    let mut added: HashMap<String, HashMap<TaskState, i64>> = HashMap::new();
    for (i, spec) in tasks.iter().enumerate() {
        let pk = task_pk(&spec.step, &spec.id);
        let step_shards = shards.get(spec.step.as_str()).copied().unwrap_or(1);
        // Compare with what is stored, or with the first occurrence earlier in this input.
        let same = match existing.get(&pk) {
            // An unreadable stored task counts as different.
            Some(item) => Some(Reader::new(OP, item).spec().is_ok_and(|old| &old == spec)),
            None => match first.get(&pk) {
                Some(&j) if j != i => Some(tasks.get(j) == Some(spec)),
                _ => None,
            },
        };
        match same {
            Some(true) => report.unchanged += 1,
            Some(false) => report
                .conflicting
                .push(format!("{}/{}", spec.step, spec.id)),
            None => {
                let state = initial_state(graph, spec);
                new_items.push(new_task_item(spec, state, now, step_shards));
                let counter = counter_pk(&spec.step, shard_of(&spec.id, step_shards));
                *added.entry(counter).or_default().entry(state).or_default() += 1;
                report.inserted += 1;
            }
        }
    }
    // The step registry first, so a half-done import still lists its tasks; it records each
    // step's shard count (the one it has, or the table's default for a new step).
    let step_items = shards.iter().map(|(step, n)| step_item(step, *n)).collect();
    store.batch_put(OP, step_items).await?;
    // Plain puts: a task created by a concurrent import of the same key between our read
    // and this write is overwritten with an equivalent fresh item (and counted twice until
    // the next recount).
    store.batch_put(OP, new_items).await?;
    count_imported(store, added).await?;
    store.forget_leftovers();
    Ok(report)
}

/// Adds imported tasks to their counter items: one `ADD` per counter item.
async fn count_imported(
    store: &DynamoStore,
    added: HashMap<String, HashMap<TaskState, i64>>,
) -> Result<()> {
    futures::stream::iter(added)
        .map(|(counter, per_state)| async move {
            let deltas: Vec<(TaskState, i64)> = per_state.into_iter().collect();
            store.wrote([counter.as_str()]);
            store.add_counts("import", counter, &deltas).await
        })
        .buffer_unordered(SWEEP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

pub(super) async fn requeue(
    store: &DynamoStore,
    step: &str,
    id: &str,
    force: bool,
    now: Millis,
) -> Result<()> {
    let shards = store.step_shards(step).await?;
    store
        .user_action("requeue", step, id, |task| match task.state {
            TaskState::Pending | TaskState::Waiting => Ok(None),
            TaskState::Running if !force => Err(StoreError::InvalidState {
                step: step.to_string(),
                id: id.to_string(),
                state: task.state,
                what: "it is running; use --force to revoke its lease and requeue it".into(),
            }),
            _ => {
                let target = task.spec.initial_state();
                Ok(Some(
                    Expr::new()
                        .transition(&TaskKeys::moved(
                            step,
                            id,
                            target,
                            task.spec.priority,
                            now,
                            shards,
                        ))
                        .set(ATTEMPTS, n(0))
                        .remove_lease()
                        .remove(REASON)
                        .remove(RETRY_AT)
                        .remove(HELD_FROM),
                ))
            }
        })
        .await?;
    store.forget_leftovers();
    Ok(())
}

pub(super) async fn cancel(store: &DynamoStore, step: &str, id: &str, now: Millis) -> Result<()> {
    let shards = store.step_shards(step).await?;
    store
        .user_action("cancel", step, id, |task| {
            if task.state.is_final() {
                return Err(StoreError::InvalidState {
                    step: step.to_string(),
                    id: id.to_string(),
                    state: task.state,
                    what: "only waiting, pending, held, retrying or running tasks can be cancelled"
                        .into(),
                });
            }
            Ok(Some(
                Expr::new()
                    .transition(&TaskKeys::moved(
                        step,
                        id,
                        TaskState::Cancelled,
                        0,
                        now,
                        shards,
                    ))
                    .remove_lease()
                    .remove(RETRY_AT)
                    .remove(HELD_FROM)
                    .set(REASON, s("cancelled by user")),
            ))
        })
        .await
}

pub(super) async fn delete(store: &DynamoStore, step: &str, id: &str) -> Result<()> {
    const OP: &str = "delete";
    let e = Expr::new().cond_exists();
    let result = store
        .client
        .delete_item()
        .table_name(&store.table)
        .set_key(Some(key(task_pk(step, id))))
        .set_condition_expression(e.condition_expression())
        .set_expression_attribute_names(e.names())
        .return_values(ReturnValue::AllOld)
        .send()
        .await;
    match result {
        Ok(out) => {
            // The deleted task leaves its state's count.
            let old = out.attributes.unwrap_or_default();
            let Some(state) = Reader::new(OP, &old).opt_s(STATE)? else {
                return Ok(());
            };
            let Ok(state) = state.parse::<TaskState>() else {
                return Ok(());
            };
            let shards = store.step_shards(step).await?;
            let counter = counter_pk(step, shard_of(id, shards));
            store.add_counts(OP, counter, &[(state, -1)]).await
        }
        Err(e) if is_condition_failed(&e) => Err(StoreError::not_found(step, id)),
        Err(e) => Err(store.err(OP, e)),
    }
}
