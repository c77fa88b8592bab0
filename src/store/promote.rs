//! Promotion from the pipeline graph, the same on every store: for a step's waiting tasks,
//! what each depends on ([`Graph::dependencies`]: the step's edges and the task's own
//! `depends_on`), the upstream tasks each dependency selects (read through the store's small
//! primitives), [`pipeline::decide`], and a move conditional on the task still waiting:
//! ready → pending, a failed dependency → failed, a cancelled one → cancelled. A waiting task
//! of a scattered step imported before the scatter was declared (its id lacks the scattered
//! part) is expanded into the tasks an import under the graph would have made.
//!
//! Reads per pass and step: the waiting tasks; per upstream step of "one" edges, the states of
//! exactly the tasks they name (one batched read); per upstream step of gathers, the ids of
//! its *unfinished* tasks once, and its finished tasks' ids only when some gather selects no
//! unfinished task — so a gather whose upstream is still running costs one small read per
//! pass, whatever the size of the upstream step.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tracing::{info, warn};

use super::{Fence, Result, StoreError, TaskStore};
use crate::clock::Millis;
use crate::model::{PromoteReport, Task, TaskFilter, TaskState};
use crate::pipeline::{self, Dependency, EdgeView, Graph, Readiness, UpstreamTask};

/// States a task leaves on its own (or through the controller); a gather waits while any of
/// its upstream tasks is in one.
pub fn unfinished_states() -> Vec<TaskState> {
    TaskState::ALL
        .into_iter()
        .filter(|s| !s.is_final())
        .collect()
}

/// Final states.
pub fn final_states() -> Vec<TaskState> {
    TaskState::ALL
        .into_iter()
        .filter(|s| s.is_final())
        .collect()
}

/// The upstream tasks read for one pass over one step's waiting tasks.
#[derive(Default)]
struct Upstream {
    /// Per upstream step, the states of the tasks "one" edges name (absent: not there yet).
    exact: HashMap<String, HashMap<String, TaskState>>,
    /// Per upstream step of gathers, its unfinished tasks.
    unfinished: HashMap<String, Vec<UpstreamTask>>,
    /// Per upstream step of gathers, its finished tasks (read only when needed).
    finished: HashMap<String, Vec<UpstreamTask>>,
}

impl Upstream {
    /// The upstream tasks `dep` selects: for a gather, the unfinished ones when there are
    /// any (the verdict is then "wait" whatever the others are), else the finished ones
    /// (read once per step and pass).
    async fn selected(
        &mut self,
        store: &dyn TaskStore,
        dep: &Dependency,
    ) -> Result<Vec<UpstreamTask>> {
        let sel = &dep.selector;
        if let Some(id) = sel.exact_id() {
            let state = self.exact.get(&sel.step).and_then(|m| m.get(&id));
            return Ok(state
                .map(|&state| vec![UpstreamTask { id, state }])
                .unwrap_or_default());
        }
        let pick = |tasks: &[UpstreamTask]| -> Vec<UpstreamTask> {
            tasks
                .iter()
                .filter(|t| sel.matches(&t.id))
                .cloned()
                .collect()
        };
        let open = pick(self.unfinished.get(&sel.step).map_or(&[], Vec::as_slice));
        if !open.is_empty() {
            return Ok(open);
        }
        if !self.finished.contains_key(&sel.step) {
            let done = read(store, &sel.step, &final_states()).await?;
            self.finished.insert(sel.step.clone(), done);
        }
        Ok(pick(
            self.finished.get(&sel.step).map_or(&[], Vec::as_slice),
        ))
    }
}

async fn read(
    store: &dyn TaskStore,
    step: &str,
    states: &[TaskState],
) -> Result<Vec<UpstreamTask>> {
    Ok(store
        .step_ids(step, states, "")
        .await?
        .into_iter()
        .map(|(id, state)| UpstreamTask { id, state })
        .collect())
}

/// Decides every waiting task of `step` from the graph and moves the ones whose verdict is
/// not "wait". Tasks moved by someone else meanwhile are left alone.
pub async fn promote_waiting(
    store: &dyn TaskStore,
    graph: &Graph,
    step: &str,
    now: Millis,
) -> Result<PromoteReport> {
    let waiting = store
        .list(&TaskFilter {
            step: Some(step.to_string()),
            state: Some(TaskState::Waiting),
            ..Default::default()
        })
        .await?;
    let mut report = PromoteReport::default();
    let mut planned: Vec<(Task, Vec<Dependency>)> = Vec::with_capacity(waiting.len());
    let scattered = graph.node(step).scatter.is_some();
    for task in waiting {
        if scattered && expand_unscattered(store, graph, &task, now).await? {
            report.expanded += 1;
            continue;
        }
        match graph.dependencies(&task.spec) {
            Ok(deps) => planned.push((task, deps)),
            Err(e) => {
                warn!(
                    step,
                    id = task.id(),
                    "waiting task does not fit its step's key: {e}"
                );
                report.unfit += 1;
            }
        }
    }
    let mut upstream = read_upstream(store, &planned).await?;
    for (task, deps) in &planned {
        let mut selected = Vec::with_capacity(deps.len());
        for dep in deps {
            selected.push(upstream.selected(store, dep).await?);
        }
        let views: Vec<EdgeView<'_>> = deps
            .iter()
            .zip(&selected)
            .map(|(dependency, up)| EdgeView {
                dependency,
                upstream: up,
            })
            .collect();
        let (to, reason) = match pipeline::decide(&views) {
            Readiness::Wait => continue,
            Readiness::Ready => (TaskState::Pending, None),
            Readiness::Fail(r) => (TaskState::Failed, Some(r)),
            Readiness::Cancel(r) => (TaskState::Cancelled, Some(r)),
        };
        let prio = task.spec.priority;
        let moved = store
            .settle_waiting(step, task.id(), prio, to, reason.as_deref(), now)
            .await?;
        if moved {
            match to {
                TaskState::Pending => report.promoted += 1,
                TaskState::Failed => report.failed += 1,
                _ => report.cancelled += 1,
            }
        }
    }
    Ok(report)
}

