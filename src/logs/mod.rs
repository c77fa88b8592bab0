//! Task logs that outlive the instance: where a worker stores each attempt's full output
//! (`--log-url`) and where `anamo task logs` reads it back.
//!
//! A log URL is `s3://BUCKET/PREFIX` or `file://DIR`. Attempt `N` of task `ID` in step `STEP`
//! is stored as the object (or file) `PREFIX/STEP/ID/N.log`; in `STEP` and `ID` every byte
//! other than `A-Z a-z 0-9 - _ .` is percent-encoded (so is a leading `.`), which keeps keys
//! and paths printable and a file sink inside its directory. [`LogUrl`] (pure: parsing and
//! the key layout) decides; [`LogSink`] does the I/O, on S3 ([`s3`]) or a directory
//! ([`file`]), and has the one error type of this boundary, [`LogError`]. [`read`] is the one
//! reader of a task's log that `anamo task logs` and the status server's
//! `/api/tasks/{step}/{id}/log` share.

pub mod file;
pub mod read;
pub mod s3;

use std::fmt;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncSeekExt};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes of `STEP` and `ID` that are percent-encoded in keys.
const KEY_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

/// Where logs are stored: the base that every attempt's key is under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogUrl {
    /// `s3://BUCKET/PREFIX`; `prefix` has no leading or trailing `/` and may be empty.
    S3 { bucket: String, prefix: String },
    /// `file://DIR`, an absolute directory.
    File { dir: PathBuf },
}

/// How log URLs are written, for error messages.
const URL_FORMS: &str = "`s3://BUCKET/PREFIX` or `file:///ABSOLUTE/DIR`";

impl LogUrl {
    /// Parses `s3://BUCKET[/PREFIX]` or `file://DIR` (an absolute path). Errors say what is
    /// wrong with the URL and how it should look.
    pub fn parse(url: &str) -> Result<LogUrl, LogError> {
        let bad = |why: String| LogError::InvalidUrl(format!("`{url}`: {why}; use {URL_FORMS}"));
        let url = url.trim();
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket).map_err(bad)?;
            let prefix = prefix.trim_matches('/');
            if prefix
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
                && !prefix.is_empty()
            {
                return Err(bad("the prefix has an empty, `.` or `..` segment".into()));
            }
            check_chars(prefix).map_err(bad)?;
            return Ok(LogUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.to_string(),
            });
        }
        if let Some(rest) = url.strip_prefix("file://") {
            // `file:///var/log` (empty host) and `file://localhost/var/log` name a local path.
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(bad(format!(
                    "`{path}` is not an absolute path (`file://` is followed by `/` and the path)"
                )));
            }
            check_chars(path).map_err(bad)?;
            let dir = Path::new(path);
            if dir
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                return Err(bad("the path has a `..` segment".into()));
            }
            return Ok(LogUrl::File {
                dir: dir.to_path_buf(),
            });
        }
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        Err(bad(if scheme.is_empty() {
            "it has no scheme".to_string()
        } else {
            format!("the scheme `{scheme}` is not supported")
        }))
    }

    /// The relative key of an attempt's log: `STEP/ID/ATTEMPT.log` (encoded as the module
    /// documentation says).
    pub fn relative_key(step: &str, id: &str, attempt: u32) -> String {
        format!("{}/{}/{attempt}.log", encode(step), encode(id))
    }

    /// The S3 key of an attempt's log (`PREFIX/STEP/ID/ATTEMPT.log`), or for a directory the
    /// path relative to it.
    pub fn key(&self, step: &str, id: &str, attempt: u32) -> String {
        let rel = Self::relative_key(step, id, attempt);
        match self {
            LogUrl::S3 { prefix, .. } if !prefix.is_empty() => format!("{prefix}/{rel}"),
            _ => rel,
        }
    }

    /// The URL of an attempt's log (`s3://BUCKET/PREFIX/STEP/ID/N.log` or
    /// `file:///DIR/STEP/ID/N.log`), as recorded in the task's result.
    pub fn attempt_url(&self, step: &str, id: &str, attempt: u32) -> String {
        let key = self.key(step, id, attempt);
        match self {
            LogUrl::S3 { bucket, .. } => format!("s3://{bucket}/{key}"),
            LogUrl::File { dir } => format!("file://{}", dir.join(key).display()),
        }
    }

    /// The base URL back from an attempt's log URL recorded in a result (the inverse of
    /// [`LogUrl::attempt_url`] for that step, id and attempt).
    pub fn from_attempt_url(
        url: &str,
        step: &str,
        id: &str,
        attempt: u32,
    ) -> Result<LogUrl, LogError> {
        let suffix = format!("/{}", Self::relative_key(step, id, attempt));
        let base = url.strip_suffix(&suffix).ok_or_else(|| {
            LogError::InvalidUrl(format!(
                "the recorded log URL `{url}` does not end in `{suffix}` (task {step}/{id}, \
                 attempt {attempt}); give the worker's `--log-url` instead"
            ))
        })?;
        let base = if base == "file://" { "file:///" } else { base };
        Self::parse(base)
    }
}

