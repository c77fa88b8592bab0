//! One claimed task, from spawn to recorded result: runs the script (or its sub-commands),
//! keeps the lease, enforces the timeout and the worker's stop deadlines, classifies the exit
//! and writes the completion (or hands the task back) fenced by the lease token.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::events::{ResultLost, TaskFinished, TaskHandedBack, TaskLeaseLost, TaskStarted};
use super::lease::{write_fenced, Fenced, LeaseKeeper, LostCause, Write};
use super::process::{self, Exit, Group, OutputCapture, SharedLog, ShellCommand, StopCause};
use super::Ctx;
use crate::clock::Millis;
use crate::model::{
    Claim, Completion, LeaseRef, Outcome, SubtaskResult, TaskResult, TaskSpec, TaskState,
    LOG_TAIL_BYTES,
};

/// How the script (or the set of sub-commands) ended.
#[derive(Debug)]
struct Exec {
    /// The exit that decides the outcome: the script's, or the first failing sub-command's
    /// (by index). `None` when nothing could be started.
    exit: Option<Exit>,
    /// Why the worker stopped it, if it did.
    cause: Option<StopCause>,
    /// The script could not be started (log file, fork).
    spawn_error: Option<String>,
    subtasks: Vec<SubtaskResult>,
    /// The end of this attempt's output.
    log_tail: String,
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
    let stats = ctx.control.worker_stats();
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
    .emit(stats);

    let (stop_tx, stop_rx) = watch::channel(None);
    let deadline = spec.timeout_secs.map(|s| t0 + Duration::from_secs(s));
    let exec = execute(&ctx, spec, attempt, &log_path, deadline, stop_rx);
    tokio::pin!(exec);
    let mut phase_rx = ctx.control.subscribe();
    let mut phase_deadline = phase_rx.borrow_and_update().task_deadline();
    let mut phase_open = true;
    let mut lost_seen = false;
    let exec = loop {
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
    };
    let duration = t0.elapsed();
    // From here on the slot only records the result: the next claim may count it as free.
    ctx.control.task_exited();
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

    if exec.cause == Some(StopCause::HandBack) {
        let released = write_fenced(&ctx, &keeper, &lease, Write::Release).await;
        TaskHandedBack {
            step: &spec.step,
            id: &spec.id,
            attempt,
            reason: ctx
                .control
                .stop_reason()
                .map(|r| r.as_str())
                .unwrap_or("stop"),
            released: matches!(released, Fenced::Done(_)),
            duration,
        }
        .emit(stats);
        return;
    }

    let (outcome, exit_code, error) = classify(spec, &exec);
    let completion = Completion {
        retry_delay: None,
        outcome,
        result: TaskResult {
            exit_code,
            duration_ms: duration.as_millis() as i64,
            log_tail: exec.log_tail,
            instance_id: ctx.cfg.instance_id.clone(),
            worker_id: ctx.cfg.worker_id.clone(),
            started_at,
            finished_at: ctx.clock.now(),
            error,
            subtasks: exec.subtasks,
        },
    };
    let written = write_fenced(&ctx, &keeper, &lease, Write::Complete(&completion)).await;
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
                recorded_state(&ctx, &lease, started_at).await
            } else {
                None
            };
            match ours {
                Some(state) => finished(state),
                None => emit_lease_lost(&ctx, spec, attempt, LostCause::TakenOver, duration),
            }
        }
        Fenced::Expired(last_error) => match recorded_state(&ctx, &lease, started_at).await {
            // A write that timed out on our side may still have been applied.
            Some(state) => finished(state),
            None => ResultLost {
                step: &spec.step,
                id: &spec.id,
                attempt,
                last_error: last_error.as_ref(),
                duration,
            }
            .emit(stats),
        },
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
    let env = task_env(ctx, spec, attempt);
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
        run_subtasks(spec, env, file, deadline, stop, &mut exec).await;
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

