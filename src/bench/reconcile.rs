//! One controller pass at scale: many pending tasks over many steps in DynamoDB Local, one
//! fleet per step whose provider has no instances. The pass runs in a child process
//! (`anamo bench --reconcile-child DIR`) so that the peak RSS it reports is the controller's,
//! not the benchmark's. The planner alone is timed here on the same input.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::process::Command;

use super::dispatch::{DynamoTable, TempDir};
use super::planner_time::planner_time;
use super::{mb, peak_rss_bytes, BenchConfig, Row, RSS_GOAL_BYTES};
use crate::clock::{self, Millis};
use crate::controller::providers::{ProviderSet, RemoteFactory, WorkerLaunch};
use crate::controller::reload::ManifestSource;
use crate::controller::{Controller, ControllerConfig};
use crate::manifest::FleetManifest;
use crate::metrics::Metrics;
use crate::model::{ClaimRequest, Completion, Outcome, TaskResult, TaskSpec};
use crate::provider::{
    FleetProvider, Instance, LaunchOutcome, LaunchRequest, ProviderError, ProviderResult,
};
use crate::store::{RequestRecorder, TaskStore};

/// A provider with no instances that launches nothing (so passes stay comparable).
#[derive(Debug)]
struct NullProvider;

#[async_trait]
impl FleetProvider for NullProvider {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        Ok(Vec::new())
    }
    async fn launch(&self, _: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        Ok(LaunchOutcome::default())
    }
    async fn terminate(&self, _: &[String]) -> ProviderResult<()> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "null"
    }
}

struct NullFactory;

#[async_trait]
impl RemoteFactory for NullFactory {
    async fn build(
        &self,
        _: &str,
        _: &FleetManifest,
        _: &WorkerLaunch,
    ) -> Result<Arc<dyn FleetProvider>, ProviderError> {
        Ok(Arc::new(NullProvider))
    }
}

/// One pass as the child measured it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PassFigures {
    pub ms: f64,
    pub requests: u64,
    pub read_units: f64,
}

/// A pass and a progress refresh after tasks changed since the previous ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AfterChanges {
    /// Claims plus completions applied since the previous pass and refresh.
    pub changes: u64,
    pub pass: PassFigures,
    /// The progress refresh started by that pass: its step reports (counters, throughput,
    /// oldest pending; `anamo_progress_count_duration_seconds`), milliseconds.
    pub progress_ms: f64,
    /// The whole refresh (the step reports, the per-sample view and the failed tasks): from
    /// the pass's end until it finished, milliseconds, and its store requests.
    #[serde(default)]
    pub refresh: PassFigures,
}

/// What the child process measures.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReconcileChild {
    pub fleets: usize,
    /// `Controller::dry_run` wall times (observe + plan), milliseconds.
    pub dry_run_ms: Vec<f64>,
    /// `Controller::reconcile_once` wall times (housekeeping, observe, plan, act, publish).
    pub reconcile_ms: Vec<f64>,
    /// Store requests of each dry run, then of each pass.
    pub dry_run_requests: Vec<u64>,
    pub reconcile_requests: Vec<u64>,
    /// Read units (DynamoDB's consumed capacity) of each dry run, then of each pass.
    #[serde(default)]
    pub dry_run_read_units: Vec<f64>,
    #[serde(default)]
    pub reconcile_read_units: Vec<f64>,
    /// The last of those passes' requests by kind.
    #[serde(default)]
    pub last_pass_requests: BTreeMap<String, u64>,
    /// Each pass's progress count (the steps' reports; it runs beside the passes, and is
    /// waited for before the next dry run here), milliseconds.
    #[serde(default)]
    pub progress_count_ms: Vec<f64>,
    /// Each of those refreshes whole (the reports, the per-sample view, the failed tasks).
    #[serde(default)]
    pub refresh: Vec<PassFigures>,
    /// Peak RSS after the first refresh (the per-sample view read whole).
    #[serde(default)]
    pub peak_rss_after_first_refresh_bytes: Option<u64>,
    /// A last pass and refresh after [`CHANGES`] task changes.
    #[serde(default)]
    pub after_changes: Option<AfterChanges>,
    /// Instances the first dry run planned to launch.
    pub launches_planned: u32,
    /// Peak RSS after the first dry run, before any progress count (which runs in this
    /// process too, beside the passes).
    #[serde(default)]
    pub peak_rss_before_progress_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
}

/// Task changes (claims and completions, half each) applied before the last pass.
const CHANGES: u64 = 1_000;

