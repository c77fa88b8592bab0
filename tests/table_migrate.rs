//! `anamo table migrate` on DynamoDB Local: a layout-1 table, built exactly as the layout-1
//! documentation (`git show main~:docs/dynamodb-table.md`, the stable interface other clients
//! write) describes it, upgraded while a layout-2 worker claims and completes and a layout-1
//! worker still holds a task.

#[macro_use]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anamo::clock::{Clock, SystemClock};
use anamo::model::{ClaimRequest, Completion, Outcome, TaskResult, TaskState};
use anamo::store::dynamo::{DynamoStore, MigrateEvent};
use anamo::store::TaskStore;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use aws_sdk_dynamodb::Client;

type Item = HashMap<String, AttributeValue>;

const STEP: &str = "align";
/// Pending tasks, claimed by the layout-2 worker during and after the migration.
const PENDING: usize = 120;
const FAR: i64 = 9_999_999_999_999;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn ts13(t: i64) -> String {
    format!("{t:013}")
}

/// The layout-1 table: `pk`, index `gsi1` (`gsi1pk`, `gsi1sk`), projection ALL.
async fn create_v1_table(client: &Client, table: &str) {
    let attr = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    let gsi = GlobalSecondaryIndex::builder()
        .index_name("gsi1")
        .key_schema(key("gsi1pk", KeyType::Hash))
        .key_schema(key("gsi1sk", KeyType::Range))
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::All)
                .build(),
        )
        .build()
        .unwrap();
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("gsi1pk"))
        .attribute_definitions(attr("gsi1sk"))
        .key_schema(key("pk", KeyType::Hash))
        .global_secondary_indexes(gsi)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .expect("create the layout-1 table");
}

/// A task item as the layout-1 doc's "Task items" and "The index keys" describe it.
fn v1_task(id: &str, state: &str, at: i64) -> Item {
    let sk = match state {
        "pending" => format!("2147483647#{}#{id}", ts13(at)),
        _ => format!("{}#{id}", ts13(at)),
    };
    Item::from([
        ("pk".into(), s(format!("T#{STEP}#{id}"))),
        ("step".into(), s(STEP)),
        ("id".into(), s(id)),
        ("state".into(), s(state)),
        ("script".into(), s(format!("echo {id}"))),
        ("priority".into(), n(0)),
        ("attempts".into(), n(0)),
        ("max_attempts".into(), n(3)),
        ("created_at".into(), n(at)),
        ("updated_at".into(), n(at)),
        ("gsi1pk".into(), s(format!("S#{STEP}#{state}"))),
        ("gsi1sk".into(), s(sk)),
    ])
}

/// A running task: `gsi1sk = {lease_expires_at:013}#{id}`.
fn v1_running(id: &str, owner: &str, token: &str, expires: i64, at: i64) -> Item {
    let mut item = v1_task(id, "running", at);
    item.insert("attempts".into(), n(1));
    item.insert("lease_owner".into(), s(owner));
    item.insert("lease_token".into(), s(token));
    item.insert("lease_expires_at".into(), n(expires));
    item.insert("gsi1sk".into(), s(format!("{}#{id}", ts13(expires))));
    item
}

/// Every kind of layout-1 item: tasks in every state (two running: one under a live lease of a
/// layout-1 worker, one whose worker died), the step registry, a worker and a status document.
fn v1_items(now: i64) -> Vec<Item> {
    let mut items: Vec<Item> = (0..PENDING)
        .map(|i| v1_task(&format!("p{i:03}"), "pending", now - 1_000 + i as i64))
        .collect();
    for state in ["waiting", "succeeded", "failed", "cancelled"] {
        items.push(v1_task(&format!("x-{state}"), state, now - 5_000));
    }
    let mut held = v1_task("x-held", "held", now - 5_000);
    held.insert("held_from".into(), s("pending"));
    items.push(held);
    let mut retrying = v1_task("x-retrying", "retrying", now - 5_000);
    retrying.insert("retry_at".into(), n(FAR));
    retrying.insert("gsi1sk".into(), s(format!("{}#x-retrying", ts13(FAR))));
    items.push(retrying);
    items.push(v1_running("v1-live", "old-1", "tok-live", FAR, now - 3_000));
    items.push(v1_running(
        "v1-dead",
        "old-2",
        "tok-dead",
        now - 60_000,
        now - 90_000,
    ));
    items.push(Item::from([
        ("pk".into(), s(format!("STEP#{STEP}"))),
        ("gsi1pk".into(), s("STEPS")),
        ("gsi1sk".into(), s(STEP)),
        ("step".into(), s(STEP)),
    ]));
    items.push(Item::from([
        ("pk".into(), s("W#old-1")),
        ("gsi1pk".into(), s("WORKERS")),
        ("gsi1sk".into(), s(format!("{STEP}#old-1"))),
        ("worker_id".into(), s("old-1")),
        ("step".into(), s(STEP)),
        ("slots".into(), n(1)),
        ("busy_slots".into(), n(1)),
        ("started_at".into(), n(now - 10_000)),
        ("last_seen".into(), n(now)),
        ("last_busy_at".into(), n(now)),
        ("state".into(), s("active")),
    ]));
    items.push(Item::from([
        ("pk".into(), s("STATUS#fleet/a")),
        ("gsi1pk".into(), s("STATUS")),
        ("gsi1sk".into(), s("fleet/a")),
        ("name".into(), s("fleet/a")),
        ("updated_at".into(), n(now)),
        ("body".into(), s("{}")),
    ]));
    items
}