/// Sub-commands with bounded parallelism, each in its own process group; their output goes to
/// the task's log with every line prefixed `[i] `.
async fn run_subtasks(
    spec: &TaskSpec,
    env: Vec<(String, String)>,
    file: std::fs::File,
    deadline: Option<Instant>,
    stop: watch::Receiver<Option<StopCause>>,
    exec: &mut Exec,
) {
    let log: SharedLog = Arc::new(tokio::sync::Mutex::new(tokio::fs::File::from_std(file)));
    let parallelism = spec.subtask_parallelism.unwrap_or(1).max(1) as usize;
    let args = Arc::new(spec.args.clone());
    let subtasks: Vec<(usize, String)> = spec.subtasks.iter().cloned().enumerate().collect();
    let mut ends: Vec<SubEnd> = futures::stream::iter(subtasks)
        .map(|(index, command)| {
            let mut env = env.clone();
            env.push(("ANAMO_SUBTASK_INDEX".into(), index.to_string()));
            run_subtask(
                index,
                command,
                args.clone(),
                env,
                log.clone(),
                deadline,
                stop.clone(),
            )
        })
        .buffer_unordered(parallelism)
        .collect()
        .await;
    ends.sort_by_key(|e| e.result.index);
    exec.cause = ends.iter().find_map(|e| e.cause);
    exec.spawn_error = ends.iter().find_map(|e| e.spawn_error.clone());
    exec.exit = Some(
        ends.iter()
            .filter_map(|e| e.exit)
            .find(|x| *x != Exit::Code(0))
            .unwrap_or(Exit::Code(0)),
    );
    exec.subtasks = ends.into_iter().map(|e| e.result).collect();
}

struct SubEnd {
    result: SubtaskResult,
    exit: Option<Exit>,
    cause: Option<StopCause>,
    spawn_error: Option<String>,
}

/// How long the output of a finished sub-command may still be drained (a descendant that left
/// the process group may hold the pipe open).
const PUMP_DRAIN: Duration = Duration::from_secs(2);

async fn run_subtask(
    index: usize,
    command: String,
    args: Arc<Vec<String>>,
    env: Vec<(String, String)>,
    log: SharedLog,
    deadline: Option<Instant>,
    mut stop: watch::Receiver<Option<StopCause>>,
) -> SubEnd {
    let mut end = SubEnd {
        result: SubtaskResult {
            index,
            command: command.clone(),
            exit_code: None,
            duration_ms: 0,
        },
        exit: None,
        cause: None,
        spawn_error: None,
    };
    // Stopped (or out of time) before this one's turn: it is not started.
    if let Some(cause) = *stop.borrow() {
        end.cause = Some(cause);
        return end;
    }
    if deadline.is_some_and(|d| Instant::now() >= d) {
        end.cause = Some(StopCause::Timeout);
        return end;
    }
    let t0 = Instant::now();
    process::log_line(&log, &format!("[{index}] $ {command}")).await;
    let cmd = ShellCommand {
        script: &command,
        args: &args,
        env: &env,
    };
    let mut group = match Group::spawn(&cmd, Stdio::piped(), Stdio::piped()) {
        Ok(g) => g,
        Err(e) => {
            process::log_line(&log, &format!("[{index}] spawn failed: {e}")).await;
            end.spawn_error = Some(e.to_string());
            return end;
        }
    };
    let prefix = format!("[{index}] ");
    let mut pumps = Vec::new();
    if let Some(out) = group.child_mut().stdout.take() {
        pumps.push(tokio::spawn(process::pump_prefixed(
            out,
            prefix.clone(),
            log.clone(),
        )));
    }
    if let Some(err) = group.child_mut().stderr.take() {
        pumps.push(tokio::spawn(process::pump_prefixed(
            err,
            prefix.clone(),
            log.clone(),
        )));
    }
    let (exit, cause) = group.wait_or_stop(deadline, &mut stop).await;
    let drained = tokio::time::timeout(PUMP_DRAIN, futures::future::join_all(&mut pumps)).await;
    if drained.is_err() {
        pumps.iter().for_each(|p| p.abort());
    }
    let took = t0.elapsed();
    let how = match exit {
        Exit::Code(c) => format!("exit {c}"),
        Exit::Signal(s) => format!("signal {s}"),
    };
    process::log_line(
        &log,
        &format!("[{index}] {how} after {:.3}s", took.as_secs_f64()),
    )
    .await;
    end.result.exit_code = exit.code();
    end.result.duration_ms = took.as_millis() as i64;
    end.exit = Some(exit);
    end.cause = cause;
    end
}

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
