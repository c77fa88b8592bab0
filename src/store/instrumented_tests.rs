//! Tests of the instrumented store: the request counter and the decorator.

use std::sync::Arc;

use super::*;
use crate::model::{LeaseRef, Outcome, TaskResult};
use crate::store::sqlite::SqliteStore;

const T0: Millis = 1_700_000_000_000;

fn store(metrics: &Metrics) -> (tempfile::TempDir, SharedStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let inner = SqliteStore::open(&dir.path().join("tasks.db")).expect("open sqlite");
    (dir, InstrumentedStore::wrap(Arc::new(inner), metrics))
}

fn requests(m: &Metrics, op: &str) -> u64 {
    m.store_requests.with_label_values(&[op]).get()
}

fn errors(m: &Metrics, op: &str, kind: &str) -> u64 {
    m.store_errors.with_label_values(&[op, kind]).get()
}

fn timed(m: &Metrics, op: &str) -> u64 {
    m.store_latency.with_label_values(&[op]).get_sample_count()
}

fn completion(worker: &str) -> Completion {
    Completion {
        retry_delay: None,
        outcome: Outcome::Succeeded,
        result: TaskResult {
            exit_code: Some(0),
            duration_ms: 5,
            log_tail: String::new(),
            instance_id: None,
            worker_id: worker.into(),
            started_at: T0,
            finished_at: T0 + 5,
            error: None,
            subtasks: Vec::new(),
            log_url: None,
            log_error: None,
        },
    }
}

#[tokio::test]
async fn counts_times_and_passes_results_through() {
    let m = Metrics::new();
    let (_dir, s) = store(&m);
    s.create_schema().await.unwrap();
    let report = s
        .import(
            &[
                TaskSpec::new("align", "S1", "true"),
                TaskSpec::new("align", "S2", "true"),
            ],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(report.inserted, 2);
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w1".into(),
        ttl_ms: 60_000,
    };
    let claim = s.claim(&req, T0).await.unwrap().expect("a pending task");
    let state = s
        .complete(
            &LeaseRef::new("align", &claim.task.spec.id, &claim.token),
            &completion("w1"),
            T0 + 10,
        )
        .await
        .unwrap();
    assert_eq!(state, TaskState::Succeeded);
    let counts = s.counts("align").await.unwrap();
    assert_eq!((counts.pending, counts.succeeded), (1, 1));

    assert_eq!(requests(&m, "create_schema"), 1);
    assert_eq!(requests(&m, "import"), 1);
    assert_eq!(requests(&m, "claim"), 1);
    assert_eq!(requests(&m, "complete"), 1);
    assert_eq!(requests(&m, "counts"), 1);
    for op in ["create_schema", "import", "claim", "complete", "counts"] {
        assert_eq!(timed(&m, op), 1, "{op} timed once");
        assert!(m.store_latency.with_label_values(&[op]).get_sample_sum() >= 0.0);
    }
    // Successful calls are no errors.
    let text = m.render();
    assert!(!text.contains("anamo_store_errors_total{"), "{text}");
    // The wrapped store is described (and counts requests) as the inner one does.
    assert!(s.describe().starts_with("sqlite://"), "{}", s.describe());
}

#[tokio::test]
async fn errors_are_counted_by_kind_never_by_message() {
    let m = Metrics::new();
    let (_dir, s) = store(&m);
    s.create_schema().await.unwrap();
    s.import(&[TaskSpec::new("align", "S1", "true")], T0)
        .await
        .unwrap();
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w1".into(),
        ttl_ms: 60_000,
    };
    let claim = s.claim(&req, T0).await.unwrap().unwrap();
    // A stale token: the lease is not ours.
    let err = s
        .complete(
            &LeaseRef::new("align", &claim.task.spec.id, "not-the-token"),
            &completion("w1"),
            T0 + 1,
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "lease_lost");
    // An admin action on a task that does not exist.
    let err = s.requeue("align", "nope", false, T0).await.unwrap_err();
    assert_eq!(err.kind(), "not_found");
    // Not finding a task with `get` is an answer, not an error.
    assert!(s.get("align", "nope").await.unwrap().is_none());

    assert_eq!(errors(&m, "complete", "lease_lost"), 1);
    assert_eq!(errors(&m, "requeue", "not_found"), 1);
    assert_eq!(requests(&m, "complete"), 1, "failed calls are requests too");
    assert_eq!(timed(&m, "complete"), 1, "failed calls are timed too");
    assert_eq!(requests(&m, "get"), 1);
    let text = m.render();
    assert!(
        text.contains("anamo_store_errors_total{kind=\"lease_lost\",operation=\"complete\"} 1"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-token") && !text.contains("nope"),
        "{text}"
    );
    assert!(!text.contains("anamo_store_errors_total{kind=\"not_found\",operation=\"get\"}"));
}