impl fmt::Display for LogUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogUrl::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            LogUrl::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            LogUrl::File { dir } => write!(f, "file://{}", dir.display()),
        }
    }
}

/// S3's bucket naming rules (the ones a typo breaks): 3-63 characters of `a-z 0-9 . -`,
/// starting and ending with a letter or digit.
fn check_bucket(bucket: &str) -> Result<(), String> {
    if bucket.is_empty() {
        return Err("the bucket name is missing".into());
    }
    if !(3..=63).contains(&bucket.len()) {
        return Err(format!(
            "the bucket name `{bucket}` is {} characters long (S3 allows 3 to 63)",
            bucket.len()
        ));
    }
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-';
    if let Some(c) = bucket.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "the bucket name `{bucket}` contains {c:?} (S3 allows a-z, 0-9, `.` and `-`)"
        ));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(bucket.chars().next()) || !edge(bucket.chars().last()) {
        return Err(format!(
            "the bucket name `{bucket}` must start and end with a letter or digit"
        ));
    }
    Ok(())
}

/// Characters a prefix or directory may have: S3's safe key characters (without `'`, so the
/// URL can be passed on in EC2 user data as it is).
fn check_chars(path: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || "-_.!*()/=+,:@~%".contains(c);
    match path.chars().find(|c| !ok(*c)) {
        Some(c) => Err(format!(
            "{c:?} is not allowed in the prefix or path (use letters, digits and - _ . ! * ( ) / \
             = + , : @ ~ %)"
        )),
        None => Ok(()),
    }
}

/// A step or id as one key segment.
fn encode(segment: &str) -> String {
    let encoded = utf8_percent_encode(segment, KEY_ESCAPED).to_string();
    match encoded.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => encoded,
    }
}

/// What went wrong storing or reading a log. [`LogError::kind`] is a bounded label.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("invalid log URL {0}")]
    InvalidUrl(String),
    #[error("no log at {0}")]
    NotFound(String),
    /// The service did not answer, answered 5xx or throttled: worth retrying.
    #[error("log storage unavailable during {operation} of {location}: {message}")]
    Unavailable {
        operation: &'static str,
        location: String,
        message: String,
    },
    #[error("access denied during {operation} of {location}: {message} (the role needs s3:PutObject, s3:GetObject and the multipart actions on the prefix; see manifests/iam-worker-policy.json)")]
    Denied {
        operation: &'static str,
        location: String,
        message: String,
    },
    #[error("cannot {operation} {location}: {message}")]
    Backend {
        operation: &'static str,
        location: String,
        message: String,
    },
    #[error("cannot {operation} {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LogError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            LogError::InvalidUrl(_) => "invalid_url",
            LogError::NotFound(_) => "not_found",
            LogError::Unavailable { .. } => "unavailable",
            LogError::Denied { .. } => "access_denied",
            LogError::Backend { .. } => "backend",
            LogError::Io { .. } => "io",
        }
    }

    /// Whether trying again may help (an outage, throttling, a local I/O hiccup).
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::Unavailable { .. } | LogError::Io { .. })
    }
}

