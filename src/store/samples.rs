//! A sample across steps, the same on every store: its tasks (found by key, never by reading
//! the whole table), and the user actions on all of them at once — drop (cancel), hold and
//! resume — and retry with the requeue cascade. Which tasks belong to a sample is the graph's call ([`Graph::sample_of`]).
//!
//! Reads per step: one batched read of the exact id `SAMPLE` ([`TaskStore::task_states`]);
//! and only for steps whose key has more than one part (ids like `SAMPLE/chr1`), the ids
//! starting with `SAMPLE/` ([`TaskStore::step_ids`] with that prefix: on DynamoDB one Query per
//! state partition of the step, filtered by the prefix).
//!
//! [`sample_matrix`] (`anamo sample list`) reads the ids and states of every task of the steps
//! it shows ([`TaskStore::step_ids`] without a prefix: on DynamoDB one Query per state
//! partition, projected to `id` and `state`). The controller's status page keeps its own view
//! and reads what changed (`controller::tally`).

use super::{Result, StoreError, TaskStore};
use crate::clock::Millis;
use crate::model::{TaskFilter, TaskState};
use crate::pipeline::matrix::SampleMatrix;
use crate::pipeline::{self, Graph};

/// One task of a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleTask {
    pub step: String,
    pub id: String,
    pub state: TaskState,
}

/// What a user action on a sample did: the tasks it changed, and the ones it left because
/// their state does not allow it (with that state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampleReport {
    pub changed: Vec<(String, String)>,
    pub skipped: Vec<(String, String, TaskState)>,
}

/// Every task of `sample`, by step then id. Empty when the sample has none.
pub async fn sample_tasks(
    store: &dyn TaskStore,
    graph: &Graph,
    sample: &str,
) -> Result<Vec<SampleTask>> {
    let mut out = Vec::new();
    for step in store.steps().await? {
        let exact = store.task_states(&step, &[sample.to_string()]).await?;
        let mut found: Vec<(String, TaskState)> = exact.into_iter().collect();
        if graph.node(&step).key.len() > 1 {
            let prefix = format!("{sample}/");
            found.extend(store.step_ids(&step, &TaskState::ALL, &prefix).await?);
        }
        found.sort();
        found.dedup();
        for (id, state) in found {
            if graph.sample_of(&step, &id) == Some(sample) {
                out.push(SampleTask {
                    step: step.clone(),
                    id,
                    state,
                });
            }
        }
    }
    Ok(out)
}

/// Every sample × step ([`pipeline::matrix`]); only `step`'s tasks are read when it is given.
pub async fn sample_matrix(
    store: &dyn TaskStore,
    graph: &Graph,
    step: Option<&str>,
) -> Result<SampleMatrix> {
    let steps = match step {
        Some(s) => vec![s.to_string()],
        None => store.steps().await?,
    };
    steps_matrix(store, graph, steps).await
}

/// [`sample_matrix`] of these `steps` (already listed by the caller).
pub async fn steps_matrix(
    store: &dyn TaskStore,
    graph: &Graph,
    steps: Vec<String>,
) -> Result<SampleMatrix> {
    let mut read = Vec::with_capacity(steps.len());
    for step in steps {
        let ids = store.step_ids(&step, &TaskState::ALL, "").await?;
        read.push((step, ids));
    }
    Ok(pipeline::matrix::build(graph, read))
}

/// The user actions on every task of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleAction {
    /// Cancel every unfinished task (running ones lose their lease, so their worker stops
    /// the process); its dependents are then cancelled by the promotion, gathers leave it out.
    Drop,
    /// Hold every pending or waiting task (no claims while held).
    Hold,
    /// Resume every held task.
    Resume,
}

impl SampleAction {
    /// Whether the action applies to a task in `state`.
    pub fn applies_to(self, state: TaskState) -> bool {
        match self {
            SampleAction::Drop => !state.is_final(),
            SampleAction::Hold => matches!(state, TaskState::Pending | TaskState::Waiting),
            SampleAction::Resume => state == TaskState::Held,
        }
    }
}

