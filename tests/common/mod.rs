//! Shared test harness: stores on fresh SQLite files and fresh DynamoDB Local tables.
#![allow(dead_code)]

use std::sync::Arc;

use anamo::store::dynamo::DynamoStore;
use anamo::store::sqlite::SqliteStore;
use anamo::store::{RequestRecorder, SharedStore};

/// Endpoint of DynamoDB Local started by `scripts/test-services`. In CI a missing service is a
/// failure, never a silent skip; locally the test prints why it is skipped.
pub fn dynamo_endpoint() -> Option<String> {
    match std::env::var("ANAMO_TEST_DYNAMODB_ENDPOINT") {
        Ok(e) if !e.is_empty() => Some(e),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "ANAMO_TEST_DYNAMODB_ENDPOINT is not set: run the tests through \
                     `scripts/test-services run -- cargo nextest run`"
                );
            }
            eprintln!(
                "SKIPPED: DynamoDB Local is not running (run through `scripts/test-services run -- ...`)"
            );
            None
        }
    }
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A DynamoDB client for the test endpoint with dummy credentials.
pub async fn dynamo_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "test",
            "test",
            None,
            None,
            "anamo-tests",
        ))
        .load()
        .await;
    aws_sdk_dynamodb::Client::new(&conf)
}

pub struct Harness {
    pub store: SharedStore,
    /// The store's request counts.
    pub requests: RequestRecorder,
    /// Keeps the SQLite directory alive for the test's duration.
    _dir: Option<tempfile::TempDir>,
    pub url: String,
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tasks.db");
        let store = SqliteStore::open(&path).expect("open sqlite store");
        Harness {
            requests: store.recorder(),
            store: Arc::new(store),
            url: format!("sqlite://{}", path.display()),
            _dir: Some(dir),
        }
    }

    pub async fn dynamo() -> Option<Harness> {
        let endpoint = dynamo_endpoint()?;
        let table = unique_name("anamo-test");
        let client = dynamo_client(&endpoint).await;
        let store = DynamoStore::new(client, &table);
        anamo::store::TaskStore::create_schema(&store)
            .await
            .expect("create DynamoDB Local table");
        Some(Harness {
            requests: store.recorder(),
            store: Arc::new(store),
            url: format!("dynamodb://{table}"),
            _dir: None,
        })
    }
}
pub mod controller_aws;
pub mod http;
pub mod moto;
pub mod process;
pub mod worker;
