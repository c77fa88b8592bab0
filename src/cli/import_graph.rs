//! The pipeline graph in the import commands (`task import`, `task add`, `up --tasks`): the
//! graph comes from `--manifests` when given (and is then published, holding back tasks
//! imported pending before it), else from the store; an optional `--scatter-file` scatters
//! one step's tasks; the tasks are prepared under it ([`import::apply_graph`]) before
//! anything is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::output::outln;
use crate::clock::Millis;
use crate::import::{self, LineError};
use crate::manifest::ManifestSet;
use crate::model::TaskSpec;
use crate::pipeline::Graph;
use crate::store::{graph as store_graph, promote, SharedStore};

/// Where an import's graph comes from.
#[derive(Debug, Default, Clone)]
pub struct GraphSource {
    /// Fleet manifests whose graph applies (and is published).
    pub manifests: Option<ManifestSet>,
    /// `(step, part, file)`: scatter the step's tasks over the file's items.
    pub scatter: Option<(String, Option<String>, PathBuf)>,
}

/// The graph an import applies: the manifests' one when given, else the store's (an empty
/// one when the store has none), scattered as `--scatter-file` asks.
pub async fn import_graph(store: &SharedStore, src: &GraphSource) -> anyhow::Result<Graph> {
    let graph = match &src.manifests {
        Some(set) => set.graph(),
        None => store_graph::get_graph(store.as_ref())
            .await
            .context("cannot read the pipeline graph from the store")?
            .unwrap_or_else(store_graph::empty_graph),
    };
    let Some((step, part, file)) = &src.scatter else {
        return Ok(graph);
    };
    let items = read_items(file)?;
    graph
        .scattered(step, part.as_deref(), items)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))
}

fn read_items(file: &Path) -> anyhow::Result<Vec<String>> {
    let source = file.display().to_string();
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {source}"))?;
    let text = import::utf8_text(&source, bytes).map_err(|e: LineError| anyhow::anyhow!("{e}"))?;
    import::scatter_items(&source, &text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Prepares parsed tasks under the graph; then, when the graph came from manifests,
/// publishes it (nothing is written when a task is refused).
pub async fn prepare(
    store: &SharedStore,
    src: &GraphSource,
    source: &str,
    tasks: Vec<(usize, TaskSpec)>,
    now: Millis,
) -> anyhow::Result<(Vec<TaskSpec>, Graph)> {
    let graph = import_graph(store, src).await?;
    let tasks = import::apply_graph(source, tasks, &graph)?;
    warn_empty_gathers(store, &graph, source, &tasks).await?;
    if let Some(set) = &src.manifests {
        // A user's command, not a leader's write.
        let unfenced = crate::store::Fence::Unfenced;
        let held = promote::apply_graph(store.as_ref(), &set.graph(), now, unfenced)
            .await
            .context("cannot publish the manifests' pipeline graph to the store")?;
        if held > 0 {
            eprintln!(
                "{held} pending task(s) of steps with upstream steps now wait for them (the \
                 manifests' graph applies)"
            );
        }
    }
    Ok((tasks, graph))
}

/// Warns when tasks gather over an upstream step that has no task yet, neither in the store
/// nor in this import: they wait until some are added (a misspelt step in the file, or an
/// upstream file not imported yet). Not an error: dependents may come before their upstream
/// tasks.
async fn warn_empty_gathers(
    store: &SharedStore,
    graph: &Graph,
    source: &str,
    tasks: &[TaskSpec],
) -> anyhow::Result<()> {
    let mut gathers: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for t in tasks {
        // Every task fits its step's key here (`import::apply_graph` checked it).
        for dep in graph.dependencies(t).unwrap_or_default() {
            if dep.selector.is_gather() && graph.steps.contains_key(&dep.edge.step) {
                *gathers.entry((t.step.as_str(), dep.edge.step)).or_default() += 1;
            }
        }
    }
    if gathers.is_empty() {
        return Ok(());
    }
    let stored = store
        .steps()
        .await
        .context("cannot list the store's steps")?;
    for ((step, upstream), n) in gathers {
        let known = stored.contains(&upstream) || tasks.iter().any(|t| t.step == upstream);
        if !known {
            eprintln!(
                "warning: {source}: {n} task(s) of step `{step}` gather over step `{upstream}`, \
                 which has no tasks yet; they wait until its tasks are added"
            );
        }
    }
    Ok(())
}

/// `task add`: the task prepared under the store's graph (scattered into several when its
/// step is scattered) and imported; says what became of each.
pub async fn add(store: &SharedStore, spec: TaskSpec, now: Millis) -> anyhow::Result<ExitCode> {
    let graph = import_graph(store, &GraphSource::default()).await?;
    let tasks = import::apply_graph("task add", vec![(1, spec)], &graph)?;
    let r = store.import_graph(&tasks, &graph, now).await?;
    if let Some(first) = r.conflicting.first() {
        anyhow::bail!("{first} already exists with a different definition; delete it first");
    }
    let unchanged = r.unchanged as usize == tasks.len();
    for t in &tasks {
        if unchanged {
            outln!(
                "{}/{} already exists with the same definition",
                t.step,
                t.id
            );
        } else {
            let state = crate::store::initial_state(&graph, t);
            outln!("added {}/{} ({state})", t.step, t.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}
