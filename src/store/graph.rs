//! The pipeline graph as the store keeps it: one status document named [`GRAPH_DOC`] whose
//! body is the [`Graph`] as JSON. The controller writes it whenever the manifests' graph
//! changes (and `task import --manifests` and `up` write it too); imports, the controller's
//! promotion and workers read it (by its key, not through the status listing: the listing
//! carries every fleet's status), workers through a [`GraphCache`] that reads it again at most
//! every [`GRAPH_CACHE_TTL`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::{Fence, Result, SharedStore, StatusDoc, StoreError, TaskStore};
use crate::clock::Millis;
use crate::pipeline::Graph;

/// The status document holding the graph.
pub const GRAPH_DOC: &str = "pipeline/graph";

/// How long a [`GraphCache`] keeps what it read: a manifest change (the only thing that
/// changes the graph of a running pipeline) reaches a worker's next tasks at most this late.
/// A worker reads the graph when it starts a task, at most once per this: one request a
/// minute per worker, whatever its tasks' length (with a few seconds, a worker whose tasks
/// start seconds apart read it for almost every task), and at 10,000 workers about 170 point
/// reads a second of the one graph item, far below the 3,000 read units a second one
/// partition serves (`docs/dynamodb-table.md`, "DynamoDB limits").
pub const GRAPH_CACHE_TTL: Duration = Duration::from_secs(60);

/// Writes the graph document (fenced by `fence`: the controller writes it as the leader).
pub async fn put_graph(
    store: &dyn TaskStore,
    graph: &Graph,
    now: Millis,
    fence: Fence<'_>,
) -> Result<()> {
    let body = serde_json::to_value(graph)
        .map_err(|e| StoreError::backend("put graph", format!("cannot encode the graph: {e}")))?;
    let doc = StatusDoc {
        name: GRAPH_DOC.to_string(),
        updated_at: now,
        body,
    };
    store.put_status(&doc, fence).await
}

/// The graph the store holds, or `None` when no graph was ever written (every step is then
/// plain: keyed by its id, no edges but the tasks' own `depends_on`).
pub async fn get_graph(store: &dyn TaskStore) -> Result<Option<Graph>> {
    let Some(doc) = store.get_status(GRAPH_DOC).await? else {
        return Ok(None);
    };
    serde_json::from_value(doc.body).map(Some).map_err(|e| {
        StoreError::backend(
            "get graph",
            format!(
                "the `{GRAPH_DOC}` document is not a pipeline graph ({e}); the controller \
                 writes it again from the manifests when they change"
            ),
        )
    })
}

/// The graph of a store that has none: every step plain.
pub fn empty_graph() -> Graph {
    Graph {
        sample_part: crate::pipeline::DEFAULT_SAMPLE_PART.to_string(),
        steps: Default::default(),
    }
}

/// A reader's copy of the graph, read again when older than its time to live.
#[derive(Debug)]
pub struct GraphCache {
    store: SharedStore,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Arc<Graph>)>>,
}

impl GraphCache {
    pub fn new(store: SharedStore) -> Self {
        Self::with_ttl(store, GRAPH_CACHE_TTL)
    }

    pub fn with_ttl(store: SharedStore, ttl: Duration) -> Self {
        GraphCache {
            store,
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The graph (an empty one when the store has none), read from the store when the copy
    /// is older than the time to live. A failed read keeps serving the last copy, if any.
    pub async fn get(&self) -> Result<Arc<Graph>> {
        let mut cached = self.cached.lock().await;
        if let Some((at, graph)) = cached.as_ref() {
            if at.elapsed() < self.ttl {
                return Ok(graph.clone());
            }
        }
        match get_graph(self.store.as_ref()).await {
            Ok(graph) => {
                let graph = Arc::new(graph.unwrap_or_else(empty_graph));
                *cached = Some((Instant::now(), graph.clone()));
                Ok(graph)
            }
            Err(e) => match cached.as_ref() {
                Some((_, graph)) => Ok(graph.clone()),
                None => Err(e),
            },
        }
    }
}
