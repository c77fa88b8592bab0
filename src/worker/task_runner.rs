//! One claimed task, from spawn to recorded result: runs the script (or its sub-commands),
//! keeps the lease, enforces the timeout and the worker's stop deadlines, classifies the exit
//! and writes the completion (or hands the task back) fenced by the lease token.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::events::{ResultLost, TaskFinished, TaskHandedBack, TaskLeaseLost, TaskStarted};
use super::lease::{write_fenced, Fenced, LeaseKeeper, LostCause, Write};
use super::log_upload::{AttemptLog, LogStored};
use super::pipeline_env;
use super::process::{self, Exit, Group, OutputCapture, ShellCommand, StopCause};
use super::Ctx;
use crate::clock::Millis;
use crate::model::{
    Claim, Completion, LeaseRef, Outcome, SubtaskResult, TaskResult, TaskSpec, TaskState,
    LOG_TAIL_BYTES,
};

/// How the script (or the set of sub-commands) ended.
#[derive(Debug)]
pub(super) struct Exec {
    /// The exit that decides the outcome: the script's, or the first failing sub-command's
    /// (by index). `None` when nothing could be started.
    pub(super) exit: Option<Exit>,
    /// Why the worker stopped it, if it did.
    pub(super) cause: Option<StopCause>,
    /// The script could not be started (log file, fork).
    pub(super) spawn_error: Option<String>,
    pub(super) subtasks: Vec<SubtaskResult>,
    /// The end of this attempt's output.
    pub(super) log_tail: String,
}

/// Decides the outcome of an attempt, its recorded exit code and its error label.
fn classify(spec: &TaskSpec, exec: &Exec) -> (Outcome, Option<i32>, Option<String>) {
    match exec.cause {
        Some(StopCause::Timeout | StopCause::WallTime) => {
            return (
                Outcome::Failed,
                exec.exit.and_then(Exit::code),
                Some("timeout".into()),
            )
        }
        Some(StopCause::LeaseLost | StopCause::HandBack) => {
            // Never recorded; classified for completeness.
            return (Outcome::Failed, None, Some("stopped".into()));
        }
        None => {}
    }
    if let Some(e) = &exec.spawn_error {
        return (Outcome::Failed, None, Some(format!("spawn failed: {e}")));
    }
    match exec.exit {
        Some(Exit::Code(0)) => (Outcome::Succeeded, Some(0), None),
        Some(Exit::Code(code)) => {
            let permanent = spec.fail_exit_codes.contains(&code)
                || (!spec.retry_exit_codes.is_empty() && !spec.retry_exit_codes.contains(&code));
            let outcome = if permanent {
                Outcome::FailedPermanently
            } else {
                Outcome::Failed
            };
            (outcome, Some(code), Some(format!("exit {code}")))
        }
        Some(Exit::Signal(sig)) => (Outcome::Failed, None, Some(format!("signal {sig}"))),
        None => (Outcome::Failed, None, Some("not started".into())),
    }
}

