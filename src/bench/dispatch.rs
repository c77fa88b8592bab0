//! Dispatch throughput (workers running `true`, or a command of the user's), the raw DynamoDB Local conditional-write
//! rate beside it, and claims per second without processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use serde::Serialize;
use serde_json::json;

use super::{dynamo_client, unique, BenchConfig, Row};
use crate::clock;
use crate::model::{ClaimRequest, Completion, Outcome, TaskResult, TaskSpec};
use crate::store::dynamo::DynamoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{RequestRecorder, SharedStore, TaskStore};
use crate::worker::{bench_dispatch, BenchReport, DispatchLoad, WorkerError};

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let p = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh DynamoDB Local table through the store, deleted by [`DynamoTable::drop_table`].
pub(crate) struct DynamoTable {
    pub store: Arc<DynamoStore>,
}

impl DynamoTable {
    pub async fn create(endpoint: &str, prefix: &str) -> anyhow::Result<DynamoTable> {
        let store = Arc::new(DynamoStore::new(
            dynamo_client(endpoint).await,
            &unique(prefix),
        ));
        store.create_schema().await?;
        Ok(DynamoTable { store })
    }

    /// The dispatch benchmark on this table, each worker on a store of its own
    /// ([`DynamoStore::sibling`]), all counted by this store's recorder.
    async fn dispatch(&self, load: &DispatchLoad) -> Result<BenchReport, WorkerError> {
        let store = self.store.clone();
        let worker_store = || Arc::new(store.sibling()) as SharedStore;
        bench_dispatch(
            self.store.clone(),
            worker_store,
            &self.store.recorder(),
            load,
        )
        .await
    }

    pub async fn drop_table(self) {
        let _ = self.store.delete_schema().await;
    }
}

/// A fresh SQLite store in `dir`, and its request counts.
pub(crate) fn sqlite_store(dir: &TempDir) -> anyhow::Result<(SharedStore, RequestRecorder)> {
    let store = SqliteStore::open(&dir.0.join("bench.db"))?;
    let requests = store.recorder();
    Ok((Arc::new(store), requests))
}

#[derive(Debug, Serialize)]
struct RawRate {
    concurrency: usize,
    writes: u64,
    seconds: f64,
    per_sec: f64,
}

type WriteLoop = tokio::task::JoinHandle<anyhow::Result<u64>>;

impl RawRate {
    /// Waits for write loops started at `started` and sums up what they wrote.
    async fn from_loops(
        concurrency: usize,
        started: Instant,
        loops: impl IntoIterator<Item = WriteLoop>,
    ) -> anyhow::Result<RawRate> {
        let results = futures::future::join_all(loops).await;
        let seconds = started.elapsed().as_secs_f64();
        let mut writes = 0;
        for r in results {
            writes += r??;
        }
        Ok(RawRate {
            concurrency,
            writes,
            seconds,
            per_sec: writes as f64 / seconds.max(1e-9),
        })
    }
}

/// Dispatch on SQLite and DynamoDB Local, and the raw UpdateItem rate.
pub(super) async fn dispatch(cfg: &BenchConfig) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let load = &cfg.dispatch;
    let (w, s, n) = (load.workers, load.slots, load.tasks);
    let shape = format!("{w}×{s}, {n} tasks");
    let what = format!("dispatch `{}`", load.command);
    let mut rows = Vec::new();

    let dir = TempDir::new("anamo-bench-dispatch")?;
    let (store, requests) = sqlite_store(&dir)?;
    let shared = store.clone();
    let sqlite = bench_dispatch(store, || shared.clone(), &requests, load).await?;
    rows.push(
        Row::new(
            format!("{what}, SQLite ({shape})"),
            format!(
                "{:.0} tasks/s, {:.1} store requests/task",
                sqlite.tasks_per_sec, sqlite.requests_per_task
            ),
        )
        .note(format!("{} succeeded", sqlite.succeeded)),
    );

    let mut details = json!({ "sqlite": sqlite });
    match &cfg.dynamodb_endpoint {
        None => rows.push(Row::skipped(
            format!("{what}, DynamoDB Local ({shape})"),
            "no DynamoDB endpoint (--dynamodb-endpoint or ANAMO_TEST_DYNAMODB_ENDPOINT)",
        )),
        Some(endpoint) => {
            let f = measure_dynamodb(cfg, endpoint).await?;
            rows.push(dynamodb_row(
                &f,
                &format!("{what}, DynamoDB Local ({shape})"),
            ));
            details["dynamodb"] = json!(f.dynamo);
            details["warmup"] = json!({ "dispatch": f.cold, "raw_update_item": f.cold_raw });
            details["raw_update_item"] = json!(f.raw);
            details["task_write"] = json!(f.own);
        }
    }
    Ok((rows, details))
}

