//! Helpers for the controller tests on AWS stand-ins (`tests/controller_aws.rs`): a DynamoDB
//! Local table and moto, controllers built in-process on providers whose SDK clients point at
//! moto (wrapped in [`FaultInjecting`] so a test can make calls fail), fleet manifests, moto
//! queries by tag, and `anamo controller` processes killed on drop.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anamo::clock::{Millis, SharedClock};
use anamo::controller::providers::{ProviderSet, RemoteFactory, WorkerLaunch};
use anamo::controller::reload::ManifestSource;
use anamo::controller::{Controller, ControllerConfig};
use anamo::manifest::{self, FleetManifest, ProviderSpec};
use anamo::metrics::Metrics;
use anamo::model::{WorkerInfo, WorkerState};
use anamo::planner::Plan;
use anamo::provider::asg::{AsgFleet, AsgFleetConfig};
use anamo::provider::aws_error::ThrottleConfig;
use anamo::provider::ec2::{Ec2Fleet, Ec2FleetConfig};
use anamo::provider::fault::FaultInjecting;
use anamo::provider::user_data::WorkerValues;
use anamo::provider::{
    FleetProvider, Instance, LaunchOutcome, LaunchRequest, ProviderError, ProviderResult,
    TAG_CONTROLLER, TAG_FLEET,
};
use async_trait::async_trait;

use aws_sdk_ec2::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_ec2::config::{Intercept, RuntimeComponents};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;

use super::moto::{moto_endpoint, parse_form, unique, Moto};
use super::{dynamo_endpoint, Harness};

/// The shipped user-data template.
pub fn user_data_template() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("manifests/user-data.sh.tmpl")
}

/// Fast backoff: throttling retried inside a provider costs milliseconds.
pub fn fast_throttle() -> ThrottleConfig {
    ThrottleConfig {
        max_attempts: 3,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        bucket_capacity: 100,
        refill_per_sec: 100.0,
    }
}

/// A fresh DynamoDB Local table, moto clients (with the recording interceptor), a launch
/// template, a cluster name and a scratch directory.
pub struct AwsWorld {
    pub harness: Harness,
    pub dynamo_endpoint: String,
    pub moto_endpoint: String,
    pub moto: Moto,
    pub template: String,
    pub cluster: String,
    pub dir: tempfile::TempDir,
}

impl AwsWorld {
    /// Fails the test when a service is missing; `None` only when skipping was allowed.
    pub async fn new() -> Option<AwsWorld> {
        let dynamo = dynamo_endpoint();
        let moto = moto_endpoint();
        let (dynamo_endpoint, moto_endpoint) = (dynamo?, moto?);
        let harness = Harness::dynamo().await?;
        let moto = connect_moto(&moto_endpoint).await;
        let template = unique("anamo-ctl-lt");
        moto.launch_template(&template).await;
        Some(AwsWorld {
            harness,
            dynamo_endpoint,
            moto_endpoint,
            moto,
            template,
            cluster: unique("ctl"),
            dir: tempfile::tempdir().expect("tempdir"),
        })
    }

    pub fn store(&self) -> &anamo::store::SharedStore {
        &self.harness.store
    }

    /// A factory of providers on this world's moto clients.
    pub fn factory(&self) -> MotoFactory {
        MotoFactory::new(&self.moto, &self.cluster, &self.harness.url)
    }

    /// An in-process controller of this world's cluster on its table, with `factory`.
    pub fn controller(
        &self,
        yaml: &str,
        clock: SharedClock,
        factory: &MotoFactory,
        tweak: impl FnOnce(&mut ControllerConfig),
    ) -> Controller {
        let set = manifest::parse_str(yaml, "test.yaml").expect("valid test manifests");
        let mut cfg = ControllerConfig::new(&self.cluster);
        cfg.interval = Duration::from_secs(1);
        tweak(&mut cfg);
        let providers = ProviderSet::new(
            worker_launch(&self.harness.url),
            clock.clone(),
            &cfg.cluster,
            Some(Box::new(factory.clone())),
        );
        Controller::new(
            cfg,
            self.harness.store.clone(),
            clock,
            ManifestSource::fixed(set),
            providers,
            Arc::new(Metrics::new()),
        )
    }

