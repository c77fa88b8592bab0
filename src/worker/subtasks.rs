//! A nested task's sub-commands (PyAnamo's array tasks): run with bounded parallelism, each in
//! its own process group, their output pumped into the attempt's log with an index prefix.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::watch;
use tokio::time::Instant;

use super::process::{self, Exit, Group, SharedLog, ShellCommand, StopCause};
use super::task_runner::Exec;
use crate::model::{SubtaskResult, TaskSpec};

/// Sub-commands with bounded parallelism, each in its own process group; their output goes to
/// the task's log with every line prefixed `[i] `.
pub(super) async fn run_subtasks(
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
    let pumps = pump_output(&mut group, index, &log);
    let (exit, cause) = group.wait_or_stop(deadline, &mut stop).await;
    drain(pumps).await;
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

/// Copies the sub-command's stdout and stderr into the task's log, each line prefixed with
/// `[index] `.
fn pump_output(
    group: &mut Group,
    index: usize,
    log: &SharedLog,
) -> Vec<tokio::task::JoinHandle<()>> {
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
    pumps
}

/// Lets the pumps copy what is left of the output, for at most [`PUMP_DRAIN`]; then stops them.
async fn drain(mut pumps: Vec<tokio::task::JoinHandle<()>>) {
    let drained = tokio::time::timeout(PUMP_DRAIN, futures::future::join_all(&mut pumps)).await;
    if drained.is_err() {
        pumps.iter().for_each(|p| p.abort());
    }
}
