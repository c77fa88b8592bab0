//! `anamo worker`: the agent on each instance. It claims tasks of one step from the store with
//! a fenced lease, runs each in a process group of its own, keeps the lease alive with
//! heartbeats and records the result, `--slots` tasks at a time.
//!
//! ```text
//!   run ─┬─ slot loop × N ── claim ─▶ task_runner (spawn, heartbeat, timeout) ─▶ complete
//!        ├─ registration upkeep (put_worker every heartbeat and on state changes)
//!        ├─ signals (SIGTERM/SIGINT → drain)      ├─ spot poller (IMDSv2: rebalance → stop
//!        │                                        │  claiming, interruption → hand back)
//!        └─ wall-time timer, idle-exit check
//! ```
//!
//! * **Claims.** One claim in flight per worker, for all its free slots at once: the slot
//!   whose turn it is claims a batch and hands the extra tasks to the slots queued behind it.
//! * **Leases.** A task is killed (its whole process group) and its result never written when
//!   the store answers `LeaseLost`, or when the lease's own expiry passes without a successful
//!   heartbeat: a worker cut off from the store must not keep running a task someone else may
//!   have claimed.
//! * **Store outages.** Claims back off (exponential, jittered, capped); heartbeats and the
//!   completion write are retried while the lease can still be valid, so a result that can be
//!   written within its lease is never lost.
//! * **Stopping.** SIGTERM/SIGINT: stop claiming (state `draining`), let running tasks finish
//!   within `--drain-grace`, then kill and hand back the rest (attempt not counted); a second
//!   signal hands them back at once. A spot interruption notice hands them back at once. A
//!   rebalance recommendation stops claims and lets running tasks finish (no deadline); the
//!   worker then exits like an idle one, unless an interruption notice comes first.
//!   `--wall-time`: stop claiming; tasks still running `--drain-grace` later are killed and
//!   recorded as failed with error `timeout`. `--idle-exit`: exit when nothing was claimable
//!   for that long and no slot is busy, then run `--on-idle-exit`. On every exit the
//!   registration is marked `gone`.
//! * **Metrics.** With `--metrics-addr`, `/metrics` serves the per-step
//!   `anamo_task_duration_seconds{step,outcome}`, `anamo_claim_conflicts_total{step}` and
//!   `anamo_worker_spot_notices_total{step,kind}` of this worker (and `/healthz` answers), until it exits.

mod backoff;
mod bench;
mod config;
mod control;
mod events;
mod guard;
mod lease;
mod log_upload;
mod metrics_server;
mod pipeline_env;
mod process;
mod registration;
mod signals;
mod slot;
mod spot;
mod subtasks;
mod task_runner;
mod task_size;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::task::JoinSet;

pub use self::bench::{bench_dispatch, BenchReport, DispatchLoad, DEFAULT_BENCH_COMMAND};
pub use self::config::DEFAULT_IMDS_ENDPOINT;
pub use self::control::{StopReason, WorkerControl};
pub use self::events::{StatsSnapshot, WorkerStats, TASK_OUTCOMES};

use self::config::Config;
use self::events::{WorkerExited, WorkerStarted};
use self::process::StopCause;
use crate::clock::SharedClock;
use crate::store::{SharedStore, StoreError};

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

