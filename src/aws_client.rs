//! SDK clients set up in one place: for local stand-ins of AWS services (DynamoDB Local) a
//! fixed region and dummy credentials, so nothing reaches for a real account (the benchmarks
//! and the tests share this one set-up); and the S3 client of task logs from the default chain.
//! Other production clients come from the default chain too (`controller::aws`, `cli`).

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;

/// A DynamoDB client for a local endpoint (e.g. `http://127.0.0.1:8000`), region `us-east-1`,
/// dummy credentials and the SDK's default retries.
pub async fn local_dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "anamo-local",
        ))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&conf)
}

/// The S3 client for task logs, from the default AWS configuration (credential chain,
/// `AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3`, standard retries),
/// with bounded attempts so a hung connection cannot hold back a task's result for long.
pub async fn s3_client() -> aws_sdk_s3::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(120))
        .build();
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await;
    s3_client_from(&conf, std::env::var_os("AWS_ENDPOINT_URL_S3").is_some())
}

/// An S3 client on `conf`. With an endpoint set (`endpoint_override`, or one in `conf`, as for
/// moto or MinIO) buckets are addressed by path (`http://HOST/BUCKET/KEY`): such stand-ins do
/// not serve bucket names as host names.
pub fn s3_client_from(conf: &aws_config::SdkConfig, endpoint_override: bool) -> aws_sdk_s3::Client {
    let path_style = endpoint_override || conf.endpoint_url().is_some();
    let config = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}
