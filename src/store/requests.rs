//! Requests a store sends to its backend, counted for benchmarks and tests: how many (every
//! HTTP attempt or SQL call) and, on DynamoDB, what for. Kept out of the [`TaskStore`] trait:
//! a store hands out its [`RequestRecorder`] (`recorder()` on [`SqliteStore`] and
//! [`DynamoStore`], or [`open_recorded`]), and whoever measures keeps it beside the store.
//!
//! [`TaskStore`]: super::TaskStore
//! [`SqliteStore`]: super::sqlite::SqliteStore
//! [`DynamoStore`]: super::dynamo::DynamoStore
//! [`open_recorded`]: super::open_recorded

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Requests sent so far.
#[derive(Debug, Default)]
pub(crate) struct RequestCounter(AtomicU64);

impl RequestCounter {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Requests by what they were for (`claim query`, `claim write`, `claim write lost`,
/// `complete write`, `put worker`, ...), so benchmarks can say where a task's requests go.
#[derive(Debug, Default)]
pub(crate) struct RequestMix(Mutex<BTreeMap<String, u64>>);

impl RequestMix {
    pub(crate) fn add(&self, kind: &str) {
        let mut mix = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match mix.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                mix.insert(kind.to_string(), 1);
            }
        }
    }

    fn snapshot(&self) -> BTreeMap<String, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A handle on one store's request counts; clones share them.
#[derive(Debug, Clone, Default)]
pub struct RequestRecorder {
    total: Arc<RequestCounter>,
    mix: Arc<RequestMix>,
}

impl RequestRecorder {
    pub(crate) fn new(total: Arc<RequestCounter>, mix: Arc<RequestMix>) -> Self {
        RequestRecorder { total, mix }
    }

    /// Requests sent to the backend so far.
    pub fn total(&self) -> u64 {
        self.total.get()
    }

    /// Requests sent so far by what they were for; empty when the store does not break them
    /// down (SQLite). May count fewer than [`RequestRecorder::total`]: the SDK's own retries
    /// and rarely used calls are not broken down.
    pub fn by_kind(&self) -> BTreeMap<String, u64> {
        self.mix.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_the_counts() {
        let recorder = RequestRecorder::default();
        let (total, mix) = (recorder.total.clone(), recorder.mix.clone());
        let other = recorder.clone();
        total.add(2);
        mix.add("claim query");
        mix.add("claim query");
        mix.add("complete write");
        assert_eq!(other.total(), 2);
        assert_eq!(
            other.by_kind(),
            BTreeMap::from([("claim query".into(), 2), ("complete write".into(), 1)])
        );
    }
}
