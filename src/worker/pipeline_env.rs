//! The pipeline graph in a task's environment: `ANAMO_KEY_<PART>` for every part of the
//! task's key, and for a gather, the ids of the upstream tasks that succeeded, one per line,
//! in a file next to the attempt's log, named in `ANAMO_UPSTREAM_<STEP>`. A graph or upstream
//! read that fails leaves those variables out (with a warning in the worker's log) rather
//! than failing the task. The graph also gives the step's `retryDelay`, which a failed
//! attempt's completion carries to the store.

use std::path::{Path, PathBuf};

use tracing::warn;

use crate::model::{TaskSpec, TaskState};
use crate::pipeline::{self, Graph, UPSTREAM_ENV_PREFIX};
use crate::store::graph::GraphCache;
use crate::store::TaskStore;

/// The variables the graph gives `spec`; gather lists are written beside `log_path`.
pub(super) async fn pipeline_env(
    store: &dyn TaskStore,
    graph: &GraphCache,
    spec: &TaskSpec,
    log_path: &Path,
) -> Vec<(String, String)> {
    let graph = match graph.get().await {
        Ok(g) => g,
        Err(e) => {
            warn!(
                step = spec.step,
                id = spec.id,
                "cannot read the pipeline graph: {e}"
            );
            return Vec::new();
        }
    };
    let mut env = graph.key_env(&spec.step, &spec.id);
    match upstream_files(store, &graph, spec, log_path).await {
        Ok(files) => env.extend(files),
        Err(e) => warn!(
            step = spec.step,
            id = spec.id,
            "cannot write the upstream id lists: {e}"
        ),
    }
    env
}

/// The step's retry delay from the graph (`None` when it has none, or the graph cannot be
/// read: the failed attempt is then retried at once, as without a delay).
pub(super) async fn retry_delay(graph: &GraphCache, step: &str) -> Option<pipeline::RetryDelay> {
    match graph.get().await {
        Ok(g) => g.node(step).defaults.retry_delay,
        Err(e) => {
            warn!(
                step,
                "cannot read the pipeline graph for the retry delay: {e}"
            );
            None
        }
    }
}

/// One file per gather dependency with the succeeded upstream ids it selects.
async fn upstream_files(
    store: &dyn TaskStore,
    graph: &Graph,
    spec: &TaskSpec,
    log_path: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut env = Vec::new();
    for dep in graph.dependencies(spec)? {
        let sel = &dep.selector;
        if !sel.is_gather() {
            continue;
        }
        let ids: Vec<String> = store
            .step_ids(&sel.step, &[TaskState::Succeeded], &sel.prefix())
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .filter(|id| sel.matches(id))
            .collect();
        let path = list_path(log_path, &sel.step);
        let mut text = ids.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        // The log's directory is made with the log's first byte, after this.
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        let name = pipeline::env_name(UPSTREAM_ENV_PREFIX, &sel.step);
        env.push((name, path.display().to_string()));
    }
    Ok(env)
}

/// `LOG.upstream-STEP` beside the attempt's log.
fn list_path(log_path: &Path, step: &str) -> PathBuf {
    let mut name = log_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".upstream-{step}"));
    log_path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::{Edge, StepNode};
    use crate::store::sqlite::SqliteStore;
    use crate::store::SharedStore;

    #[tokio::test]
    async fn a_gather_gets_its_succeeded_upstream_ids_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
        let mut joint = StepNode::plain();
        joint.key = vec!["region".into()];
        joint.depends_on = vec![Edge::to("call")];
        let mut call = StepNode::plain();
        call.key = vec!["sample".into(), "region".into()];
        let mut g = crate::store::graph::empty_graph();
        g.steps.insert("joint".into(), joint);
        g.steps.insert("call".into(), call);
        crate::store::graph::put_graph(store.as_ref(), &g, 1, crate::store::Fence::Unfenced)
            .await
            .unwrap();
        let ids = ["S1/chr1", "S2/chr1", "S1/chr2"];
        let tasks: Vec<TaskSpec> = ids
            .iter()
            .map(|i| TaskSpec::new("call", *i, "true"))
            .collect();
        store.import(&tasks, 1).await.unwrap();
        // Only S1/chr1 and S1/chr2 succeed.
        let req = crate::model::ClaimRequest {
            step: "call".into(),
            owner: "w".into(),
            ttl_ms: 60_000,
        };
        for c in store.claim_batch(&req, 3, 2).await.unwrap() {
            let lease = crate::model::LeaseRef::new("call", c.task.id(), &c.token);
            if c.task.id().starts_with("S1/") {
                let done = crate::model::Completion {
                    retry_delay: None,
                    outcome: crate::model::Outcome::Succeeded,
                    result: Default::default(),
                };
                store.complete(&lease, &done, 3).await.unwrap();
            }
        }
        let cache = GraphCache::new(store.clone());
        // In a directory that does not exist yet, as a step's first log is.
        let log = dir.path().join("tasks/joint/chr1.1.log");
        let spec = TaskSpec::new("joint", "chr1", "true");
        let env = pipeline_env(store.as_ref(), &cache, &spec, &log).await;
        assert_eq!(env[0], ("ANAMO_KEY_REGION".to_string(), "chr1".to_string()));
        assert_eq!(env[1].0, "ANAMO_UPSTREAM_CALL");
        assert_eq!(std::fs::read_to_string(&env[1].1).unwrap(), "S1/chr1\n");
    }
}
