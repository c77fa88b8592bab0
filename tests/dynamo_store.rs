//! DynamoDB-specific tests of `DynamoStore` (the shared behaviour is in `tests/conformance.rs`):
//! pagination past 1 MB, bounded claim cost, the requests of deciding whether a gather is ready
//! (as `docs/dynamodb-table.md` counts them), items written by other clients, errors, and the
//! capacity units and writes per partition key the request recorder counts.
//!
//! Run through `scripts/test-services run -- cargo nextest run --test dynamo_store`; without
//! DynamoDB Local the tests fail.

mod common;

use std::time::Instant;

use anamo::model::{
    ClaimRequest, Completion, LeaseRef, Outcome, TaskFilter, TaskResult, TaskSpec, TaskState,
};
use anamo::store::dynamo::DynamoStore;
use anamo::store::{Fence, LeaderToken, StatusDoc, StoreError, TaskStore};
use aws_sdk_dynamodb::types::AttributeValue;

const T0: i64 = 1_700_000_000_000;
const TTL: i64 = 60_000;

/// A store on a fresh table, plus a raw client on the same endpoint.
async fn fresh() -> Option<(DynamoStore, aws_sdk_dynamodb::Client, String)> {
    let endpoint = common::dynamo_endpoint()?;
    let table = common::unique_name("anamo-dyn");
    let client = common::dynamo_client(&endpoint).await;
    // One index shard: these tests check the claim order and the request counts of one
    // shard (with more, the order holds within each shard and reads are per shard).
    let store = DynamoStore::new(client.clone(), &table).with_shards(1);
    store.create_schema().await.expect("create table");
    Some((store, client, table))
}

fn req(step: &str, owner: &str) -> ClaimRequest {
    ClaimRequest {
        step: step.into(),
        owner: owner.into(),
        ttl_ms: TTL,
    }
}

fn specs(step: &str, n: usize, script_len: usize) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| {
            let mut script = format!("echo {i} ");
            script.push_str(&"x".repeat(script_len.saturating_sub(script.len())));
            TaskSpec::new(step, format!("s{i:06}"), script)
        })
        .collect()
}

