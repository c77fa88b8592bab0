//! State changes other than a worker's own: import, the controller's sweeps (requeue expired
//! leases, promote waiting tasks) and user actions (requeue, cancel, delete).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use futures::{StreamExt, TryStreamExt};

use super::error::is_condition_failed;
use super::expr::Expr;
use super::fence::Write;
use super::items::*;
use super::{DynamoStore, Sk, SWEEP_CONCURRENCY, USER_ACTION_TRIES};
use crate::clock::Millis;
use crate::model::{ImportReport, RequeueReport, Task, TaskSpec, TaskState, DEFAULT_MAX_ATTEMPTS};
use crate::store::{initial_state, Fence, Result, StoreError};

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

    let mut report = ImportReport::default();
    let mut new_items = Vec::new();
    let mut steps: Vec<&str> = Vec::new();
    for (i, spec) in tasks.iter().enumerate() {
        let pk = task_pk(&spec.step, &spec.id);
        if !steps.contains(&spec.step.as_str()) {
            steps.push(&spec.step);
        }
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
                new_items.push(new_task_item(spec, initial_state(graph, spec), now));
                report.inserted += 1;
            }
        }
    }
    // The step registry first, so a half-done import still lists its tasks.
    let step_items = steps.iter().map(|step| step_item(step)).collect();
    store.batch_put(OP, step_items).await?;
    // Plain puts: a task created by a concurrent import of the same key between our read
    // and this write is overwritten with an equivalent fresh item.
    store.batch_put(OP, new_items).await?;
    store.forget_leftovers();
    Ok(report)
}

pub(super) async fn requeue_expired(
    store: &DynamoStore,
    step: &str,
    now: Millis,
    fence: Fence<'_>,
) -> Result<RequeueReport> {
    const OP: &str = "requeue expired";
    let expired = store
        .query_all(
            OP,
            &state_pk(step, TaskState::Running),
            Sk::LessThan(ts13(now)),
            None,
        )
        .await?;
    let outcomes: Vec<Option<(String, TaskState)>> = futures::stream::iter(expired)
        .map(|item| async move {
            let r = Reader::new(OP, &item);
            let id = r.s(ID)?;
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
            let mut e = Expr::new()
                .transition(step, &id, target, priority, 0, now)
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
            // A lost race (renewed, completed or taken over meanwhile) is skipped.
            let write = Write::Update {
                pk: task_pk(step, &id),
                expr: e,
            };
            let moved = store.write_fenced(OP, OP, fence, write).await?;
            Ok(moved.then_some((id, target)))
        })
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

pub(super) async fn requeue(
    store: &DynamoStore,
    step: &str,
    id: &str,
    force: bool,
    now: Millis,
) -> Result<()> {
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
                        .transition(step, id, target, task.spec.priority, 0, now)
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
                    .transition(step, id, TaskState::Cancelled, 0, 0, now)
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
        .send()
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_condition_failed(&e) => Err(StoreError::not_found(step, id)),
        Err(e) => Err(store.err(OP, e)),
    }
}
