//! Dispatch benchmark: `workers` in-process workers with `slots` slots each work through
//! `tasks` tasks of one command (`true` by default; a longer one, e.g. `sleep 2` with a short
//! lease TTL, makes them heartbeat); reports throughput, store requests, heartbeats and
//! capacity units per task, and the busiest partition key.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{run_with, WorkerArgs, WorkerControl, WorkerError, WorkerExit};
use crate::model::TaskSpec;
use crate::store::{PeakKey, RequestRecorder, SharedStore};

/// The command the dispatch benchmark's tasks run unless told otherwise.
pub const DEFAULT_BENCH_COMMAND: &str = "true";

/// What the dispatch benchmark runs: `workers` × `slots` on `tasks` tasks of `command`, with
/// the workers' lease TTL (their heartbeat is a third of it, the worker's default).
#[derive(Debug, Clone, Serialize)]
pub struct DispatchLoad {
    pub workers: usize,
    pub slots: u32,
    pub tasks: u64,
    pub command: String,
    #[serde(serialize_with = "serialize_ms", rename = "lease_ttl_ms")]
    pub lease_ttl: Duration,
}

impl DispatchLoad {
    /// `tasks` tasks running `true`, with the worker's default lease TTL.
    pub fn trivial(workers: usize, slots: u32, tasks: u64) -> DispatchLoad {
        DispatchLoad {
            workers,
            slots,
            tasks,
            command: DEFAULT_BENCH_COMMAND.to_string(),
            lease_ttl: crate::manifest::DEFAULT_LEASE_TTL,
        }
    }
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub store: String,
    /// The step created for the run (`bench-<random>`); its tasks stay in the store.
    pub step: String,
    pub workers: usize,
    pub slots: u32,
    pub tasks: u64,
    /// The tasks' command and the workers' lease TTL.
    pub command: String,
    pub lease_ttl_ms: u64,
    pub succeeded: u64,
    /// From the first worker's start to the last result recorded.
    pub elapsed_ms: u64,
    pub tasks_per_sec: f64,
    /// Store requests from the first worker's start until every worker exited (claims,
    /// heartbeats, completions, registrations, polls, and what the workers write on exit:
    /// their last counter deltas and final registrations).
    pub requests: u64,
    pub requests_per_task: f64,
    /// Those requests per task by what they were for (`claim query`, `claim write`, `claim
    /// write lost`, `complete write`, `put worker`, ...), when the store breaks them down;
    /// `other` is the rest (the SDK's own retries, anything not broken down).
    pub requests_by_kind: BTreeMap<String, f64>,
    /// Read and write capacity units per task over those requests (DynamoDB's `ConsumedCapacity`;
    /// 0 on SQLite).
    pub read_units_per_task: f64,
    pub write_units_per_task: f64,
    /// Lease renewals sent per task (`heartbeat write` and `heartbeat write lost` of
    /// `requests_by_kind`; 0 when the store does not break requests down).
    pub heartbeats_per_task: f64,
    /// The partition key (table or index) that received the most item writes within one
    /// second in that window (none on SQLite).
    pub busiest_key: Option<PeakKey>,
    /// Store requests the import took (not included above).
    pub import_requests: u64,
}

/// Imports `load.tasks` tasks running `load.command` into a fresh step through `store` and
/// lets `load.workers` workers of `load.slots` slots run them all, each on a store of its own
/// from `worker_store` (as each would have in a process of its own: what a store keeps
/// between requests — claim candidates, counter deltas — is not pooled); `recorder` counts
/// the requests of all of them.
pub async fn bench_dispatch(
    store: SharedStore,
    worker_store: impl Fn() -> SharedStore,
    recorder: &RequestRecorder,
    load: &DispatchLoad,
) -> Result<BenchReport, WorkerError> {
    let DispatchLoad {
        workers,
        slots,
        tasks,
        ..
    } = *load;
    if workers == 0 || slots == 0 || tasks == 0 {
        return Err(WorkerError::InvalidArgs(
            "workers, slots and tasks must all be at least 1".into(),
        ));
    }
    let step = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let import_requests = import_tasks(&store, recorder, &step, load).await?;

    let log_dir = std::env::temp_dir().join(format!("anamo-bench-{step}"));
    let started = Instant::now();
    let before = recorder.total();
    let mix_before = recorder.by_kind();
    let units_before = (recorder.read_units(), recorder.write_units());
    recorder.restart_keys();
    let (controls, mut running) = spawn_workers(worker_store, &step, load, &log_dir);
    let mut finished_early = wait_for_results(&controls, &mut running, tasks).await;
    let elapsed = started.elapsed();
    let (_, succeeded) = recorded(&controls);
    controls.iter().for_each(|c| c.drain());
    while let Some(joined) = running.join_next().await {
        if let Ok(Err(e)) = joined {
            finished_early.get_or_insert(e);
        }
    }
    // Requests until the workers exited: their last counter deltas and final registrations
    // are part of the run's cost.
    let requests = recorder.total() - before;
    let mix = recorder.by_kind();
    let units = (
        recorder.read_units() - units_before.0,
        recorder.write_units() - units_before.1,
    );
    let busiest_key = recorder.peak_key();
    let _ = std::fs::remove_dir_all(&log_dir);
    if let Some(e) = finished_early {
        return Err(e);
    }
    let secs = elapsed.as_secs_f64().max(1e-9);
    let requests_by_kind = requests_by_kind(mix, &mix_before, requests, tasks);
    Ok(BenchReport {
        store: store.describe(),
        step,
        workers,
        slots,
        tasks,
        command: load.command.clone(),
        lease_ttl_ms: load.lease_ttl.as_millis() as u64,
        succeeded,
        elapsed_ms: elapsed.as_millis() as u64,
        tasks_per_sec: tasks as f64 / secs,
        requests,
        requests_per_task: requests as f64 / tasks as f64,
        heartbeats_per_task: ["heartbeat write", "heartbeat write lost"]
            .iter()
            .filter_map(|k| requests_by_kind.get(*k))
            .sum(),
        requests_by_kind,
        read_units_per_task: units.0 / tasks as f64,
        write_units_per_task: units.1 / tasks as f64,
        busiest_key,
        import_requests,
    })
}

