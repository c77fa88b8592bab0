//! Conformance case of lease expiry found through the worker registry: a worker whose
//! registration is gone has its tasks requeued once their leases expire (on DynamoDB, from
//! the owner's running index entries, without a full sweep of the running shards), and not
//! before; a live worker's task is left alone.

use anamo::model::{TaskState, WorkerInfo, WorkerState};
use anamo::store::{Fence, SharedStore};

use super::{claim, requeue, specs, T0, TTL};

fn registration(id: &str, at: i64) -> WorkerInfo {
    WorkerInfo {
        worker_id: id.into(),
        step: "align".into(),
        instance_id: None,
        slots: 2,
        busy_slots: 1,
        started_at: at,
        last_seen: at,
        last_busy_at: at,
        state: WorkerState::Active,
        stop_reason: None,
        drain_requested: false,
    }
}

pub async fn a_gone_workers_tasks_are_requeued_after_the_ttl(store: SharedStore) {
    store.import(&specs("align", 2), T0).await.unwrap();
    for w in ["dead", "live"] {
        store
            .put_worker(&registration(w, T0), Fence::Unfenced)
            .await
            .unwrap();
    }
    let dead = claim(&store, "align", "dead", T0).await;
    let live = claim(&store, "align", "live", T0).await;
    // A first pass while both are registered and their leases hold.
    assert!(requeue(&store, "align", T0 + 1).await.requeued.is_empty());
    store.remove_worker("dead", Fence::Unfenced).await.unwrap();
    // Gone, but its lease has not expired yet.
    assert!(requeue(&store, "align", T0 + TTL - 1)
        .await
        .requeued
        .is_empty());
    // The live worker heartbeats its task and refreshes its registration.
    store
        .heartbeat(&live.lease(), TTL, T0 + TTL - 1)
        .await
        .unwrap();
    store
        .put_worker(&registration("live", T0 + TTL - 1), Fence::Unfenced)
        .await
        .unwrap();
    let r = requeue(&store, "align", T0 + TTL + 1).await;
    assert_eq!(r.requeued, vec![dead.task.id().to_string()]);
    let t = store.get("align", dead.task.id()).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Pending);
    assert_eq!(t.reason.as_deref(), Some("lease expired"));
    let t = store.get("align", live.task.id()).await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Running, "a heartbeated lease stands");
}
