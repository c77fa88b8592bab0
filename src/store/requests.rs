//! Requests a store sends to its backend, counted for benchmarks and tests: how many (every
//! HTTP attempt or SQL call) and, on DynamoDB, what for, the read and write capacity units
//! they consumed (DynamoDB's `ConsumedCapacity`, asked for on every item request) and the item
//! writes each partition key received (table keys and index keys: a partition serves at most
//! about 1,000 write units per second). Kept out of the [`TaskStore`] trait:
//! a store hands out its [`RequestRecorder`] (`recorder()` on [`SqliteStore`] and
//! [`DynamoStore`], or [`open_recorded`]), and whoever measures keeps it beside the store.
//!
//! [`TaskStore`]: super::TaskStore
//! [`SqliteStore`]: super::sqlite::SqliteStore
//! [`DynamoStore`]: super::dynamo::DynamoStore
//! [`open_recorded`]: super::open_recorded

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// Item writes one partition key received: in all, and at most within one second.
#[derive(Debug, Default, Clone, Copy)]
struct KeyWrites {
    total: u64,
    second: u64,
    in_second: u64,
    peak: u64,
}

#[derive(Debug)]
struct CapacityState {
    started: Instant,
    read_units: f64,
    write_units: f64,
    keys: HashMap<String, KeyWrites>,
}

impl Default for CapacityState {
    fn default() -> Self {
        CapacityState {
            started: Instant::now(),
            read_units: 0.0,
            write_units: 0.0,
            keys: HashMap::new(),
        }
    }
}

/// Capacity units consumed and item writes per partition key.
#[derive(Debug, Default)]
pub(crate) struct Capacity(Mutex<CapacityState>);

impl Capacity {
    fn state(&self) -> std::sync::MutexGuard<'_, CapacityState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Units one request consumed.
    pub(crate) fn consumed(&self, read_units: f64, write_units: f64) {
        let mut st = self.state();
        st.read_units += read_units;
        st.write_units += write_units;
    }

    /// One item write to each of these partition keys (a table key, the index keys the write
    /// adds the item to or removes it from).
    pub(crate) fn wrote<'k>(&self, keys: impl IntoIterator<Item = &'k str>) {
        let second = self.state().started.elapsed().as_secs();
        self.wrote_at(second, keys);
    }

    /// [`Capacity::wrote`] in `second` of a simulated clock (seconds must not go back for a
    /// key: a key's count restarts whenever its second changes).
    pub(crate) fn wrote_at<'k>(&self, second: u64, keys: impl IntoIterator<Item = &'k str>) {
        let mut st = self.state();
        for key in keys {
            let k = match st.keys.get_mut(key) {
                Some(k) => k,
                None => st.keys.entry(key.to_string()).or_default(),
            };
            if k.second != second || k.in_second == 0 {
                k.second = second;
                k.in_second = 0;
            }
            k.total += 1;
            k.in_second += 1;
            k.peak = k.peak.max(k.in_second);
        }
    }
}

#[cfg(test)]
impl Capacity {
    /// Each partition key's most item writes within one second.
    pub(crate) fn peaks(&self) -> Vec<(String, u64)> {
        let st = self.state();
        st.keys.iter().map(|(k, w)| (k.clone(), w.peak)).collect()
    }
}

/// The busiest partition key of a run: the most item writes it received within one second.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PeakKey {
    pub key: String,
    pub writes_per_second: u64,
}

/// A handle on one store's request counts; clones share them.
#[derive(Debug, Clone, Default)]
pub struct RequestRecorder {
    total: Arc<RequestCounter>,
    mix: Arc<RequestMix>,
    capacity: Arc<Capacity>,
}

impl RequestRecorder {
    pub(crate) fn new(
        total: Arc<RequestCounter>,
        mix: Arc<RequestMix>,
        capacity: Arc<Capacity>,
    ) -> Self {
        RequestRecorder {
            total,
            mix,
            capacity,
        }
    }

    /// Read capacity units consumed so far (0 on SQLite).
    pub fn read_units(&self) -> f64 {
        self.capacity.state().read_units
    }

    /// Write capacity units consumed so far (0 on SQLite).
    pub fn write_units(&self) -> f64 {
        self.capacity.state().write_units
    }

    /// Item writes so far per partition key: table keys (`T#step#id`, `W#...`) and index
    /// keys (`S#step#state`, `WORKERS`, ...). Empty on SQLite.
    pub fn key_writes(&self) -> BTreeMap<String, u64> {
        let st = self.capacity.state();
        st.keys.iter().map(|(k, w)| (k.clone(), w.total)).collect()
    }

    /// Forgets the item writes per partition key so far (the units stay), so that
    /// [`RequestRecorder::peak_key`] covers what comes next (e.g. a benchmark after its import).
    pub fn restart_keys(&self) {
        self.capacity.state().keys.clear();
    }

    /// The partition key that received the most item writes within one wall-clock second,
    /// and how many (`None` before any write).
    pub fn peak_key(&self) -> Option<PeakKey> {
        let st = self.capacity.state();
        st.keys
            .iter()
            .max_by(|a, b| a.1.peak.cmp(&b.1.peak).then_with(|| b.0.cmp(a.0)))
            .map(|(key, w)| PeakKey {
                key: key.clone(),
                writes_per_second: w.peak,
            })
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
        let capacity = recorder.capacity.clone();
        let other = recorder.clone();
        total.add(2);
        mix.add("claim query");
        mix.add("claim query");
        mix.add("complete write");
        capacity.consumed(0.5, 0.0);
        capacity.consumed(0.0, 2.0);
        capacity.wrote(["T#a#1", "S#a#running", "S#a#pending"]);
        capacity.wrote(["T#a#1", "S#a#running"]);
        assert_eq!(other.total(), 2);
        assert_eq!(
            other.by_kind(),
            BTreeMap::from([("claim query".into(), 2), ("complete write".into(), 1)])
        );
        assert_eq!((other.read_units(), other.write_units()), (0.5, 2.0));
        assert_eq!(
            other.key_writes(),
            BTreeMap::from([
                ("S#a#pending".into(), 1),
                ("S#a#running".into(), 2),
                ("T#a#1".into(), 2)
            ])
        );
        // Two keys took two writes; ties go to the first key in order. (The two writes may
        // fall on either side of a second's boundary: then every key's peak is 1.)
        let peak = other.peak_key().unwrap();
        match peak.writes_per_second {
            2 => assert_eq!(peak.key, "S#a#running"),
            1 => assert_eq!(peak.key, "S#a#pending"),
            _ => panic!("{peak:?}"),
        }
    }
}
