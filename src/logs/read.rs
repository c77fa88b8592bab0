//! Reading one attempt's log of a task: the one code path of `anamo task logs` and the status
//! server's `/api/tasks/{step}/{id}/log`.
//!
//! Where the log is ([`locate`]) and which lines to show ([`last_lines`], [`from_line_start`])
//! are pure; [`read_task_log`] reads the task from the store and its log from the sink (S3 or
//! a directory), else the last 4 KB kept in the task's result.

use super::{LogEnd, LogError, LogSink, LogUrl};
use crate::model::{Task, TaskState};
use crate::store::{StoreError, TaskStore};

/// What to read of a task's log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogRequest<'a> {
    pub step: &'a str,
    pub id: &'a str,
    /// Which attempt (1 is the first) [default: the latest].
    pub attempt: Option<u32>,
    /// Read under this base URL, whatever the result recorded (`task logs --log-url`).
    pub given: Option<&'a LogUrl>,
    /// Where the step's workers store logs (its fleet's `logUrl`): used when the task's
    /// result records no log URL (a first attempt still running).
    pub fallback: Option<&'a LogUrl>,
    /// Only the last N lines.
    pub tail: Option<usize>,
    /// Read at most the last this many bytes of a stored log (from the first line that
    /// starts in them) [default: all of it].
    pub max_bytes: Option<u64>,
    /// The S3 client to read with [default: one from the environment, made for this read].
    pub s3: Option<&'a aws_sdk_s3::Client>,
}

/// An attempt's log as read.
#[derive(Debug)]
pub struct TaskLog {
    /// The task as read from the store.
    pub task: Task,
    pub attempt: u32,
    /// The text to show (the request's `tail` and `max_bytes` applied).
    pub text: Vec<u8>,
    pub origin: LogOrigin,
    /// What the reader should know besides the text (the upload failed, only the result's
    /// tail is kept, the beginning was left out), one sentence each.
    pub notes: Vec<String>,
}

/// Where a [`TaskLog`]'s text came from.
#[derive(Debug)]
pub enum LogOrigin {
    /// The stored log; `next` is its length when read (where to follow it from).
    Stored { sink: LogSink, next: u64 },
    /// Nothing stored yet while the attempt runs (its worker uploads periodically).
    Pending { sink: LogSink },
    /// The last 4 KB kept in the task's result: no log was stored.
    ResultTail,
}

impl LogOrigin {
    /// The attempt's log URL, or `None` for the result's tail.
    pub fn url(&self, step: &str, id: &str, attempt: u32) -> Option<String> {
        match self {
            LogOrigin::Stored { sink, .. } | LogOrigin::Pending { sink } => {
                Some(sink.url().attempt_url(step, id, attempt))
            }
            LogOrigin::ResultTail => None,
        }
    }
}

/// Why a task's log cannot be read. [`LogReadError::kind`] is a bounded label;
/// [`LogReadError::is_not_found`] says whether the task or the attempt's log does not exist.
#[derive(Debug, thiserror::Error)]
pub enum LogReadError {
    #[error("task {step}/{id} not found (see `anamo task list --step {step}`)")]
    TaskNotFound { step: String, id: String },
    #[error("task {name} has not run yet (it is {state})")]
    NotRun { name: String, state: TaskState },
    #[error("task {name} has no attempt {attempt}: it ran {attempts} time(s)")]
    NoAttempt {
        name: String,
        attempt: u32,
        attempts: u32,
    },
    #[error(
        "no log of task {name} attempt {attempt} is recorded (its worker had no `--log-url`, \
         or the attempt has not finished); give `--log-url` (the fleet's `logUrl`) to read it \
         from where the workers store logs"
    )]
    NotRecorded { name: String, attempt: u32 },
    #[error("no log at {url} (the attempt printed nothing yet, or its upload failed)")]
    NoLog { url: String },
    #[error("cannot read task {step}/{id} from the store: {source}")]
    Store {
        step: String,
        id: String,
        #[source]
        source: Box<StoreError>,
    },
    #[error(transparent)]
    Storage(#[from] LogError),
}

