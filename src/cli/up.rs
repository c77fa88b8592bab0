//! `anamo up`: the embedded default. One command: a SQLite store, optional task import, the
//! controller with every fleet run as local worker processes, live progress per step, and a
//! summary when every task reached a final state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::controller::{cluster_name, load_manifests, shutdown_signal, worker_launch};
use super::output::{out, outln, Table};
use super::parse_duration;
use crate::clock::{self, format_duration_ms, SharedClock};
use crate::controller::providers::ProviderSet;
use crate::controller::{Controller, ControllerConfig};
use crate::import::{self, Format, ImportDefaults};
use crate::metrics::Metrics;
use crate::model::StepCounts;
use crate::planner::TerminateCause;

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

/// How often `up` checks for the end of the run between controller passes.
const PROGRESS_TICK: Duration = Duration::from_millis(200);
/// The shortest wait between two looks (when the last tasks are about to finish).
const FINAL_TICK: Duration = Duration::from_millis(10);

/// Tasks not yet in a final state, over every step (`None` on a store error: the next pass
/// reports it).
async fn unfinished_tasks(store: &crate::store::SharedStore) -> Option<u64> {
    let mut n = 0;
    for step in store.steps().await.ok()? {
        n += store.counts(&step).await.ok()?.unfinished();
    }
    Some(n)
}

/// The wait before the next look for the end of the run: when the rest should be done at the
/// rate seen since the last look (`since` ago, `before` tasks unfinished then, `now` now), so
/// the end is noticed within a few milliseconds rather than up to a [`PROGRESS_TICK`] later;
/// twice the last wait while nothing finishes. Between [`FINAL_TICK`] and [`PROGRESS_TICK`],
/// and never shorter than 20 times what a look takes (a large store).
fn next_tick(
    tick: Duration,
    before: Option<u64>,
    now: Option<u64>,
    since: Duration,
    look_took: Duration,
) -> Duration {
    let wait = match (before, now) {
        (Some(b), Some(n)) if b > n && !since.is_zero() => since.mul_f64(n as f64 / (b - n) as f64),
        (Some(_), Some(_)) => tick * 2,
        _ => PROGRESS_TICK,
    };
    wait.max(FINAL_TICK).max(look_took * 20).min(PROGRESS_TICK)
}

/// What `up --fresh` does with the store it is given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fresh {
    /// There is nothing to delete.
    Nothing,
    Delete,
    /// Not deleted, and why.
    Refuse(String),
}

/// Decides what `--fresh` may delete: a SQLite store an earlier `up` created, or any SQLite
/// store with `--yes`; never a DynamoDB table.
fn fresh_decision(url: &str, exists: bool, made_by_up: bool, yes: bool) -> Fresh {
    if !url.starts_with("sqlite://") {
        return Fresh::Refuse(format!(
            "--fresh deletes only SQLite stores and {url} is not one; nothing was deleted \
             (delete a table with `anamo table delete --yes`, or drop --fresh)"
        ));
    }
    match (exists, made_by_up || yes) {
        (false, _) => Fresh::Nothing,
        (true, true) => Fresh::Delete,
        (true, false) => Fresh::Refuse(format!(
            "--fresh would delete {url}, a store that `anamo up` did not create (named by \
             --store or ANAMO_STORE); nothing was deleted. Add --yes to delete it and every task \
             in it, drop --fresh to run on its tasks, or give another store, e.g. \
             --store sqlite://up.db"
        )),
    }
}

/// `--fresh`: deletes the SQLite store (and its `-wal`/`-shm` files) when allowed, saying
/// which files it deleted; refuses otherwise.
fn start_fresh(url: &str, yes: bool) -> anyhow::Result<()> {
    let path = url.strip_prefix("sqlite://").map(PathBuf::from);
    let exists = path.as_ref().is_some_and(|p| p.exists());
    let made_by_up = path
        .as_ref()
        .is_some_and(|p| crate::store::sqlite::created_by_up(p));
    match (fresh_decision(url, exists, made_by_up, yes), path) {
        (Fresh::Refuse(why), _) => anyhow::bail!(why),
        (Fresh::Delete, Some(path)) => {
            let mut deleted = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let file = PathBuf::from(file);
                match std::fs::remove_file(&file) {
                    Ok(()) => deleted.push(file.display().to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => anyhow::bail!("--fresh: cannot delete {}: {e}", file.display()),
                }
            }
            let whose = if made_by_up {
                "created by an earlier `anamo up`"
            } else {
                "deleted as --yes says"
            };
            eprintln!("--fresh: deleted {} ({whose})", deleted.join(", "));
            Ok(())
        }
        (Fresh::Nothing | Fresh::Delete, _) => Ok(()),
    }
}