async fn put_all(client: &Client, table: &str, items: Vec<Item>) {
    for item in items {
        client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await
            .expect("write a layout-1 item");
    }
}

/// The layout-1 worker completes its task as layout 1 does (one write fenced by its token that
/// rewrites `state`, `gsi1pk` and `gsi1sk`).
async fn v1_complete(client: &Client, table: &str, id: &str, token: &str, now: i64) {
    client
        .update_item()
        .table_name(table)
        .key("pk", s(format!("T#{STEP}#{id}")))
        .update_expression(
            "SET #st = :done, gsi1pk = :gpk, gsi1sk = :gsk, updated_at = :now, #r = :res \
             REMOVE lease_owner, lease_token, lease_expires_at",
        )
        .condition_expression("#st = :running AND lease_token = :tok")
        .expression_attribute_names("#st", "state")
        .expression_attribute_names("#r", "result")
        .expression_attribute_values(":done", s("succeeded"))
        .expression_attribute_values(":running", s("running"))
        .expression_attribute_values(":gpk", s(format!("S#{STEP}#succeeded")))
        .expression_attribute_values(":gsk", s(format!("{}#{id}", ts13(now))))
        .expression_attribute_values(":now", n(now))
        .expression_attribute_values(":res", s(r#"{"exit_code":0}"#))
        .expression_attribute_values(":tok", s(token))
        .send()
        .await
        .expect("the layout-1 worker completes its task");
}

async fn scan_all(client: &Client, table: &str) -> Vec<Item> {
    let mut all = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        all.extend(out.items.unwrap_or_default());
        match out.last_evaluated_key.filter(|k| !k.is_empty()) {
            Some(k) => start = Some(k),
            None => return all,
        }
    }
}

fn completion() -> Completion {
    Completion {
        retry_delay: None,
        outcome: Outcome::Succeeded,
        result: TaskResult {
            exit_code: Some(0),
            worker_id: "new-1".into(),
            ..Default::default()
        },
    }
}

/// Completes a claimed task as a worker does: a retryable error (DynamoDB Local answers HTTP 500
/// now and then while an index is added or dropped) is tried again; a lost lease after such a
/// retry means the first attempt was applied.
async fn complete(store: &DynamoStore, c: &anamo::model::Claim) {
    for attempt in 0..10 {
        match store
            .complete(&c.lease(), &completion(), SystemClock.now())
            .await
        {
            Ok(state) => return assert_eq!(state, TaskState::Succeeded),
            Err(e) if e.is_retryable() => {
                eprintln!("complete {}: {e} (retried)", c.task.id());
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(anamo::store::StoreError::LeaseLost { .. }) if attempt > 0 => return,
            Err(e) => panic!("complete {}: {e}", c.task.id()),
        }
    }
    panic!("complete {}: still failing after 10 attempts", c.task.id());
}

/// A layout-2 worker: claims and completes until `stop` and nothing is pending; counts every
/// claim (a run) per task id.
async fn v2_worker(
    store: DynamoStore,
    runs: Arc<Mutex<BTreeMap<String, u32>>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let req = ClaimRequest {
        step: STEP.into(),
        owner: "new-1".into(),
        ttl_ms: 60_000,
    };
    let mut stopping = false;
    loop {
        let claims = match store.claim_batch(&req, 4, SystemClock.now()).await {
            Ok(claims) => claims,
            Err(e) if e.is_retryable() => {
                eprintln!("claim: {e} (retried)");
                continue;
            }
            Err(e) => panic!("claim: {e}"),
        };
        if claims.is_empty() {
            if stopping {
                return;
            }
            tokio::select! {
                _ = stop.notified() => stopping = true,
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
            continue;
        }
        for c in claims {
            *runs
                .lock()
                .unwrap()
                .entry(c.task.id().to_string())
                .or_default() += 1;
            complete(&store, &c).await;
        }
    }
}

fn attr<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v) | AttributeValue::N(v)) => Some(v.as_str()),
        _ => None,
    }
}