/// Dispatch and the raw write rates on DynamoDB Local, and the same before its warm-up.
struct DynamoFigures {
    cold: BenchReport,
    cold_raw: RawRate,
    dynamo: BenchReport,
    raw: RawRate,
    own: RawRate,
}

/// Measures [`DynamoFigures`], each in a table of its own.
async fn measure_dynamodb(cfg: &BenchConfig, endpoint: &str) -> anyhow::Result<DynamoFigures> {
    let load = &cfg.dispatch;
    let concurrency = load.workers * load.slots as usize;
    // DynamoDB Local's JVM compiles its hot paths during the first few thousand
    // requests, at 2-5 times the CPU per request. Whatever ran first would pay for it,
    // so one dispatch and one raw loop run unmeasured first and both measured phases
    // meet a warm JVM (DynamoDB itself has no such phase).
    let table = DynamoTable::create(endpoint, "anamo-bench-warmup").await?;
    let cold = table.dispatch(load).await;
    table.drop_table().await;
    let cold = cold?;
    let cold_raw = raw_update_rate(endpoint, concurrency, cfg.raw_secs).await?;
    let table = DynamoTable::create(endpoint, "anamo-bench-dispatch").await?;
    let dynamo = table.dispatch(load).await;
    table.drop_table().await;
    let dynamo = dynamo?;
    let raw = raw_update_rate(endpoint, concurrency, cfg.raw_secs).await?;
    let table = DynamoTable::create(endpoint, "anamo-bench-writes").await?;
    let own = task_write_rate(table.store.clone(), concurrency, cfg.raw_secs).await;
    table.drop_table().await;
    let own = own?;
    Ok(DynamoFigures {
        cold,
        cold_raw,
        dynamo,
        raw,
        own,
    })
}

/// The DynamoDB Local dispatch row (named `name`): its rate against the raw conditional
/// write's.
fn dynamodb_row(f: &DynamoFigures, name: &str) -> Row {
    let (cold, cold_raw, dynamo, raw, own) = (&f.cold, &f.cold_raw, &f.dynamo, &f.raw, &f.own);
    let ratio = dynamo.tasks_per_sec / raw.per_sec.max(1e-9);
    let own_ratio = dynamo.tasks_per_sec / own.per_sec.max(1e-9);
    Row::new(
        name,
        format!(
            "{:.0} tasks/s, {:.1} store requests/task",
            dynamo.tasks_per_sec, dynamo.requests_per_task
        ),
    )
    .reference(format!(
        "raw conditional UpdateItem: {:.0}/s at concurrency {} (a task's own \
         conditional write: {:.0}/s)",
        raw.per_sec, raw.concurrency, own.per_sec
    ))
    .ratio(ratio)
    .goal("tasks/s ÷ raw ≥ 0.4", ratio >= 0.4)
    .note(format!(
        "{} succeeded; capacity per task: {}; at {:.1} requests per task the store alone allows ≤ {:.2}; \
         against the rate of a task's own conditional write (a lease renewal: \
         the task item, its index entry moved) the ratio is {:.2} (ceiling 0.5); \
         requests per task by kind: {}; measured after a warm-up of DynamoDB \
         Local (the same dispatch and raw loop, unmeasured: {:.0} tasks/s and \
         {:.0} writes/s on its cold JVM, ratio {:.2})",
        dynamo.succeeded,
        capacity(dynamo),
        dynamo.requests_per_task,
        1.0 / dynamo.requests_per_task.max(1e-9),
        own_ratio,
        by_kind(&dynamo.requests_by_kind),
        cold.tasks_per_sec,
        cold_raw.per_sec,
        cold.tasks_per_sec / cold_raw.per_sec.max(1e-9),
    ))
}

