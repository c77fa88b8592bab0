//! `anamo controller` (the long-running service) and `anamo plan` (its dry run).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tracing::info;

use super::output::{outln, print_json};
use super::parse_duration;
use crate::clock::{self, SharedClock};
use crate::controller::aws::AwsFactory;
use crate::controller::providers::{ProviderSet, WorkerLaunch};
use crate::controller::reload::ManifestSource;
use crate::controller::{Controller, ControllerConfig};
use crate::manifest::ManifestSet;
use crate::metrics::Metrics;
use crate::server::{self, AppState};
use crate::store::instrumented::InstrumentedStore;
use crate::store::SharedStore;

#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Directory (or file) of Fleet and Controller manifests; re-read when it changes.
    #[arg(long, env = "ANAMO_MANIFESTS", default_value = "manifests")]
    pub manifests: PathBuf,
    /// Time between passes [default: the Controller manifest's `interval`, else 10s].
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// How often every step's exact progress is counted for the status page and metrics
    /// [default: the Controller manifest's `progressInterval`, else 30s].
    #[arg(long, value_parser = parse_duration)]
    pub progress_interval: Option<Duration>,
    /// Address of /metrics, /healthz, /readyz, /api/status [default: the Controller manifest's
    /// `metricsAddr`, else 127.0.0.1:9464].
    #[arg(long, env = "ANAMO_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Cluster name (tags instances, names the leadership lease) [default: the Controller
    /// manifest's `metadata.name`, else `anamo`].
    #[arg(long, env = "ANAMO_CLUSTER")]
    pub cluster: Option<String>,
    /// Run several controllers for one cluster: only the lease holder acts.
    #[arg(long, env = "ANAMO_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Leadership lease duration; a follower takes over this long after the leader dies.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub leader_ttl: Duration,
    /// No launches for this long after a capacity error.
    #[arg(long, value_parser = parse_duration, default_value = "2m")]
    pub cool_off: Duration,
    /// This controller's identity in the leadership lease [default: host-pid-random].
    #[arg(long)]
    pub identity: Option<String>,
    /// Where local workers' logs go.
    #[arg(long, default_value = "anamo-logs")]
    pub log_dir: PathBuf,
    /// URL (https:// or s3://) from which EC2 workers download the anamo binary at boot
    /// [default: the AMI already has it].
    #[arg(long, env = "ANAMO_WORKER_BINARY_URL")]
    pub worker_binary_url: Option<String>,
    /// Run one pass and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Directory (or file) of manifests.
    #[arg(long, env = "ANAMO_MANIFESTS", default_value = "manifests")]
    pub manifests: PathBuf,
    /// Cluster name used to find the fleets' instances.
    #[arg(long, env = "ANAMO_CLUSTER")]
    pub cluster: Option<String>,
    /// Print the plan as JSON (per fleet: desired instances, status, actions, conditions).
    #[arg(long)]
    pub json: bool,
}

/// The store URL: the `--store` flag or `ANAMO_STORE`, else the Controller manifest's, else the
/// embedded default.
pub fn resolve_store(flag: Option<&str>, manifests: &ManifestSet) -> String {
    flag.map(str::to_string)
        .or_else(|| manifests.controller.as_ref().map(|c| c.spec.store.clone()))
        .unwrap_or_else(|| super::DEFAULT_STORE.to_string())
}

pub fn load_manifests(path: &Path) -> anyhow::Result<ManifestSource> {
    ManifestSource::open(path).map_err(|e| anyhow::anyhow!("{e}"))
}

pub fn cluster_name(flag: Option<&str>, manifests: &ManifestSet) -> String {
    flag.map(str::to_string)
        .or_else(|| {
            manifests
                .controller
                .as_ref()
                .map(|c| c.cluster().to_string())
        })
        .unwrap_or_else(|| crate::controller::status::DEFAULT_CLUSTER.to_string())
}

pub fn worker_launch(
    store_url: &str,
    log_dir: &Path,
    force_local: bool,
    binary_url: Option<String>,
) -> anyhow::Result<WorkerLaunch> {
    let exe = std::env::current_exe().context("cannot find the anamo executable")?;
    Ok(WorkerLaunch {
        store_url: store_url.to_string(),
        exe,
        log_dir: Some(log_dir.join("workers")),
        env: [(
            "ANAMO_LOG_DIR".to_string(),
            log_dir.join("tasks").display().to_string(),
        )]
        .into(),
        force_local,
        binary_url,
    })
}

