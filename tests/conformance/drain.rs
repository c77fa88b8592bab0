//! Conformance case of the controller's drain mark on a worker (`set_worker_drain`): fenced by
//! the leadership like every controller write, kept apart from the registration (the worker's
//! own heartbeat put does not clear it), merged into the listing, read back by the worker with
//! `worker_drain_requested` or returned by its registration refresh (`refresh_worker`), and
//! removed with the worker.

use anamo::model::{WorkerInfo, WorkerState};
use anamo::store::{Fence, LeaderToken, SharedStore, StoreError};

use super::T0;

fn worker(id: &str, step: &str) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        step: step.into(),
        instance_id: Some(format!("i-{id}")),
        slots: 4,
        busy_slots: 1,
        started_at: T0,
        last_seen: T0,
        last_busy_at: T0,
        state: WorkerState::Active,
        stop_reason: None,
        drain_requested: false,
    }
}

async fn marks(store: &SharedStore, step: Option<&str>) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = store
        .list_workers(step)
        .await
        .unwrap()
        .into_iter()
        .map(|w| (w.worker_id, w.drain_requested))
        .collect();
    v.sort();
    v
}

pub async fn drain_marks_are_fenced_and_outlive_heartbeats(store: SharedStore) {
    let own = Fence::Unfenced;
    let mut w1 = worker("w-1", "align");
    store.put_worker(&w1, own).await.unwrap();
    store
        .put_worker(&worker("w-2", "align"), own)
        .await
        .unwrap();
    store.put_worker(&worker("w-3", "call"), own).await.unwrap();
    assert!(!store.worker_drain_requested("w-1").await.unwrap());

    let a = store
        .acquire_leadership("c1", "a", 10_000, T0)
        .await
        .unwrap()
        .unwrap();
    let a = LeaderToken::new("c1", &a);
    store
        .set_worker_drain("align", "w-1", true, Fence::Leader(&a))
        .await
        .unwrap();
    // Setting it twice changes nothing.
    store
        .set_worker_drain("align", "w-1", true, Fence::Leader(&a))
        .await
        .unwrap();
    assert!(store.worker_drain_requested("w-1").await.unwrap());
    assert!(!store.worker_drain_requested("w-2").await.unwrap());
    let align = vec![("w-1".to_string(), true), ("w-2".to_string(), false)];
    assert_eq!(marks(&store, Some("align")).await, align);
    assert_eq!(
        marks(&store, Some("call")).await,
        [("w-3".to_string(), false)]
    );
    assert_eq!(marks(&store, None).await.len(), 3);

    // The worker's heartbeat rewrites its registration; the mark stays.
    w1.busy_slots = 0;
    w1.last_seen = T0 + 20_000;
    store.put_worker(&w1, own).await.unwrap();
    assert!(store.worker_drain_requested("w-1").await.unwrap());
    assert_eq!(marks(&store, Some("align")).await, align);
    // The refresh a worker sends returns the mark, and keeps it too.
    w1.last_seen = T0 + 25_000;
    assert!(store.refresh_worker(&w1).await.unwrap());
    assert!(store.refresh_worker(&w1).await.unwrap());
    assert!(!store.refresh_worker(&worker("w-2", "align")).await.unwrap());
    assert_eq!(marks(&store, Some("align")).await, align);

    // A deposed leader cannot take it back; the current one can.
    let b = store
        .acquire_leadership("c1", "b", 10_000, T0 + 10_001)
        .await
        .unwrap()
        .unwrap();
    let b = LeaderToken::new("c1", &b);
    let stale = store
        .set_worker_drain("align", "w-1", false, Fence::Leader(&a))
        .await;
    assert!(matches!(stale, Err(StoreError::Fenced { .. })), "{stale:?}");
    assert!(store.worker_drain_requested("w-1").await.unwrap());
    store
        .set_worker_drain("align", "w-1", false, Fence::Leader(&b))
        .await
        .unwrap();
    assert!(!store.worker_drain_requested("w-1").await.unwrap());
    assert!(!store.refresh_worker(&w1).await.unwrap());
    assert_eq!(
        marks(&store, Some("align")).await[0],
        ("w-1".to_string(), false)
    );

    // Removing the worker removes its mark.
    store
        .set_worker_drain("align", "w-2", true, Fence::Leader(&b))
        .await
        .unwrap();
    store.remove_worker("w-2", Fence::Leader(&b)).await.unwrap();
    assert!(!store.worker_drain_requested("w-2").await.unwrap());
    assert_eq!(
        marks(&store, Some("align")).await,
        [("w-1".to_string(), false)]
    );
}