fn tasks(items: &[Item]) -> BTreeMap<String, Item> {
    items
        .iter()
        .filter(|i| attr(i, "pk").is_some_and(|pk| pk.starts_with("T#")))
        .map(|i| (attr(i, "id").unwrap().to_string(), i.clone()))
        .collect()
}

/// The step's counts by state, from every task item.
fn counted(items: &[Item]) -> BTreeMap<String, u64> {
    let mut by_state = BTreeMap::new();
    for task in tasks(items).values() {
        *by_state
            .entry(attr(task, "state").unwrap().to_string())
            .or_default() += 1;
    }
    by_state
}

fn by_state(c: &anamo::model::StepCounts) -> BTreeMap<String, u64> {
    [
        ("waiting", c.waiting),
        ("pending", c.pending),
        ("running", c.running),
        ("succeeded", c.succeeded),
        ("failed", c.failed),
        ("cancelled", c.cancelled),
        ("held", c.held),
        ("retrying", c.retrying),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(s, n)| (s.to_string(), n))
    .collect()
}

/// Runs migrate while a layout-2 worker claims and completes (started once the version item
/// is written) and a layout-1 worker finishes its task when migrate says it waits for it.
/// Returns migrate's events and the layout-2 worker's runs per task.
async fn migrate_online(
    client: &Client,
    store: &DynamoStore,
    table: &str,
) -> (Vec<MigrateEvent>, BTreeMap<String, u32>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let migrating = tokio::spawn({
        let store = store.clone();
        async move {
            let mut on = |e: MigrateEvent| {
                let _ = tx.send(e);
            };
            store.migrate(&SystemClock, &mut on).await
        }
    });
    let runs: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let (mut worker, mut v1_done, mut events) = (None, false, Vec::new());
    while let Some(event) = rx.recv().await {
        match &event {
            MigrateEvent::VersionWritten { .. } => {
                let w = v2_worker(store.clone(), runs.clone(), stop.clone());
                worker = Some(tokio::spawn(w));
            }
            MigrateEvent::Waiting { layout1_leases, .. } if !v1_done => {
                assert_eq!(
                    *layout1_leases, 1,
                    "the live layout-1 lease (the dead one is requeued)"
                );
                v1_complete(client, table, "v1-live", "tok-live", SystemClock.now()).await;
                v1_done = true;
            }
            _ => {}
        }
        events.push(event);
    }
    migrating.await.unwrap().expect("migrate");
    stop.notify_one();
    worker.expect("a layout-2 worker started").await.unwrap();
    let runs = runs.lock().unwrap().clone();
    (events, runs)
}

/// A fresh layout-1 table on DynamoDB Local holding [`v1_items`]: its client, name and items
/// as scanned (None without DynamoDB Local, when the tests allow it).
async fn v1_table(prefix: &str) -> Option<(Client, String, Vec<Item>)> {
    let endpoint = common::dynamo_endpoint()?;
    let client = common::dynamo_client(&endpoint).await;
    let table = common::unique_name(prefix);
    create_v1_table(&client, &table).await;
    put_all(&client, &table, v1_items(SystemClock.now())).await;
    let items = scan_all(&client, &table).await;
    Some((client, table, items))
}

/// Every task is there once, in the state its one run left it, with layout-2 keys and no
/// layout-1 attribute left on any item; `runs` are the layout-2 worker's claims per task.
fn assert_each_task_ran_once(after: &[Item], runs: &BTreeMap<String, u32>) {
    let tasks = tasks(after);
    assert_eq!(tasks.len(), PENDING + 8, "{:?}", tasks.keys());
    let mut expect_runs: BTreeMap<String, u32> =
        (0..PENDING).map(|i| (format!("p{i:03}"), 1)).collect();
    expect_runs.insert("v1-dead".into(), 1);
    assert_eq!(
        runs, &expect_runs,
        "each pending task (and the dead worker's) run once"
    );
    for (id, task) in &tasks {
        let state = attr(task, "state").unwrap();
        let want = match id.as_str() {
            "x-waiting" | "x-failed" | "x-cancelled" | "x-held" | "x-retrying" => &id[2..],
            _ => "succeeded",
        };
        assert_eq!(state, want, "{id}");
        let attempts = match id.as_str() {
            "v1-dead" => "2",
            "v1-live" => "1",
            x if x.starts_with('p') => "1",
            _ => "0",
        };
        assert_eq!(attr(task, "attempts"), Some(attempts), "{id}");
        let shard_pk = attr(task, "g2pk").unwrap_or_default();
        assert!(
            shard_pk.starts_with(&format!("S#{STEP}#{state}#")),
            "{id}: {shard_pk}"
        );
    }
    for item in after {
        for old in ["gsi1pk", "gsi1sk", "layout1_lease"] {
            assert!(
                !item.contains_key(old),
                "{old} left on {:?}",
                attr(item, "pk")
            );
        }
    }
}