/// The worker, status-document and leadership calls of [`every_operation_has_its_own_label`].
async fn workers_status_and_leadership(s: &SharedStore, now: Millis) {
    let w = WorkerInfo {
        worker_id: "w1".into(),
        step: "align".into(),
        instance_id: None,
        slots: 1,
        busy_slots: 0,
        started_at: now,
        last_seen: now,
        last_busy_at: now,
        state: crate::model::WorkerState::Active,
        stop_reason: None,
        drain_requested: false,
    };
    s.put_worker(&w, Fence::Unfenced).await.unwrap();
    s.list_workers(None).await.unwrap();
    s.remove_worker("w1", Fence::Unfenced).await.unwrap();
    let doc = StatusDoc {
        name: "fleet/align".into(),
        updated_at: now,
        body: serde_json::json!({}),
    };
    s.put_status(&doc, Fence::Unfenced).await.unwrap();
    s.list_status().await.unwrap();
    s.get_status("fleet/align").await.unwrap();
    s.acquire_leadership("c", "me", 30_000, now).await.unwrap();
    s.current_leader("c").await.unwrap();
    s.release_leadership("c", "me").await.unwrap();
}

#[tokio::test]
async fn every_operation_has_its_own_label() {
    let m = Metrics::new();
    let (_dir, s) = store(&m);
    s.create_schema().await.unwrap();
    let now = T0;
    s.import(&[TaskSpec::new("align", "S1", "true")], now)
        .await
        .unwrap();
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w1".into(),
        ttl_ms: 60_000,
    };
    let c = s.claim(&req, now).await.unwrap().unwrap();
    let id = c.task.spec.id.clone();
    s.heartbeat(&LeaseRef::new("align", &id, &c.token), 60_000, now)
        .await
        .unwrap();
    s.release(&LeaseRef::new("align", &id, &c.token), now)
        .await
        .unwrap();
    let c = s.claim(&req, now).await.unwrap().unwrap();
    s.complete(
        &LeaseRef::new("align", &id, &c.token),
        &completion("w1"),
        now,
    )
    .await
    .unwrap();
    s.requeue_expired("align", now, Fence::Unfenced)
        .await
        .unwrap();
    s.task_states("align", std::slice::from_ref(&id))
        .await
        .unwrap();
    let ids = s
        .step_ids("align", &[TaskState::Succeeded], "")
        .await
        .unwrap();
    let mut paged = Vec::new();
    s.step_ids_paged("align", &[TaskState::Succeeded], &mut |page| {
        paged.extend(page)
    })
    .await
    .unwrap();
    assert_eq!(paged, ids);
    s.settle_waiting("align", &id, 0, TaskState::Pending, None, now)
        .await
        .unwrap();
    s.hold_back("align", &id, now).await.unwrap();
    s.get("align", &id).await.unwrap();
    s.list(&TaskFilter::default()).await.unwrap();
    s.counts("align").await.unwrap();
    s.backlog("align", 10).await.unwrap();
    s.pass_counts(&["align".to_string()]).await.unwrap();
    s.oldest_pending("align").await.unwrap();
    s.steps().await.unwrap();
    s.count_finished_since("align", 0).await.unwrap();
    s.recent_run_times("align", 4).await.unwrap();
    s.requeue("align", &id, false, now).await.unwrap();
    s.cancel("align", &id, now).await.unwrap();
    s.delete("align", &id).await.unwrap();
    workers_status_and_leadership(&s, now).await;
    s.delete_schema().await.unwrap();
    for op in OPERATIONS {
        assert!(requests(&m, op) >= 1, "operation {op} was not counted");
    }
}
