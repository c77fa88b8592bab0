//! SDK clients for local stand-ins of AWS services (DynamoDB Local): a fixed region and dummy
//! credentials, so nothing reaches for a real account. The benchmarks and the tests share this
//! one set-up; production clients come from the default chain (`controller::aws`, `cli`).

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