/// `2.10 write units, 0.60 read units, 2.00 heartbeats; busiest partition key S#bench-…#running: 40 writes/s`.
fn capacity(r: &BenchReport) -> String {
    let busiest = match &r.busiest_key {
        Some(k) => format!(
            "busiest partition key {}: {} writes/s",
            k.key, k.writes_per_second
        ),
        None => "no partition key written".to_string(),
    };
    format!(
        "{:.2} write units, {:.2} read units, {:.2} heartbeats; {busiest}",
        r.write_units_per_task, r.read_units_per_task, r.heartbeats_per_task
    )
}

/// `claim query 0.12, claim write 1.00, ...` (most first).
fn by_kind(mix: &std::collections::BTreeMap<String, f64>) -> String {
    let mut kinds: Vec<(&String, &f64)> = mix.iter().collect();
    kinds.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    let shown: Vec<String> = kinds
        .iter()
        .map(|(kind, n)| format!("{kind} {n:.3}"))
        .collect();
    if shown.is_empty() {
        "not broken down".to_string()
    } else {
        shown.join(", ")
    }
}

/// `concurrency` loops of conditional UpdateItem on distinct keys for `secs` seconds.
async fn raw_update_rate(endpoint: &str, concurrency: usize, secs: f64) -> anyhow::Result<RawRate> {
    let client = dynamo_client(endpoint).await;
    let table = unique("anamo-bench-raw");
    client
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let loops = (0..concurrency).map(|w| {
        let client = client.clone();
        let table = table.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                client
                    .update_item()
                    .table_name(&table)
                    .key("pk", AttributeValue::S(format!("w{w}-{n}")))
                    .update_expression("SET #s = :running, #t = :token")
                    .condition_expression("attribute_not_exists(#s) OR #s = :pending")
                    .expression_attribute_names("#s", "st")
                    .expression_attribute_names("#t", "tok")
                    .expression_attribute_values(":running", AttributeValue::S("running".into()))
                    .expression_attribute_values(":pending", AttributeValue::S("pending".into()))
                    .expression_attribute_values(
                        ":token",
                        AttributeValue::S(uuid::Uuid::new_v4().simple().to_string()),
                    )
                    .send()
                    .await?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        })
    });
    let rate = RawRate::from_loops(concurrency, started, loops).await;
    let _ = client.delete_table().table_name(&table).send().await;
    rate
}

/// `concurrency` loops renewing the leases of claimed tasks on the store's own table for
/// `secs` seconds: the conditional write a claim or a completion is made of (the task item,
/// with its index entry moved), without finding the task first.
async fn task_write_rate(
    store: Arc<DynamoStore>,
    concurrency: usize,
    secs: f64,
) -> anyhow::Result<RawRate> {
    let clock = clock::system();
    let step = import_true_tasks(store.as_ref(), "writes", concurrency as u64).await?;
    let req = ClaimRequest {
        step: step.clone(),
        owner: "bench".into(),
        ttl_ms: 600_000,
    };
    // A claim call takes at most a batch's worth: claim until every task is held.
    let mut claims = Vec::with_capacity(concurrency);
    while claims.len() < concurrency {
        let batch = store
            .claim_batch(&req, concurrency - claims.len(), clock.now())
            .await?;
        if batch.is_empty() {
            break;
        }
        claims.extend(batch);
    }
    anyhow::ensure!(
        claims.len() == concurrency,
        "task write benchmark: claimed {} of {concurrency} tasks",
        claims.len()
    );
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let loops = claims.into_iter().map(|claim| {
        let (store, clock, lease) = (store.clone(), clock.clone(), claim.lease());
        tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                store.heartbeat(&lease, 600_000, clock.now()).await?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        })
    });
    RawRate::from_loops(concurrency, started, loops).await
}

#[derive(Debug, Serialize)]
struct ClaimRate {
    store: String,
    claimers: usize,
    tasks: u64,
    seconds: f64,
    claims_per_sec: f64,
    requests_per_claim: f64,
    /// Retryable errors (contention) the loops retried.
    retried: u64,
}