/// Runs `fut`, with its wall time, requests and read units.
async fn timed<T>(
    counter: &RequestRecorder,
    fut: impl std::future::Future<Output = T>,
) -> (T, PassFigures) {
    let (t, requests, units) = (Instant::now(), counter.total(), counter.read_units());
    let out = fut.await;
    let figures = PassFigures {
        ms: t.elapsed().as_secs_f64() * 1000.0,
        requests: counter.total() - requests,
        read_units: counter.read_units() - units,
    };
    (out, figures)
}

/// Waits for the progress refresh in flight, started `since` (the pass's end): how long its
/// step reports took (the metric), milliseconds, and the whole refresh.
async fn progress_ms(
    controller: &mut Controller,
    metrics: &Metrics,
    counter: &RequestRecorder,
    since: (Instant, u64, f64),
) -> (f64, PassFigures) {
    let counted = &metrics.progress_count_duration;
    let before = counted.get_sample_sum();
    controller.settle_progress().await;
    let whole = PassFigures {
        ms: since.0.elapsed().as_secs_f64() * 1000.0,
        requests: counter.total() - since.1,
        read_units: counter.read_units() - since.2,
    };
    ((counted.get_sample_sum() - before) * 1000.0, whole)
}

/// Where a refresh starts: now, with the requests and read units so far.
fn mark(counter: &RequestRecorder) -> (Instant, u64, f64) {
    (Instant::now(), counter.total(), counter.read_units())
}