/// Imports the load's tasks into `step`; returns the store requests it took.
async fn import_tasks(
    store: &SharedStore,
    recorder: &RequestRecorder,
    step: &str,
    load: &DispatchLoad,
) -> Result<u64, WorkerError> {
    let specs: Vec<TaskSpec> = (0..load.tasks)
        .map(|i| TaskSpec::new(step, format!("t{i:07}"), &load.command))
        .collect();
    let before_import = recorder.total();
    store
        .import(&specs, crate::clock::system().now())
        .await
        .map_err(|source| WorkerError::Store {
            operation: "importing benchmark tasks",
            source,
        })?;
    Ok(recorder.total() - before_import)
}

type Running = JoinSet<Result<WorkerExit, WorkerError>>;

/// Starts the load's in-process workers on `step`.
fn spawn_workers(
    store: impl Fn() -> SharedStore,
    step: &str,
    load: &DispatchLoad,
    log_dir: &Path,
) -> (Vec<WorkerControl>, Running) {
    let mut controls = Vec::new();
    let mut running = JoinSet::new();
    for _ in 0..load.workers {
        let control = WorkerControl::new();
        controls.push(control.clone());
        let mut args = WorkerArgs::new(step);
        args.slots = load.slots;
        args.lease_ttl = load.lease_ttl;
        args.log_dir = Some(log_dir.to_path_buf());
        args.imds_endpoint = Some("off".into());
        args.poll_interval = Duration::from_millis(500);
        args.drain_grace = Duration::ZERO;
        running.spawn(run_with(args, store(), control));
    }
    (controls, running)
}

/// Results recorded and tasks succeeded, over every worker.
fn recorded(controls: &[WorkerControl]) -> (u64, u64) {
    controls.iter().fold((0, 0), |(r, s), c| {
        let st = c.stats();
        (r + st.recorded(), s + st.succeeded)
    })
}

/// Waits until every task has a recorded result (or every worker has stopped); the error of a
/// worker that stopped with one.
async fn wait_for_results(
    controls: &[WorkerControl],
    running: &mut Running,
    tasks: u64,
) -> Option<WorkerError> {
    loop {
        if recorded(controls).0 >= tasks {
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            joined = running.join_next() => match joined {
                Some(Ok(Err(e))) => return Some(e),
                None => return None,
                Some(_) => {}
            },
        }
    }
}

/// Requests per task by kind over the run (`mix` less `mix_before`), with `other` for the
/// requests not broken down; empty when the store breaks none down.
fn requests_by_kind(
    mix: BTreeMap<String, u64>,
    mix_before: &BTreeMap<String, u64>,
    requests: u64,
    tasks: u64,
) -> BTreeMap<String, f64> {
    let per_task = |n: u64| n as f64 / tasks as f64;
    let mut by_kind = BTreeMap::new();
    let mut broken_down = 0;
    for (kind, n) in mix {
        let n = n.saturating_sub(mix_before.get(&kind).copied().unwrap_or(0));
        if n > 0 {
            broken_down += n;
            by_kind.insert(kind, per_task(n));
        }
    }
    if !by_kind.is_empty() && requests > broken_down {
        by_kind.insert("other".to_string(), per_task(requests - broken_down));
    }
    by_kind
}