    /// Imports `n` tasks `s0..` of `step` running `script`.
    pub async fn import(&self, step: &str, n: usize, script: &str) {
        let tasks: Vec<anamo::model::TaskSpec> = (0..n)
            .map(|i| anamo::model::TaskSpec::new(step, format!("s{i}"), script))
            .collect();
        let report = self
            .store()
            .import(&tasks, anamo::clock::system().now())
            .await
            .expect("import");
        assert_eq!(report.inserted as usize, n, "{report:?}");
    }

    /// Every instance moto has for `fleet` of this cluster, terminated ones too: id → state.
    pub async fn instances(&self, fleet: &str) -> BTreeMap<String, String> {
        fleet_instances(&self.moto, fleet, &self.cluster).await
    }

    /// Instances of `fleet` that are not terminated (or shutting down).
    pub async fn live_instances(&self, fleet: &str) -> Vec<String> {
        self.instances(fleet)
            .await
            .into_iter()
            .filter(|(_, s)| s == "pending" || s == "running")
            .map(|(id, _)| id)
            .collect()
    }

    /// `RunInstances` requests sent through this world's clients.
    pub fn run_instances_calls(&self) -> usize {
        self.moto.faults.requests_of("RunInstances").len()
    }

    /// Fails unless one `RunInstances` was sent and `fleet` has `n` instances: nothing was
    /// launched twice.
    pub async fn assert_launched_once(&self, fleet: &str, n: usize) {
        assert_eq!(self.run_instances_calls(), 1, "no second RunInstances");
        assert_eq!(
            self.instances(fleet).await.len(),
            n,
            "no duplicate instances"
        );
    }

    /// Registers an active 2-slot worker of step `align` on `instance` with `busy` slots in
    /// use, started at `started_at` and last seen (busy) at `now`.
    pub async fn register_worker(
        &self,
        instance: &str,
        busy: u32,
        started_at: Millis,
        now: Millis,
    ) {
        let worker = WorkerInfo {
            worker_id: format!("w-{instance}"),
            step: "align".into(),
            instance_id: Some(instance.to_string()),
            slots: 2,
            busy_slots: busy,
            started_at,
            last_seen: now,
            last_busy_at: now,
            state: WorkerState::Active,
            stop_reason: None,
            drain_requested: false,
        };
        self.store()
            .put_worker(&worker, anamo::store::Fence::Unfenced)
            .await
            .unwrap();
    }

    /// Environment for an `anamo` process: the store on DynamoDB Local, EC2 and Auto Scaling
    /// on moto (the SDKs' per-service endpoint variables), dummy credentials.
    pub fn process_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamo_endpoint.as_str()),
            ("AWS_ENDPOINT_URL_EC2", self.moto_endpoint.as_str()),
            ("AWS_ENDPOINT_URL_AUTO_SCALING", self.moto_endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Writes `yaml` as `<dir>/<name>/fleets.yaml`; returns the directory.
    pub fn write_manifests(&self, name: &str, yaml: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).expect("manifest dir");
        std::fs::write(dir.join("fleets.yaml"), yaml).expect("write manifests");
        dir
    }

    /// `anamo --store URL` in the scratch directory, reaching the services through
    /// [`AwsWorld::process_env`] and nothing else of the caller's AWS or anamo settings.
    pub fn anamo(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anamo"));
        cmd.current_dir(self.dir.path())
            .args(["--store", &self.harness.url])
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_PROFILE")
            .env_remove("ANAMO_STORE")
            .env_remove("ANAMO_CLUSTER")
            .env_remove("ANAMO_MANIFESTS")
            .env_remove("ANAMO_METRICS_ADDR")
            .env("RUST_LOG", "info")
            .envs(self.process_env());
        cmd
    }

    /// Starts `anamo --store URL controller ARGS...` with its stderr in `<dir>/<name>.log`.
    pub fn spawn_controller(&self, name: &str, args: &[&str]) -> Proc {
        let log = self.dir.path().join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log).expect("controller log");
        let mut cmd = self.anamo();
        cmd.arg("controller")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd.spawn().expect("start anamo controller");
        Proc { child, log }
    }
}

