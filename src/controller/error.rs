//! What can go wrong in a reconcile pass. A pass does not stop at an error: it notes it (a
//! log line and `anamo_reconcile_errors_total{kind}`, with the bounded [`ControllerError::kind`]
//! as label), goes on with the other fleets, and returns every error in its report.

use crate::provider::ProviderError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// The leadership lease could not be read or renewed.
    #[error("leadership: {0}")]
    Leadership(#[source] StoreError),
    /// The task store's steps could not be listed.
    #[error("listing steps: {0}")]
    ListSteps(#[source] StoreError),
    /// The manifests' pipeline graph could not be published (or the pending tasks it gives
    /// upstream edges held back); it is tried again next pass.
    #[error("publishing the pipeline graph: {0}")]
    Graph(#[source] StoreError),
    /// Promoting the step's waiting tasks or requeueing its expired leases failed.
    #[error("step {step}: {source}")]
    Housekeeping { step: String, source: StoreError },
    /// The fleet could not be observed this pass; it is left as it is.
    #[error("fleet {fleet}: {source}")]
    Observe { fleet: String, source: ObserveError },
    /// A launch could not be written ahead, so it was not made.
    #[error("fleet {fleet}: cannot record launch intent: {source}")]
    RecordIntent { fleet: String, source: StoreError },
    /// A provider call of an action failed.
    #[error("fleet {fleet}: {operation} failed: {source}")]
    Provider {
        fleet: String,
        operation: &'static str,
        source: ProviderError,
    },
}

/// Why a fleet could not be fully observed this pass. The causes are kept as text: one store
/// read serves every fleet, so a cause cannot belong to each of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObserveError {
    /// The step's backlog or the workers could not be read.
    #[error("reading the store: {0}")]
    Store(String),
    /// The launch intents could not be read: the fleet does not act until they are (a launch
    /// planned without them could repeat one in flight).
    #[error("reading the store: launch intents: {0}")]
    Intents(String),
    /// The fleet's provider could not be set up.
    #[error("provider: {0}")]
    Provider(String),
    /// The provider's listing failed.
    #[error("listing instances: {0}")]
    Listing(String),
}

impl ObserveError {
    /// What the planner says the store could not tell (its conditions quote it).
    pub fn store_text(&self) -> String {
        match self {
            ObserveError::Intents(e) => format!("launch intents: {e}"),
            ObserveError::Store(e) | ObserveError::Provider(e) | ObserveError::Listing(e) => {
                e.clone()
            }
        }
    }
}

impl ControllerError {
    /// The store's error behind this one, if any.
    pub fn store_error(&self) -> Option<&StoreError> {
        match self {
            ControllerError::Leadership(e)
            | ControllerError::ListSteps(e)
            | ControllerError::Graph(e)
            | ControllerError::Housekeeping { source: e, .. }
            | ControllerError::RecordIntent { source: e, .. } => Some(e),
            ControllerError::Observe { .. } | ControllerError::Provider { .. } => None,
        }
    }

    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ControllerError::Leadership(_) => "leadership",
            ControllerError::ListSteps(_)
            | ControllerError::Graph(_)
            | ControllerError::Housekeeping { .. }
            | ControllerError::RecordIntent { .. } => "store",
            ControllerError::Observe { .. } => "observe",
            ControllerError::Provider { .. } => "provider",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_fleet_and_the_operation() {
        let e = ControllerError::Provider {
            fleet: "align".into(),
            operation: "launch",
            source: ProviderError::Throttled("RequestLimitExceeded".into()),
        };
        assert_eq!(e.kind(), "provider");
        assert_eq!(
            e.to_string(),
            "fleet align: launch failed: throttled by the API: RequestLimitExceeded"
        );
        let e = ControllerError::Observe {
            fleet: "call".into(),
            source: ObserveError::Intents("timeout".into()),
        };
        assert_eq!(e.kind(), "observe");
        assert_eq!(
            e.to_string(),
            "fleet call: reading the store: launch intents: timeout"
        );
    }
}
