//! What an idle claimer's polls cost on DynamoDB (`src/store/dynamo/polls.rs`,
//! `docs/dynamodb-table.md` "Shards"): after a claim that found nothing, a poll reads the step's
//! counter items and queries only the shards with tasks, and a task its counter does not show
//! is still claimed by the claimer's periodic sweep of every shard.
//!
//! Run through `scripts/test-services run -- cargo nextest run --test dynamo_polls`; without
//! DynamoDB Local the tests fail.

mod common;

use std::time::Duration;

use anamo::model::{ClaimRequest, TaskSpec};
use anamo::store::dynamo::{shard_of, DynamoStore};
use anamo::store::TaskStore;
use aws_sdk_dynamodb::types::AttributeValue;

const T0: i64 = 1_700_000_000_000;
const SHARDS: u32 = 8;

async fn fresh() -> Option<(DynamoStore, aws_sdk_dynamodb::Client, String)> {
    let endpoint = common::dynamo_endpoint()?;
    let table = common::unique_name("anamo-polls");
    let client = common::dynamo_client(&endpoint).await;
    let store = DynamoStore::new(client.clone(), &table).with_shards(SHARDS);
    store.create_schema().await.expect("create table");
    // The step, with one task `a`.
    store
        .import(&[TaskSpec::new("align", "a", "true")], T0)
        .await
        .unwrap();
    Some((store, client, table))
}

fn req(owner: &str, ttl_ms: i64) -> ClaimRequest {
    ClaimRequest {
        step: "align".into(),
        owner: owner.into(),
        ttl_ms,
    }
}