/// Options of `anamo worker`. Every flag can also come from its `ANAMO_*` environment variable.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    /// Pipeline step whose tasks this worker claims.
    #[arg(long, env = "ANAMO_STEP")]
    pub step: String,

    /// Tasks run at the same time.
    #[arg(long, env = "ANAMO_SLOTS", default_value_t = 1)]
    pub slots: u32,

    /// Instead of `--slots` (it overrides it): vCPUs one task needs; the slots are this machine's processors
    /// divided by it (and its memory by `--memory-per-task-gib`), at least 1.
    #[arg(long, env = "ANAMO_VCPUS_PER_TASK")]
    pub vcpus_per_task: Option<u32>,

    /// With `--vcpus-per-task`: GiB of memory one task needs.
    #[arg(long, env = "ANAMO_MEMORY_PER_TASK_GIB", requires = "vcpus_per_task")]
    pub memory_per_task_gib: Option<f64>,

    /// Lease length: a task whose lease is not extended for this long is taken away.
    #[arg(long, env = "ANAMO_LEASE_TTL", default_value = crate::manifest::DEFAULT_LEASE_TTL_ARG, value_parser = humantime::parse_duration)]
    pub lease_ttl: Duration,

    /// Interval between lease extensions and registration refreshes [default: lease-ttl/3].
    #[arg(long, env = "ANAMO_HEARTBEAT", value_parser = humantime::parse_duration)]
    pub heartbeat: Option<Duration>,

    /// Exit when nothing was claimable for this long and no slot is busy.
    #[arg(long, env = "ANAMO_IDLE_EXIT", value_parser = humantime::parse_duration)]
    pub idle_exit: Option<Duration>,

    /// Command run with `sh -c` after an idle exit (e.g. `shutdown -h now`).
    #[arg(long, env = "ANAMO_ON_IDLE_EXIT", requires = "idle_exit")]
    pub on_idle_exit: Option<String>,

    /// Stop claiming after this long, let running tasks finish within the drain grace
    /// (then they are killed and recorded as timed out) and exit.
    #[arg(long, env = "ANAMO_WALL_TIME", value_parser = humantime::parse_duration)]
    pub wall_time: Option<Duration>,

    /// On SIGTERM/SIGINT: time running tasks get to finish before they are handed back.
    #[arg(long, env = "ANAMO_DRAIN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_grace: Duration,

    /// Directory for per-task log files `<step>/<id>.<attempt>.log`, created with a task's
    /// first byte of output (a task that prints nothing leaves none) [default: <temp
    /// dir>/anamo/logs].
    #[arg(long, env = "ANAMO_LOG_DIR")]
    pub log_dir: Option<PathBuf>,

    /// Also store each attempt's full output as `PREFIX/STEP/ID/ATTEMPT.log` under
    /// `s3://BUCKET/PREFIX` or in `file://DIR`, uploading a running task's growing log
    /// periodically; the result records where it is [default: the log directory only].
    #[arg(long, env = "ANAMO_LOG_URL")]
    pub log_url: Option<String>,

    /// With `--log-url`: how often a running task's log is uploaded when it has grown (and
    /// at once after 8 MiB more output).
    #[arg(long, env = "ANAMO_LOG_UPLOAD_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub log_upload_interval: Duration,

    /// With `--log-url`: the most time the final upload of a finished task's log may take
    /// (retries included) before the result is recorded without it, saying why.
    #[arg(long, env = "ANAMO_LOG_UPLOAD_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub log_upload_timeout: Duration,

    /// This worker's id [default: <hostname>-<pid>-<random>].
    #[arg(long, env = "ANAMO_WORKER_ID")]
    pub worker_id: Option<String>,

    /// EC2 instance id to record [default: read from IMDS when it answers].
    #[arg(long, env = "ANAMO_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Instance metadata endpoint, or `off` [default: http://169.254.169.254, or off when
    /// AWS_EC2_METADATA_DISABLED=true].
    #[arg(long, env = "ANAMO_IMDS_ENDPOINT")]
    pub imds_endpoint: Option<String>,

    /// Interval between spot interruption notice and rebalance recommendation checks; 0
    /// disables them.
    #[arg(long, env = "ANAMO_SPOT_POLL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub spot_poll: Duration,

    /// Wait between claims when nothing is claimable (jittered by ±20%).
    #[arg(long, env = "ANAMO_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,

    /// Exit after claiming this many tasks (and finishing them).
    #[arg(long, env = "ANAMO_MAX_TASKS")]
    pub max_tasks: Option<u64>,

    /// Serve `/metrics` (task durations, claim conflicts and spot notices of this worker) and
    /// `/healthz` on this address, e.g. `0.0.0.0:9465` [default: no metrics endpoint].
    #[arg(long, env = "ANAMO_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl WorkerArgs {
    /// The defaults of the command line, for a worker of `step` started from code.
    pub fn new(step: impl Into<String>) -> Self {
        WorkerArgs {
            step: step.into(),
            slots: 1,
            vcpus_per_task: None,
            memory_per_task_gib: None,
            lease_ttl: crate::manifest::DEFAULT_LEASE_TTL,
            heartbeat: None,
            idle_exit: None,
            on_idle_exit: None,
            wall_time: None,
            drain_grace: Duration::from_secs(30),
            log_dir: None,
            log_url: None,
            log_upload_interval: Duration::from_secs(30),
            log_upload_timeout: Duration::from_secs(60),
            worker_id: None,
            instance_id: None,
            imds_endpoint: None,
            spot_poll: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            max_tasks: None,
            metrics_addr: None,
        }
    }
}