/// A waiting task of a scattered step whose id lacks the scattered part (imported before the
/// graph that scatters its step was published) becomes the tasks the graph expands it into,
/// as `task import` would have made them: they are imported under the graph (waiting, with the
/// step's defaults; ones that exist already are left alone) and the unexpanded task is
/// deleted. Returns `false`, changing nothing, when the graph does not expand the task into
/// tasks that fit the step's key.
async fn expand_unscattered(
    store: &dyn TaskStore,
    graph: &Graph,
    task: &Task,
    now: Millis,
) -> Result<bool> {
    if !expands(graph, &task.spec.step, task.id()) {
        return Ok(false);
    }
    let Ok(expanded) = graph.prepare(task.spec.clone()) else {
        return Ok(false);
    };
    store.import_graph(&expanded, graph, now).await?;
    match store.delete(&task.spec.step, task.id()).await {
        Ok(()) => {}
        // Another controller expanded it first.
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    info!(
        step = task.spec.step,
        id = task.id(),
        tasks = expanded.len(),
        "expanded a task imported before its step was scattered"
    );
    Ok(true)
}

/// One read per upstream step: the states of the ids "one" edges name, and the unfinished
/// tasks of the steps gathers read.
async fn read_upstream(
    store: &dyn TaskStore,
    planned: &[(Task, Vec<Dependency>)],
) -> Result<Upstream> {
    let mut exact: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut gathered: BTreeSet<&str> = BTreeSet::new();
    for dep in planned.iter().flat_map(|(_, deps)| deps) {
        let step = dep.selector.step.as_str();
        match dep.selector.exact_id() {
            Some(id) => {
                exact.entry(step).or_default().insert(id);
            }
            None => {
                gathered.insert(step);
            }
        }
    }
    let mut up = Upstream::default();
    for (step, ids) in exact {
        let ids: Vec<String> = ids.into_iter().collect();
        let states = store.task_states(step, &ids).await?;
        up.exact.insert(step.to_string(), states);
    }
    let open = unfinished_states();
    for step in gathered {
        let tasks = read(store, step, &open).await?;
        up.unfinished.insert(step.to_string(), tasks);
    }
    Ok(up)
}

/// Moves never-claimed pending tasks of every step that has upstream edges in `graph` back
/// to waiting (each a write conditional on `pending` and `attempts == 0`), so that tasks
/// imported before the graph existed do not run before their dependencies; the next
/// promotion moves the ready ones on at once. In a scattered step without upstream edges
/// only the tasks the scatter would expand move (the promotion then expands them). Returns
/// how many moved.
pub async fn hold_back_pending(store: &dyn TaskStore, graph: &Graph, now: Millis) -> Result<u64> {
    let mut moved = 0;
    for (step, node) in &graph.steps {
        if node.depends_on.is_empty() && node.scatter.is_none() {
            continue;
        }
        for (id, _) in store.step_ids(step, &[TaskState::Pending], "").await? {
            if node.depends_on.is_empty() && !expands(graph, step, &id) {
                continue;
            }
            if store.hold_back(step, &id, now).await? {
                moved += 1;
            }
        }
    }
    Ok(moved)
}

/// Whether the graph's scatter turns the task `step/id` into other tasks.
fn expands(graph: &Graph, step: &str, id: &str) -> bool {
    graph
        .prepare(crate::model::TaskSpec::new(step, id, "true"))
        .is_ok_and(|tasks| tasks.iter().all(|t| t.id != id))
}

/// Publishes `graph` to the store (fenced by `fence`) and holds back the pending tasks it
/// gives upstream edges ([`hold_back_pending`]). Returns how many tasks were held back.
pub async fn apply_graph(
    store: &dyn TaskStore,
    graph: &Graph,
    now: Millis,
    fence: Fence<'_>,
) -> Result<u64> {
    super::graph::put_graph(store, graph, now, fence).await?;
    hold_back_pending(store, graph, now).await
}