/// Runs a claimed task to its end. Never returns an error: every ending is recorded in the
/// store when the lease allows, and logged.
pub(crate) async fn run_task(ctx: Arc<Ctx>, claim: Claim) {
    let Claim {
        task,
        token,
        expires_at,
    } = claim;
    let spec = &task.spec;
    let attempt = task.attempts;
    let lease = LeaseRef {
        step: spec.step.clone(),
        id: spec.id.clone(),
        token,
    };
    let keeper = LeaseKeeper::spawn(ctx.clone(), lease.clone(), expires_at);
    let log_path = ctx.cfg.log_path(&spec.step, &spec.id, attempt);
    let started_at = ctx.clock.now();
    let t0 = Instant::now();
    TaskStarted {
        step: &spec.step,
        id: &spec.id,
        attempt,
        log: &log_path,
    }
    .emit(ctx.control.worker_stats());
    let mut upload = AttemptLog::start(&ctx, &spec.step, &spec.id, attempt, &log_path);

    let (stop_tx, stop_rx) = watch::channel(None);
    let deadline = spec.timeout_secs.map(|s| t0 + Duration::from_secs(s));
    let exec = execute(&ctx, spec, attempt, &log_path, deadline, stop_rx);
    let exec = supervise(&ctx, &keeper, exec, &stop_tx).await;
    let duration = t0.elapsed();
    // From here on the slot only records the result: the next claim may count it as free.
    ctx.control.task_exited();
    if let Some(u) = upload.as_mut() {
        // A handed-back attempt is not counted: the next run of it replaces its log.
        u.stop_periodic().await;
    }
    let lost = keeper.status().lost;
    if exec.cause == Some(StopCause::LeaseLost) || lost == Some(LostCause::TakenOver) {
        emit_lease_lost(
            &ctx,
            spec,
            attempt,
            lost.unwrap_or(LostCause::TakenOver),
            duration,
        );
        return;
    }
    let ended = Ended {
        ctx: &ctx,
        keeper: &keeper,
        lease: &lease,
        spec,
        attempt,
        started_at,
        duration,
    };
    if exec.cause == Some(StopCause::HandBack) {
        ended.hand_back().await;
    } else {
        let stored = match upload {
            Some(u) => u.finish().await,
            None => LogStored::default(),
        };
        ended.complete(exec, stored).await;
    }
}

/// Waits for the script to end, stopping it (through `stop_tx`) when the lease is lost or the
/// worker's phase sets a deadline for running tasks that passes.
async fn supervise(
    ctx: &Ctx,
    keeper: &LeaseKeeper,
    exec: impl std::future::Future<Output = Exec>,
    stop_tx: &watch::Sender<Option<StopCause>>,
) -> Exec {
    tokio::pin!(exec);
    let mut phase_rx = ctx.control.subscribe();
    let mut phase_deadline = phase_rx.borrow_and_update().task_deadline();
    let mut phase_open = true;
    let mut lost_seen = false;
    loop {
        let phase_timer = async {
            match phase_deadline {
                Some((d, _)) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            exec = &mut exec => break exec,
            _ = keeper.lost(), if !lost_seen => {
                lost_seen = true;
                // Overrides any other cause: nothing may be written any more.
                stop_tx.send_replace(Some(StopCause::LeaseLost));
            }
            changed = phase_rx.changed(), if phase_open => {
                if changed.is_ok() {
                    phase_deadline = phase_rx.borrow_and_update().task_deadline();
                } else {
                    phase_open = false;
                }
            }
            _ = phase_timer => {
                if let Some((_, cause)) = phase_deadline.take() {
                    stop_tx.send_if_modified(|c| {
                        if c.is_none() {
                            *c = Some(cause);
                            true
                        } else {
                            false
                        }
                    });
                }
            }
        }
    }
}

/// An attempt whose script ended while the lease still held: what recording its end needs.
struct Ended<'a> {
    ctx: &'a Arc<Ctx>,
    keeper: &'a LeaseKeeper,
    lease: &'a LeaseRef,
    spec: &'a TaskSpec,
    attempt: u32,
    started_at: Millis,
    duration: Duration,
}