fn success(worker: &str) -> Completion {
    Completion {
        retry_delay: None,
        outcome: Outcome::Succeeded,
        result: TaskResult {
            exit_code: Some(0),
            worker_id: worker.into(),
            ..Default::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pagination_past_one_megabyte_is_exact() {
    let Some((store, _, _)) = fresh().await else {
        return;
    };
    // ~3 MB of tasks: every query below needs several 1 MB pages.
    const N: usize = 3_000;
    let tasks = specs("align", N, 1_000);
    assert_eq!(store.import(&tasks, T0).await.unwrap().inserted, N as u64);
    // Move a few hundred to other states, with pages in each.
    for i in 0..300 {
        let c = store
            .claim(&req("align", "w"), T0 + i)
            .await
            .unwrap()
            .expect("a pending task");
        if i % 2 == 0 {
            store
                .complete(
                    &LeaseRef::new("align", c.task.id(), &c.token),
                    &success("w"),
                    T0 + i,
                )
                .await
                .unwrap();
        }
    }
    let c = store.counts("align").await.unwrap();
    assert_eq!(
        (c.pending, c.running, c.succeeded, c.total()),
        (N as u64 - 300, 150, 150, N as u64)
    );
    assert_eq!(c.oldest_pending_at, Some(T0));
    let all = store
        .list(&TaskFilter {
            step: Some("align".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), N);
    let ids: Vec<&str> = all.iter().map(|t| t.id()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("s{i:06}")).collect();
    assert_eq!(ids, expected, "every task once, sorted by id");
    let pending = store
        .list(&TaskFilter {
            step: Some("align".into()),
            state: Some(TaskState::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), N - 300);
    // Re-import reads every existing item back (BatchGetItem pages of 16 MB at most).
    let r = store.import(&tasks, T0 + 1).await.unwrap();
    assert_eq!((r.inserted, r.unchanged), (0, N as u64));
    // All 150 running leases expire together.
    let r = store
        .requeue_expired("align", T0 + TTL + 1_000, anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(r.requeued.len(), 150);
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn import_is_fast_and_claims_are_cheap() {
    let Some((store, _, _)) = fresh().await else {
        return;
    };
    const N: usize = 10_000;
    let tasks = specs("align", N, 100);
    let started = Instant::now();
    let r = store.import(&tasks, T0).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.inserted, N as u64);
    let requests = store.recorder().total();
    eprintln!(
        "import of {N} tasks: {:.2} s, {requests} requests",
        took.as_secs_f64()
    );
    // 100 BatchGetItem + 400 BatchWriteItem + the step registry, give or take retries.
    assert!(requests < 600, "{requests} requests for the import");
    let again = Instant::now();
    assert_eq!(store.import(&tasks, T0).await.unwrap().unchanged, N as u64);
    eprintln!(
        "re-import of {N} tasks: {:.2} s",
        again.elapsed().as_secs_f64()
    );

    // A lone claimer: one Query page and one conditional write per claim, whatever the
    // backlog.
    const CLAIMS: u64 = 200;
    let before = store.recorder().total();
    for i in 0..CLAIMS {
        let c = store
            .claim(&req("align", "w"), T0 + 1 + i as i64)
            .await
            .unwrap()
            .expect("a pending task");
        assert_eq!(c.task.id(), format!("s{i:06}"), "oldest first");
    }
    let per_claim = (store.recorder().total() - before) as f64 / CLAIMS as f64;
    eprintln!("lone claimer: {per_claim:.2} requests per claim on a {N}-task backlog");
    assert!(per_claim <= 3.0, "{per_claim} requests per claim");

    // Eight concurrent claimers sharing the store (one worker's slots).
    const CLAIMERS: usize = 8;
    const EACH: usize = 50;
    let before = store.recorder().total();
    let handles: Vec<_> = (0..CLAIMERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..EACH {
                    store
                        .claim(&req("align", &format!("w{w}")), T0 + 1_000)
                        .await
                        .unwrap()
                        .expect("a pending task");
                }
            })
        })
        .collect();
    for h in handles {
        h.await.unwrap();
    }
    let claims = (CLAIMERS * EACH) as f64;
    let per_claim = (store.recorder().total() - before) as f64 / claims;
    eprintln!("{CLAIMERS} concurrent claimers: {per_claim:.2} requests per claim");
    assert!(per_claim <= 8.0, "{per_claim} requests per claim");
    let c = store.counts("align").await.unwrap();
    assert_eq!(c.running, CLAIMS + claims as u64);
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minimal_item_from_another_client_is_claimed_and_completed() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: i64| AttributeValue::N(v.to_string());
    // The table's default shard count (the version item), as another client reads it.
    let meta = client
        .get_item()
        .table_name(&table)
        .key("pk", s("META#schema"))
        .send()
        .await
        .unwrap()
        .item
        .expect("the layout version item");
    let shards: u32 = match &meta["shards"] {
        AttributeValue::N(v) => v.parse().unwrap(),
        other => panic!("shards is {other:?}"),
    };
    let shard = anamo::store::dynamo::shard_of("raw1", shards);
    // Exactly the attributes docs/dynamodb-table.md lists as required.
    client
        .put_item()
        .table_name(&table)
        .item("pk", s("T#align#raw1"))
        .item("step", s("align"))
        .item("id", s("raw1"))
        .item("state", s("pending"))
        .item("script", s("echo raw"))
        .item("attempts", n(0))
        .item("max_attempts", n(2))
        .item("created_at", n(T0))
        .item("updated_at", n(T0))
        .item("g2pk", s(&format!("S#align#pending#{shard}")))
        .item("g2sk", s(&format!("{:010}#{T0:013}#raw1", i32::MAX)))
        .send()
        .await
        .unwrap();
    // And the task's count, in its shard's counter item.
    client
        .update_item()
        .table_name(&table)
        .key("pk", s(&format!("C#align#{shard}")))
        .update_expression("ADD #s :one")
        .expression_attribute_names("#s", "pending")
        .expression_attribute_values(":one", n(1))
        .send()
        .await
        .unwrap();
    client
        .put_item()
        .table_name(&table)
        .item("pk", s("STEP#align"))
        .item("g2pk", s("STEPS"))
        .item("g2sk", s("align"))
        .item("step", s("align"))
        .send()
        .await
        .unwrap();
    let t = store.get("align", "raw1").await.unwrap().unwrap();
    assert_eq!(t.spec, {
        let mut spec = TaskSpec::new("align", "raw1", "echo raw");
        spec.max_attempts = 2;
        spec
    });
    assert_eq!(store.steps().await.unwrap(), vec!["align"]);
    assert_eq!(store.counts("align").await.unwrap().pending, 1);
    let c = store
        .claim(&req("align", "w"), T0 + 1)
        .await
        .unwrap()
        .expect("the raw task is claimable");
    assert_eq!((c.task.id(), c.task.attempts), ("raw1", 1));
    let state = store
        .complete(
            &LeaseRef::new("align", "raw1", &c.token),
            &success("w"),
            T0 + 2,
        )
        .await
        .unwrap();
    assert_eq!(state, TaskState::Succeeded);
    let t = store.get("align", "raw1").await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Succeeded);
    assert_eq!(t.result.unwrap().worker_id, "w");
    // Re-importing the same definition is a no-op.
    let mut spec = TaskSpec::new("align", "raw1", "echo raw");
    spec.max_attempts = 2;
    assert_eq!(store.import(&[spec], T0 + 3).await.unwrap().unchanged, 1);
    // The priority default (0) also matches a key written with the documented formula.
    assert_eq!(format!("{:010}", i32::MAX), "2147483647");
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_item_is_an_error_naming_key_and_attribute() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("T#align#bad".into()))
        .item("step", AttributeValue::S("align".into()))
        .item("id", AttributeValue::S("bad".into()))
        .item("state", AttributeValue::S("pending".into()))
        .item("script", AttributeValue::S("true".into()))
        .item("attempts", AttributeValue::S("three".into()))
        .item("created_at", AttributeValue::N(T0.to_string()))
        .send()
        .await
        .unwrap();
    match store.get("align", "bad").await {
        Err(StoreError::Backend { message, .. }) => {
            assert!(
                message.contains("T#align#bad") && message.contains("attempts"),
                "{message}"
            );
        }
        other => panic!("expected a backend error, got {other:?}"),
    }
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_table_says_how_to_create_it() {
    let Some(endpoint) = common::dynamo_endpoint() else {
        return;
    };
    let client = common::dynamo_client(&endpoint).await;
    let store = DynamoStore::new(client, &common::unique_name("anamo-missing"));
    let err = store.counts("align").await.unwrap_err();
    assert!(matches!(err, StoreError::NoTable(_)), "{err:?}");
    assert!(err.to_string().contains("anamo table create"), "{err}");
    let err = store.claim(&req("align", "w"), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::NoTable(_)), "{err:?}");
    let err = store.import(&specs("align", 3, 10), T0).await.unwrap_err();
    assert!(matches!(err, StoreError::NoTable(_)), "{err:?}");
    // Deleting a missing table is fine; creating twice is too.
    store.delete_schema().await.unwrap();
    store.create_schema().await.unwrap();
    store.create_schema().await.unwrap();
    assert_eq!(store.counts("align").await.unwrap().total(), 0);
    store.delete_schema().await.unwrap();
    assert!(matches!(
        store.get("align", "x").await,
        Err(StoreError::NoTable(_))
    ));
    assert_eq!(store.describe(), format!("dynamodb://{}", store.table()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_running_task_loses_its_lease_everywhere() {
    let Some((store, _, _)) = fresh().await else {
        return;
    };
    store.import(&specs("align", 2, 10), T0).await.unwrap();
    let c = store.claim(&req("align", "w"), T0).await.unwrap().unwrap();
    store.cancel("align", c.task.id(), T0 + 1).await.unwrap();
    for r in [
        store
            .complete(
                &LeaseRef::new("align", c.task.id(), &c.token),
                &success("w"),
                T0 + 2,
            )
            .await
            .map(|_| ()),
        store
            .release(&LeaseRef::new("align", c.task.id(), &c.token), T0 + 2)
            .await,
        store
            .heartbeat(&LeaseRef::new("align", c.task.id(), &c.token), TTL, T0 + 2)
            .await
            .map(|_| ()),
    ] {
        assert!(matches!(r, Err(StoreError::LeaseLost { .. })), "{r:?}");
    }
    // The cancelled task left the running index: nothing to requeue.
    let r = store
        .requeue_expired("align", T0 + 10 * TTL, anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    assert!(r.requeued.is_empty() && r.failed.is_empty());
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claimer_takes_its_next_tasks_from_its_last_query() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    const N: usize = 48;
    store.import(&specs("align", N, 10), T0).await.unwrap();
    let before = store.recorder().total();
    for i in 0..N {
        let c = store
            .claim(&req("align", "w"), T0)
            .await
            .unwrap()
            .expect("a pending task");
        assert_eq!(
            c.task.id(),
            format!("s{i:06}"),
            "oldest first, also when kept"
        );
    }
    let requests = store.recorder().total() - before;
    eprintln!("lone claimer: {requests} requests for {N} claims");
    // One conditional write per claim and the ADD to its shard's progress counter; a query's
    // page serves the next claims too while it is fresh (so on any machine some of them).
    assert!(
        requests < 3 * N as u64,
        "{requests} requests for {N} claims"
    );

    // Another client (a worker elsewhere) takes what this one kept: this one loses that race
    // once and takes another of the tasks it kept, never the one taken.
    store.import(&specs("call", 8, 10), T0).await.unwrap();
    let elsewhere = DynamoStore::new(client.clone(), &table);
    let a = store.claim(&req("call", "a"), T0).await.unwrap().unwrap();
    assert_eq!(a.task.id(), "s000000");
    let b = elsewhere
        .claim(&req("call", "b"), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.task.id(), "s000001");
    let conflicts = store.claim_conflicts();
    let a2 = store.claim(&req("call", "a"), T0).await.unwrap().unwrap();
    assert_ne!(a2.task.id(), "s000001", "not taken twice");
    assert_eq!(
        store.claim_conflicts(),
        conflicts + 1,
        "the race is counted"
    );
    let held = store.get("call", "s000001").await.unwrap().unwrap();
    assert_eq!(
        held.lease.map(|l| l.token),
        Some(b.token),
        "b keeps its lease"
    );
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn separate_workers_never_double_claim() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    // Eight workers, each with its own store (as separate processes would have), drain 800
    // tasks of mixed priority.
    const N: usize = 800;
    const WORKERS: usize = 8;
    let mut tasks = specs("align", N, 10);
    for (i, t) in tasks.iter_mut().enumerate() {
        t.priority = (i % 3) as i32;
    }
    store.import(&tasks, T0).await.unwrap();
    let handles: Vec<_> = (0..WORKERS)
        .map(|w| {
            let worker = DynamoStore::new(client.clone(), &table);
            tokio::spawn(async move {
                let owner = format!("w{w}");
                let mut claimed = Vec::new();
                while let Some(c) = worker.claim(&req("align", &owner), T0).await.unwrap() {
                    worker
                        .complete(
                            &LeaseRef::new("align", c.task.id(), &c.token),
                            &success(&owner),
                            T0,
                        )
                        .await
                        .unwrap();
                    claimed.push(c.task.spec.id);
                }
                (claimed, worker.recorder().total())
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut requests = 0;
    for h in handles {
        let (claimed, r) = h.await.unwrap();
        all.extend(claimed);
        requests += r;
    }
    let total = all.len();
    all.sort();
    all.dedup();
    assert_eq!(
        (total, all.len()),
        (N, N),
        "every task claimed exactly once"
    );
    eprintln!(
        "{WORKERS} separate workers: {:.2} requests per claim+complete",
        requests as f64 / N as f64
    );
    assert_eq!(store.counts("align").await.unwrap().succeeded, N as u64);
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_endpoint_is_retryable() {
    // Needs no DynamoDB Local: nothing listens on port 1.
    let client = common::dynamo_client("http://127.0.0.1:1").await;
    let store = DynamoStore::new(client, "anamo-unreachable");
    let err = store.counts("align").await.unwrap_err();
    assert!(
        matches!(err, StoreError::Unavailable { .. }) && err.is_retryable(),
        "{err:?}"
    );
    assert!(store.recorder().total() >= 1, "attempts are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_recorder_counts_capacity_units_and_writes_per_partition_key() {
    let Some((store, _client, _table)) = fresh().await else {
        return;
    };
    let recorder = store.recorder();
    let (read0, write0) = (recorder.read_units(), recorder.write_units());
    store.import(&specs("cap", 3, 10), T0).await.unwrap();
    let c = store.claim(&req("cap", "w"), T0).await.unwrap().unwrap();
    let lease = LeaseRef::new("cap", c.task.id(), &c.token);
    store.heartbeat(&lease, TTL, T0 + 1).await.unwrap();
    store.complete(&lease, &success("w"), T0 + 2).await.unwrap();
    store.get("cap", c.task.id()).await.unwrap().unwrap();

    let writes = recorder.key_writes();
    let at = |key: &str| writes.get(key).copied().unwrap_or(0);
    let task = format!("T#cap#{}", c.task.id());
    // The claimed task's item: imported, claimed, renewed, completed.
    assert_eq!(at(&task), 4, "{writes:?}");
    // Its index entry, in its shard: into pending (3 tasks), out of it (claim); into running
    // (claim), out of it (completion; the heartbeat writes no index key); into succeeded.
    let shards = |prefix: &str| -> u64 {
        let keys = writes.iter().filter(|(k, _)| k.starts_with(prefix));
        keys.map(|(_, n)| n).sum()
    };
    assert_eq!(shards("S#cap#pending#"), 4, "{writes:?}");
    assert_eq!(shards("S#cap#running#"), 2, "{writes:?}");
    assert_eq!(shards("S#cap#succeeded#"), 1, "{writes:?}");
    // The counters: one ADD per shard item the import added to, then the claim and the
    // completion.
    let imported_shards = writes
        .keys()
        .filter(|k| k.starts_with("S#cap#pending#"))
        .count() as u64;
    assert_eq!(shards("C#cap#"), imported_shards + 2, "{writes:?}");
    // The step registry: its item and its index partition.
    assert_eq!((at("STEP#cap"), at("STEPS")), (1, 1), "{writes:?}");
    let peak = recorder.peak_key().expect("keys were written");
    assert!(
        peak.writes_per_second >= 1 && peak.writes_per_second <= 4,
        "{peak:?}"
    );
    // Every item write costs at least one write unit (all these items are under 1 KB), and
    // the reads (the claim's query, the get) at least half a read unit each.
    // Three tasks and the step item imported; the claim, the heartbeat, the completion.
    let table_writes = 3 + 1 + 3;
    let (read, write) = (
        recorder.read_units() - read0,
        recorder.write_units() - write0,
    );
    assert!(write >= table_writes as f64, "write units {write}");
    assert!(read >= 1.0, "read units {read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_writes_units_are_recorded() {
    let Some((store, _client, _table)) = fresh().await else {
        return;
    };
    let recorder = store.recorder();
    let lease = store
        .acquire_leadership("c", "me", TTL, T0)
        .await
        .unwrap()
        .unwrap();
    let token = LeaderToken::new("c", &lease);
    let doc = StatusDoc {
        name: "fleet/a".into(),
        updated_at: T0,
        body: serde_json::json!({ "desired": 1 }),
    };
    let before = recorder.write_units();
    store.put_status(&doc, Fence::Unfenced).await.unwrap();
    let plain = recorder.write_units() - before;
    let before = recorder.write_units();
    store.put_status(&doc, Fence::Leader(&token)).await.unwrap();
    let fenced = recorder.write_units() - before;
    // The item and its index entry; the transaction at least as much (DynamoDB Local reports
    // the same 2 units for both: it applies no transactional price, see
    // docs/dynamodb-table.md).
    assert!(plain >= 2.0, "a plain status write: {plain} write units");
    assert!(
        fenced >= plain,
        "a fenced status write: {fenced} write units"
    );
}

/// What `docs/dynamodb-table.md` says deciding a gather costs: while any upstream task is
/// unfinished, one Query per unfinished state (and the waiting-task Query), whatever the size of
/// the upstream step; once every one finished, one Query per final state plus one per MB of
/// upstream items, and the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deciding_a_gather_costs_what_the_table_page_says() {
    use anamo::pipeline::{Edge, Graph, StepNode};
    use anamo::store::promote;
    let Some((store, _, _)) = fresh().await else {
        return;
    };
    const N: usize = 1_000;
    let mut all = StepNode::plain();
    all.key = Vec::new();
    all.depends_on = vec![Edge::to("up")];
    let g = Graph {
        sample_part: "sample".into(),
        steps: [
            ("up".to_string(), StepNode::plain()),
            ("all".to_string(), all),
        ]
        .into_iter()
        .collect(),
    };
    store
        .import_graph(&specs("up", N, 100), &g, T0)
        .await
        .unwrap();
    store
        .import_graph(&[TaskSpec::new("all", "x", "true")], &g, T0)
        .await
        .unwrap();
    let decide = |now: i64| {
        let store = &store;
        let g = &g;
        async move {
            let before = store.recorder().by_kind();
            let r = promote::promote_waiting(store, g, "all", now)
                .await
                .unwrap();
            let after = store.recorder().by_kind();
            let spent: Vec<(String, u64)> = after
                .into_iter()
                .map(|(k, n)| (k.clone(), n - before.get(&k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect();
            (r, spent)
        }
    };
    // Without the steps' shard counts, which a store reads once per step.
    let total = |spent: &[(String, u64)]| {
        let per_pass = spent.iter().filter(|(k, _)| k != "step shards read");
        per_pass.map(|(_, n)| n).sum::<u64>()
    };
    let (r, spent) = decide(T0 + 1).await;
    eprintln!("gather over {N} unfinished upstream tasks: {spent:?}");
    assert_eq!(r.promoted, 0);
    // The waiting tasks' keys (one Query) and items (one BatchGetItem per 100), and one Query
    // per unfinished state (waiting, pending, running, held, retrying); no page per upstream
    // task.
    assert!(total(&spent) <= 7, "{spent:?}");

    // Every upstream task succeeds with a 2 KB log tail: about 2.5 MB of items.
    loop {
        let claims = store
            .claim_batch(&req("up", "w"), 100, T0 + 2)
            .await
            .unwrap();
        if claims.is_empty() {
            break;
        }
        for c in claims {
            let done = Completion {
                outcome: Outcome::Succeeded,
                result: TaskResult {
                    exit_code: Some(0),
                    log_tail: "x".repeat(2_000),
                    ..Default::default()
                },
                retry_delay: None,
            };
            let lease = LeaseRef::new("up", c.task.id(), &c.token);
            store.complete(&lease, &done, T0 + 3).await.unwrap();
        }
    }
    let (r, spent) = decide(T0 + 4).await;
    eprintln!("gather over {N} finished upstream tasks: {spent:?}");
    assert_eq!(r.promoted, 1);
    // The waiting task's key and item (a Query and a BatchGetItem), 5 unfinished + 3 finished
    // Queries, 2-3 more pages of the succeeded partition (1 MB each, counted before the
    // projection), the move and its counter write.
    assert!((14..=15).contains(&total(&spent)), "{spent:?}");
    store.delete_schema().await.unwrap();
}

/// A worker's store keeps its progress-counter deltas and writes them together: its own counts
/// are exact at once, another store's after the flush, and the counter writes number far fewer
/// than two per task.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workers_counter_deltas_are_written_together() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    const N: u64 = 40;
    store
        .import(&specs("align", N as usize, 10), T0)
        .await
        .unwrap();
    store.batch_counts();
    let before = store.recorder().by_kind();
    for i in 0..N {
        let c = store
            .claim(&req("align", "w"), T0 + 1 + i as i64)
            .await
            .unwrap()
            .expect("a pending task");
        store
            .complete(&c.lease(), &success("w"), T0 + 2 + i as i64)
            .await
            .unwrap();
    }
    let count_writes = |kinds: &std::collections::BTreeMap<String, u64>| -> u64 {
        kinds
            .iter()
            .filter(|(k, _)| k.ends_with("count write"))
            .map(|(_, n)| n)
            .sum()
    };
    let reader = DynamoStore::new(client, &table);
    store.flush().await.unwrap();
    let after = store.recorder().by_kind();
    let writes = count_writes(&after) - count_writes(&before);
    // One ADD per counter item and second at most (the test table has one shard): without
    // batching it would be 2 × 40.
    assert!(writes < N, "{writes} counter writes for {N} tasks");
    for counts in [
        store.counts("align").await.unwrap(),
        reader.counts("align").await.unwrap(),
    ] {
        assert_eq!(
            (counts.pending, counts.running, counts.succeeded),
            (0, 0, N)
        );
    }
    store.delete_schema().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_table_of_another_layout_version_is_refused_with_what_to_do() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    store
        .check_layout()
        .await
        .expect("a table made by create_schema");
    let meta = |version: &str| {
        client
            .put_item()
            .table_name(&table)
            .item("pk", AttributeValue::S("META#schema".into()))
            .item("version", AttributeValue::N(version.into()))
            .item("shards", AttributeValue::N("8".into()))
            .send()
    };
    meta("3").await.unwrap();
    let err = DynamoStore::new(client.clone(), &table)
        .check_layout()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "layout");
    assert!(
        err.to_string()
            .contains("has layout version 3; this anamo understands up to 2; upgrade anamo"),
        "{err}"
    );
    // A version-1 table has no version item: every call names the migration.
    client
        .delete_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("META#schema".into()))
        .send()
        .await
        .unwrap();
    let v1 = DynamoStore::new(client.clone(), &table);
    let err = v1.counts("align").await.unwrap_err();
    assert!(err.to_string().contains("anamo table migrate"), "{err}");
    store.delete_schema().await.unwrap();
}
