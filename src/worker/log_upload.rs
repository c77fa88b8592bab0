//! Storing an attempt's log with `--log-url`: while the task runs, its growing local log is
//! uploaded every `--log-upload-interval` (or as soon as it grew by [`GROWTH_TRIGGER`]), so it
//! can be followed; when the task ends, the whole log is uploaded once more, retried with
//! backoff for at most `--log-upload-timeout`. An upload that fails never costs the result:
//! the result is recorded anyway and says why its log is missing or incomplete.
//!
//! Whether to upload ([`upload_due`]) and what the result says ([`outcome`]) are decided by
//! pure functions; the rest is the thin async shell around [`LogSink`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::Ctx;
use crate::logs::{LogError, LogSink};

/// A running task's log is uploaded as soon as it grew by this much since the last upload,
/// whatever the interval.
pub(crate) const GROWTH_TRIGGER: u64 = 8 * 1024 * 1024;

/// What the result records about the stored log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct LogStored {
    /// Where the log is (also when only an earlier, incomplete copy got there).
    pub url: Option<String>,
    /// Why the log is missing or incomplete.
    pub error: Option<String>,
}

/// One attempt's log on its way to the sink.
#[derive(Debug)]
pub(crate) struct AttemptLog {
    sink: LogSink,
    step: String,
    id: String,
    attempt: u32,
    path: PathBuf,
    budget: Duration,
    stop: watch::Sender<bool>,
    periodic: Option<JoinHandle<bool>>,
    /// Whether a periodic upload stored a copy.
    stored_copy: bool,
}

impl AttemptLog {
    /// Starts the periodic uploads of attempt `attempt` of `step/id`, whose output goes to
    /// `path`; `None` when the worker has no `--log-url`.
    pub(crate) fn start(
        ctx: &Ctx,
        step: &str,
        id: &str,
        attempt: u32,
        path: &Path,
    ) -> Option<AttemptLog> {
        let sink = ctx.log_sink.clone()?;
        let (stop, stopped) = watch::channel(false);
        let mut log = AttemptLog {
            sink,
            step: step.to_string(),
            id: id.to_string(),
            attempt,
            path: path.to_path_buf(),
            budget: ctx.cfg.log_upload_timeout,
            stop,
            periodic: None,
            stored_copy: false,
        };
        log.periodic = Some(tokio::spawn(
            log.clone_parts()
                .periodic(ctx.cfg.log_upload_interval, stopped),
        ));
        Some(log)
    }

    fn clone_parts(&self) -> Uploader {
        Uploader {
            sink: self.sink.clone(),
            step: self.step.clone(),
            id: self.id.clone(),
            attempt: self.attempt,
            path: self.path.clone(),
        }
    }

    /// Ends the periodic uploads, waiting (at most the upload budget) for one in flight, so
    /// no older copy can land after the final one.
    pub(crate) async fn stop_periodic(&mut self) {
        let _ = self.stop.send(true);
        if let Some(mut handle) = self.periodic.take() {
            match tokio::time::timeout(self.budget, &mut handle).await {
                Ok(Ok(stored)) => self.stored_copy |= stored,
                Ok(Err(_)) => {}
                Err(_) => handle.abort(),
            }
        }
    }

    /// Uploads the whole log, retrying transient failures with backoff within the budget,
    /// and says what the result should record.
    pub(crate) async fn finish(mut self) -> LogStored {
        self.stop_periodic().await;
        let url = self
            .sink
            .url()
            .attempt_url(&self.step, &self.id, self.attempt);
        let t0 = Instant::now();
        let (result, tries) = self.clone_parts().put_with_retries(self.budget).await;
        if let Err(e) = &result {
            tracing::warn!(
                step = %self.step, id = %self.id, attempt = self.attempt, log = %url,
                kind = e.kind(), error = %e, tries,
                "cannot store the task's log; the result is recorded without it"
            );
        }
        outcome(
            &url,
            result.as_ref().err(),
            tries,
            t0.elapsed(),
            self.stored_copy,
        )
    }
}

/// What the result records, from how the final upload went.
pub(crate) fn outcome(
    url: &str,
    failure: Option<&LogError>,
    tries: u32,
    took: Duration,
    stored_copy: bool,
) -> LogStored {
    let Some(e) = failure else {
        return LogStored {
            url: Some(url.to_string()),
            error: None,
        };
    };
    let copy = if stored_copy {
        format!("{url} holds an earlier, incomplete copy")
    } else {
        "nothing was stored".to_string()
    };
    LogStored {
        url: stored_copy.then(|| url.to_string()),
        error: Some(format!(
            "log not stored ({} after {tries} tr{} in {:.1}s: {e}); {copy}; the end of the \
             output is in the log tail",
            e.kind(),
            if tries == 1 { "y" } else { "ies" },
            took.as_secs_f64()
        )),
    }
}