/// Stores and reads attempts' logs under one [`LogUrl`].
#[derive(Debug, Clone)]
pub struct LogSink {
    url: LogUrl,
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    S3(s3::S3Logs),
    File(file::FileLogs),
}

impl LogSink {
    /// A sink for `url`; for S3 with the default AWS configuration (see
    /// [`crate::aws_client::s3_client`]). Nothing is contacted yet.
    pub async fn connect(url: LogUrl) -> LogSink {
        let backend = match &url {
            LogUrl::S3 { bucket, .. } => Backend::S3(s3::S3Logs::new(
                crate::aws_client::s3_client().await,
                bucket.clone(),
            )),
            LogUrl::File { dir } => Backend::File(file::FileLogs::new(dir.clone())),
        };
        LogSink { url, backend }
    }

    /// A sink on S3 with the given client (tests, embedding).
    pub fn with_s3_client(url: LogUrl, client: aws_sdk_s3::Client) -> Result<LogSink, LogError> {
        match &url {
            LogUrl::S3 { bucket, .. } => Ok(LogSink {
                backend: Backend::S3(s3::S3Logs::new(client, bucket.clone())),
                url,
            }),
            LogUrl::File { .. } => {
                Err(LogError::InvalidUrl(format!("`{url}` is not an s3:// URL")))
            }
        }
    }

    pub fn url(&self) -> &LogUrl {
        &self.url
    }

    /// Stores the local file `path` (its length when the call starts; missing: an empty log)
    /// as attempt `attempt` of `step/id`. Returns the bytes stored.
    pub async fn put_file(
        &self,
        step: &str,
        id: &str,
        attempt: u32,
        path: &Path,
    ) -> Result<u64, LogError> {
        let key = self.url.key(step, id, attempt);
        match &self.backend {
            Backend::S3(s) => s.put_file(&key, path).await,
            Backend::File(f) => f.put_file(&key, path).await,
        }
    }

    /// The bytes of an attempt's log from `offset` on; `None` when there is no such log.
    pub async fn read_from(
        &self,
        step: &str,
        id: &str,
        attempt: u32,
        offset: u64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        let key = self.url.key(step, id, attempt);
        match &self.backend {
            Backend::S3(s) => s.read_from(&key, offset).await,
            Backend::File(f) => f.read_from(&key, offset).await,
        }
    }

    /// The last `max` bytes of an attempt's log and its whole length (one request however
    /// long the log is); `None` when there is no such log.
    pub async fn read_last(
        &self,
        step: &str,
        id: &str,
        attempt: u32,
        max: u64,
    ) -> Result<Option<LogEnd>, LogError> {
        let key = self.url.key(step, id, attempt);
        match &self.backend {
            Backend::S3(s) => s.read_last(&key, max).await,
            Backend::File(f) => f.read_last(&key, max).await,
        }
    }
}

/// The end of a stored log: its last bytes and the length of the whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEnd {
    pub bytes: Vec<u8>,
    pub len: u64,
}

/// The first `len` bytes of `path` (its length now when `None`); a missing file reads as
/// empty. A log still being written is read only up to the length it had.
pub(crate) async fn read_prefix(path: &Path, len: Option<u64>) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = match len {
        Some(l) => l,
        None => file.metadata().await?.len(),
    };
    file.rewind().await?;
    let mut buf = Vec::with_capacity(len.min(s3::PART_SIZE) as usize);
    file.take(len).read_to_end(&mut buf).await?;
    Ok(buf)
}