/// Claim + complete loops on each store.
pub(super) async fn claims(cfg: &BenchConfig) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let mut rows = Vec::new();
    let mut details = serde_json::Map::new();
    let name = |store: &str| {
        format!(
            "claim+complete, {store} ({} claimers, {} tasks)",
            cfg.claimers, cfg.claim_tasks
        )
    };
    let dir = TempDir::new("anamo-bench-claims")?;
    let (store, requests) = sqlite_store(&dir)?;
    let r = claim_rate(store, &requests, cfg.claimers, cfg.claim_tasks).await?;
    rows.push(claim_row(name("SQLite"), &r));
    details.insert("sqlite".into(), json!(r));
    match &cfg.dynamodb_endpoint {
        None => rows.push(Row::skipped(
            name("DynamoDB Local"),
            "no DynamoDB endpoint (--dynamodb-endpoint or ANAMO_TEST_DYNAMODB_ENDPOINT)",
        )),
        Some(endpoint) => {
            let table = DynamoTable::create(endpoint, "anamo-bench-claims").await?;
            let r = claim_rate(
                table.store.clone(),
                &table.store.recorder(),
                cfg.claimers,
                cfg.claim_tasks,
            )
            .await;
            table.drop_table().await;
            let r = r?;
            rows.push(claim_row(name("DynamoDB Local"), &r));
            details.insert("dynamodb".into(), json!(r));
        }
    }
    Ok((rows, serde_json::Value::Object(details)))
}

fn claim_row(name: String, r: &ClaimRate) -> Row {
    Row::new(
        name,
        format!(
            "{:.0} claims/s, {:.1} requests/claim",
            r.claims_per_sec, r.requests_per_claim
        ),
    )
    .note(if r.retried > 0 {
        format!("{} retryable errors retried", r.retried)
    } else {
        String::new()
    })
}

/// Imports `n` tasks running `true` into a new step named after `prefix`; returns the step.
async fn import_true_tasks(store: &dyn TaskStore, prefix: &str, n: u64) -> anyhow::Result<String> {
    let step = unique(prefix);
    let specs: Vec<TaskSpec> = (0..n)
        .map(|i| TaskSpec::new(&step, format!("t{i:07}"), "true"))
        .collect();
    store.import(&specs, clock::system().now()).await?;
    Ok(step)
}

async fn claim_rate(
    store: SharedStore,
    requests: &RequestRecorder,
    claimers: usize,
    tasks: u64,
) -> anyhow::Result<ClaimRate> {
    let clock = clock::system();
    let step = import_true_tasks(store.as_ref(), "claims", tasks).await?;
    let before = requests.total();
    let started = Instant::now();
    let loops = (0..claimers).map(|c| {
        let store = store.clone();
        let clock = clock.clone();
        let req = ClaimRequest {
            step: step.clone(),
            owner: format!("claimer-{c}"),
            ttl_ms: 60_000,
        };
        tokio::spawn(async move {
            let (mut done, mut retried) = (0u64, 0u64);
            loop {
                let claim = match store.claim(&req, clock.now()).await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) if e.is_retryable() => {
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    Err(e) => return Err(anyhow::Error::from(e)),
                };
                let now = clock.now();
                let completion = Completion {
                    retry_delay: None,
                    outcome: Outcome::Succeeded,
                    result: TaskResult {
                        exit_code: Some(0),
                        worker_id: req.owner.clone(),
                        started_at: now,
                        finished_at: now,
                        ..TaskResult::default()
                    },
                };
                loop {
                    match store.complete(&claim.lease(), &completion, now).await {
                        Ok(_) => break,
                        Err(e) if e.is_retryable() => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                done += 1;
            }
            Ok((done, retried))
        })
    });
    let results = futures::future::join_all(loops).await;
    let seconds = started.elapsed().as_secs_f64();
    let requests = requests.total() - before;
    let (mut done, mut retried) = (0, 0);
    for r in results {
        let (d, e) = r??;
        done += d;
        retried += e;
    }
    if done != tasks {
        anyhow::bail!("claim benchmark: {done} of {tasks} tasks completed");
    }
    Ok(ClaimRate {
        store: store.describe(),
        claimers,
        tasks,
        seconds,
        claims_per_sec: done as f64 / seconds.max(1e-9),
        requests_per_claim: requests as f64 / done.max(1) as f64,
        retried,
    })
}