/// How a worker ended (it exits 0).
#[derive(Debug, Clone, Serialize)]
pub struct WorkerExit {
    pub worker_id: String,
    pub reason: StopReason,
    pub stats: StatsSnapshot,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker options: {0}")]
    InvalidArgs(String),
    #[error("cannot create the log directory {}: {source}", path.display())]
    LogDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsAddr {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error("store error while {operation}: {source}")]
    Store {
        operation: &'static str,
        #[source]
        source: StoreError,
    },
    #[error("`--on-idle-exit` command `{command}` failed: {status}")]
    OnIdleExit { command: String, status: String },
    #[error("a worker slot crashed: {0}")]
    Crashed(String),
}

impl WorkerError {
    /// A fixed label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkerError::InvalidArgs(_) => "invalid_args",
            WorkerError::LogDir { .. } => "log_dir",
            WorkerError::MetricsAddr { .. } => "metrics_addr",
            WorkerError::Signals(_) => "signals",
            WorkerError::Store { .. } => "store",
            WorkerError::OnIdleExit { .. } => "on_idle_exit",
            WorkerError::Crashed(_) => "crashed",
        }
    }
}

/// What every part of a running worker shares.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub store: SharedStore,
    pub clock: SharedClock,
    pub cfg: Config,
    pub control: WorkerControl,
    /// Held by the slot whose claim is in flight.
    pub claim_lock: tokio::sync::Mutex<()>,
    /// Tasks a slot's batch claim took for the other free slots, each with whether to run it
    /// (false: claimed as the worker stopped); they take them from here (under `claim_lock`)
    /// before claiming themselves.
    pub handed_over: std::sync::Mutex<std::collections::VecDeque<(crate::model::Claim, bool)>>,
    /// Where attempts' logs are stored (`--log-url`).
    pub log_sink: Option<crate::logs::LogSink>,
    /// The pipeline graph (key and upstream variables of tasks), read again every few seconds.
    pub graph: crate::store::graph::GraphCache,
}

/// Runs a worker until it drains, idles out, hits `--wall-time`/`--max-tasks` or is
/// interrupted; SIGTERM/SIGINT drain it.
pub async fn run(args: WorkerArgs, store: SharedStore) -> Result<WorkerExit> {
    let control = WorkerControl::new();
    // Task processes die with this process, however it ends.
    if let Err(e) = guard::start() {
        tracing::warn!(error = %e, "cannot start the process guard: task processes may outlive a killed worker");
    }
    let signals = signals::listen(control.clone()).map_err(WorkerError::Signals)?;
    let result = run_with(args, store, control).await;
    signals.abort();
    result
}