/// Bytes of a step or id kept as they are in a link (RFC 3986's unreserved characters).
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The status server's link to attempt `attempt` of task `step`/`id`'s log:
/// `/api/tasks/{step}/{id}/log?attempt=N`, step and id percent-encoded (`/` too).
pub fn log_href(step: &str, id: &str, attempt: u32) -> String {
    format!(
        "/api/tasks/{}/{}/log?attempt={attempt}",
        utf8_percent_encode(step, PATH_SEGMENT),
        utf8_percent_encode(id, PATH_SEGMENT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls_parse_with_and_without_prefix() {
        assert_eq!(
            LogUrl::parse("s3://my-bucket/runs/2024/").unwrap(),
            LogUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "runs/2024".into()
            }
        );
        let bare = LogUrl::parse("s3://my-bucket").unwrap();
        assert_eq!(bare.key("align", "S1", 2), "align/S1/2.log");
        assert_eq!(bare.to_string(), "s3://my-bucket");
    }

    #[test]
    fn keys_follow_the_documented_layout() {
        let url = LogUrl::parse("s3://logs.example/anamo/run1").unwrap();
        assert_eq!(url.key("align", "S1", 3), "anamo/run1/align/S1/3.log");
        assert_eq!(
            url.attempt_url("align", "S1", 3),
            "s3://logs.example/anamo/run1/align/S1/3.log"
        );
        let dir = LogUrl::parse("file:///var/log/anamo").unwrap();
        assert_eq!(
            dir.attempt_url("call", "S 2", 1),
            "file:///var/log/anamo/call/S%202/1.log"
        );
    }

    #[test]
    fn awkward_ids_are_encoded_and_stay_inside() {
        let url = LogUrl::parse("file:///logs").unwrap();
        assert_eq!(url.key("a", "..", 1), "a/%2E./1.log");
        assert_eq!(url.key("a", "x/../../etc", 1), "a/x%2F..%2F..%2Fetc/1.log");
        assert_eq!(url.key("a", ".hidden", 1), "a/%2Ehidden/1.log");
        assert_eq!(url.key("a", "é", 1), "a/%C3%A9/1.log");
        assert_ne!(url.key("a", "a/b", 1), url.key("a", "a_b", 1));
    }

    #[test]
    fn attempt_urls_give_back_their_base() {
        for base in [
            "s3://bkt/p/q",
            "s3://bkt",
            "file:///var/log/anamo",
            "file:///",
        ] {
            let url = LogUrl::parse(base).unwrap();
            let recorded = url.attempt_url("align", "S/1", 4);
            let back = LogUrl::from_attempt_url(&recorded, "align", "S/1", 4).unwrap();
            assert_eq!(back, url, "{recorded}");
            assert_eq!(back.attempt_url("align", "S/1", 4), recorded);
        }
        let err = LogUrl::from_attempt_url("s3://bkt/other.log", "align", "S1", 1).unwrap_err();
        assert_eq!(err.kind(), "invalid_url");
        assert!(err.to_string().contains("--log-url"), "{err}");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let cases = [
            ("logs/dir", "has no scheme"),
            ("http://example.com/x", "scheme `http` is not supported"),
            ("s3://", "bucket name is missing"),
            ("s3:///prefix", "bucket name is missing"),
            ("s3://My_Bucket/x", "contains 'M'"),
            ("s3://ab", "2 characters long"),
            ("s3://-abc", "start and end with a letter or digit"),
            ("s3://bkt/a//b", "empty, `.` or `..` segment"),
            ("s3://bkt/a/../b", "empty, `.` or `..` segment"),
            ("file://relative/dir", "not an absolute path"),
            ("file:///a/../b", "`..` segment"),
            ("s3://bkt/it's", "'\\'' is not allowed"),
            ("file:///my logs", "' ' is not allowed"),
        ];
        for (url, want) in cases {
            let err = LogUrl::parse(url).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.kind(), "invalid_url");
            assert!(msg.contains(want), "{url}: {msg}");
            assert!(msg.contains("s3://BUCKET/PREFIX"), "{url}: {msg}");
        }
    }
}