/// Clients for moto sharing one recording interceptor (as [`Moto::connect`]), whose EC2
/// client also has [`FullLaunch`].
pub async fn connect_moto(endpoint: &str) -> Moto {
    Moto::clients(endpoint, |b| b.interceptor(FullLaunch)).await
}

/// Makes moto launch like EC2 with capacity to spare. The provider sends `RunInstances` with
/// `MinCount=1, MaxCount=n` (take what there is); EC2 then launches `n` when it can, but
/// moto launches `MinCount` (one). This raises `MinCount` to `MaxCount` on the way (the
/// recording interceptor still sees the request as the provider sent it).
#[derive(Debug, Clone, Copy)]
pub struct FullLaunch;

impl Intercept for FullLaunch {
    fn name(&self) -> &'static str {
        "FullLaunch"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let request = context.request_mut();
        let Some(body) = request.body().bytes() else {
            return Ok(());
        };
        let body = String::from_utf8_lossy(body).into_owned();
        let params = parse_form(&body);
        if params.get("Action").map(String::as_str) != Some("RunInstances") {
            return Ok(());
        }
        let (Some(min), Some(max)) = (params.get("MinCount"), params.get("MaxCount")) else {
            return Ok(());
        };
        let rewritten = body.replace(&format!("MinCount={min}"), &format!("MinCount={max}"));
        request
            .headers_mut()
            .insert("content-length", rewritten.len().to_string());
        *request.body_mut() = SdkBody::from(rewritten);
        Ok(())
    }
}

/// Launch settings for remote fleets (no local workers run).
pub fn worker_launch(store_url: &str) -> WorkerLaunch {
    WorkerLaunch {
        store_url: store_url.to_string(),
        exe: env!("CARGO_BIN_EXE_anamo").into(),
        log_dir: None,
        env: BTreeMap::new(),
        force_local: false,
        binary_url: None,
    }
}

/// Every instance moto has with the fleet's and the cluster's tags: id → state name.
pub async fn fleet_instances(moto: &Moto, fleet: &str, cluster: &str) -> BTreeMap<String, String> {
    let filter = |k: &str, v: &str| {
        aws_sdk_ec2::types::Filter::builder()
            .name(format!("tag:{k}"))
            .values(v)
            .build()
    };
    let out = moto
        .ec2
        .describe_instances()
        .filters(filter(TAG_FLEET, fleet))
        .filters(filter(TAG_CONTROLLER, cluster))
        .send()
        .await
        .expect("describe instances");
    out.reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter_map(|i| {
            Some((
                i.instance_id()?.to_string(),
                i.state()?.name()?.as_str().to_string(),
            ))
        })
        .collect()
}

/// Wraps a provider to play two cloud behaviours moto does not have:
/// * a `launch` that hangs after the inner provider returned: the controller is "killed"
///   between `RunInstances` and writing down its outcome when the pass is dropped;
/// * listings that lag behind launches (eventual consistency, or an Auto Scaling group that
///   has not created its new members yet): for the next `n` calls, `list` shows only
///   instances that an earlier `list` already showed.
#[derive(Debug)]
pub struct TestFleet {
    inner: Box<dyn FleetProvider>,
    hang_after_launch: AtomicBool,
    hanging: Arc<tokio::sync::Notify>,
    lagging_lists: AtomicUsize,
    shown: Mutex<BTreeSet<String>>,
}

