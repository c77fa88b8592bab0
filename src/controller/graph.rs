//! The pipeline graph in the controller: every pass it compares the manifests' graph with the
//! one it last published and, when they differ, writes the new one to the store and holds
//! back the never-claimed pending tasks of steps that now have upstream edges (before any
//! worker is launched for them in that pass). The promotion of waiting tasks then uses it.

use tracing::info;

use super::{Controller, ControllerError};
use crate::clock::Millis;
use crate::pipeline::Graph;
use crate::store::{graph as store_graph, promote};

impl Controller {
    /// The manifests' graph, published to the store if it changed. `Err` (noted in `errors`)
    /// when it could not be published: the pass then does not act for steps with upstream
    /// edges, and the next pass tries again.
    pub(super) async fn sync_graph(
        &mut self,
        now: Millis,
        errors: &mut Vec<ControllerError>,
    ) -> Result<Graph, Graph> {
        let graph = self.manifests.current().graph();
        if self.published_graph.as_ref() == Some(&graph) {
            return Ok(graph);
        }
        let result = async {
            if self.published_graph.is_none() {
                // A restarted controller: nothing to do when the store already has it.
                if store_graph::get_graph(self.store.as_ref()).await?.as_ref() == Some(&graph) {
                    return Ok(0);
                }
            }
            promote::apply_graph(self.store.as_ref(), &graph, now, self.fence()).await
        }
        .await;
        match result {
            Ok(held) => {
                info!(
                    steps = graph.steps.len(),
                    held_back = held,
                    "published the pipeline graph"
                );
                self.published_graph = Some(graph.clone());
                Ok(graph)
            }
            Err(e) => {
                self.note_error(ControllerError::Graph(e), errors);
                Err(graph)
            }
        }
    }
}
