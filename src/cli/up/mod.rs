//! `anamo up`: the embedded default. One command: a SQLite store, optional task import, the
//! controller with every fleet run as local worker processes, live progress per step, and a
//! summary when every task reached a final state.

mod fresh;
mod progress;
mod summary;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::controller::{cluster_name, load_manifests, shutdown_signal, worker_launch};
use super::parse_duration;
use crate::clock::{self, SharedClock};
use crate::controller::providers::ProviderSet;
use crate::controller::reload::ManifestSource;
use crate::controller::{Controller, ControllerConfig};
use crate::import::{self, Format, ImportDefaults};
use crate::manifest::ManifestSet;
use crate::metrics::Metrics;
use crate::planner::Plan;
use crate::store::SharedStore;
use progress::Progress;
use summary::{RunEnd, Summaries};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory (or file) of Fleet manifests; every fleet runs as local worker processes.
    #[arg(long, env = "ANAMO_MANIFESTS", default_value = "manifests")]
    pub manifests: PathBuf,
    /// Tasks to import first (TSV or JSONL, see `anamo task import --help`).
    #[arg(long)]
    pub tasks: Option<PathBuf>,
    /// Start from an empty store: deletes the SQLite store first if an earlier `anamo up`
    /// created it (any other store, e.g. one made by `anamo table create`, only with --yes).
    #[arg(long)]
    pub fresh: bool,
    /// With --fresh: also delete a SQLite store that `anamo up` did not create.
    #[arg(long, requires = "fresh")]
    pub yes: bool,
    /// Time between controller passes [default: the Controller manifest's, else 1s].
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Where worker and task logs go.
    #[arg(long, default_value = "anamo-logs")]
    pub log_dir: PathBuf,
    /// After the last task, wait at most this long for the fleets to scale back to their
    /// minimum before stopping the remaining workers.
    #[arg(long, value_parser = parse_duration, default_value = "60s")]
    pub linger: Duration,
    /// Serve the status page, /api/status and /metrics here while running (e.g.
    /// 127.0.0.1:9464).
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: UpArgs, store_flag: Option<&str>) -> anyhow::Result<ExitCode> {
    let source = load_manifests(&args.manifests)?;
    let set = source.current().clone();
    let store_url = store_flag.unwrap_or(super::DEFAULT_STORE).to_string();
    let store = open_store(&store_url, &args).await?;
    let clock: SharedClock = clock::system();
    let started_at = clock.now();
    if let Some(path) = &args.tasks {
        import_tasks(path, &set, &store, &clock).await?;
    }
    let (mut controller, metrics, interval) =
        build_controller(&args, &store_url, source, &set, &store, &clock)?;
    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let logs = crate::server::TaskLogs::new(store.clone(), &set);
    let server = serve_http(args.http, &controller, &metrics, logs, http_stopped).await?;

    let mut progress = Progress::new();
    let mut summaries = Summaries::new();
    let passes = Passes {
        set: &set,
        store: &store,
        clock: &clock,
        interval,
        linger: args.linger,
    };
    let interrupted = passes
        .run(&mut controller, &mut progress, &mut summaries)
        .await;
    progress.finish();
    controller.shutdown().await;
    let _ = stop_http.send(true);
    if let Some(task) = server {
        let _ = task.await;
    }
    let end = RunEnd {
        store: &store,
        store_url: &store_url,
        metrics: &metrics,
        clock: &clock,
        started_at,
        log_dir: &args.log_dir,
        json: args.json,
        interrupted,
    };
    summary::report(end, summaries).await
}

/// Opens (creating, and first deleting with `--fresh`) the store and its schema; marks a
/// SQLite store it created so that a later `up --fresh` may delete it without being told to.
async fn open_store(store_url: &str, args: &UpArgs) -> anyhow::Result<SharedStore> {
    if args.fresh {
        fresh::start_fresh(store_url, args.yes)?;
    }
    let sqlite_path = store_url.strip_prefix("sqlite://").map(PathBuf::from);
    let creating = sqlite_path.as_ref().is_some_and(|p| !p.exists());
    let store = super::open_store_creating(store_url).await?;
    store.create_schema().await?;
    if let (true, Some(path)) = (creating, &sqlite_path) {
        // So that a later `up --fresh` may delete it without being told to.
        crate::store::sqlite::mark_created_by_up(path)?;
    }
    Ok(store)
}