impl TestFleet {
    pub fn new(inner: Box<dyn FleetProvider>) -> TestFleet {
        TestFleet {
            inner,
            hang_after_launch: AtomicBool::new(false),
            hanging: Arc::new(tokio::sync::Notify::new()),
            lagging_lists: AtomicUsize::new(0),
            shown: Mutex::new(BTreeSet::new()),
        }
    }

    /// The next `launch` never returns once the inner provider has launched; the returned
    /// notification fires when it starts hanging.
    pub fn hang_after_next_launch(&self) -> Arc<tokio::sync::Notify> {
        self.hang_after_launch.store(true, Ordering::SeqCst);
        self.hanging.clone()
    }

    /// The next `n` listings do not show instances that were not listed before.
    pub fn lag_next_lists(&self, n: usize) {
        self.lagging_lists.store(n, Ordering::SeqCst);
    }
}

#[async_trait]
impl FleetProvider for TestFleet {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let mut list = self.inner.list().await?;
        let lagging = self
            .lagging_lists
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let mut shown = self.shown.lock().unwrap();
        if lagging {
            list.retain(|i| shown.contains(&i.id));
        } else {
            shown.extend(list.iter().map(|i| i.id.clone()));
        }
        Ok(list)
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        let out = self.inner.launch(req).await;
        if self.hang_after_launch.swap(false, Ordering::SeqCst) {
            self.hanging.notify_one();
            std::future::pending::<()>().await;
        }
        out
    }

    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        self.inner.terminate(ids).await
    }

    async fn set_protection(&self, ids: &[String], protected: bool) -> ProviderResult<()> {
        self.inner.set_protection(ids, protected).await
    }

    fn lists_launches_immediately(&self) -> bool {
        self.inner.lists_launches_immediately()
    }

    fn scale_in_protection(&self) -> bool {
        self.inner.scale_in_protection()
    }

    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

pub type Handle = Arc<FaultInjecting<TestFleet>>;

/// Builds `ec2` and `autoscaling` providers on moto clients, one per fleet name, kept so a
/// test can reach them (to inject faults or read the calls) before and after the controller
/// does. Cheap to clone (shared map).
#[derive(Clone)]
pub struct MotoFactory {
    ec2: aws_sdk_ec2::Client,
    asg: aws_sdk_autoscaling::Client,
    cluster: String,
    store_url: String,
    built: Arc<Mutex<BTreeMap<String, Handle>>>,
}

impl MotoFactory {
    pub fn new(moto: &Moto, cluster: &str, store_url: &str) -> MotoFactory {
        MotoFactory {
            ec2: moto.ec2.clone(),
            asg: moto.asg.clone(),
            cluster: cluster.to_string(),
            store_url: store_url.to_string(),
            built: Default::default(),
        }
    }

    /// The provider of `fleet`, built on first use (as [`anamo::controller::aws::AwsFactory`]
    /// does: user data rendered from the fleet's template and the store URL).
    pub fn provider(&self, fleet: &FleetManifest) -> Result<Handle, ProviderError> {
        let mut built = self.built.lock().unwrap();
        if let Some(h) = built.get(fleet.name()) {
            return Ok(h.clone());
        }
        let inner: Box<dyn FleetProvider> = match &fleet.spec.provider {
            ProviderSpec::Ec2(_) => {
                let values = WorkerValues::for_fleet(
                    fleet,
                    &self.cluster,
                    &self.store_url,
                    Some("us-east-1"),
                );
                let mut cfg = Ec2FleetConfig::from_manifest(fleet, &values)?;
                cfg.throttle = fast_throttle();
                Box::new(Ec2Fleet::new(self.ec2.clone(), cfg))
            }
            ProviderSpec::Autoscaling(_) => {
                let mut cfg = AsgFleetConfig::from_manifest(fleet)?;
                cfg.throttle = fast_throttle();
                Box::new(AsgFleet::new(self.asg.clone(), self.ec2.clone(), cfg))
            }
            ProviderSpec::Local(_) => {
                return Err(ProviderError::Config(
                    "local fleets are not built here".into(),
                ))
            }
        };
        let h = Arc::new(FaultInjecting::new(TestFleet::new(inner)));
        built.insert(fleet.name().to_string(), h.clone());
        Ok(h)
    }