/// Whether a running task's log of `len` bytes is due for an upload, `since` after the last
/// one (which stored `uploaded` bytes).
pub(crate) fn upload_due(len: u64, uploaded: u64, since: Duration, every: Duration) -> bool {
    (len != uploaded && since >= every) || len.saturating_sub(uploaded) >= GROWTH_TRIGGER
}

/// What an upload needs, owned, for the periodic task.
struct Uploader {
    sink: LogSink,
    step: String,
    id: String,
    attempt: u32,
    path: PathBuf,
}

impl Uploader {
    async fn put(&self) -> Result<u64, LogError> {
        self.sink
            .put_file(&self.step, &self.id, self.attempt, &self.path)
            .await
    }

    /// Uploads until it succeeds, fails for good or `budget` is used up; returns the last
    /// result and the number of tries.
    async fn put_with_retries(&self, budget: Duration) -> (Result<u64, LogError>, u32) {
        let deadline = Instant::now() + budget;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let mut tries = 0;
        loop {
            tries += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(left, self.put()).await {
                Ok(r) => r,
                Err(_) => Err(LogError::Unavailable {
                    operation: "upload",
                    location: self.sink.url().to_string(),
                    message: format!(
                        "no answer within the {} of --log-upload-timeout",
                        humantime::format_duration(budget)
                    ),
                }),
            };
            match result {
                Err(e) if e.is_transient() => {
                    let pause = backoff.next_delay();
                    if Instant::now() + pause >= deadline {
                        return (Err(e), tries);
                    }
                    tracing::debug!(error = %e, tries, "log upload failed; retrying");
                    tokio::time::sleep(pause).await;
                }
                done => return (done, tries),
            }
        }
    }

    /// Uploads the growing log when [`upload_due`] says so, until told to stop; returns
    /// whether a copy was stored.
    async fn periodic(self, every: Duration, mut stop: watch::Receiver<bool>) -> bool {
        let tick = every.min(Duration::from_secs(1));
        let (mut uploaded, mut last) = (0u64, Instant::now());
        let mut stored = false;
        loop {
            tokio::select! {
                _ = stop.changed() => return stored,
                _ = tokio::time::sleep(tick) => {}
            }
            let len = tokio::fs::metadata(&self.path)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            if !upload_due(len, uploaded, last.elapsed(), every) {
                continue;
            }
            last = Instant::now();
            match self.put().await {
                Ok(n) => {
                    uploaded = n;
                    stored = true;
                }
                Err(e) => tracing::warn!(
                    step = %self.step, id = %self.id, attempt = self.attempt,
                    kind = e.kind(), error = %e,
                    "cannot upload the running task's log; trying again later"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_are_due_by_time_with_news_or_by_growth() {
        let s = Duration::from_secs;
        assert!(!upload_due(0, 0, s(60), s(30)), "nothing printed yet");
        assert!(!upload_due(10, 0, s(29), s(30)), "too soon");
        assert!(upload_due(10, 0, s(30), s(30)));
        assert!(!upload_due(10, 10, s(90), s(30)), "nothing new");
        assert!(
            upload_due(GROWTH_TRIGGER + 10, 10, s(1), s(30)),
            "grew a lot"
        );
        // A log that was replaced by a shorter one (same attempt run again) is sent again.
        assert!(upload_due(5, 10, s(30), s(30)));
    }

    #[test]
    fn results_say_why_a_log_is_missing() {
        let url = "s3://bkt/p/align/S1/2.log";
        let ok = outcome(url, None, 1, Duration::from_millis(30), false);
        assert_eq!(ok.url.as_deref(), Some(url));
        assert_eq!(ok.error, None);
        let e = LogError::Unavailable {
            operation: "PutObject",
            location: url.into(),
            message: "connection refused".into(),
        };
        let lost = outcome(url, Some(&e), 4, Duration::from_secs(2), false);
        assert_eq!(lost.url, None);
        let msg = lost.error.unwrap();
        assert!(
            msg.starts_with("log not stored (unavailable after 4 tries in 2.0s"),
            "{msg}"
        );
        assert!(msg.contains("connection refused") && msg.contains("nothing was stored"));
        let partial = outcome(url, Some(&e), 1, Duration::from_secs(1), true);
        assert_eq!(partial.url.as_deref(), Some(url));
        assert!(partial.error.unwrap().contains("1 try in 1.0s"));
    }
}