/// Applies `action` to every task of `sample`. Fails with [`StoreError::InvalidInput`] when
/// the sample has no task in any step (nothing is changed then). A task changed by someone
/// else meanwhile so that the action no longer applies is reported as skipped.
pub async fn apply(
    store: &dyn TaskStore,
    graph: &Graph,
    sample: &str,
    action: SampleAction,
    now: Millis,
) -> Result<SampleReport> {
    let tasks = sample_tasks(store, graph, sample).await?;
    if tasks.is_empty() {
        return Err(no_sample(sample));
    }
    let mut report = SampleReport::default();
    for t in tasks {
        if !action.applies_to(t.state) {
            report.skipped.push((t.step, t.id, t.state));
            continue;
        }
        let done = match action {
            SampleAction::Drop => store.cancel(&t.step, &t.id, now).await,
            SampleAction::Hold => store.hold(&t.step, &t.id, now).await,
            SampleAction::Resume => store.resume(&t.step, &t.id, now).await,
        };
        match done {
            Ok(()) => report.changed.push((t.step, t.id)),
            Err(StoreError::InvalidState { state, .. }) => {
                report.skipped.push((t.step, t.id, state))
            }
            Err(e) => return Err(e),
        }
    }
    Ok(report)
}

/// Requeues `step/id` (as `task requeue` does) and, when the graph gives its step upstream
/// edges, moves it back to waiting at once so it does not run before its dependencies.
pub async fn requeue_one(
    store: &dyn TaskStore,
    graph: &Graph,
    step: &str,
    id: &str,
    force: bool,
    now: Millis,
) -> Result<()> {
    store.requeue(step, id, force, now).await?;
    if graph
        .steps
        .get(step)
        .is_some_and(|n| !n.depends_on.is_empty())
    {
        store.hold_back(step, id, now).await?;
    }
    Ok(())
}

/// Requeues, in dependency order, the failed or cancelled tasks that ended because of the
/// just requeued `roots` ([`pipeline::cascade`]); returns them. Reads the failed and
/// cancelled tasks of every step once.
pub async fn requeue_dependents(
    store: &dyn TaskStore,
    graph: &Graph,
    roots: &[(String, String)],
    now: Millis,
) -> Result<Vec<(String, String)>> {
    let mut candidates = Vec::new();
    for step in store.steps().await? {
        for state in [TaskState::Failed, TaskState::Cancelled] {
            let filter = TaskFilter {
                step: Some(step.clone()),
                state: Some(state),
                ..Default::default()
            };
            candidates.extend(store.list(&filter).await?);
        }
    }
    let carried = pipeline::cascade(graph, roots, &candidates);
    for (step, id) in &carried {
        requeue_one(store, graph, step, id, false, now).await?;
    }
    Ok(carried)
}

/// `sample retry`: requeues the sample's tasks that failed on their own (not because of a
/// dependency), then the dependents that ended because of them. Returns both lists. Fails
/// with [`StoreError::InvalidInput`] for a sample without tasks.
pub async fn retry(
    store: &dyn TaskStore,
    graph: &Graph,
    sample: &str,
    now: Millis,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>)> {
    let tasks = sample_tasks(store, graph, sample).await?;
    if tasks.is_empty() {
        return Err(no_sample(sample));
    }
    let mut roots = Vec::new();
    for t in tasks.iter().filter(|t| t.state == TaskState::Failed) {
        let Some(task) = store.get(&t.step, &t.id).await? else {
            continue;
        };
        if task.state == TaskState::Failed
            && !task
                .reason
                .as_deref()
                .is_some_and(pipeline::is_dependency_reason)
        {
            requeue_one(store, graph, &t.step, &t.id, false, now).await?;
            roots.push((t.step.clone(), t.id.clone()));
        }
    }
    let carried = if roots.is_empty() {
        Vec::new()
    } else {
        requeue_dependents(store, graph, &roots, now).await?
    };
    Ok((roots, carried))
}

fn no_sample(sample: &str) -> StoreError {
    StoreError::InvalidInput(format!(
        "no task of sample `{sample}` in any step; `anamo sample show ID` takes the sample part \
         of task ids (`NA12878` of `call/NA12878/chr1`)"
    ))
}