/// The requests of one idle poll: a claim that finds nothing and the `retry_due` after it,
/// as a worker sends them, by kind.
async fn idle_poll(store: &DynamoStore, r: &ClaimRequest) -> Vec<(String, u64)> {
    let before = store.recorder().by_kind();
    let claimed = store.claim_batch(r, 4, T0 + 10).await.unwrap();
    assert!(claimed.is_empty(), "nothing to claim");
    assert_eq!(store.retry_due("align", T0 + 10).await.unwrap(), 0);
    let after = store.recorder().by_kind();
    after
        .into_iter()
        .filter_map(|(k, n)| {
            let sent = n - before.get(&k).copied().unwrap_or(0);
            (sent > 0).then_some((k, sent))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_poll_reads_the_counters_and_queries_only_shards_with_tasks() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    let r = req("w", 60_000);
    store.claim(&r, T0 + 1).await.unwrap().expect("the task");
    store.cancel("align", "a", T0 + 2).await.unwrap();

    // The claim that finds nothing goes through the shards not found empty lately (and reads
    // the counters before it gives up), and the next one, idle, through every shard (a sweep,
    // once per lease TTL): at most one Query per pending and retrying shard each.
    let mut polls = 0;
    loop {
        let sent = idle_poll(&store, &r).await;
        polls += 1;
        if sent == [("claim counts read".to_string(), 1)] {
            break;
        }
        for (kind, n) in &sent {
            assert!(
                ["claim counts read", "claim query", "retry due query"].contains(&kind.as_str())
                    && *n <= 8,
                "{sent:?}"
            );
        }
        assert!(polls < 3, "a sweep by the second poll: {sent:?}");
    }
    // From then on (within the claimer's lease TTL) a poll reads the counter items, one
    // request, and queries nothing: no shard has pending or retrying tasks.
    for _ in 0..3 {
        assert_eq!(
            idle_poll(&store, &r).await,
            [("claim counts read".to_string(), 1)]
        );
    }
    // A task imported meanwhile by another client (its counter added) is claimed by the next
    // poll: the counter read, one Query of its shard, the claim write.
    DynamoStore::new(client, &table)
        .import(&[TaskSpec::new("align", "b", "true")], T0 + 20)
        .await
        .unwrap();
    let before = store.recorder().by_kind();
    let got = store.claim_batch(&r, 4, T0 + 21).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task.id(), "b");
    let sent = |kind: &str| {
        store.recorder().by_kind().get(kind).copied().unwrap_or(0)
            - before.get(kind).copied().unwrap_or(0)
    };
    assert_eq!(
        (
            sent("claim counts read"),
            sent("claim query"),
            sent("claim write")
        ),
        (1, 1, 1)
    );
    store.delete_schema().await.unwrap();
}

/// A pending task that its shard's counter does not show (another client wrote it without the
/// counter's `ADD`, or a crash lost the `ADD`) is claimed by the idle claimer's sweep of every
/// shard, which comes once per lease TTL (here 1 s): without the sweep it would never be.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_task_its_counter_does_not_show_is_claimed_by_the_sweep() {
    let Some((store, client, table)) = fresh().await else {
        return;
    };
    store.cancel("align", "a", T0 + 1).await.unwrap();
    let r = req("w", 1_000);
    // Idle: a first claim found nothing.
    assert!(store.claim_batch(&r, 4, T0 + 2).await.unwrap().is_empty());

    // A pending task written by another client, without adding to its counter.
    let s = |v: &str| AttributeValue::S(v.into());
    let n = |v: i64| AttributeValue::N(v.to_string());
    let shard = shard_of("raw", SHARDS);
    client
        .put_item()
        .table_name(&table)
        .item("pk", s("T#align#raw"))
        .item("step", s("align"))
        .item("id", s("raw"))
        .item("state", s("pending"))
        .item("script", s("true"))
        .item("attempts", n(0))
        .item("max_attempts", n(3))
        .item("created_at", n(T0))
        .item("updated_at", n(T0))
        .item("g2pk", s(&format!("S#align#pending#{shard}")))
        .item("g2sk", s(&format!("{:010}#{T0:013}#raw", i32::MAX)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.counts("align").await.unwrap().pending,
        0,
        "not counted"
    );

    // Polled as a worker polls (every 200 ms); the guard only stops a hang.
    let mut counted_polls = 0;
    let claimed = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let before = store.recorder().by_kind();
            let got = store.claim_batch(&r, 4, T0 + 3).await.unwrap();
            let after = store.recorder().by_kind();
            if after.get("claim counts read") != before.get("claim counts read") {
                counted_polls += 1;
            }
            if let Some(c) = got.into_iter().next() {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("the sweep claims the task its counter does not show");
    assert_eq!(claimed.task.id(), "raw");
    eprintln!("claimed after {counted_polls} polls that read the counters");
    store.delete_schema().await.unwrap();
}

/// A busy claimer whose lane's shard cannot fill its batch reads the counters to find where
/// tasks are left; its next busy claims within 2 s go by that reading (the counters lag other
/// workers by up to 3 s anyway) instead of reading them again: at the end of a step, one
/// counter read per 2 s rather than one per claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_claimer_reads_the_counters_once_per_two_seconds() {
    let Some((store, _client, _table)) = fresh().await else {
        return;
    };
    let specs: Vec<TaskSpec> = (0..40)
        .map(|i| TaskSpec::new("align", format!("t{i:02}"), "true"))
        .collect();
    store.import(&specs, T0 + 1).await.unwrap();
    let r = req("w", 60_000);
    let sent = |before: &std::collections::BTreeMap<String, u64>, kind: &str| {
        store.recorder().by_kind().get(kind).copied().unwrap_or(0)
            - before.get(kind).copied().unwrap_or(0)
    };
    let before = store.recorder().by_kind();
    let first = store.claim_batch(&r, 32, T0 + 10).await.unwrap();
    assert_eq!(
        first.len(),
        32,
        "41 tasks over 8 shards: one shard cannot fill 32"
    );
    assert_eq!(sent(&before, "claim counts read"), 1);
    let before = store.recorder().by_kind();
    let second = store.claim_batch(&r, 32, T0 + 11).await.unwrap();
    assert_eq!(second.len(), 9, "the rest");
    assert_eq!(
        sent(&before, "claim counts read"),
        0,
        "the reading of the first claim"
    );
    store.delete_schema().await.unwrap();
}