/// On a migrated table a second migrate writes nothing, and a table given `version: 3` is
/// refused with the message naming it.
async fn assert_second_migrate_is_a_noop_and_newer_refused(
    client: &Client,
    store: &DynamoStore,
    table: &str,
) {
    let settled = scan_all(client, table).await;
    let mut again = Vec::new();
    store
        .migrate(&SystemClock, &mut |e| again.push(e))
        .await
        .expect("second migrate");
    assert_eq!(again, [MigrateEvent::AlreadyCurrent { version: 2 }]);
    assert!(
        scan_all(client, table).await == settled,
        "the second migrate wrote nothing"
    );

    // A table from a newer anamo is refused, and left alone.
    client
        .put_item()
        .table_name(table)
        .item("pk", s("META#schema"))
        .item("version", n(3))
        .item("shards", n(8))
        .send()
        .await
        .unwrap();
    let err = store
        .migrate(&SystemClock, &mut |_| {})
        .await
        .expect_err("a version-3 table is refused")
        .to_string();
    assert!(
        err.contains("layout version 3") && err.contains("upgrade anamo"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_layout1_table_is_migrated_online_without_losing_or_rerunning_a_task() {
    let Some((client, table, items)) = v1_table("anamo-migrate").await else {
        return;
    };
    let total = items.len() as u64;
    let store = DynamoStore::new(client.clone(), &table);

    // A dry run reads and says, and writes nothing.
    let preview = store.migrate_preview(&mut |_| {}).await.expect("dry run");
    assert_eq!(
        (preview.stats.items, preview.stats.rewritten),
        (total, total)
    );
    assert!(preview.has_old_index && !preview.has_new_index && preview.version.is_none());
    assert!(scan_all(&client, &table)
        .await
        .iter()
        .all(|i| !i.contains_key("g2pk")));

    let (events, runs) = migrate_online(&client, &store, &table).await;
    for expected in [
        MigrateEvent::AddingIndex,
        MigrateEvent::IndexActive,
        MigrateEvent::Done,
    ] {
        assert!(events.contains(&expected), "{expected:?} in {events:?}");
    }

    // Every task is there once, in the state its one run left it.
    let after = scan_all(&client, &table).await;
    assert_each_task_ran_once(&after, &runs);

    // A recount from the index agrees with the items themselves, and so do the counts read
    // after it. (Before it, the counters may have drifted: migrate's recount ran while the
    // worker changed tasks, and a change between the recount's reads and its write is lost
    // until the next recount; see docs/dynamodb-table.md.)
    let recounted = store.recount(STEP).await.expect("recount");
    assert_eq!(by_state(&recounted), counted(&after));
    let counts = store.counts(STEP).await.expect("counts");
    assert_eq!(by_state(&counts), counted(&after));

    // The table is a layout-2 one: gsi1 gone, and a second migrate does nothing.
    let described = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let indexes: Vec<_> = described
        .table()
        .unwrap()
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| i.index_name().map(str::to_string))
        .collect();
    assert_eq!(indexes, ["gsi2"]);
    assert_second_migrate_is_a_noop_and_newer_refused(&client, &store, &table).await;
    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_refuses_without_yes_and_a_dry_run_writes_nothing() {
    let Some((client, table, before)) = v1_table("anamo-migrate-cli").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = format!("dynamodb://{table}");

    let refused = common::cli::anamo(dir.path(), &store, &["table", "migrate"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("without --yes"), "{stderr}");

    // Every other command refuses the layout-1 table and names migrate.
    let status = common::cli::anamo(dir.path(), &store, &["task", "list"]);
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        !status.status.success() && stderr.contains("anamo table migrate"),
        "{stderr}"
    );

    let dry = common::cli::anamo(dir.path(), &store, &["table", "migrate", "--dry-run"]);
    let out = common::cli::ok(&dry);
    let total = before.len();
    assert!(
        out.contains(&format!("would rewrite {total} of {total} items")),
        "{out}"
    );
    assert_eq!(
        scan_all(&client, &table).await,
        before,
        "a dry run writes nothing"
    );

    let sqlite = common::cli::anamo(dir.path(), "sqlite://x.db", &["table", "migrate", "--yes"]);
    let stderr = String::from_utf8_lossy(&sqlite.stderr);
    assert!(stderr.contains("needs no migration"), "{stderr}");
    client
        .delete_table()
        .table_name(&table)
        .send()
        .await
        .unwrap();
}