    /// The provider of the fleet named `name` in `yaml`, built now.
    pub fn provider_for(&self, yaml: &str, name: &str) -> Handle {
        let set = manifest::parse_str(yaml, "test.yaml").expect("valid test manifests");
        let fleet = set.fleet(name).expect("fleet in the manifests");
        self.provider(fleet).expect("build the provider")
    }
}

#[async_trait]
impl RemoteFactory for MotoFactory {
    async fn build(
        &self,
        cluster: &str,
        fleet: &FleetManifest,
        launch: &WorkerLaunch,
    ) -> Result<Arc<dyn FleetProvider>, ProviderError> {
        assert_eq!(cluster, self.cluster, "one factory per cluster");
        assert_eq!(launch.store_url, self.store_url);
        let provider: Arc<dyn FleetProvider> = self.provider(fleet)?;
        Ok(provider)
    }
}

/// An `anamo controller` process with its log; killed (SIGKILL) and reaped on drop.
pub use super::process::Logged as Proc;

/// The last `n` lines of a log file, for failure messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A `Fleet` manifest named `align` for step `align`, built field by field instead of written
/// out in each test. Starts from a small fleet: at most 3 instances of 2 slots, a long boot
/// timeout and scale-down delay, a 5 s lease with a 1 s heartbeat.
#[derive(Debug, Clone)]
pub struct FleetYaml {
    provider: String,
    spec: Vec<(&'static str, String)>,
}

impl FleetYaml {
    fn with_provider(provider: String) -> FleetYaml {
        let spec = [
            ("minInstances", "0"),
            ("maxInstances", "3"),
            ("slotsPerInstance", "2"),
            ("scaleDownDelay", "60s"),
            ("bootTimeout", "5m"),
            ("leaseTTL", "5s"),
            ("heartbeat", "1s"),
        ];
        FleetYaml {
            provider,
            spec: spec.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
        }
    }

    /// An `ec2` fleet on the launch template named `template`.
    pub fn ec2(template: &str) -> FleetYaml {
        FleetYaml::with_provider(format!(
            "    ec2:\n      launchTemplate:\n        name: {template}\n"
        ))
    }

    /// An `ec2` fleet whose instances get the shipped user-data template.
    pub fn ec2_with_user_data(template: &str) -> FleetYaml {
        let mut f = FleetYaml::ec2(template);
        f.provider.push_str(&format!(
            "      userData: {}\n",
            user_data_template().display()
        ));
        f
    }

    /// An `autoscaling` fleet on the group `group`.
    pub fn autoscaling(group: &str) -> FleetYaml {
        FleetYaml::with_provider(format!("    autoscaling:\n      groupName: {group}\n"))
    }

    /// Sets a `spec` field (e.g. `("maxInstances", "5")`).
    pub fn set(mut self, field: &'static str, value: &str) -> FleetYaml {
        match self.spec.iter_mut().find(|(k, _)| *k == field) {
            Some((_, v)) => *v = value.to_string(),
            None => self.spec.push((field, value.to_string())),
        }
        self
    }

    pub fn yaml(&self) -> String {
        let mut out = format!(
            "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: align\nspec:\n  \
             step: align\n  provider:\n{}",
            self.provider
        );
        for (k, v) in &self.spec {
            out.push_str(&format!("  {k}: {v}\n"));
        }
        out
    }
}

/// One pass of `c` that must succeed; its plan.
pub async fn pass(c: &mut Controller) -> Plan {
    let r = c.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r.plan.expect("a pass with no error has a plan")
}