/// `--tasks FILE`: imports the tasks under the manifests' pipeline graph, saying how many.
async fn import_tasks(
    path: &Path,
    set: &ManifestSet,
    store: &SharedStore,
    clock: &SharedClock,
) -> anyhow::Result<()> {
    let source = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = import::utf8_text(&source, bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    let lines = import::parse_lines(&source, &text, Format::Auto, &ImportDefaults::default())?;
    if lines.is_empty() {
        eprintln!("{}", super::task::no_tasks_warning(&source));
    }
    let src = super::import_graph::GraphSource {
        manifests: Some(set.clone()),
        scatter: None,
    };
    let (tasks, graph) =
        super::import_graph::prepare(store, &src, &source, lines, clock.now()).await?;
    let r = store.import_graph(&tasks, &graph, clock.now()).await?;
    eprintln!(
        "imported {} task(s) from {} ({} already present)",
        r.inserted,
        path.display(),
        r.unchanged
    );
    Ok(())
}

/// The controller, with every fleet run as local worker processes; its metrics and the time
/// between passes.
fn build_controller(
    args: &UpArgs,
    store_url: &str,
    source: ManifestSource,
    set: &ManifestSet,
    store: &SharedStore,
    clock: &SharedClock,
) -> anyhow::Result<(Controller, Arc<Metrics>, Duration)> {
    let cspec = set.controller.as_ref().map(|c| c.spec.clone());
    let mut cfg = ControllerConfig::new(&cluster_name(None, set));
    cfg.interval = args
        .interval
        .or(cspec.as_ref().map(|c| c.interval))
        .unwrap_or(Duration::from_secs(1));
    // Progress is shown (and the end of the run found) after every pass; SQLite counts cheaply.
    cfg.progress_interval = Duration::ZERO;
    let metrics = Arc::new(Metrics::new());
    let providers = ProviderSet::new(
        worker_launch(store_url, &args.log_dir, true, None)?,
        clock.clone(),
        &cfg.cluster,
        None,
    );
    let interval = cfg.interval;
    let controller = Controller::new(
        cfg,
        store.clone(),
        clock.clone(),
        source,
        providers,
        metrics.clone(),
    );
    Ok((controller, metrics, interval))
}

/// `--http`: serves the status page, /api/status, task logs and /metrics until `stopped` turns true.
async fn serve_http(
    addr: Option<std::net::SocketAddr>,
    controller: &Controller,
    metrics: &Arc<Metrics>,
    logs: crate::server::TaskLogs,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let mut stopped = stopped;
    let (bound, task) = crate::server::serve(
        addr,
        crate::server::AppState {
            status: controller.status(),
            metrics: metrics.clone(),
            logs,
        },
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        },
    )
    .await
    .with_context(|| format!("cannot listen on {addr}"))?;
    eprintln!("status page: http://{bound}/");
    Ok(Some(task))
}

/// What the passes of a run need besides the controller.
struct Passes<'a> {
    set: &'a ManifestSet,
    store: &'a SharedStore,
    clock: &'a SharedClock,
    interval: Duration,
    linger: Duration,
}

impl Passes<'_> {
    /// Runs controller passes, showing each, until every task reached a final state (or only
    /// gathers over a step without tasks are left, which nothing would ever run) and the
    /// fleets are back at their minimum (or `linger` passed since). Returns `true` when
    /// interrupted.
    async fn run(
        &self,
        controller: &mut Controller,
        progress: &mut Progress,
        summaries: &mut Summaries,
    ) -> bool {
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut finished_at: Option<i64> = None;
        loop {
            let report = controller.reconcile_once().await;
            controller.settle_progress().await;
            let status = controller
                .status()
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let steps = progress.show_pass(&report, &status);
            summary::record_plan(summaries, report.plan.as_ref(), self.set);
            let unfinished: u64 = steps.iter().map(|c| c.unfinished()).sum();
            let now = self.clock.now();
            // Nothing will add the tasks a starved gather waits for: the run is over.
            let starved: u64 = status.starved.iter().map(|s| s.waiting).sum();
            if finished_at.is_none() && unfinished > 0 && unfinished == starved {
                for s in &status.starved {
                    progress.say(format!("warning: {}", s.message()));
                }
                finished_at = Some(now);
            }
            if unfinished == 0 && finished_at.is_none() {
                finished_at = Some(now);
                if steps.iter().map(|c| c.total()).sum::<u64>() == 0 {
                    progress.say(
                        "no tasks to run (give --tasks FILE, or `anamo task import`)".to_string(),
                    );
                }
            }
            if let Some(done_at) = finished_at {
                let at_min = self.at_min(report.plan.as_ref());
                if at_min || now - done_at >= self.linger.as_millis() as i64 {
                    return false;
                }
            }
            let lingering = finished_at.is_some();
            let (store, interval) = (self.store, self.interval);
            let shutdown = shutdown.as_mut();
            if progress::wait_for_next_pass(store, interval, unfinished, lingering, shutdown).await
            {
                return true;
            }
        }
    }

    /// Every fleet of `plan` has at most its minimum of instances, running or launching.
    fn at_min(&self, plan: Option<&Plan>) -> bool {
        plan.is_some_and(|p| {
            p.fleets.iter().all(|f| {
                f.status.instances + f.status.launching
                    <= summary::min_instances(self.set, &f.fleet)
            })
        })
    }
}
