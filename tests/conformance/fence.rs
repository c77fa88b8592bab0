//! Conformance cases of fenced leadership: every write a controller makes for its cluster's
//! leader (status and launch-intent documents, the graph document, requeues of expired leases,
//! worker clean-up) is refused with `StoreError::Fenced` once another controller took the
//! leadership, and changes nothing; the current leader's same writes succeed.

use anamo::model::{TaskFilter, TaskState, WorkerInfo, WorkerState};
use anamo::store::{graph as store_graph, Fence, LeaderToken, SharedStore, StatusDoc, StoreError};

use super::{req, specs, T0, TTL};

const LEASE: i64 = 10_000;

fn assert_fenced<T: std::fmt::Debug>(r: Result<T, StoreError>, token: &LeaderToken) {
    match r {
        Err(StoreError::Fenced {
            cluster, fencing, ..
        }) => {
            assert_eq!((cluster.as_str(), fencing), ("c1", token.fencing()));
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
}

fn worker(id: &str, state: WorkerState) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        step: "align".into(),
        instance_id: None,
        slots: 1,
        busy_slots: 0,
        started_at: T0,
        last_seen: T0,
        last_busy_at: T0,
        state,
        stop_reason: None,
        drain_requested: false,
    }
}

fn doc(name: &str, v: i64) -> StatusDoc {
    StatusDoc {
        name: name.into(),
        updated_at: T0 + v,
        body: serde_json::json!({ "v": v }),
    }
}

/// Controller `a` leads, lets its lease run out, and `b` takes over: `a`'s token is stale.
async fn deposed_and_current(store: &SharedStore) -> (LeaderToken, LeaderToken) {
    let a = store
        .acquire_leadership("c1", "a", LEASE, T0)
        .await
        .unwrap()
        .expect("a leads first");
    let b = store
        .acquire_leadership("c1", "b", LEASE, T0 + LEASE + 1)
        .await
        .unwrap()
        .expect("b takes the expired lease");
    (LeaderToken::new("c1", &a), LeaderToken::new("c1", &b))
}

pub async fn a_deposed_leaders_writes_are_refused_and_change_nothing(store: SharedStore) {
    store.import(&specs("align", 2), T0).await.unwrap();
    let claimed = store.claim(&req("align", "w"), T0).await.unwrap().unwrap();
    store
        .put_worker(&worker("w-1", WorkerState::Active), Fence::Unfenced)
        .await
        .unwrap();
    store
        .put_status(&doc("fleet/align", 1), Fence::Unfenced)
        .await
        .unwrap();
    let (old, _new) = deposed_and_current(&store).await;
    let stale = Fence::Leader(&old);
    let after_expiry = T0 + TTL + 1;

    assert_fenced(store.put_status(&doc("fleet/align", 2), stale).await, &old);
    assert_fenced(store.put_status(&doc("launch/align", 2), stale).await, &old);
    let graph = store_graph::empty_graph();
    assert_fenced(
        store_graph::put_graph(store.as_ref(), &graph, T0, stale).await,
        &old,
    );
    assert_fenced(
        store.requeue_expired("align", after_expiry, stale).await,
        &old,
    );
    assert_fenced(
        store
            .put_worker(&worker("w-1", WorkerState::Gone), stale)
            .await,
        &old,
    );
    assert_fenced(store.remove_worker("w-1", stale).await, &old);

    // Nothing changed: the documents, the expired lease, the worker.
    let docs = store.list_status().await.unwrap();
    assert_eq!(docs, vec![doc("fleet/align", 1)]);
    let task = store
        .get("align", claimed.task.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(task.lease.map(|l| l.token), Some(claimed.token));
    assert_eq!(
        store.list_workers(None).await.unwrap(),
        vec![worker("w-1", WorkerState::Active)]
    );
}

pub async fn the_current_leaders_writes_succeed(store: SharedStore) {
    store.import(&specs("align", 2), T0).await.unwrap();
    let claimed = store.claim(&req("align", "w"), T0).await.unwrap().unwrap();
    store
        .put_worker(&worker("w-1", WorkerState::Active), Fence::Unfenced)
        .await
        .unwrap();
    let (_old, new) = deposed_and_current(&store).await;
    let current = Fence::Leader(&new);
    let after_expiry = T0 + TTL + 1;

    store
        .put_status(&doc("fleet/align", 2), current)
        .await
        .unwrap();
    let graph = store_graph::empty_graph();
    store_graph::put_graph(store.as_ref(), &graph, T0, current)
        .await
        .unwrap();
    let r = store
        .requeue_expired("align", after_expiry, current)
        .await
        .unwrap();
    assert_eq!(r.requeued, vec![claimed.task.id().to_string()]);
    store
        .put_worker(&worker("w-1", WorkerState::Gone), current)
        .await
        .unwrap();
    assert_eq!(
        store.list_workers(None).await.unwrap(),
        vec![worker("w-1", WorkerState::Gone)]
    );
    store.remove_worker("w-1", current).await.unwrap();
    assert!(store.list_workers(None).await.unwrap().is_empty());

    let names: Vec<String> = store
        .list_status()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, vec!["fleet/align", store_graph::GRAPH_DOC]);
    let pending = store
        .list(&TaskFilter {
            step: Some("align".into()),
            state: Some(TaskState::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(pending.len(), 2, "the expired lease went back to pending");

    // A leader that renews keeps its fencing number, and its writes still hold; once it
    // released the lease and another took it, they do not.
    let renewed = store
        .acquire_leadership("c1", "b", LEASE, after_expiry + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.fencing, new.fencing());
    store
        .put_status(&doc("fleet/align", 3), current)
        .await
        .unwrap();
    store.release_leadership("c1", "b").await.unwrap();
    store
        .acquire_leadership("c1", "a", LEASE, after_expiry + 2)
        .await
        .unwrap()
        .expect("free after release");
    assert_fenced(
        store.put_status(&doc("fleet/align", 4), current).await,
        &new,
    );
}
