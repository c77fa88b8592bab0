//! The worker's registration in the store (`put_worker`): written at start, refreshed every
//! heartbeat tick, on state changes and when an idle worker gets work again; marked `Gone` on
//! exit (the controller then terminates the instance at once). A stop with no task running
//! (an idle worker's) is the exit itself: `Gone` is its only write, no `Draining` before it.
//! Writes stay infrequent: a few per worker and heartbeat, never per task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::backoff::Backoff;
use super::events::RegistrationFailed;
use super::Ctx;
use crate::clock::Millis;
use crate::model::{WorkerInfo, WorkerState};
use crate::store::{Fence, StoreError};

/// A worker's own registration is not a leader's write.
const OWN: Fence<'static> = Fence::Unfenced;

/// How long the final `Gone` write is retried.
const GONE_RETRY_FOR: Duration = Duration::from_secs(10);

pub(crate) fn info(ctx: &Ctx, started_at: Millis, state: WorkerState) -> WorkerInfo {
    let now = ctx.clock.now();
    let (busy, last_busy_at) = ctx.control.busy_info(now);
    WorkerInfo {
        worker_id: ctx.cfg.worker_id.clone(),
        step: ctx.cfg.step.clone(),
        instance_id: ctx.cfg.instance_id.clone(),
        slots: ctx.cfg.slots,
        busy_slots: busy,
        started_at,
        last_seen: now,
        last_busy_at,
        state,
        stop_reason: ctx.control.phase().reason(),
        drain_requested: false,
    }
}

fn current_state(ctx: &Ctx) -> WorkerState {
    if ctx.control.phase().is_active() {
        WorkerState::Active
    } else {
        WorkerState::Draining
    }
}

/// The first registration. Retryable errors are retried until the worker is told to stop;
/// anything else is fatal.
pub(crate) async fn register(ctx: &Ctx, started_at: Millis) -> Result<(), StoreError> {
    ctx.store
        .note_lease_ttl(&ctx.cfg.worker_id, crate::clock::ms(ctx.cfg.lease_ttl));
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        match ctx
            .store
            .put_worker(&info(ctx, started_at, current_state(ctx)), OWN)
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if e.is_retryable() => {
                RegistrationFailed {
                    worker_id: &ctx.cfg.worker_id,
                    error: &e,
                }
                .emit();
                if !ctx.control.phase().is_active() {
                    return Err(e);
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Refreshes the registration every heartbeat and when woken, until `stop` turns true. A
/// write in flight is finished first (never aborted), so no stale write can land after the
/// final `Gone`.
pub(crate) async fn upkeep(ctx: Arc<Ctx>, started_at: Millis, mut stop: watch::Receiver<bool>) {
    let every = ctx.cfg.heartbeat;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = ctx.control.registration_notify().notified() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        refresh(&ctx, started_at).await;
    }
}

/// One refresh, which also reads the controller's drain mark (`TaskStore::set_worker_drain`,
/// returned by the registration write itself where the store can: `refresh_worker`): while
/// set, the worker claims nothing and exits once its running tasks are done (the controller
/// then terminates the instance); cleared before that, it claims again. A failed refresh
/// changes nothing; the next one reads the mark again.
async fn refresh(ctx: &Ctx, started_at: Millis) {
    let info = info(ctx, started_at, current_state(ctx));
    match ctx.store.refresh_worker(&info).await {
        Ok(marked) => {
            if ctx.control.phase().is_active() {
                ctx.control.set_drain_mark(marked);
            }
        }
        Err(e) => RegistrationFailed {
            worker_id: &ctx.cfg.worker_id,
            error: &e,
        }
        .emit(),
    }
}

/// Marks the worker `Gone`, retrying for a short while.
pub(crate) async fn mark_gone(ctx: &Ctx, started_at: Millis) {
    let give_up = tokio::time::Instant::now() + GONE_RETRY_FOR;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let info = info(ctx, started_at, WorkerState::Gone);
        match tokio::time::timeout(GONE_RETRY_FOR, ctx.store.put_worker(&info, OWN)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => {
                RegistrationFailed {
                    worker_id: &ctx.cfg.worker_id,
                    error: &e,
                }
                .emit();
                if !e.is_retryable() {
                    return;
                }
            }
            Err(_) => {}
        }
        let delay = backoff.next_delay();
        if tokio::time::Instant::now() + delay >= give_up {
            tracing::warn!(worker_id = %ctx.cfg.worker_id, "could not mark the worker gone");
            return;
        }
        tokio::time::sleep(delay).await;
    }
}
