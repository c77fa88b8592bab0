//! One slot: a loop that claims a task when the claim gate allows, runs it to its end and
//! claims again, until the worker stops claiming. `--slots` of these run side by side.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use super::backoff::{jitter_between, spread};
use super::control::Gate;
use super::events::ClaimFailed;
use super::{task_runner, Ctx};
use crate::clock::ms;
use crate::model::{Claim, ClaimRequest};
use crate::store::StoreError;

/// Errors a retry cannot fix: the worker stops.
fn is_fatal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::NoTable(_)
            | StoreError::NoStore(_)
            | StoreError::BadUrl { .. }
            | StoreError::InvalidInput(_)
    )
}

pub(crate) async fn slot_loop(ctx: Arc<Ctx>) -> Result<(), StoreError> {
    let request = ClaimRequest {
        step: ctx.cfg.step.clone(),
        owner: ctx.cfg.worker_id.clone(),
        ttl_ms: ms(ctx.cfg.lease_ttl),
    };
    // A claim that hangs longer than a lease is abandoned (a lease it may have taken expires).
    let claim_timeout = ctx.cfg.lease_ttl.max(Duration::from_secs(10));
    let mut phase = ctx.control.subscribe();
    let stats = ctx.control.worker_stats();
    loop {
        // One claim in flight per worker: slots racing each other for the same head of the
        // queue would only add conditional-write conflicts (store requests) and no throughput.
        // The claim asks for every free slot instead, and hands the extra tasks over.
        let claim_turn = ctx.claim_lock.lock().await;
        if let Some((claim, run)) = take_handed_over(&ctx) {
            drop(claim_turn);
            // Not started by a worker that is draining (or handing back) by now.
            let run = run && ctx.control.phase().task_deadline().is_none();
            start(&ctx, claim, run).await;
            continue;
        }
        let max = match ctx.control.begin_claim() {
            Gate::Stop => return Ok(()),
            Gate::WaitUntil(at) => {
                drop(claim_turn);
                // Slots waiting for the same moment wake a little apart, so after an empty
                // claim one of them polls and pushes the others' next turn further out.
                let jitter = jitter_between(Duration::ZERO, ctx.cfg.poll_interval / 5);
                tokio::select! {
                    _ = tokio::time::sleep_until(at + jitter) => {}
                    _ = phase.changed() => {}
                }
                continue;
            }
            Gate::Claim { max } => max,
        };
        let claimed = tokio::time::timeout(
            claim_timeout,
            ctx.store.claim_batch(&request, max, ctx.clock.now()),
        )
        .await
        .unwrap_or_else(|_| Err(StoreError::unavailable("claim", "timed out")));
        stats.claim_conflicts(&ctx.cfg.step, ctx.store.claim_conflicts());
        match claimed {
            Ok(claims) if !claims.is_empty() => {
                // Counted busy at once (also those handed over), so that the next claim asks
                // only for the slots still free.
                // False when the worker stopped claiming while the claim was in flight.
                let run = ctx.control.claimed(claims.len() as u32);
                let mut claims = claims.into_iter();
                let first = claims.next();
                lock_handed_over(&ctx).extend(claims.map(|c| (c, run)));
                drop(claim_turn);
                if let Some(claim) = first {
                    start(&ctx, claim, run).await;
                }
            }
            Ok(_) => nothing_claimed(&ctx, claim_turn).await,
            Err(e) => {
                drop(claim_turn);
                let retry_in = ctx.control.claim_failed();
                ClaimFailed {
                    step: &ctx.cfg.step,
                    error: &e,
                    retry_in,
                }
                .emit(stats);
                if is_fatal(&e) {
                    return Err(e);
                }
            }
        }
    }
}

/// Nothing pending: makes tasks whose retry delay is over pending (so workers run without a
/// controller still retry), and claims again at once if any. A failure here is not the
/// claim's: the next claim reports store trouble.
async fn nothing_claimed(ctx: &Ctx, claim_turn: tokio::sync::MutexGuard<'_, ()>) {
    let due = ctx.store.retry_due(&ctx.cfg.step, ctx.clock.now()).await;
    drop(claim_turn);
    if matches!(due, Ok(n) if n > 0) {
        ctx.control.claim_retry_due();
        return;
    }
    ctx.control.claim_empty(spread(ctx.cfg.poll_interval, 0.2));
    // Idle: the progress counter deltas this worker keeps (a busy worker writes them together,
    // see the DynamoDB store's counters) go out now, not a flush interval later. An idle
    // instance is what a scale-down terminates, and a worker killed with its deltas unwritten
    // leaves the counts wrong (pending too high) until the next recount. Nothing kept: no
    // request.
    if ctx.control.busy_slots() == 0 {
        if let Err(e) = ctx.store.flush().await {
            tracing::warn!(error = %e, "progress counters not written while idle; kept for the next write");
        }
    }
}

fn lock_handed_over(ctx: &Ctx) -> std::sync::MutexGuard<'_, VecDeque<(Claim, bool)>> {
    ctx.handed_over.lock().unwrap_or_else(|e| e.into_inner())
}

fn take_handed_over(ctx: &Ctx) -> Option<(Claim, bool)> {
    lock_handed_over(ctx).pop_front()
}

/// Runs a claimed task (already counted busy) to its end, or hands it back unstarted.
async fn start(ctx: &Arc<Ctx>, claim: Claim, run: bool) {
    if run {
        task_runner::run_task(ctx.clone(), claim).await;
    } else {
        release_unstarted(ctx, &claim).await;
    }
    ctx.control.task_done(ctx.clock.now(), run);
}

/// Hands back a task claimed just as the worker stopped claiming (it was never started).
async fn release_unstarted(ctx: &Ctx, claim: &Claim) {
    let (step, id) = (claim.task.step(), claim.task.id());
    for _ in 0..3 {
        match ctx.store.release(&claim.lease(), ctx.clock.now()).await {
            Ok(()) => {
                tracing::info!(step, id, "claimed while stopping: handed back unstarted");
                return;
            }
            Err(e) if e.is_retryable() => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(step, id, error = %e, "could not hand back an unstarted task");
                return;
            }
        }
    }
    tracing::warn!(
        step,
        id,
        "could not hand back an unstarted task; its lease will expire"
    );
}