#[derive(Debug, Default, serde::Serialize)]
struct FleetSummary {
    peak_instances: u32,
    launches: u64,
    terminations: u64,
    final_instances: u32,
    min_instances: u32,
}

pub async fn run(args: UpArgs, store_flag: Option<&str>) -> anyhow::Result<ExitCode> {
    let source = load_manifests(&args.manifests)?;
    let set = source.current().clone();
    let store_url = store_flag.unwrap_or(super::DEFAULT_STORE).to_string();
    if args.fresh {
        start_fresh(&store_url, args.yes)?;
    }
    let sqlite_path = store_url.strip_prefix("sqlite://").map(PathBuf::from);
    let creating = sqlite_path.as_ref().is_some_and(|p| !p.exists());
    let store = super::open_store_creating(&store_url).await?;
    store.create_schema().await?;
    if let (true, Some(path)) = (creating, &sqlite_path) {
        // So that a later `up --fresh` may delete it without being told to.
        crate::store::sqlite::mark_created_by_up(path)?;
    }
    let clock: SharedClock = clock::system();
    let started_at = clock.now();

    if let Some(path) = &args.tasks {
        let source = path.display().to_string();
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
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
            super::import_graph::prepare(&store, &src, &source, lines, clock.now()).await?;
        let r = store.import_graph(&tasks, &graph, clock.now()).await?;
        eprintln!(
            "imported {} task(s) from {} ({} already present)",
            r.inserted,
            path.display(),
            r.unchanged
        );
    }

    let cspec = set.controller.as_ref().map(|c| c.spec.clone());
    let mut cfg = ControllerConfig::new(&cluster_name(None, &set));
    cfg.interval = args
        .interval
        .or(cspec.as_ref().map(|c| c.interval))
        .unwrap_or(Duration::from_secs(1));
    // Progress is shown (and the end of the run found) after every pass; SQLite counts cheaply.
    cfg.progress_interval = Duration::ZERO;
    let metrics = Arc::new(Metrics::new());
    let providers = ProviderSet::new(
        worker_launch(&store_url, &args.log_dir, true, None)?,
        clock.clone(),
        &cfg.cluster,
        None,
    );
    let mut controller = Controller::new(
        cfg.clone(),
        store.clone(),
        clock.clone(),
        source,
        providers,
        metrics.clone(),
    );

    let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
    let server = match args.http {
        Some(addr) => {
            let mut stopped = http_stopped.clone();
            let (bound, task) = crate::server::serve(
                addr,
                crate::server::AppState {
                    status: controller.status(),
                    metrics: metrics.clone(),
                },
                async move {
                    let _ = stopped.wait_for(|s| *s).await;
                },
            )
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
            eprintln!("status page: http://{bound}/");
            Some(task)
        }
        None => None,
    };

    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut bars: BTreeMap<String, ProgressBar> = BTreeMap::new();
    let mut summaries: BTreeMap<String, FleetSummary> = BTreeMap::new();
    let mut printed_actions = 0usize;
    let mut finished_at: Option<i64> = None;
    // Without a terminal the bars are hidden; print the action lines plainly then.
    let say = |line: String| {
        if multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = multi.println(line);
        }
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut interrupted = false;

    'passes: loop {
        let report = controller.reconcile_once().await;
        controller.settle_progress().await;
        for e in &report.errors {
            say(format!("warning: {e}"));
        }
        // Show new actions as log lines above the bars.
        let status = controller
            .status()
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let total_actions = status.recent_actions.len();
        let new = total_actions.saturating_sub(printed_actions.min(total_actions));
        for a in status.recent_actions.iter().take(new).rev() {
            say(format!("{:>12}: {} — {}", a.fleet, a.action, a.reason));
        }
        printed_actions = total_actions;
        if let Some(plan) = &report.plan {
            for f in &plan.fleets {
                let s = summaries.entry(f.fleet.clone()).or_default();
                s.peak_instances = s.peak_instances.max(f.status.instances);
                s.final_instances = f.status.instances;
                s.min_instances = set
                    .fleet(&f.fleet)
                    .map(|m| m.spec.min_instances)
                    .unwrap_or(0);
            }
        }
        let steps: Vec<StepCounts> = status.steps.iter().map(|s| s.counts.clone()).collect();
        for c in &steps {
            let bar = bars.entry(c.step.clone()).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(0));
                b.set_style(style.clone());
                b.set_prefix(c.step.clone());
                b
            });
            bar.set_length(c.total());
            bar.set_position(c.succeeded + c.failed + c.cancelled);
            bar.set_message(format!(
                "ok {} failed {} running {} pending {} waiting {}",
                c.succeeded, c.failed, c.running, c.pending, c.waiting
            ));
        }
        let total: u64 = steps.iter().map(|c| c.total()).sum();
        let unfinished: u64 = steps.iter().map(|c| c.unfinished()).sum();
        let now = clock.now();
        if unfinished == 0 && finished_at.is_none() {
            finished_at = Some(now);
            if total == 0 {
                say("no tasks to run (give --tasks FILE, or `anamo task import`)".to_string());
            }
        }
        if let Some(done_at) = finished_at {
            let at_min = report.plan.as_ref().is_some_and(|p| {
                p.fleets.iter().all(|f| {
                    f.status.instances + f.status.launching
                        <= set
                            .fleet(&f.fleet)
                            .map(|m| m.spec.min_instances)
                            .unwrap_or(0)
                })
            });
            if at_min || now - done_at >= args.linger.as_millis() as i64 {
                break;
            }
        }
        // Until the next pass, look at the counts a few times a second, and when the last
        // tasks are due to finish (see `next_tick`): when they have, pass at once instead of up
        // to an interval later.
        let next_pass = tokio::time::Instant::now() + cfg.interval;
        let mut left = Some(unfinished);
        let mut looked_at = tokio::time::Instant::now();
        let mut tick = PROGRESS_TICK;
        loop {
            let at = match finished_at {
                None => (tokio::time::Instant::now() + tick).min(next_pass),
                // Lingering: nothing to look for until the next pass.
                Some(_) => next_pass,
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = &mut shutdown => { interrupted = true; break 'passes; }
            }
            if tokio::time::Instant::now() >= next_pass {
                break;
            }
            if finished_at.is_none() {
                let started = tokio::time::Instant::now();
                let now = unfinished_tasks(&store).await;
                if now == Some(0) {
                    break;
                }
                let since = started - looked_at;
                tick = next_tick(tick, left, now, since, started.elapsed());
                (left, looked_at) = (now, started);
            }
        }
    }
    for b in bars.values() {
        b.finish();
    }
    controller.shutdown().await;
    let _ = stop_http.send(true);
    if let Some(task) = server {
        let _ = task.await;
    }

    for (fleet, s) in summaries.iter_mut() {
        s.launches = metrics.launches.with_label_values(&[fleet.as_str()]).get();
        s.terminations = TerminateCause::ALL
            .iter()
            .map(|c| {
                metrics
                    .terminations
                    .with_label_values(&[fleet.as_str(), c.as_str()])
                    .get()
            })
            .sum();
    }
    let mut steps = Vec::new();
    for step in store.steps().await? {
        steps.push(store.counts(&step).await?);
    }
    let failed: u64 = steps.iter().map(|c| c.failed).sum();
    if args.json {
        super::output::print_json(&serde_json::json!({ "steps": steps, "fleets": summaries }))?;
    } else {
        let mut t = Table::new([
            "STEP",
            "SUCCEEDED",
            "FAILED",
            "CANCELLED",
            "UNFINISHED",
            "TOTAL",
        ]);
        for c in &steps {
            t.row([
                c.step.clone(),
                c.succeeded.to_string(),
                c.failed.to_string(),
                c.cancelled.to_string(),
                c.unfinished().to_string(),
                c.total().to_string(),
            ]);
        }
        outln!("{}", t.render());
        let mut ft = Table::new([
            "FLEET",
            "PEAK INSTANCES",
            "LAUNCHED",
            "TERMINATED",
            "AT END",
            "MIN",
        ]);
        for (fleet, s) in &summaries {
            ft.row([
                fleet.clone(),
                s.peak_instances.to_string(),
                s.launches.to_string(),
                s.terminations.to_string(),
                s.final_instances.to_string(),
                s.min_instances.to_string(),
            ]);
        }
        out!("{}", ft.render());
        outln!(
            "\nfinished in {}; task logs in {}",
            format_duration_ms(clock.now() - started_at),
            args.log_dir.join("tasks").display()
        );
    }
    if let Some(message) = failed_summary(&steps, &store_url) {
        eprintln!("{message}");
    }
    if interrupted {
        eprintln!("interrupted: workers were drained; run `anamo up` again to continue");
        return Ok(ExitCode::from(130));
    }
    if steps.iter().any(|c| c.unfinished() > 0) {
        eprintln!("stopped with unfinished tasks");
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// What to tell when tasks failed: how many, in which steps, and the commands that show them
/// (naming the store unless it is the default one). `None` when none failed.
fn failed_summary(steps: &[StepCounts], store_url: &str) -> Option<String> {
    let failed: Vec<(&str, u64)> = steps
        .iter()
        .filter(|c| c.failed > 0)
        .map(|c| (c.step.as_str(), c.failed))
        .collect();
    let total: u64 = failed.iter().map(|(_, n)| n).sum();
    if total == 0 {
        return None;
    }
    let per_step: Vec<String> = failed.iter().map(|(s, n)| format!("{n} in {s}")).collect();
    let store = if store_url == super::DEFAULT_STORE {
        String::new()
    } else {
        format!("--store {store_url} ")
    };
    let first_step = failed[0].0;
    Some(format!(
        "error: {total} task(s) failed ({})\n  \
         list them:        anamo {store}task list --state failed\n  \
         see one's output: anamo {store}task show --step {first_step} --id ID\n  \
         run them again:   anamo {store}task requeue --step {first_step} --state failed",
        per_step.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(step: &str, succeeded: u64, failed: u64) -> StepCounts {
        StepCounts {
            step: step.to_string(),
            succeeded,
            failed,
            ..Default::default()
        }
    }

    #[test]
    fn failures_are_counted_per_step_with_the_commands_that_show_them() {
        let steps = [
            counts("align", 5, 0),
            counts("call", 1, 6),
            counts("joint", 0, 3),
        ];
        let msg = failed_summary(&steps, super::super::DEFAULT_STORE).unwrap();
        assert!(
            msg.starts_with("error: 9 task(s) failed (6 in call, 3 in joint)\n"),
            "{msg}"
        );
        assert!(msg.contains("anamo task list --state failed\n"), "{msg}");
        assert!(msg.contains("anamo task show --step call --id ID"), "{msg}");
        let msg = failed_summary(&steps, "sqlite://run.db").unwrap();
        assert!(
            msg.contains("anamo --store sqlite://run.db task list --state failed"),
            "{msg}"
        );
        assert_eq!(
            failed_summary(&[counts("align", 5, 0)], "sqlite://x.db"),
            None
        );
    }

    #[test]
    fn fresh_deletes_only_what_up_made_or_what_yes_names() {
        let url = "sqlite://tasks.db";
        assert_eq!(fresh_decision(url, false, false, false), Fresh::Nothing);
        assert_eq!(fresh_decision(url, true, true, false), Fresh::Delete);
        assert_eq!(fresh_decision(url, true, false, true), Fresh::Delete);
        let Fresh::Refuse(why) = fresh_decision(url, true, false, false) else {
            panic!("a store up did not make is deleted without --yes");
        };
        assert!(
            why.contains("sqlite://tasks.db") && why.contains("--yes"),
            "{why}"
        );
        let dynamo = fresh_decision("dynamodb://t", true, false, true);
        assert!(matches!(dynamo, Fresh::Refuse(_)), "{dynamo:?}");
    }

    #[test]
    fn end_of_run_is_looked_for_when_it_is_due() {
        let ms = Duration::from_millis;
        // 100 of 1000 tasks finished in the last 200 ms: the rest takes longer than a tick.
        assert_eq!(
            next_tick(PROGRESS_TICK, Some(1000), Some(900), ms(200), ms(1)),
            PROGRESS_TICK
        );
        // 300 finished in 200 ms, 60 left: look again in 40 ms...
        assert_eq!(
            next_tick(PROGRESS_TICK, Some(360), Some(60), ms(200), ms(1)),
            ms(40)
        );
        // ...not sooner than FINAL_TICK when just a few are left...
        assert_eq!(
            next_tick(ms(40), Some(60), Some(1), ms(40), ms(0)),
            FINAL_TICK
        );
        // ...and never more often than 20 times a look's duration.
        assert_eq!(next_tick(ms(40), Some(60), Some(1), ms(40), ms(2)), ms(40));
        // Nothing finished: less and less often.
        assert_eq!(next_tick(ms(10), Some(7), Some(7), ms(10), ms(0)), ms(20));
        assert_eq!(
            next_tick(ms(160), Some(7), Some(7), ms(160), ms(0)),
            PROGRESS_TICK
        );
        // No earlier look, or the store failed: the normal tick.
        assert_eq!(
            next_tick(ms(10), None, Some(7), ms(10), ms(0)),
            PROGRESS_TICK
        );
        assert_eq!(
            next_tick(ms(10), Some(9), None, ms(10), ms(0)),
            PROGRESS_TICK
        );
    }
}
