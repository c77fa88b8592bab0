//! Keeping a task's lease: heartbeats every `heartbeat`, retries while the lease lasts, and
//! the fenced writes (complete, release) retried the same way.
//!
//! A worker cut off from the store must not keep running a task someone else may have
//! claimed: when the lease's own expiry passes without a successful heartbeat, the lease is
//! treated as lost, exactly as when the store answers `LeaseLost`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::events::{HeartbeatFailed, StoreCallFailed};
use super::Ctx;
use crate::clock::{ms, Millis};
use crate::model::{Completion, LeaseRef, TaskState};
use crate::store::StoreError;

/// The least time a store call gets before it counts as failed (a store just back from an
/// outage can be slow to answer).
const MIN_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most time one attempt of a fenced write gets before it is retried.
const MAX_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a lease is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LostCause {
    /// The store said so: the task was requeued, re-claimed, cancelled or deleted.
    TakenOver,
    /// No heartbeat got through before the lease expired.
    Expired,
}

impl LostCause {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LostCause::TakenOver => "taken over",
            LostCause::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaseStatus {
    pub expires_at: Millis,
    pub lost: Option<LostCause>,
}

/// Heartbeats a lease in a background task until dropped.
#[derive(Debug)]
pub(crate) struct LeaseKeeper {
    status: watch::Receiver<LeaseStatus>,
    handle: JoinHandle<()>,
}

impl LeaseKeeper {
    pub(crate) fn spawn(ctx: Arc<Ctx>, lease: LeaseRef, expires_at: Millis) -> Self {
        let (tx, rx) = watch::channel(LeaseStatus {
            expires_at,
            lost: None,
        });
        let handle = tokio::spawn(keep(ctx, lease, tx));
        LeaseKeeper { status: rx, handle }
    }

    pub(crate) fn status(&self) -> LeaseStatus {
        *self.status.borrow()
    }

    /// Resolves when the lease is lost (never, if it is kept).
    pub(crate) async fn lost(&self) -> LostCause {
        let mut rx = self.status.clone();
        loop {
            if let Some(cause) = rx.borrow_and_update().lost {
                return cause;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// Time left on a lease by the worker's clock.
fn left(ctx: &Ctx, expires_at: Millis) -> Duration {
    Duration::from_millis((expires_at - ctx.clock.now()).max(0) as u64)
}

async fn keep(ctx: Arc<Ctx>, lease: LeaseRef, tx: watch::Sender<LeaseStatus>) {
    let heartbeat = ctx.cfg.heartbeat;
    let ttl_ms = ms(ctx.cfg.lease_ttl);
    let stats = ctx.control.worker_stats();
    let mut expires_at = tx.borrow().expires_at;
    let mut next_beat = Instant::now() + heartbeat;
    // One slow call must not use up the lease, nor a short heartbeat cut off a slow store.
    let call_limit = heartbeat.max(MIN_CALL_TIMEOUT);
    let lose = |cause| {
        tx.send_modify(|s| s.lost = Some(cause));
    };
    loop {
        // The beat is due well before expiry (heartbeat < ttl), but never sleep past it.
        let expiry = Instant::now() + left(&ctx, expires_at);
        tokio::time::sleep_until(next_beat.min(expiry)).await;
        let mut backoff = Backoff::new(
            Duration::from_millis(200).min(heartbeat / 4),
            (heartbeat / 2).max(Duration::from_millis(200)),
        );
        loop {
            let remaining = left(&ctx, expires_at);
            if remaining.is_zero() {
                lose(LostCause::Expired);
                return;
            }
            let call = ctx.store.heartbeat(&lease, ttl_ms, ctx.clock.now());
            let error = match tokio::time::timeout(remaining.min(call_limit), call).await {
                Ok(Ok(new_expiry)) => {
                    expires_at = new_expiry;
                    tx.send_modify(|s| s.expires_at = new_expiry);
                    break;
                }
                Ok(Err(StoreError::LeaseLost { .. } | StoreError::NotFound { .. })) => {
                    lose(LostCause::TakenOver);
                    return;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            };
            let remaining = left(&ctx, expires_at);
            HeartbeatFailed {
                step: &lease.step,
                id: &lease.id,
                error: &error,
                lease_left: remaining,
            }
            .emit(stats);
            tokio::time::sleep(backoff.next_delay().min(remaining)).await;
        }
        next_beat = Instant::now() + heartbeat;
    }
}

/// How a fenced write ended.
#[derive(Debug)]
pub(crate) enum Fenced<T> {
    Done(T),
    /// The store rejected the token: someone else owns the task now. `after_failure` says an
    /// earlier attempt failed in a way that may have been applied (a lost response), in which
    /// case the rejection may be our own write's doing.
    LeaseLost {
        after_failure: bool,
    },
    /// The lease expired before the store accepted the write.
    Expired(Option<StoreError>),
}

/// A write fenced by the lease token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Write<'a> {
    Complete(&'a Completion),
    Release,
}

impl Write<'_> {
    fn name(&self) -> &'static str {
        match self {
            Write::Complete(_) => "complete",
            Write::Release => "release",
        }
    }
}

/// Runs a fenced write (complete, release), retrying with backoff while the lease can still be
/// valid; the keeper goes on extending it meanwhile, so a short store outage loses nothing.
/// Always tries at least once: the write is fenced by the token, so a late attempt is safe.
/// Returns the task's new state (`pending` after a release).
pub(crate) async fn write_fenced(
    ctx: &Ctx,
    keeper: &LeaseKeeper,
    lease: &LeaseRef,
    write: Write<'_>,
) -> Fenced<TaskState> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut last_error = None;
    let mut first = true;
    let mut failed_before = false;
    let operation = write.name();
    loop {
        let remaining = left(ctx, keeper.status().expires_at);
        if remaining.is_zero() && !first {
            return Fenced::Expired(last_error);
        }
        first = false;
        let limit = remaining.clamp(MIN_CALL_TIMEOUT, MAX_WRITE_TIMEOUT);
        let now = ctx.clock.now();
        let call = async {
            match write {
                Write::Complete(c) => ctx.store.complete(lease, c, now).await,
                Write::Release => ctx
                    .store
                    .release(lease, now)
                    .await
                    .map(|()| TaskState::Pending),
            }
        };
        match tokio::time::timeout(limit, call).await {
            Ok(Ok(v)) => return Fenced::Done(v),
            Ok(Err(StoreError::LeaseLost { .. } | StoreError::NotFound { .. })) => {
                return Fenced::LeaseLost {
                    after_failure: failed_before,
                }
            }
            Ok(Err(e)) => {
                StoreCallFailed {
                    operation,
                    step: &lease.step,
                    id: &lease.id,
                    error: &e.to_string(),
                }
                .emit();
                last_error = Some(e);
            }
            Err(_) => {
                StoreCallFailed {
                    operation,
                    step: &lease.step,
                    id: &lease.id,
                    error: "timed out",
                }
                .emit();
            }
        }
        failed_before = true;
        let remaining = left(ctx, keeper.status().expires_at);
        tokio::time::sleep(backoff.next_delay().min(remaining)).await;
    }
}