pub async fn run_controller(
    args: ControllerArgs,
    store_flag: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let source = load_manifests(&args.manifests)?;
    let set = source.current().clone();
    let store_url = resolve_store(store_flag, &set);
    let metrics = Arc::new(Metrics::new());
    // Every store call is counted and timed (anamo_store_*).
    let region = set.controller.as_ref().and_then(|c| c.spec.region.clone());
    let store = InstrumentedStore::wrap(
        super::open_store_in(&store_url, region.as_deref()).await?,
        &metrics,
    );
    store
        .create_schema()
        .await
        .with_context(|| format!("preparing {store_url}"))?;
    let (cfg, addr) = controller_config(&args, &set)?;
    let clock: SharedClock = clock::system();
    let providers = ProviderSet::new(
        worker_launch(
            &store_url,
            &args.log_dir,
            false,
            args.worker_binary_url.clone(),
        )?,
        clock.clone(),
        &cfg.cluster,
        Some(Box::new(AwsFactory::new(region))),
    );
    let logs = server::TaskLogs::new(store.clone(), &set);
    let controller = Controller::new(
        cfg.clone(),
        store,
        clock,
        source,
        providers,
        metrics.clone(),
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut server_stop = stop_rx.clone();
    let (bound, server) = server::serve(
        addr,
        AppState {
            status: controller.status(),
            metrics,
            logs,
        },
        async move {
            let _ = server_stop.wait_for(|s| *s).await;
        },
    )
    .await
    .with_context(|| format!("cannot listen on {addr}"))?;
    info!(
        cluster = cfg.cluster,
        store = store_url,
        manifests = %args.manifests.display(),
        http = %bound,
        interval = ?cfg.interval,
        "controller started"
    );
    if args.once {
        return Ok(run_once(controller, stop_tx, server).await);
    }
    controller.run(shutdown_signal()).await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    Ok(ExitCode::SUCCESS)
}

/// The controller's configuration and the address of its HTTP server: the flags, else the
/// Controller manifest's, else the defaults.
fn controller_config(
    args: &ControllerArgs,
    set: &ManifestSet,
) -> anyhow::Result<(ControllerConfig, SocketAddr)> {
    let cspec = set.controller.as_ref().map(|c| c.spec.clone());
    let mut cfg = ControllerConfig::new(&cluster_name(args.cluster.as_deref(), set));
    cfg.interval = args
        .interval
        .or(cspec.as_ref().map(|c| c.interval))
        .unwrap_or(Duration::from_secs(10));
    cfg.progress_interval = args
        .progress_interval
        .or(cspec.as_ref().map(|c| c.progress_interval))
        .unwrap_or(crate::manifest::DEFAULT_PROGRESS_INTERVAL);
    cfg.leader_election = args.leader_election;
    cfg.leader_ttl = args.leader_ttl;
    cfg.cool_off = args.cool_off;
    if let Some(id) = &args.identity {
        cfg.identity = id.clone();
    }
    let addr: SocketAddr = match args.metrics_addr {
        Some(a) => a,
        None => cspec
            .as_ref()
            .map(|c| c.metrics_addr.clone())
            .unwrap_or_else(|| "127.0.0.1:9464".into())
            .parse()
            .context("Controller spec.metricsAddr is not an address like 127.0.0.1:9464")?,
    };
    Ok((cfg, addr))
}

/// `--once`: one pass, printing each fleet's plan; failure when the pass had errors.
async fn run_once(
    mut controller: Controller,
    stop_tx: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
) -> ExitCode {
    let report = controller.reconcile_once().await;
    if let Some(plan) = &report.plan {
        for f in &plan.fleets {
            outln!("{}", f.describe());
        }
    }
    controller.shutdown().await;
    let _ = stop_tx.send(true);
    let _ = server.await;
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub async fn run_plan(args: PlanArgs, store_flag: Option<&str>) -> anyhow::Result<ExitCode> {
    let source = load_manifests(&args.manifests)?;
    let set = source.current().clone();
    let store_url = resolve_store(store_flag, &set);
    let region = set.controller.as_ref().and_then(|c| c.spec.region.clone());
    let store: SharedStore = super::open_store_in(&store_url, region.as_deref()).await?;
    let cluster = cluster_name(args.cluster.as_deref(), &set);
    let clock = clock::system();
    let providers = ProviderSet::new(
        worker_launch(&store_url, Path::new("anamo-logs"), false, None)?,
        clock.clone(),
        &cluster,
        Some(Box::new(AwsFactory::new(
            set.controller.as_ref().and_then(|c| c.spec.region.clone()),
        ))),
    );
    let mut controller = Controller::new(
        ControllerConfig::new(&cluster),
        store,
        clock,
        source,
        providers,
        Arc::new(Metrics::new()),
    );
    let plan = controller.dry_run().await;
    if args.json {
        print_json(&plan)?;
    } else {
        for f in &plan.fleets {
            outln!("{}", f.describe());
        }
        outln!("(dry run: nothing was changed; local fleets show no instances outside the controller that runs them)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
