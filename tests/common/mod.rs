//! The tests' one harness: stores on fresh SQLite files and fresh DynamoDB Local tables here;
//! the services a test needs ([`services`]: a missing one fails the test), HTTP ([`http`]),
//! waiting ([`wait`]), child processes ([`process`]), the `anamo` binary and boto3 ([`cli`]), workers ([`worker`]), moto
//! ([`moto`]), the controller on AWS stand-ins ([`controller_aws`]) and the observability
//! workload ([`observability`]) in the modules below.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;

use anamo::store::dynamo::DynamoStore;
use anamo::store::sqlite::SqliteStore;
use anamo::store::{RequestRecorder, SharedStore};

/// Endpoint of DynamoDB Local started by `scripts/test-services`: a test fails when it is
/// missing or does not answer (see [`services`] for the explicit local opt-out).
pub fn dynamo_endpoint() -> Option<String> {
    services::endpoint("ANAMO_TEST_DYNAMODB_ENDPOINT", "DynamoDB Local")
}

pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A DynamoDB client for the test endpoint with dummy credentials.
pub use anamo::aws_client::local_dynamo_client as dynamo_client;

/// The index shards of the harness's DynamoDB tables: 1 unless `ANAMO_TEST_DYNAMO_SHARDS`
/// says otherwise. The suite checks that DynamoDB claims in SQLite's order, which holds within
/// a shard only (`docs/dynamodb-table.md`); with more shards the order-dependent tests fail
/// and the others must pass.
pub fn conformance_shards() -> u32 {
    std::env::var("ANAMO_TEST_DYNAMO_SHARDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
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
        let store = DynamoStore::new(client, &table).with_shards(conformance_shards());
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
/// Runs each test body named (`async fn NAME(h: Harness)`) on SQLite and on DynamoDB Local,
/// as the tests `NAME::sqlite` and `NAME::dynamo` (needs `#[macro_use] mod common;`).
#[allow(unused_macros)]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(crate::common::Harness::sqlite().await).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn dynamo() {
                if let Some(h) = crate::common::Harness::dynamo().await {
                    super::$name(h).await;
                }
            }
        }
    )*};
}

pub mod browser;
pub mod cli;
pub mod controller_aws;
pub mod fleet_capacity;
pub mod http;
pub mod moto;
pub mod observability;
pub mod process;
pub mod services;
pub mod wait;
pub mod worker;

/// The store conformance suite's runner: each case `crate::cases::NAME(store)` becomes the tests
/// `sqlite::NAME` and `dynamodb::NAME` (on a fresh store each; the DynamoDB table is deleted
/// afterwards). Needs `#[macro_use] mod common;`.
#[allow(unused_macros)]
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let h = crate::common::Harness::sqlite().await;
                    crate::cases::$case(h.store.clone()).await;
                }
            )*
        }
        mod dynamodb {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(h) = crate::common::Harness::dynamo().await else { return };
                    crate::cases::$case(h.store.clone()).await;
                    h.store.delete_schema().await.expect("delete test table");
                }
            )*
        }
    };
}

/// A controller on `store` and `clock` with the fleets of `manifest_yaml`, each on `provider`
/// (workers launched locally are never started: `/bin/false`).
#[allow(dead_code)]
pub fn controller_on(
    cfg: anamo::controller::ControllerConfig,
    manifest_yaml: &str,
    store: anamo::store::SharedStore,
    clock: anamo::clock::SharedClock,
    provider: Arc<dyn anamo::provider::FleetProvider>,
) -> anamo::controller::Controller {
    use anamo::controller::providers::{ProviderSet, WorkerLaunch};
    let set = anamo::manifest::parse_str(manifest_yaml, "test.yaml").expect("valid test manifest");
    let launch = WorkerLaunch {
        store_url: "sqlite://unused".into(),
        exe: "/bin/false".into(),
        log_dir: None,
        env: std::collections::BTreeMap::new(),
        force_local: false,
        binary_url: None,
    };
    let providers = ProviderSet::new(
        launch,
        clock.clone(),
        &cfg.cluster,
        Some(Box::new(OneProvider(provider))),
    );
    anamo::controller::Controller::new(
        cfg,
        store,
        clock,
        anamo::controller::reload::ManifestSource::fixed(set),
        providers,
        Arc::new(anamo::metrics::Metrics::new()),
    )
}

/// A controller's remote-provider factory that hands out one provider for every fleet.
pub struct OneProvider(pub Arc<dyn anamo::provider::FleetProvider>);

#[async_trait::async_trait]
impl anamo::controller::providers::RemoteFactory for OneProvider {
    async fn build(
        &self,
        _cluster: &str,
        _fleet: &anamo::manifest::FleetManifest,
        _launch: &anamo::controller::providers::WorkerLaunch,
    ) -> Result<Arc<dyn anamo::provider::FleetProvider>, anamo::provider::ProviderError> {
        Ok(self.0.clone())
    }
}