impl Ended<'_> {
    /// The worker stopped the task to hand it back: releases the lease.
    async fn hand_back(&self) {
        let (ctx, spec) = (self.ctx, self.spec);
        let released = write_fenced(ctx, self.keeper, self.lease, Write::Release).await;
        TaskHandedBack {
            step: &spec.step,
            id: &spec.id,
            attempt: self.attempt,
            reason: ctx
                .control
                .stop_reason()
                .map(|r| r.as_str())
                .unwrap_or("stop"),
            released: matches!(released, Fenced::Done(_)),
            duration: self.duration,
        }
        .emit(ctx.control.worker_stats());
    }

    /// Records the attempt's completion, fenced by the lease, and logs how it ended.
    async fn complete(&self, exec: Exec, stored: LogStored) {
        let (ctx, spec, attempt, duration) = (self.ctx, self.spec, self.attempt, self.duration);
        let (outcome, exit_code, error) = classify(spec, &exec);
        let completion = Completion {
            retry_delay: pipeline_env::retry_delay(&ctx.graph, &spec.step).await,
            outcome,
            result: TaskResult {
                exit_code,
                duration_ms: duration.as_millis() as i64,
                log_tail: exec.log_tail,
                instance_id: ctx.cfg.instance_id.clone(),
                worker_id: ctx.cfg.worker_id.clone(),
                started_at: self.started_at,
                finished_at: ctx.clock.now(),
                error,
                subtasks: exec.subtasks,
                log_url: stored.url,
                log_error: stored.error,
            },
        };
        let written =
            write_fenced(ctx, self.keeper, self.lease, Write::Complete(&completion)).await;
        let finished = |state| {
            TaskFinished {
                step: &spec.step,
                id: &spec.id,
                attempt,
                outcome,
                exit_code,
                error: completion.result.error.as_deref(),
                duration,
                state,
            }
            .emit(ctx.control.worker_stats())
        };
        match written {
            Fenced::Done(state) => finished(state),
            Fenced::LeaseLost { after_failure } => {
                // An earlier attempt may have been applied with its response lost: then the
                // rejection is our own write's doing. Look before reporting a loss.
                let ours = if after_failure {
                    recorded_state(ctx, self.lease, self.started_at).await
                } else {
                    None
                };
                match ours {
                    Some(state) => finished(state),
                    None => emit_lease_lost(ctx, spec, attempt, LostCause::TakenOver, duration),
                }
            }
            Fenced::Expired(last_error) => {
                match recorded_state(ctx, self.lease, self.started_at).await {
                    // A write that timed out on our side may still have been applied.
                    Some(state) => finished(state),
                    None => ResultLost {
                        step: &spec.step,
                        id: &spec.id,
                        attempt,
                        last_error: last_error.as_ref(),
                        duration,
                    }
                    .emit(ctx.control.worker_stats()),
                }
            }
        }
    }
}

/// The task's state when the store holds this attempt's result (ours: same worker, same start).
async fn recorded_state(ctx: &Ctx, lease: &LeaseRef, started_at: Millis) -> Option<TaskState> {
    let get = ctx.store.get(&lease.step, &lease.id);
    match tokio::time::timeout(Duration::from_secs(10), get).await {
        Ok(Ok(Some(t))) => t
            .result
            .as_ref()
            .filter(|r| r.worker_id == ctx.cfg.worker_id && r.started_at == started_at)
            .map(|_| t.state),
        _ => None,
    }
}

fn emit_lease_lost(ctx: &Ctx, spec: &TaskSpec, attempt: u32, cause: LostCause, took: Duration) {
    TaskLeaseLost {
        step: &spec.step,
        id: &spec.id,
        attempt,
        cause: cause.as_str(),
        duration: took,
    }
    .emit(ctx.control.worker_stats())
}

/// The environment of a task's processes: the task's own variables, then anamo's (which win).
fn task_env(ctx: &Ctx, spec: &TaskSpec, attempt: u32) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("ANAMO_TASK_ID".into(), spec.id.clone()));
    env.push(("ANAMO_STEP".into(), spec.step.clone()));
    env.push(("ANAMO_ATTEMPT".into(), attempt.to_string()));
    env.push(("ANAMO_WORKER_ID".into(), ctx.cfg.worker_id.clone()));
    env
}