/// Like [`run`], without touching signal handling: `control` does what signals would (for
/// embedding several workers in one process, tests and benchmarks).
pub async fn run_with(
    args: WorkerArgs,
    store: SharedStore,
    control: WorkerControl,
) -> Result<WorkerExit> {
    let mut cfg = Config::from_args(&args)?;
    std::fs::create_dir_all(&cfg.log_dir).map_err(|source| WorkerError::LogDir {
        path: cfg.log_dir.clone(),
        source,
    })?;
    let imds = connect_imds(&mut cfg).await?;
    // Bound before anything is claimed, so a busy port fails the start, not a running worker.
    let metrics_server = match args.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, &control).await?),
        None => None,
    };
    let clock = crate::clock::system();
    let started_at = clock.now();
    control.configure(cfg.drain_grace, cfg.slots, cfg.max_tasks, started_at);
    let log_sink = match &cfg.log_url {
        Some(url) => Some(crate::logs::LogSink::connect(url.clone()).await),
        None => None,
    };
    store.batch_counts();
    let graph = crate::store::graph::GraphCache::new(store.clone());
    let ctx = Arc::new(Ctx {
        log_sink,
        store,
        clock,
        cfg,
        control: control.clone(),
        claim_lock: tokio::sync::Mutex::new(()),
        handed_over: Default::default(),
        graph,
    });
    let cfg = &ctx.cfg;
    register_and_announce(&ctx, started_at).await?;

    let (stop_upkeep, upkeep_stopped) = tokio::sync::watch::channel(false);
    let upkeep = tokio::spawn(registration::upkeep(
        ctx.clone(),
        started_at,
        upkeep_stopped,
    ));
    let mut background = spawn_background(cfg, imds, &control);
    let failure = run_slots(&ctx).await;
    background.shutdown().await;
    let _ = stop_upkeep.send(true);
    let _ = upkeep.await;
    registration::mark_gone(&ctx, started_at).await;
    if let Err(e) = ctx.store.flush().await {
        tracing::warn!(error = %e, "progress counters not written at exit; a recount repairs them");
    }

    let stats = control.stats();
    let reason = control.stop_reason().unwrap_or(StopReason::Fatal);
    WorkerExited {
        worker_id: &cfg.worker_id,
        reason: reason.as_str(),
        stats: &stats,
    }
    .emit();
    if let Some(server) = metrics_server {
        server.abort();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    if reason == StopReason::Idle {
        if let Some(command) = &cfg.on_idle_exit {
            run_on_idle_exit(command, &cfg.worker_id).await?;
        }
    }
    Ok(WorkerExit {
        worker_id: cfg.worker_id.clone(),
        reason,
        stats,
    })
}

/// Registers the worker in the store and says it started.
async fn register_and_announce(ctx: &Ctx, started_at: crate::clock::Millis) -> Result<()> {
    let cfg = &ctx.cfg;
    registration::register(ctx, started_at)
        .await
        .map_err(|source| WorkerError::Store {
            operation: "registering the worker",
            source,
        })?;
    WorkerStarted {
        worker_id: &cfg.worker_id,
        step: &cfg.step,
        slots: cfg.slots,
        instance_id: cfg.instance_id.as_deref(),
        store: &ctx.store.describe(),
        log_dir: &cfg.log_dir,
    }
    .emit();
    Ok(())
}

/// Sets up IMDS: the instance id (when not given) and spot notices. Off EC2 it does not
/// answer; timeouts are short and the lookup only blocks the start when the id is needed.
/// Returns the client with whether it answered, for the spot poller.
async fn connect_imds(cfg: &mut Config) -> Result<Option<(spot::Imds, bool)>> {
    let imds = match &cfg.imds_endpoint {
        Some(endpoint) => Some(spot::Imds::new(endpoint).map_err(WorkerError::InvalidArgs)?),
        None => None,
    };
    Ok(match imds {
        Some(imds) if cfg.instance_id.is_none() => match imds.probe().await {
            Ok(id) => {
                cfg.instance_id = id;
                Some((imds, true))
            }
            Err(e) => {
                // The usual case off EC2: one short line at debug; the SDK's long error at trace.
                tracing::debug!(endpoint = imds.endpoint(), "{}", spot::NOT_ON_EC2);
                tracing::trace!(error = %e, "instance metadata lookup failed");
                None
            }
        },
        // The id was given: whether IMDS answers is found out by the spot poller.
        other => other.map(|imds| (imds, false)),
    })
}

