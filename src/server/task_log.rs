//! `GET /api/tasks/{step}/{id}/log?attempt=N&tail=N`: an attempt's log as `text/plain`, read
//! as `anamo task logs` reads it ([`crate::logs::read`]), at most its last [`LOG_MAX_BYTES`].
//!
//! Steps and ids may contain `/` (`NA12878/chr1`): links percent-encode them ([`log_href`])
//! and the handler gets them decoded. Headers say what the body is: `x-anamo-log-attempt`,
//! `x-anamo-log-url` (absent when the body is the result's tail) and `x-anamo-log-note` (why
//! the log is partial or missing, `; `-separated). 404 when the task, the attempt or its log
//! does not exist; 503 when the store or the log storage does not answer; 502 when the log
//! storage refuses.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::OnceCell;

use super::AppState;
pub use crate::logs::log_href;
use crate::logs::read::{read_task_log, LogReadError, LogRequest};
use crate::logs::{LogError, LogUrl};
use crate::manifest::ManifestSet;
use crate::store::SharedStore;

/// The most of a log one request returns: its last bytes, from their first whole line.
pub const LOG_MAX_BYTES: u64 = 1024 * 1024;

/// What the log endpoint reads with: the task store, each step's `logUrl` from the
/// manifests the controller started with (for a first attempt that has no result yet), and
/// one S3 client, made from the environment at the first read from S3.
#[derive(Clone)]
pub struct TaskLogs {
    pub store: SharedStore,
    pub log_urls: BTreeMap<String, LogUrl>,
    pub s3: Arc<OnceCell<aws_sdk_s3::Client>>,
}

impl TaskLogs {
    /// `store`, and the `logUrl` of each fleet of `set` that has a valid one.
    pub fn new(store: SharedStore, set: &ManifestSet) -> TaskLogs {
        let log_urls = set
            .fleets
            .iter()
            .filter_map(|f| {
                let url = LogUrl::parse(f.spec.log_url.as_deref()?).ok()?;
                Some((f.step().to_string(), url))
            })
            .collect();
        TaskLogs::with_urls(store, log_urls)
    }

    /// `store` and the given steps' `logUrl`s.
    pub fn with_urls(store: SharedStore, log_urls: BTreeMap<String, LogUrl>) -> TaskLogs {
        TaskLogs {
            store,
            log_urls,
            s3: Arc::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct LogQuery {
    attempt: Option<u32>,
    tail: Option<usize>,
}

pub(super) async fn task_log(
    State(s): State<AppState>,
    Path((step, id)): Path<(String, String)>,
    Query(q): Query<LogQuery>,
) -> Response {
    let s3 = s.logs.s3.get_or_init(crate::aws_client::s3_client).await;
    let req = LogRequest {
        step: &step,
        id: &id,
        attempt: q.attempt,
        fallback: s.logs.log_urls.get(&step),
        tail: q.tail,
        max_bytes: Some(LOG_MAX_BYTES),
        s3: Some(s3),
        ..LogRequest::default()
    };
    let log = match read_task_log(s.logs.store.as_ref(), &req).await {
        Ok(log) => log,
        Err(e) => return error_response(&e),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        HeaderName::from_static("x-anamo-log-attempt"),
        HeaderValue::from(log.attempt),
    );
    if let Some(url) = log.origin.url(&step, &id, log.attempt) {
        headers.insert(
            HeaderName::from_static("x-anamo-log-url"),
            header_text(&url),
        );
    }
    let mut notes = log.notes;
    if matches!(log.origin, crate::logs::read::LogOrigin::Pending { .. }) {
        notes.push(format!(
            "attempt {} is running and has stored no output yet",
            log.attempt
        ));
    }
    if !notes.is_empty() {
        headers.insert(
            HeaderName::from_static("x-anamo-log-note"),
            header_text(&notes.join("; ")),
        );
    }
    (StatusCode::OK, headers, log.text).into_response()
}

/// `text` as a header value: bytes a header cannot carry become `?`.
fn header_text(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("?"))
}

/// The status for `e` and its message as the body.
fn error_response(e: &LogReadError) -> Response {
    let status = match e {
        _ if e.is_not_found() => StatusCode::NOT_FOUND,
        LogReadError::Store { .. }
        | LogReadError::Storage(LogError::Unavailable { .. } | LogError::Io { .. }) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        LogReadError::Storage(LogError::InvalidUrl(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_GATEWAY,
    };
    tracing::warn!(error = %e, kind = e.kind(), "cannot serve a task log");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{e}\n"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_encode_slashes_and_spaces() {
        assert_eq!(
            log_href("call", "NA12878/chr1", 2),
            "/api/tasks/call/NA12878%2Fchr1/log?attempt=2"
        );
        assert_eq!(
            log_href("a b", "x?y#z%", 1),
            "/api/tasks/a%20b/x%3Fy%23z%25/log?attempt=1"
        );
        assert_eq!(
            log_href("s-1_.~", "é", 3),
            "/api/tasks/s-1_.~/%C3%A9/log?attempt=3"
        );
    }
}