impl LogReadError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LogReadError::TaskNotFound { .. } => "task_not_found",
            LogReadError::NotRun { .. } => "not_run",
            LogReadError::NoAttempt { .. } => "no_attempt",
            LogReadError::NotRecorded { .. } => "not_recorded",
            LogReadError::NoLog { .. } => "no_log",
            LogReadError::Store { .. } => "store",
            LogReadError::Storage(e) => e.kind(),
        }
    }

    /// Whether the task, the attempt or its log does not exist (rather than a service failed).
    pub fn is_not_found(&self) -> bool {
        !matches!(
            self,
            LogReadError::Store { .. }
                | LogReadError::Storage(LogError::InvalidUrl(_))
                | LogReadError::Storage(LogError::Unavailable { .. })
                | LogReadError::Storage(LogError::Denied { .. })
                | LogReadError::Storage(LogError::Backend { .. })
                | LogReadError::Storage(LogError::Io { .. })
        )
    }
}

/// Where an attempt's log can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// Stored under this base URL.
    Stored(LogUrl),
    /// Only the result's tail (the worker stored no log).
    TailOnly,
}

/// Decides where attempt `attempt` of `task` is: under `given`, else under the base of the URL
/// recorded in the result, else under `fallback`, else in the result's tail when that result
/// is of this attempt. Errors say why nothing can be read and what to do.
pub fn locate(
    task: &Task,
    attempt: u32,
    given: Option<&LogUrl>,
    fallback: Option<&LogUrl>,
) -> Result<Located, LogReadError> {
    let name = format!("{}/{}", task.step(), task.id());
    if task.attempts == 0 {
        return Err(LogReadError::NotRun {
            name,
            state: task.state,
        });
    }
    if attempt == 0 || attempt > task.attempts {
        return Err(LogReadError::NoAttempt {
            name,
            attempt,
            attempts: task.attempts,
        });
    }
    if let Some(url) = given {
        return Ok(Located::Stored(url.clone()));
    }
    let result = task.result.as_ref();
    if let Some(recorded) = result.and_then(|r| r.log_url.as_deref()) {
        let n = recorded_attempt(recorded).ok_or_else(|| {
            LogError::InvalidUrl(format!(
                "the recorded log URL `{recorded}` does not end in `/N.log`"
            ))
        })?;
        let base = LogUrl::from_attempt_url(recorded, task.step(), task.id(), n)?;
        return Ok(Located::Stored(base));
    }
    if let Some(url) = fallback {
        return Ok(Located::Stored(url.clone()));
    }
    match result {
        Some(_) if result_attempt(task) == Some(attempt) => Ok(Located::TailOnly),
        _ => Err(LogReadError::NotRecorded { name, attempt }),
    }
}

/// The attempt the task's result is of: the one before a running attempt, else the last;
/// `None` without a result, or when the attempts were reset (a requeued task keeps its last
/// result with no attempt to show it under).
pub fn result_attempt(task: &Task) -> Option<u32> {
    task.result.as_ref()?;
    let n = if task.state == TaskState::Running {
        task.attempts.checked_sub(1)
    } else {
        Some(task.attempts)
    };
    n.filter(|n| *n > 0)
}

/// Whether attempt `attempt` of `task` is the one running now.
pub fn is_running(task: &Task, attempt: u32) -> bool {
    task.state == TaskState::Running && task.attempts == attempt
}

/// Where the log of a task's latest attempt is, for listings (`sample show`, the status page).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogRef {
    /// The running attempt, else the one the result is of.
    pub attempt: u32,
    /// The attempt's log (`s3://...`, `file://...`) when its worker stores logs and one was
    /// recorded (for a running attempt: by an earlier one).
    pub url: Option<String>,
    /// Only the last 4 KB kept in the result hold the output (no log was stored).
    pub in_result: bool,
}