/// Binds the `/metrics` endpoint on `addr` and feeds it this worker's stats.
async fn serve_metrics(
    addr: SocketAddr,
    control: &WorkerControl,
) -> Result<tokio::task::JoinHandle<()>> {
    let metrics = crate::metrics::Metrics::new();
    control.worker_stats().attach_metrics(metrics.clone());
    let (local, task) = metrics_server::serve(addr, metrics)
        .await
        .map_err(|source| WorkerError::MetricsAddr { addr, source })?;
    tracing::info!(addr = %local, "serving worker metrics");
    Ok(task)
}

/// Starts the spot notice poller and the `--wall-time` timer (when configured).
fn spawn_background(
    cfg: &Config,
    imds: Option<(spot::Imds, bool)>,
    control: &WorkerControl,
) -> JoinSet<()> {
    let mut background = JoinSet::new();
    if let (Some((imds, reachable)), Some(every)) = (imds, cfg.spot_poll) {
        let watch = spot::SpotWatch {
            step: cfg.step.clone(),
            every,
            control: control.clone(),
            known_reachable: reachable,
        };
        background.spawn(spot::watch_spot(imds, watch));
    }
    if let Some(wall) = cfg.wall_time {
        let (control, grace) = (control.clone(), cfg.drain_grace);
        background.spawn(async move {
            tokio::time::sleep(wall).await;
            let kill_at = tokio::time::Instant::now() + grace;
            control.stop(StopReason::WallTime, Some(kill_at), StopCause::WallTime);
        });
    }
    background
}

/// Runs the slot loops until all have ended, checking `--idle-exit` meanwhile; a slot that
/// fails or crashes stops the worker, and the first such failure is returned.
async fn run_slots(ctx: &Arc<Ctx>) -> Option<WorkerError> {
    let (cfg, control) = (&ctx.cfg, &ctx.control);
    let mut slots = JoinSet::new();
    for _ in 0..cfg.slots {
        slots.spawn(slot::slot_loop(ctx.clone()));
    }
    let mut failure: Option<WorkerError> = None;
    // Checked often enough that a short `--idle-exit` is not overshot by much.
    let idle_check = cfg.idle_exit.map(|idle| {
        let every = cfg
            .poll_interval
            .min(Duration::from_secs(1))
            .min(idle / 4)
            .max(Duration::from_millis(10));
        (idle, every)
    });
    loop {
        let idle_tick = async {
            match idle_check {
                Some((_, every)) => tokio::time::sleep(every).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = slots.join_next() => match joined {
                None => break,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(source))) => {
                    control.stop(StopReason::Fatal, Some(tokio::time::Instant::now()), StopCause::HandBack);
                    failure.get_or_insert(WorkerError::Store { operation: "claiming", source });
                }
                Some(Err(join_error)) => {
                    control.stop(StopReason::Fatal, Some(tokio::time::Instant::now()), StopCause::HandBack);
                    failure.get_or_insert(WorkerError::Crashed(join_error.to_string()));
                }
            },
            _ = idle_tick => {
                if let Some((idle, _)) = idle_check {
                    control.try_idle_stop(idle);
                }
            }
        }
    }
    failure
}

async fn run_on_idle_exit(command: &str, worker_id: &str) -> Result<()> {
    tracing::info!(command, "running the on-idle-exit command");
    let status = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("ANAMO_WORKER_ID", worker_id)
        .stdin(std::process::Stdio::null())
        .status()
        .await;
    match status {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(WorkerError::OnIdleExit {
            command: command.to_string(),
            status: s.to_string(),
        }),
        Err(e) => Err(WorkerError::OnIdleExit {
            command: command.to_string(),
            status: e.to_string(),
        }),
    }
}
