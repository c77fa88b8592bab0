//! `anamo task logs STEP ID`: an attempt's full output from where its worker stored it
//! (`--log-url`: S3 or a directory), or else the last 4 KB kept in the task's result; with
//! `--follow`, a running task's log as it is uploaded, until the task ends.
//!
//! The reading is [`crate::logs::read`], shared with the status server's
//! `/api/tasks/{step}/{id}/log`; the command prints it and follows.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::output::out;
use super::parse_duration;
use crate::logs::read::{is_running, read_task_log, LogOrigin, LogReadError, LogRequest};
use crate::logs::LogUrl;
use crate::store::SharedStore;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Step of the task.
    pub step: String,
    /// Id of the task.
    pub id: String,
    /// Which attempt's log (1 is the first) [default: the latest].
    #[arg(long)]
    pub attempt: Option<u32>,
    /// Keep printing a running task's log as its worker uploads it, until the task ends.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Print only the last N lines (then follow, with `--follow`).
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Where the workers store logs (their `--log-url`, the fleet's `logUrl`) [default: taken
    /// from the task's result; needed to read a first attempt that is still running].
    #[arg(long, env = "ANAMO_LOG_URL")]
    pub log_url: Option<String>,
    /// With `--follow`: how often to look for more output and whether the task ended.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
}

fn print(bytes: &[u8]) {
    if !bytes.is_empty() {
        out!("{}", String::from_utf8_lossy(bytes));
    }
}

pub async fn run(a: LogsArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    let given = match a.log_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => Some(LogUrl::parse(u).map_err(|e| anyhow::anyhow!("`--log-url`: {e}"))?),
    };
    let req = LogRequest {
        step: &a.step,
        id: &a.id,
        attempt: a.attempt,
        given: given.as_ref(),
        tail: a.tail,
        ..LogRequest::default()
    };
    let log = read_task_log(store.as_ref(), &req).await?;
    for note in &log.notes {
        eprintln!("note: {note}");
    }
    print(&log.text);
    let (sink, mut offset) = match log.origin {
        LogOrigin::ResultTail => return Ok(ExitCode::SUCCESS),
        LogOrigin::Stored { sink, next } => (sink, next),
        LogOrigin::Pending { sink } if a.follow => (sink, 0),
        LogOrigin::Pending { sink } => anyhow::bail!(LogReadError::NoLog {
            url: sink.url().attempt_url(&a.step, &a.id, log.attempt)
        }),
    };
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    let (step, id, attempt) = (a.step.as_str(), a.id.as_str(), log.attempt);
    // Until the attempt ends; then once more for what its final upload added.
    loop {
        let task = store
            .get(step, id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("task {step}/{id} not found"))?;
        let ended = !is_running(&task, attempt);
        if let Some(more) = sink.read_from(step, id, attempt, offset).await? {
            print(&more);
            offset += more.len() as u64;
        }
        if ended {
            return Ok(ExitCode::SUCCESS);
        }
        tokio::time::sleep(a.interval).await;
    }
}
