//! Logs in S3 (`s3://BUCKET/PREFIX`): a log up to [`PART_SIZE`] is one `PutObject`, a larger
//! one a multipart upload of [`PART_SIZE`] parts (aborted when a part fails, so no partial
//! upload is left to pay for). Reads use `GetObject` with a byte range, so following a log
//! fetches only what is new.

use std::path::Path;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use aws_sdk_s3::operation::get_object::GetObjectOutput;

use super::{LogEnd, LogError};

/// Logs larger than this are sent as a multipart upload of parts this size (S3's smallest
/// part is 5 MiB).
pub const PART_SIZE: u64 = 8 * 1024 * 1024;

/// Error codes that mean "try again later".
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
];
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
];

#[derive(Debug, Clone)]
pub(crate) struct S3Logs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Logs {
    pub(crate) fn new(client: aws_sdk_s3::Client, bucket: String) -> Self {
        S3Logs { client, bucket }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    fn err<E>(&self, operation: &'static str, key: &str, e: SdkError<E, HttpResponse>) -> LogError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_sdk_err(operation, self.location(key), e)
    }

    /// Stores `path` as it is when the call starts (a missing file is an empty log).
    pub(crate) async fn put_file(&self, key: &str, path: &Path) -> Result<u64, LogError> {
        let len = file_len(path).await.map_err(io_err(path))?;
        if len <= PART_SIZE {
            let data = super::read_prefix(path, Some(len))
                .await
                .map_err(io_err(path))?;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type("text/plain; charset=utf-8")
                .body(ByteStream::from(data))
                .send()
                .await
                .map_err(|e| self.err("PutObject", key, e))?;
            return Ok(len);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("text/plain; charset=utf-8")
            .send()
            .await
            .map_err(|e| self.err("CreateMultipartUpload", key, e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        match self.upload_parts(key, &upload_id, path, len).await {
            Ok(()) => Ok(len),
            Err(e) => {
                // Best effort: an upload left behind only costs storage until S3's lifecycle
                // rule (if any) removes it.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        len: u64,
    ) -> Result<(), LogError> {
        let mut file = tokio::fs::File::open(path).await.map_err(io_err(path))?;
        let mut parts = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < len {
            let size = PART_SIZE.min(len - offset);
            let mut buf = Vec::with_capacity(size as usize);
            (&mut file)
                .take(size)
                .read_to_end(&mut buf)
                .await
                .map_err(io_err(path))?;
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| self.err("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .part_number(number)
                    .build(),
            );
            offset += size;
            number += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.err("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    pub(crate) async fn read_from(
        &self,
        key: &str,
        offset: u64,
    ) -> Result<Option<Vec<u8>>, LogError> {
        let mut get = self.client.get_object().bucket(&self.bucket).key(key);
        if offset > 0 {
            get = get.range(format!("bytes={offset}-"));
        }
        let out = match get.send().await {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
            // Nothing at or past `offset` yet.
            Err(e) if offset > 0 && is_invalid_range(&e) => return Ok(Some(Vec::new())),
            Err(e) => return Err(self.err("GetObject", key, e)),
        };
        self.body(key, out).await.map(Some)
    }

    /// The last `max` bytes (at least 1) of `key` and its whole length, with one suffix-range
    /// `GetObject`.
    pub(crate) async fn read_last(&self, key: &str, max: u64) -> Result<Option<LogEnd>, LogError> {
        let get = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes=-{}", max.max(1)));
        let out = match get.send().await {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
            // An empty object has no last bytes to give.
            Err(e) if is_invalid_range(&e) => {
                return Ok(Some(LogEnd {
                    bytes: Vec::new(),
                    len: 0,
                }))
            }
            Err(e) => return Err(self.err("GetObject", key, e)),
        };
        // `bytes FIRST-LAST/LENGTH` when the answer is a range (absent: the whole object).
        let len = out
            .content_range()
            .and_then(|r| r.rsplit('/').next()?.parse::<u64>().ok());
        let bytes = self.body(key, out).await?;
        let len = len.unwrap_or(bytes.len() as u64);
        Ok(Some(LogEnd { bytes, len }))
    }

    async fn body(&self, key: &str, out: GetObjectOutput) -> Result<Vec<u8>, LogError> {
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| LogError::Unavailable {
                operation: "GetObject",
                location: self.location(key),
                message: e.to_string(),
            })?;
        Ok(body.into_bytes().to_vec())
    }
}

fn is_invalid_range<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> bool {
    e.code() == Some("InvalidRange") || e.raw_response().is_some_and(|r| r.status().as_u16() == 416)
}

/// Maps an SDK error to a [`LogError`]: no answer, throttling and 5xx are `Unavailable`
/// (retried), access problems `Denied`, a missing bucket or key `NotFound`.
fn map_sdk_err<E>(
    operation: &'static str,
    location: String,
    e: SdkError<E, HttpResponse>,
) -> LogError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or("").to_string();
    let message = match (&e, e.message()) {
        (SdkError::ServiceError(_), Some(m)) => format!("{code}: {m}"),
        _ => DisplayErrorContext(&e).to_string(),
    };
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            LogError::Unavailable {
                operation,
                location,
                message,
            }
        }
        _ if code == "NoSuchBucket" || code == "NoSuchKey" => {
            LogError::NotFound(format!("{location} ({message}; does the bucket exist?)"))
        }
        _ if DENIED_CODES.contains(&code.as_str()) || status == Some(403) => LogError::Denied {
            operation,
            location,
            message,
        },
        _ if TRANSIENT_CODES.contains(&code.as_str()) || status.is_some_and(|s| s >= 500) => {
            LogError::Unavailable {
                operation,
                location,
                message,
            }
        }
        _ => LogError::Backend {
            operation,
            location,
            message,
        },
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        operation: "read the task log",
        path: path.to_path_buf(),
        source,
    }
}

/// The length of `path`; 0 when it does not exist (a task that printed nothing).
async fn file_len(path: &Path) -> std::io::Result<u64> {
    match tokio::fs::metadata(path).await {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}
