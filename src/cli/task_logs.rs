//! `anamo task logs STEP ID`: an attempt's full output from where its worker stored it
//! (`--log-url`: S3 or a directory), or else the last 4 KB kept in the task's result; with
//! `--follow`, a running task's log as it is uploaded, until the task ends.
//!
//! Where to read ([`locate`]) and which lines to print ([`last_lines`]) are pure; the command
//! itself only reads the store and the sink.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::output::out;
use super::parse_duration;
use crate::logs::{LogSink, LogUrl};
use crate::model::{Task, TaskState};
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

/// Where an attempt's log can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Stored under this base URL.
    Stored(LogUrl),
    /// Only the result's tail (the worker stored no log).
    TailOnly,
}

/// Decides where attempt `attempt` of `task` is: under `given` (`--log-url`), else under the
/// base of the URL recorded in the result, else in the result's tail when that result is of
/// this attempt. Errors say why nothing can be read and what to do.
pub fn locate(task: &Task, attempt: u32, given: Option<&LogUrl>) -> Result<Located, String> {
    let name = format!("{}/{}", task.step(), task.id());
    if attempt == 0 || attempt > task.attempts {
        return Err(if task.attempts == 0 {
            format!("task {name} has not run yet (it is {})", task.state)
        } else {
            format!(
                "task {name} has no attempt {attempt}: it ran {} time(s)",
                task.attempts
            )
        });
    }
    if let Some(url) = given {
        return Ok(Located::Stored(url.clone()));
    }
    let result = task.result.as_ref();
    if let Some(recorded) = result.and_then(|r| r.log_url.as_deref()) {
        let base = recorded_attempt(recorded)
            .ok_or_else(|| format!("the recorded log URL `{recorded}` does not end in `/N.log`"))
            .and_then(|n| {
                LogUrl::from_attempt_url(recorded, task.step(), task.id(), n)
                    .map_err(|e| e.to_string())
            })?;
        return Ok(Located::Stored(base));
    }
    let result_attempt = if task.state == TaskState::Running {
        task.attempts.checked_sub(1)
    } else {
        Some(task.attempts)
    };
    match result {
        Some(_) if result_attempt == Some(attempt) => Ok(Located::TailOnly),
        _ => Err(format!(
            "no log of task {name} attempt {attempt} is recorded (its worker had no \
             `--log-url`, or the attempt has not finished); give `--log-url` (the fleet's \
             `logUrl`) to read it from where the workers store logs"
        )),
    }
}

/// `N` of a recorded `.../N.log` URL.
fn recorded_attempt(url: &str) -> Option<u32> {
    url.rsplit('/').next()?.strip_suffix(".log")?.parse().ok()
}

/// The last `n` lines of `text` (a final line without newline counts as a line).
pub fn last_lines(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &[];
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map(|(i, _)| i + 1)
        .unwrap_or(0);
    &text[start..]
}

fn print(bytes: &[u8]) {
    if !bytes.is_empty() {
        out!("{}", String::from_utf8_lossy(bytes));
    }
}

async fn get_task(store: &SharedStore, step: &str, id: &str) -> anyhow::Result<Task> {
    store
        .get(step, id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("task {step}/{id} not found"))
}

pub async fn run(a: LogsArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    let given = match a.log_url.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(u) => Some(LogUrl::parse(u).map_err(|e| anyhow::anyhow!("`--log-url`: {e}"))?),
    };
    let task = get_task(&store, &a.step, &a.id).await?;
    let attempt = a.attempt.unwrap_or(task.attempts);
    let located = locate(&task, attempt, given.as_ref()).map_err(anyhow::Error::msg)?;
    if let Some(why) = task.result.as_ref().and_then(|r| r.log_error.as_deref()) {
        eprintln!("note: {why}");
    }
    let url = match located {
        Located::TailOnly => return print_result_tail(&task, a.tail),
        Located::Stored(url) => url,
    };
    let sink = LogSink::connect(url).await;
    let (step, id) = (a.step.as_str(), a.id.as_str());
    let first = sink.read_from(step, id, attempt, 0).await?;
    let running = |t: &Task| t.state == TaskState::Running && t.attempts == attempt;
    let mut offset = match first {
        Some(bytes) => {
            print(a.tail.map_or(&bytes[..], |n| last_lines(&bytes, n)));
            bytes.len() as u64
        }
        None if a.follow && running(&task) => 0,
        None if task.result.is_some() && a.attempt.is_none_or(|n| n == task.attempts) => {
            eprintln!(
                "note: no log at {}; showing the result's tail",
                sink.url().attempt_url(step, id, attempt)
            );
            return print_result_tail(&task, a.tail);
        }
        None => anyhow::bail!(
            "no log at {} (the attempt printed nothing yet, or its upload failed)",
            sink.url().attempt_url(step, id, attempt)
        ),
    };
    if !a.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Until the attempt ends; then once more for what its final upload added.
    loop {
        let ended = !running(&get_task(&store, step, id).await?);
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

fn print_result_tail(task: &Task, tail: Option<usize>) -> anyhow::Result<ExitCode> {
    let text = task
        .result
        .as_ref()
        .map(|r| r.log_tail.as_bytes())
        .unwrap_or_default();
    eprintln!(
        "note: only the end of the output is kept in the result of {}/{} (workers store full \
         logs with --log-url)",
        task.step(),
        task.id()
    );
    print(tail.map_or(text, |n| last_lines(text, n)));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{TaskResult, TaskSpec};

    fn task(state: TaskState, attempts: u32, log_url: Option<&str>) -> Task {
        let mut t = Task::new(TaskSpec::new("align", "S1", "true"), 0);
        t.state = state;
        t.attempts = attempts;
        if state != TaskState::Running || attempts > 1 {
            t.result = Some(TaskResult {
                log_tail: "tail".into(),
                log_url: log_url.map(str::to_string),
                ..Default::default()
            });
        }
        t
    }

    #[test]
    fn the_recorded_url_gives_the_base_for_every_attempt() {
        let t = task(TaskState::Running, 3, Some("s3://bkt/run/align/S1/2.log"));
        let base = LogUrl::parse("s3://bkt/run").unwrap();
        assert_eq!(locate(&t, 3, None), Ok(Located::Stored(base.clone())));
        assert_eq!(locate(&t, 1, None), Ok(Located::Stored(base)));
        let other = LogUrl::parse("file:///logs").unwrap();
        assert_eq!(
            locate(&t, 3, Some(&other)),
            Ok(Located::Stored(other.clone()))
        );
    }

    #[test]
    fn without_a_url_only_the_results_own_attempt_has_its_tail() {
        let done = task(TaskState::Failed, 2, None);
        assert_eq!(locate(&done, 2, None), Ok(Located::TailOnly));
        let err = locate(&done, 1, None).unwrap_err();
        assert!(err.contains("--log-url"), "{err}");
        let running = task(TaskState::Running, 1, None);
        assert!(locate(&running, 1, None).unwrap_err().contains("--log-url"));
        let again = task(TaskState::Running, 2, None);
        assert_eq!(locate(&again, 1, None), Ok(Located::TailOnly));
    }

    #[test]
    fn attempts_out_of_range_are_named() {
        let fresh = task(TaskState::Pending, 0, None);
        let err = locate(&fresh, 0, None).unwrap_err();
        assert!(err.contains("has not run yet (it is pending)"), "{err}");
        let t = task(TaskState::Succeeded, 1, None);
        assert!(locate(&t, 2, None).unwrap_err().contains("no attempt 2"));
    }

    #[test]
    fn last_lines_counts_lines_not_bytes() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }
}