/// The child's work: three dry runs and three full passes against `store_url` with the
/// manifests in `dir` (every fleet gets a provider without instances), then [`CHANGES`]
/// claims and completions and one more pass and progress refresh.
pub async fn reconcile_child(dir: &Path, store_url: &str) -> anyhow::Result<ReconcileChild> {
    let (store, counter) = crate::store::open_recorded(&store_url.parse()?, None).await?;
    let clock = clock::system();
    let source = ManifestSource::open(dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    let fleets = source.current().fleets.len();
    let launch = WorkerLaunch {
        store_url: store_url.to_string(),
        exe: std::env::current_exe()?,
        log_dir: None,
        env: BTreeMap::new(),
        force_local: false,
        binary_url: None,
    };
    let providers = ProviderSet::new(launch, clock.clone(), "bench", Some(Box::new(NullFactory)));
    // A progress count after every pass (the default is every 30 s), so that each is timed.
    let mut config = ControllerConfig::new("bench");
    config.progress_interval = std::time::Duration::ZERO;
    let metrics = Arc::new(Metrics::new());
    let mut controller = Controller::new(
        config,
        store.clone(),
        clock.clone(),
        source,
        providers,
        metrics.clone(),
    );
    let mut out = ReconcileChild {
        fleets,
        ..Default::default()
    };
    // Interleaved, so that DynamoDB Local warming up (its JIT) weighs on both kinds alike.
    for _ in 0..3 {
        let (plan, dry) = timed(&counter, controller.dry_run()).await;
        out.dry_run_ms.push(dry.ms);
        out.dry_run_requests.push(dry.requests);
        out.dry_run_read_units.push(dry.read_units);
        // The first plan's (later passes have launches in flight).
        let launches: u32 = plan.fleets.iter().map(|f| f.launch_count()).sum();
        out.launches_planned = out.launches_planned.max(launches);
        if out.peak_rss_before_progress_bytes.is_none() {
            out.peak_rss_before_progress_bytes = peak_rss_bytes();
        }
        let kinds = counter.by_kind();
        let (report, pass) = timed(&counter, controller.reconcile_once()).await;
        let since = mark(&counter);
        out.last_pass_requests = kinds_since(&kinds, &counter.by_kind());
        out.reconcile_ms.push(pass.ms);
        out.reconcile_requests.push(pass.requests);
        out.reconcile_read_units.push(pass.read_units);
        if let Some(e) = report.errors.first() {
            anyhow::bail!("the pass reported an error: {e}");
        }
        // Waited for here so that it does not weigh on the next dry run's figures: DynamoDB
        // Local runs one request at a time, DynamoDB does not.
        let (counted, whole) = progress_ms(&mut controller, &metrics, &counter, since).await;
        out.progress_count_ms.push(counted);
        out.refresh.push(whole);
        if out.peak_rss_after_first_refresh_bytes.is_none() {
            out.peak_rss_after_first_refresh_bytes = peak_rss_bytes();
        }
    }
    let changes = apply_changes(store.as_ref(), clock.now()).await?;
    let (report, pass) = timed(&counter, controller.reconcile_once()).await;
    let since = mark(&counter);
    if let Some(e) = report.errors.first() {
        anyhow::bail!("the pass after {changes} changes reported an error: {e}");
    }
    let (progress_ms, refresh) = progress_ms(&mut controller, &metrics, &counter, since).await;
    out.after_changes = Some(AfterChanges {
        changes,
        pass,
        progress_ms,
        refresh,
    });
    out.peak_rss_bytes = peak_rss_bytes();
    Ok(out)
}

/// Requests by kind between two readings of [`RequestRecorder::by_kind`].
fn kinds_since(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Claims [`CHANGES`]` / 2` tasks spread over every step and completes them (succeeded), as
/// workers would between two passes; the changes made.
async fn apply_changes(store: &dyn TaskStore, now: Millis) -> anyhow::Result<u64> {
    let steps = store.steps().await?;
    let per_step = (CHANGES / 2).div_ceil(steps.len().max(1) as u64) as usize;
    let mut changes = 0;
    for step in &steps {
        let req = ClaimRequest {
            step: step.clone(),
            owner: "bench".into(),
            ttl_ms: 600_000,
        };
        for claim in store.claim_batch(&req, per_step, now).await? {
            let done = Completion {
                outcome: Outcome::Succeeded,
                result: TaskResult {
                    exit_code: Some(0),
                    duration_ms: 60_000,
                    worker_id: "bench".into(),
                    started_at: now,
                    finished_at: now,
                    ..Default::default()
                },
                retry_delay: None,
            };
            store.complete(&claim.lease(), &done, now).await?;
            changes += 2;
        }
    }
    Ok(changes)
}

fn fleet_manifests(steps: u32) -> String {
    (0..steps)
        .map(|k| {
            format!(
                "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: f{k:02}\nspec:\n  \
                 step: s{k:02}\n  provider:\n    ec2:\n      launchTemplate:\n        name: bench\n  \
                 maxInstances: 50\n  slotsPerInstance: 4\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

pub(super) async fn run(cfg: &BenchConfig) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let (tasks, steps) = (cfg.tasks, cfg.steps.max(1));
    let per_step = tasks / u64::from(steps);
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();

    let empty = planner_time(steps, per_step, 0);
    let busy = planner_time(steps, per_step, 50);
    let worst = empty.mean_us.max(busy.mean_us);
    rows.push(
        Row::new(
            format!("planner alone, {steps} fleets"),
            format!(
                "{:.0} µs (no instances), {:.0} µs (50 instances + workers per fleet)",
                empty.mean_us, busy.mean_us
            ),
        )
        .goal("≤ 10 ms", worst <= 10_000.0)
        .note(format!("mean of {} plans", empty.iterations)),
    );
    details.insert("planner".into(), json!([empty, busy]));

    let Some(endpoint) = &cfg.dynamodb_endpoint else {
        rows.push(Row::skipped(
            format!("reconcile pass, {tasks} pending tasks / {steps} steps, DynamoDB Local"),
            "no DynamoDB endpoint (--dynamodb-endpoint or ANAMO_TEST_DYNAMODB_ENDPOINT)",
        ));
        return Ok((rows, serde_json::Value::Object(details)));
    };
    let table = DynamoTable::create(endpoint, "anamo-bench-reconcile").await?;
    let result = measure(cfg, endpoint, &table, per_step, steps).await;
    table.drop_table().await;
    let (child, import_s) = result?;
    let imported = per_step * u64::from(steps);
    rows.extend(pass_rows(&child, imported, steps, import_s));
    details.insert("pass".into(), json!(child));
    details.insert("import_seconds".into(), json!(import_s));
    Ok((rows, serde_json::Value::Object(details)))
}

/// The rows of the child's figures.
fn pass_rows(child: &ReconcileChild, imported: u64, steps: u32, import_s: f64) -> Vec<Row> {
    let worst_pass = child
        .reconcile_ms
        .iter()
        .chain(&child.dry_run_ms)
        .fold(0.0f64, |a, b| a.max(*b));
    let mut rows = vec![Row::new(
        format!("reconcile pass, {imported} pending tasks / {steps} steps, DynamoDB Local"),
        format!(
            "reconcile_once {} ms; dry_run {} ms",
            join_ms(&child.reconcile_ms),
            join_ms(&child.dry_run_ms)
        ),
    )
    .goal("≤ 1 s", worst_pass <= 1000.0)
    .note(format!(
        "{} fleets with no instances ({} instances to launch); store requests per pass: \
         reconcile_once {}, dry_run {}; read units: reconcile_once {}, dry_run {}; the \
         progress count (beside the passes, every progressInterval) took {} ms, the whole \
         refresh {} ms ({} requests); import took {:.0} s ({:.0} tasks/s)",
        child.fleets,
        child.launches_planned,
        join_n(&child.reconcile_requests),
        join_n(&child.dry_run_requests),
        join_ms(&child.reconcile_read_units),
        join_ms(&child.dry_run_read_units),
        join_ms(&child.progress_count_ms),
        join_ms(&child.refresh.iter().map(|r| r.ms).collect::<Vec<_>>()),
        join_n(&child.refresh.iter().map(|r| r.requests).collect::<Vec<_>>()),
        import_s,
        imported as f64 / import_s.max(1e-9)
    ))];
    if let Some(after) = &child.after_changes {
        rows.push(
            Row::new(
                format!(
                    "pass and progress refresh after {} task changes",
                    after.changes
                ),
                format!(
                    "pass {:.0} ms ({} requests, {:.0} read units); refresh {:.0} ms",
                    after.pass.ms, after.pass.requests, after.pass.read_units, after.progress_ms
                ),
            )
            .goal("refresh ≤ 0.2 s", after.progress_ms <= 200.0)
            .note(format!(
                "claims and completions (half each) spread over every step since the previous \
                 pass and refresh; the refresh figure is its step reports (counts, throughput, \
                 oldest pending); with the per-sample view and failed tasks it took {:.0} ms, \
                 {} requests, {:.1} read units",
                after.refresh.ms, after.refresh.requests, after.refresh.read_units
            )),
        );
    }
    if let Some(rss) = child.peak_rss_bytes {
        rows.push(
            Row::new("controller peak RSS (VmHWM) over those 7 passes", mb(rss))
                .goal("≤ 40 MB (40,000,000 bytes)", rss <= RSS_GOAL_BYTES)
                .note(format!(
                    "child process: store client, manifests, controller, runtime, and the \
                 progress counts beside the passes; {} after the first dry run, before any \
                 progress count; {} after the first refresh (the per-sample view read whole)",
                    child
                        .peak_rss_before_progress_bytes
                        .map_or("not read".to_string(), mb),
                    child
                        .peak_rss_after_first_refresh_bytes
                        .map_or("not read".to_string(), mb)
                )),
        );
    }
    rows
}

fn join_n(v: &[u64]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("/")
}

fn join_ms(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join("/")
}

async fn measure(
    cfg: &BenchConfig,
    endpoint: &str,
    table: &DynamoTable,
    per_step: u64,
    steps: u32,
) -> anyhow::Result<(ReconcileChild, f64)> {
    let started = Instant::now();
    import(&table.store, per_step, steps).await?;
    let import_s = started.elapsed().as_secs_f64();
    let dir = TempDir::new("anamo-bench-reconcile")?;
    std::fs::write(dir.0.join("fleets.yaml"), fleet_manifests(steps))?;
    let out = Command::new(&cfg.exe)
        .arg("--store")
        .arg(format!("dynamodb://{}", table.store.table()))
        .arg("bench")
        .arg("--reconcile-child")
        .arg(&dir.0)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_ENDPOINT_URL_DYNAMODB")
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        anyhow::bail!(
            "the reconcile child failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let child: ReconcileChild = serde_json::from_slice(&out.stdout)?;
    Ok((child, import_s))
}

/// Steps imported at once, each in chunks of [`IMPORT_CHUNK`] tasks: the store's import
/// writes 8 BatchWriteItem calls at a time, and one step's existence check (BatchGetItem)
/// overlaps another's writes.
const IMPORT_STEPS_AT_ONCE: usize = 4;
const IMPORT_CHUNK: u64 = 10_000;

/// Imports `per_step` pending tasks into each of `steps` steps.
async fn import(
    store: &crate::store::dynamo::DynamoStore,
    per_step: u64,
    steps: u32,
) -> anyhow::Result<()> {
    use futures::{StreamExt, TryStreamExt};
    let clock = clock::system();
    let chunks = (0..steps).flat_map(|k| {
        (0..per_step)
            .step_by(IMPORT_CHUNK as usize)
            .map(move |from| (k, from..(from + IMPORT_CHUNK).min(per_step)))
    });
    futures::stream::iter(chunks)
        .map(|(k, ids)| {
            let specs: Vec<TaskSpec> = ids
                .map(|i| TaskSpec::new(format!("s{k:02}"), format!("t{i:07}"), "true"))
                .collect();
            let now = clock.now();
            async move { store.import(&specs, now).await.map(drop) }
        })
        .buffer_unordered(IMPORT_STEPS_AT_ONCE)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}
