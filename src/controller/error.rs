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
    /// Promoting the step's waiting tasks or requeueing its expired leases failed.
    #[error("step {step}: {source}")]
    Housekeeping { step: String, source: StoreError },
    /// The fleet could not be observed this pass (store read, provider set-up or listing);
    /// it is left as it is.
    #[error("fleet {fleet}: {problem}")]
    Observe { fleet: String, problem: String },
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

impl ControllerError {
    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ControllerError::Leadership(_) => "leadership",
            ControllerError::ListSteps(_)
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
    }
}
