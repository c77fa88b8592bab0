//! The store's one error type, with a bounded [`kind`](StoreError::kind) for metrics and logs.

use std::fmt;

use super::fence::LeaderToken;
use crate::model::TaskState;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller's lease is gone: it expired and was requeued or re-claimed, or the task was
    /// cancelled. The caller must stop working on the task and must not retry.
    #[error(
        "lease lost on task {step}/{id}: it expired or was taken over; the result is discarded"
    )]
    LeaseLost { step: String, id: String },
    #[error("task {step}/{id} not found")]
    NotFound { step: String, id: String },
    /// An admin operation that does not apply to the task's current state.
    #[error("task {step}/{id} is {state}: {what}")]
    InvalidState {
        step: String,
        id: String,
        state: TaskState,
        what: String,
    },
    #[error("invalid task: {0}")]
    InvalidInput(String),
    #[error("invalid store URL `{url}`: {why} (expected sqlite://PATH or dynamodb://TABLE)")]
    BadUrl { url: String, why: String },
    #[error("table `{0}` does not exist; create it with `anamo table create`")]
    NoTable(String),
    /// The table's layout version is not the one this build reads and writes (the message
    /// says which it is and what to do: upgrade anamo, or `anamo table migrate`).
    #[error("{0}")]
    Layout(String),
    /// A SQLite store that must exist (every command but `table create`, imports and `up`)
    /// does not: the path (and why) is in the message.
    #[error("no store at {0}; create it with `anamo table create`")]
    NoStore(String),
    /// Network trouble, throttling, a locked database: worth retrying with backoff.
    #[error("store unavailable ({operation}): {message}")]
    Unavailable { operation: String, message: String },
    /// A leader's write ([`Fence::Leader`]) refused because the cluster's leadership moved
    /// on: this controller was deposed. Nothing was written; it must stop acting.
    #[error(
        "{operation} refused: the leadership of cluster `{cluster}` is no longer this \
         controller's (fencing number {fencing}); another controller took over, so this one \
         stops acting until it leads again"
    )]
    Fenced {
        operation: String,
        cluster: String,
        fencing: u64,
    },
    /// Anything else the backend reported.
    #[error("store error ({operation}): {message}")]
    Backend { operation: String, message: String },
}

impl StoreError {
    /// A fixed label for metrics and logs (never the message: its cardinality is unbounded).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::LeaseLost { .. } => "lease_lost",
            StoreError::NotFound { .. } => "not_found",
            StoreError::InvalidState { .. } => "invalid_state",
            StoreError::InvalidInput(_) => "invalid_input",
            StoreError::BadUrl { .. } => "bad_url",
            StoreError::NoTable(_) => "no_table",
            StoreError::Layout(_) => "layout",
            StoreError::NoStore(_) => "no_store",
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Fenced { .. } => "fenced",
            StoreError::Backend { .. } => "backend",
        }
    }

    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }

    pub(crate) fn unavailable(operation: &str, message: impl fmt::Display) -> Self {
        StoreError::Unavailable {
            operation: operation.to_string(),
            message: message.to_string(),
        }
    }

    pub(crate) fn backend(operation: &str, message: impl fmt::Display) -> Self {
        StoreError::Backend {
            operation: operation.to_string(),
            message: message.to_string(),
        }
    }

    pub(crate) fn fenced(operation: &str, token: &LeaderToken) -> Self {
        StoreError::Fenced {
            operation: operation.to_string(),
            cluster: token.cluster().to_string(),
            fencing: token.fencing(),
        }
    }

    pub(crate) fn lease_lost(step: &str, id: &str) -> Self {
        StoreError::LeaseLost {
            step: step.to_string(),
            id: id.to_string(),
        }
    }

    pub(crate) fn not_found(step: &str, id: &str) -> Self {
        StoreError::NotFound {
            step: step.to_string(),
            id: id.to_string(),
        }
    }
}