async fn execute(
    ctx: &Ctx,
    spec: &TaskSpec,
    attempt: u32,
    log_path: &Path,
    deadline: Option<Instant>,
    mut stop: watch::Receiver<Option<StopCause>>,
) -> Exec {
    let mut env = task_env(ctx, spec, attempt);
    let graph_env = pipeline_env::pipeline_env(ctx.store.as_ref(), &ctx.graph, spec, log_path);
    env.extend(graph_env.await);
    let mut exec = Exec {
        exit: None,
        cause: None,
        spawn_error: None,
        subtasks: Vec::new(),
        log_tail: String::new(),
    };
    if !spec.subtasks.is_empty() {
        let (file, start) = match process::open_log(log_path) {
            Ok(f) => f,
            Err(e) => {
                exec.spawn_error = Some(format!("cannot open log {}: {e}", log_path.display()));
                return exec;
            }
        };
        super::subtasks::run_subtasks(spec, env, file, deadline, stop, &mut exec).await;
        exec.log_tail = match process::read_tail(log_path, start, LOG_TAIL_BYTES).await {
            Ok(t) => t,
            Err(e) => format!("(log {} unreadable: {e})", log_path.display()),
        };
        return exec;
    }
    let (capture, out, err) = match OutputCapture::start(log_path, LOG_TAIL_BYTES) {
        Ok(c) => c,
        Err(e) => {
            exec.spawn_error = Some(format!("cannot create the output pipe: {e}"));
            return exec;
        }
    };
    let cmd = ShellCommand {
        script: &spec.script,
        args: &spec.args,
        env: &env,
    };
    match Group::spawn(&cmd, out, err) {
        Ok(mut group) => {
            let (exit, cause) = group.wait_or_stop(deadline, &mut stop).await;
            exec.exit = Some(exit);
            exec.cause = cause;
        }
        Err(e) => exec.spawn_error = Some(e.to_string()),
    }
    exec.log_tail = capture.finish(OUTPUT_DRAIN).await;
    exec
}

/// How long the output of a finished task may still be waited for before its result is
/// recorded: normally it ends with the process group; a descendant that left the group may
/// hold the pipe open (what it writes later still goes to the log file, not to the tail).
const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(exit: Option<Exit>, cause: Option<StopCause>) -> Exec {
        Exec {
            exit,
            cause,
            spawn_error: None,
            subtasks: Vec::new(),
            log_tail: String::new(),
        }
    }

    #[test]
    fn classification() {
        let mut spec = TaskSpec::new("s", "t", "true");
        let c = |spec: &TaskSpec, e: Exec| classify(spec, &e);
        assert_eq!(
            c(&spec, exec(Some(Exit::Code(0)), None)),
            (Outcome::Succeeded, Some(0), None)
        );
        assert_eq!(
            c(&spec, exec(Some(Exit::Code(2)), None)),
            (Outcome::Failed, Some(2), Some("exit 2".into()))
        );
        assert_eq!(
            c(&spec, exec(Some(Exit::Signal(9)), None)),
            (Outcome::Failed, None, Some("signal 9".into()))
        );
        assert_eq!(
            c(
                &spec,
                exec(Some(Exit::Signal(15)), Some(StopCause::Timeout))
            ),
            (Outcome::Failed, None, Some("timeout".into()))
        );
        assert_eq!(
            c(
                &spec,
                exec(Some(Exit::Signal(15)), Some(StopCause::WallTime))
            )
            .2,
            Some("timeout".into())
        );
        spec.fail_exit_codes = vec![7];
        assert_eq!(
            c(&spec, exec(Some(Exit::Code(7)), None)).0,
            Outcome::FailedPermanently
        );
        spec.retry_exit_codes = vec![3];
        assert_eq!(c(&spec, exec(Some(Exit::Code(3)), None)).0, Outcome::Failed);
        assert_eq!(
            c(&spec, exec(Some(Exit::Code(4)), None)).0,
            Outcome::FailedPermanently
        );
        // A signal is always worth a retry.
        assert_eq!(
            c(&spec, exec(Some(Exit::Signal(9)), None)).0,
            Outcome::Failed
        );
    }
}