/// The [`LogRef`] of `task`, when it runs or has a result.
pub fn log_ref(task: &Task) -> Option<LogRef> {
    let attempt = if task.state == TaskState::Running {
        task.attempts
    } else {
        result_attempt(task)?
    };
    let (url, in_result) = match locate(task, attempt, None, None) {
        Ok(Located::Stored(base)) => (
            Some(base.attempt_url(task.step(), task.id(), attempt)),
            false,
        ),
        Ok(Located::TailOnly) => (None, true),
        Err(_) => (None, false),
    };
    Some(LogRef {
        attempt,
        url,
        in_result,
    })
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

/// The end of a log read from somewhere inside it: from its first whole line (all of it when
/// it has no line break, or when nothing before it was left out).
pub fn from_line_start(end: &LogEnd) -> &[u8] {
    let skipped = end.len.saturating_sub(end.bytes.len() as u64);
    if skipped == 0 {
        return &end.bytes;
    }
    match end.bytes.iter().position(|b| *b == b'\n') {
        Some(i) if i + 1 < end.bytes.len() => &end.bytes[i + 1..],
        _ => &end.bytes,
    }
}

/// Reads `req`'s task from `store` and its attempt's log from wherever it is.
pub async fn read_task_log(
    store: &dyn TaskStore,
    req: &LogRequest<'_>,
) -> Result<TaskLog, LogReadError> {
    let task = store
        .get(req.step, req.id)
        .await
        .map_err(|source| LogReadError::Store {
            step: req.step.to_string(),
            id: req.id.to_string(),
            source: Box::new(source),
        })?
        .ok_or_else(|| LogReadError::TaskNotFound {
            step: req.step.to_string(),
            id: req.id.to_string(),
        })?;
    let attempt = req.attempt.unwrap_or(task.attempts);
    let located = locate(&task, attempt, req.given, req.fallback)?;
    let mut notes = Vec::new();
    if result_attempt(&task) == Some(attempt) {
        if let Some(why) = task.result.as_ref().and_then(|r| r.log_error.as_deref()) {
            notes.push(why.to_string());
        }
    }
    match located {
        Located::TailOnly => Ok(result_tail(task, attempt, req.tail, notes)),
        Located::Stored(url) => {
            let sink = match (req.s3, &url) {
                (Some(client), LogUrl::S3 { .. }) => LogSink::with_s3_client(url, client.clone())?,
                _ => LogSink::connect(url).await,
            };
            read_stored(task, attempt, sink, req, notes).await
        }
    }
}

/// The attempt's log from `sink`; a missing one is pending while the attempt runs, else the
/// result's tail when the result is of this attempt.
async fn read_stored(
    task: Task,
    attempt: u32,
    sink: LogSink,
    req: &LogRequest<'_>,
    mut notes: Vec<String>,
) -> Result<TaskLog, LogReadError> {
    let (step, id) = (task.step(), task.id());
    let found = match req.max_bytes {
        Some(max) => sink.read_last(step, id, attempt, max).await?,
        None => sink
            .read_from(step, id, attempt, 0)
            .await?
            .map(|bytes| LogEnd {
                len: bytes.len() as u64,
                bytes,
            }),
    };
    let url = sink.url().attempt_url(step, id, attempt);
    let Some(end) = found else {
        if is_running(&task, attempt) {
            let origin = LogOrigin::Pending { sink };
            return Ok(TaskLog {
                task,
                attempt,
                text: Vec::new(),
                origin,
                notes,
            });
        }
        if result_attempt(&task) != Some(attempt) {
            return Err(LogReadError::NoLog { url });
        }
        notes.push(format!("no log at {url}; showing the result's tail"));
        return Ok(result_tail(task, attempt, req.tail, notes));
    };
    let shown = from_line_start(&end);
    if shown.len() as u64 != end.len {
        notes.push(format!(
            "the log has {} bytes: only its last {} are shown (`anamo task logs {step} {id} \
             --attempt {attempt}` prints it all)",
            end.len,
            shown.len()
        ));
    }
    let text = req.tail.map_or(shown, |n| last_lines(shown, n)).to_vec();
    let next = end.len;
    Ok(TaskLog {
        task,
        attempt,
        text,
        origin: LogOrigin::Stored { sink, next },
        notes,
    })
}

fn result_tail(task: Task, attempt: u32, tail: Option<usize>, mut notes: Vec<String>) -> TaskLog {
    notes.push(format!(
        "only the end of the output is kept in the result of {}/{} (workers store full logs \
         with --log-url)",
        task.step(),
        task.id()
    ));
    let all = task.result.as_ref().map(|r| r.log_tail.as_bytes());
    let all = all.unwrap_or_default();
    let text = tail.map_or(all, |n| last_lines(all, n)).to_vec();
    TaskLog {
        task,
        attempt,
        text,
        origin: LogOrigin::ResultTail,
        notes,
    }
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

    fn err(r: Result<Located, LogReadError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn the_recorded_url_gives_the_base_for_every_attempt() {
        let t = task(TaskState::Running, 3, Some("s3://bkt/run/align/S1/2.log"));
        let base = LogUrl::parse("s3://bkt/run").unwrap();
        let other = LogUrl::parse("file:///logs").unwrap();
        let stored = Located::Stored(base.clone());
        assert_eq!(locate(&t, 3, None, None).unwrap(), stored);
        assert_eq!(locate(&t, 1, None, Some(&other)).unwrap(), stored);
        assert_eq!(
            locate(&t, 3, Some(&other), None).unwrap(),
            Located::Stored(other.clone())
        );
    }

    #[test]
    fn without_a_url_only_the_results_own_attempt_has_its_tail() {
        let done = task(TaskState::Failed, 2, None);
        assert_eq!(locate(&done, 2, None, None).unwrap(), Located::TailOnly);
        assert!(err(locate(&done, 1, None, None)).contains("--log-url"));
        let running = task(TaskState::Running, 1, None);
        assert!(err(locate(&running, 1, None, None)).contains("--log-url"));
        let again = task(TaskState::Running, 2, None);
        assert_eq!(locate(&again, 1, None, None).unwrap(), Located::TailOnly);
        let e = locate(&again, 2, None, None).unwrap_err();
        assert_eq!((e.kind(), e.is_not_found()), ("not_recorded", true));
    }

    #[test]
    fn the_fleets_url_serves_an_attempt_nothing_recorded() {
        let fleet = LogUrl::parse("s3://bkt/fleet").unwrap();
        let running = task(TaskState::Running, 1, None);
        assert_eq!(
            locate(&running, 1, None, Some(&fleet)).unwrap(),
            Located::Stored(fleet)
        );
    }

    #[test]
    fn attempts_out_of_range_are_named() {
        let fresh = task(TaskState::Pending, 0, None);
        let e = err(locate(&fresh, 0, None, None));
        assert!(e.contains("has not run yet (it is pending)"), "{e}");
        let t = task(TaskState::Succeeded, 1, None);
        assert!(err(locate(&t, 2, None, None)).contains("no attempt 2"));
        assert!(err(locate(&t, 0, None, None)).contains("no attempt 0"));
    }

    #[test]
    fn a_bad_recorded_url_is_not_a_missing_log() {
        let t = task(TaskState::Failed, 1, Some("s3://bkt/elsewhere.txt"));
        let e = locate(&t, 1, None, None).unwrap_err();
        assert_eq!((e.kind(), e.is_not_found()), ("invalid_url", false));
    }

    #[test]
    fn log_refs_name_the_attempt_and_where_its_log_is() {
        let fresh = task(TaskState::Pending, 0, None);
        assert_eq!(log_ref(&fresh), None);
        let stored = task(TaskState::Failed, 2, Some("s3://bkt/run/align/S1/2.log"));
        let want = |attempt, url: Option<&str>, in_result| LogRef {
            attempt,
            url: url.map(str::to_string),
            in_result,
        };
        assert_eq!(
            log_ref(&stored),
            Some(want(2, Some("s3://bkt/run/align/S1/2.log"), false))
        );
        let again = task(TaskState::Running, 3, Some("s3://bkt/run/align/S1/2.log"));
        assert_eq!(
            log_ref(&again),
            Some(want(3, Some("s3://bkt/run/align/S1/3.log"), false))
        );
        let tail_only = task(TaskState::Succeeded, 1, None);
        assert_eq!(log_ref(&tail_only), Some(want(1, None, true)));
        let first = task(TaskState::Running, 1, None);
        assert_eq!(log_ref(&first), Some(want(1, None, false)));
    }

    #[test]
    fn last_lines_counts_lines_not_bytes() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 2), b"b\nc");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\nb\n", 0), b"");
        assert_eq!(last_lines(b"", 3), b"");
    }

    #[test]
    fn a_cut_log_starts_at_its_first_whole_line() {
        let end = |bytes: &[u8], len| LogEnd {
            bytes: bytes.to_vec(),
            len,
        };
        assert_eq!(from_line_start(&end(b"ne\ntwo\n", 9)), b"two\n");
        assert_eq!(from_line_start(&end(b"one\ntwo\n", 8)), b"one\ntwo\n");
        assert_eq!(from_line_start(&end(b"no break", 100)), b"no break");
        assert_eq!(from_line_start(&end(b"last\n", 100)), b"last\n");
    }
}
