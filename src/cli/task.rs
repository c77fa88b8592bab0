//! `anamo task ...`: the task pool by hand.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use super::output::{out, outln, print_json, Table};
use super::parse_duration;
use crate::clock::{format_duration_ms, format_millis, Clock, Millis, SystemClock};
use crate::import::{self, Format, ImportDefaults};
use crate::model::{ImportReport, Task, TaskFilter, TaskSpec, TaskState};
use crate::store::{OpenMode, SharedStore};

/// Tasks written per store call during import, so the progress bar moves.
const IMPORT_CHUNK: usize = 500;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Import tasks from a file (or - for stdin): TSV `id<TAB>step<TAB>script[<TAB>arg]...`,
    /// `|`-separated lines, or JSONL. The whole file is checked first; a file with any bad line
    /// writes nothing. Re-importing the same file changes nothing.
    ///
    /// Refused with file:line, like any bad line: text that is not UTF-8, a NUL byte, and a
    /// command line execve would reject (a script, argument or env entry over 128 KiB, Linux's
    /// MAX_ARG_STRLEN, or all of them over 1 MiB, half the usual 2 MiB ARG_MAX). A file
    /// without tasks is a warning. Ctrl-C stops the import between two batches of 500 and
    /// says "imported N of M ...; run the same command again to finish": what was written
    /// stays, and the same command adds the rest.
    #[command(after_help = "Examples:\n  anamo task import samples.tsv\n  \
        anamo task import --step align --depends-on fetch ids.tsv   # lines: id<TAB>script\n  \
        cat tasks.jsonl | anamo task import -")]
    Import(ImportArgs),
    /// Add one task.
    #[command(
        after_help = "Example:\n  anamo task add --step align --id S1 -- bwa mem ref.fa S1.fq"
    )]
    Add(AddArgs),
    /// List tasks, e.g. the samples done in a step: `anamo task list --step align --state succeeded`.
    List(ListArgs),
    /// Show one task with its lease and result.
    Show(KeyArgs),
    /// Put tasks back to pending with attempts reset: one task (`--id`) or every task of the
    /// step in a state (`--state`). By default the tasks that failed or were cancelled because
    /// of them are requeued too (`--no-dependents`: only the selected ones).
    #[command(
        after_help = "Examples:\n  anamo task requeue --step align --state failed\n  \
        anamo task requeue --step align --id S1 --force"
    )]
    Requeue(RequeueArgs),
    /// Cancel waiting, pending or running tasks: one task (`--id`) or every task of the step
    /// in a state (`--state`). A running task's worker stops it.
    #[command(after_help = "Example:\n  anamo task cancel --step align --state pending")]
    Cancel(SelectArgs),
    /// Delete one task.
    Delete(KeyArgs),
    /// Print an attempt's full output from where its worker stored it (`--log-url`: S3 or a
    /// directory), or else the end of it kept in the result; `--follow` a running task.
    #[command(after_help = "Examples:\n  anamo task logs align S1\n  \
        anamo task logs align S1 --attempt 1 --tail 50\n  \
        anamo task logs align S1 --follow --log-url s3://my-bucket/anamo-logs")]
    Logs(super::task_logs::LogsArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// File to import, or `-` for standard input.
    pub file: String,
    /// Format of the file; `auto` tells TSV, `|`-separated and JSONL apart by the first line.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Step for lines that give only `id<TAB>script`.
    #[arg(long)]
    pub step: Option<String>,
    /// Steps whose task with the same id must succeed first (TSV lines).
    #[arg(long = "depends-on")]
    pub depends_on: Vec<String>,
    /// Attempts before a task is failed (TSV lines; default 3).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Priority of the tasks (TSV lines; default 0): among a step's pending tasks, a higher
    /// priority is claimed first, negative ones last.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Per-attempt time limit, e.g. 2h (TSV lines).
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Apply the pipeline graph of these fleet manifests (steps' keys, scatter, dependsOn,
    /// task defaults) and publish it to the store; without it, the graph the controller
    /// published applies.
    #[arg(long)]
    pub manifests: Option<std::path::PathBuf>,
    /// Scatter the tasks of the step given with --step over this file's items (one per
    /// line): task `ID` becomes `ID/ITEM` for every item, the item in `ANAMO_KEY_<PART>`.
    #[arg(long, requires = "step")]
    pub scatter_file: Option<std::path::PathBuf>,
    /// The key part --scatter-file fills [default: the last part of the step's key, or
    /// `item` for a step keyed by one part].
    #[arg(long, requires = "scatter_file")]
    pub scatter_part: Option<String>,
    /// Print the import report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Step the task belongs to (the fleet of that step runs it).
    #[arg(long)]
    pub step: String,
    /// Task id, unique within the step (e.g. the sample name).
    #[arg(long)]
    pub id: String,
    /// Steps whose task with the same id must succeed first (repeat for several).
    #[arg(long = "depends-on")]
    pub depends_on: Vec<String>,
    /// Attempts before the task is failed.
    #[arg(long, default_value_t = crate::model::DEFAULT_MAX_ATTEMPTS)]
    pub max_attempts: u32,
    /// Among a step's pending tasks, a higher priority is claimed first, negative ones last.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Per-attempt time limit, e.g. 2h [default: none].
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Environment for the script, KEY=VALUE.
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// The command line (joined with spaces and run with /bin/sh -c).
    #[arg(required = true, last = true)]
    pub script: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks of this step [default: every step].
    #[arg(long)]
    pub step: Option<String>,
    /// Only tasks in this state: waiting, pending, running, succeeded, failed, cancelled, held
    /// or retrying.
    #[arg(long, value_parser = parse_state)]
    pub state: Option<TaskState>,
    /// Only tasks with this id (one per step it is in).
    #[arg(long)]
    pub id: Option<String>,
    /// Print at most this many tasks [default: all].
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only print the ids, one per line (handy in pipelines).
    #[arg(long, conflicts_with = "json")]
    pub ids: bool,
    /// Print the tasks as a JSON array (full records: spec, lease, result).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// Step of the task.
    #[arg(long)]
    pub step: String,
    /// Id of the task.
    #[arg(long)]
    pub id: String,
    /// Print the task as JSON (show only).
    #[arg(long)]
    pub json: bool,
}

/// Which tasks of a step: one by `--id`, or all in a `--state`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "state"])))]
pub struct SelectArgs {
    /// Step of the tasks.
    #[arg(long)]
    pub step: String,
    /// One task, by id (or use --state).
    #[arg(long)]
    pub id: Option<String>,
    /// Every task of the step in this state: waiting, pending, running, succeeded, failed,
    /// cancelled, held or retrying (or use --id).
    #[arg(long, value_parser = parse_state)]
    pub state: Option<TaskState>,
}

#[derive(Debug, Args)]
pub struct RequeueArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    /// Also requeue running tasks: revoke their leases, so their workers stop them (without
    /// it, requeueing a running task is refused).
    #[arg(long)]
    pub force: bool,
    /// Requeue only the selected tasks. By default the tasks (of any step) that failed or were
    /// cancelled because of them are requeued too, in dependency order.
    #[arg(long)]
    pub no_dependents: bool,
}

impl TaskCommand {
    /// How the command opens its store: imports (`import`, `add`) may create one, every
    /// other command needs one that exists.
    pub fn opening(&self) -> OpenMode {
        match self {
            TaskCommand::Import(_) | TaskCommand::Add(_) => OpenMode::Create,
            _ => OpenMode::Existing,
        }
    }
}

/// Why a task is in its state, for the REASON column: its reason, with when a `retrying`
/// task is due; `-` when there is nothing to say.
fn reason_cell(t: &crate::model::Task) -> String {
    let reason = t.reason.as_deref().unwrap_or("");
    match (t.state, t.retry_at) {
        (TaskState::Retrying, Some(at)) if reason.is_empty() => {
            format!("retry at {}", format_millis(at))
        }
        (TaskState::Retrying, Some(at)) => format!("{reason}; retry at {}", format_millis(at)),
        _ if reason.is_empty() => "-".into(),
        _ => reason.to_string(),
    }
}

fn parse_state(s: &str) -> Result<TaskState, String> {
    s.parse()
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

pub async fn run(cmd: TaskCommand, store: SharedStore) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    match cmd {
        TaskCommand::Import(args) => import_cmd(args, store).await,
        TaskCommand::Logs(args) => super::task_logs::run(args, store).await,
        TaskCommand::Add(a) => add_cmd(a, store, now).await,
        TaskCommand::List(a) => list_cmd(a, store).await,
        TaskCommand::Show(k) => show_cmd(k, store).await,
        TaskCommand::Requeue(a) => requeue_cmd(a, store, now).await,
        TaskCommand::Cancel(sel) => {
            let ids = select(&store, &sel).await?;
            for id in &ids {
                store.cancel(&sel.step, id, now).await?;
            }
            outln!("cancelled {} task(s) of step {}", ids.len(), sel.step);
            Ok(ExitCode::SUCCESS)
        }
        TaskCommand::Delete(k) => {
            store.delete(&k.step, &k.id).await?;
            outln!("deleted {}/{}", k.step, k.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn add_cmd(a: AddArgs, store: SharedStore, now: Millis) -> anyhow::Result<ExitCode> {
    let mut spec = TaskSpec::new(&a.step, &a.id, a.script.join(" "));
    spec.depends_on = a.depends_on;
    spec.max_attempts = a.max_attempts;
    spec.priority = a.priority;
    spec.timeout_secs = a.timeout.map(|d| d.as_secs().max(1));
    spec.env = a.env.into_iter().collect();
    spec.validate()
        .and_then(|_| import::check_exec_limits(&spec))
        .map_err(|e| anyhow::anyhow!("invalid task: {e}"))?;
    super::import_graph::add(&store, spec, now).await
}

async fn list_cmd(a: ListArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    let tasks = store
        .list(&TaskFilter {
            step: a.step,
            state: a.state,
            id: a.id,
            limit: a.limit,
        })
        .await?;
    if a.json {
        print_json(&tasks)?;
    } else if a.ids {
        for t in &tasks {
            outln!("{}", t.id());
        }
    } else {
        let mut table = Table::new([
            "STEP", "ID", "STATE", "ATTEMPTS", "EXIT", "DURATION", "UPDATED", "REASON",
        ]);
        for t in &tasks {
            let r = t.result.as_ref();
            table.row([
                t.step().to_string(),
                t.id().to_string(),
                t.state.to_string(),
                format!("{}/{}", t.attempts, t.spec.max_attempts),
                r.and_then(|r| r.exit_code)
                    .map(|c| c.to_string())
                    .unwrap_or("-".into()),
                r.map(|r| format_duration_ms(r.duration_ms))
                    .unwrap_or("-".into()),
                format_millis(t.updated_at),
                reason_cell(t),
            ]);
        }
        out!("{}", table.render());
    }
    Ok(ExitCode::SUCCESS)
}

async fn requeue_cmd(a: RequeueArgs, store: SharedStore, now: Millis) -> anyhow::Result<ExitCode> {
    use crate::store::graph::{empty_graph, get_graph};
    use crate::store::samples::{requeue_dependents, requeue_one};
    let sel = &a.select;
    let graph = get_graph(store.as_ref()).await?.unwrap_or_else(empty_graph);
    let ids = select(&store, sel).await?;
    for id in &ids {
        requeue_one(store.as_ref(), &graph, &sel.step, id, a.force, now).await?;
    }
    outln!("requeued {} task(s) of step {}", ids.len(), sel.step);
    if !a.no_dependents && !ids.is_empty() {
        let roots: Vec<(String, String)> = ids
            .iter()
            .map(|id| (sel.step.clone(), id.clone()))
            .collect();
        let carried = requeue_dependents(store.as_ref(), &graph, &roots, now).await?;
        if !carried.is_empty() {
            outln!(
                "requeued {} dependent(s) that ended because of them:",
                carried.len()
            );
            for (step, id) in &carried {
                outln!("  {step}/{id}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_cmd(k: KeyArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    let task = store
        .get(&k.step, &k.id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("task {}/{} not found", k.step, k.id))?;
    if k.json {
        print_json(&task)?;
    } else {
        print_task(&task);
    }
    Ok(ExitCode::SUCCESS)
}

/// `task show` as text: the definition, the lease and the last result with its log tail.
fn print_task(task: &Task) {
    outln!("task:      {}/{}", task.step(), task.id());
    outln!("state:     {}", task.state);
    if let Some(reason) = &task.reason {
        outln!("reason:    {reason}");
    }
    outln!("attempts:  {}/{}", task.attempts, task.spec.max_attempts);
    outln!("script:    {}", task.spec.script);
    if !task.spec.args.is_empty() {
        outln!("args:      {}", task.spec.args.join(" "));
    }
    if !task.spec.depends_on.is_empty() {
        outln!("dependsOn: {}", task.spec.depends_on.join(", "));
    }
    outln!("created:   {}", format_millis(task.created_at));
    outln!("updated:   {}", format_millis(task.updated_at));
    if let Some(l) = &task.lease {
        outln!(
            "lease:     {} until {}",
            l.owner,
            format_millis(l.expires_at)
        );
    }
    if let Some(r) = &task.result {
        outln!(
            "result:    exit {} in {} on {}{}",
            r.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
            format_duration_ms(r.duration_ms),
            r.worker_id,
            r.instance_id
                .as_deref()
                .map(|i| format!(" ({i})"))
                .unwrap_or_default()
        );
        if let Some(url) = &r.log_url {
            outln!(
                "log:       {url} (anamo task logs {} {})",
                task.step(),
                task.id()
            );
        }
        if let Some(why) = &r.log_error {
            outln!("log error: {why}");
        }
        if !r.log_tail.is_empty() {
            outln!("log tail:\n{}", r.log_tail);
        }
    }
}

async fn select(store: &SharedStore, sel: &SelectArgs) -> anyhow::Result<Vec<String>> {
    if let Some(id) = &sel.id {
        return Ok(vec![id.clone()]);
    }
    let tasks = store
        .list(&TaskFilter {
            step: Some(sel.step.clone()),
            state: sel.state,
            ..Default::default()
        })
        .await?;
    Ok(tasks.into_iter().map(|t| t.spec.id).collect())
}

/// SIGINT (Ctrl-C) or SIGTERM seen since the import started: the import stops between two
/// batches and says how far it got (what was written stays; importing again finishes it).
struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    fn catch() -> anyhow::Result<Interrupt> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupt {
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
        })
    }

    fn happened(&mut self) -> bool {
        use futures::FutureExt;
        let int = self.int.recv().now_or_never().is_some();
        let term = self.term.recv().now_or_never().is_some();
        int || term
    }
}

/// The file (or standard input for `-`) as text: `(name for messages, text)`.
fn read_input(file: &str) -> anyhow::Result<(String, String)> {
    let (source, bytes) = if file == "-" {
        let mut b = Vec::new();
        std::io::stdin()
            .read_to_end(&mut b)
            .context("reading standard input")?;
        ("<stdin>".to_string(), b)
    } else {
        let b = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
        (file.to_string(), b)
    };
    let text = import::utf8_text(&source, bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((source, text))
}

/// The warning for an input without a single task.
pub(crate) fn no_tasks_warning(source: &str) -> String {
    format!(
        "warning: {source} has no tasks (it is empty, or holds only blank and comment lines); \
         nothing was imported"
    )
}

async fn import_cmd(args: ImportArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    let mut interrupt = Interrupt::catch()?;
    let (source, text) = read_input(&args.file)?;
    // Validate everything before writing anything.
    let (tasks, graph) = parse_import(&args, &source, &text, &store).await?;
    if tasks.is_empty() {
        eprintln!("{}", no_tasks_warning(&source));
    }
    let large = tasks.len() > IMPORT_CHUNK;
    if large {
        eprintln!(
            "importing {} tasks into {} in batches of {IMPORT_CHUNK} (Ctrl-C stops after the \
             current batch)",
            tasks.len(),
            store.describe()
        );
    }
    let bar = if args.json || !large {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(tasks.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tasks  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let Some(total) = write_batches(&tasks, &graph, &store, &bar, &mut interrupt).await? else {
        return Ok(ExitCode::from(130));
    };
    bar.finish_and_clear();
    if args.json {
        print_json(&total)?;
    } else {
        print_import_report(&total, &store);
    }
    Ok(ExitCode::SUCCESS)
}

/// The tasks of the input, with the defaults given on the command line, under the pipeline
/// graph (of `--manifests`, or the one in the store): scattered, key-checked, step defaults.
async fn parse_import(
    args: &ImportArgs,
    source: &str,
    text: &str,
    store: &SharedStore,
) -> anyhow::Result<(Vec<TaskSpec>, crate::pipeline::Graph)> {
    let defaults = ImportDefaults {
        step: args.step.clone(),
        depends_on: args.depends_on.clone(),
        max_attempts: args.max_attempts,
        priority: args.priority,
        timeout_secs: args.timeout.map(|d| d.as_secs().max(1)),
    };
    let lines = import::parse_lines(source, text, args.format, &defaults)?;
    let src = super::import_graph::GraphSource {
        manifests: match &args.manifests {
            Some(dir) => Some(crate::manifest::load(dir).map_err(|e| anyhow::anyhow!("{e}"))?),
            None => None,
        },
        scatter: args.scatter_file.clone().map(|f| {
            (
                defaults.step.clone().unwrap_or_default(),
                args.scatter_part.clone(),
                f,
            )
        }),
    };
    let now = SystemClock.now();
    super::import_graph::prepare(store, &src, source, lines, now).await
}

/// Writes the tasks [`IMPORT_CHUNK`] at a time, moving `bar`. `None` when interrupted between
/// two batches (said, with how far it got).
async fn write_batches(
    tasks: &[TaskSpec],
    graph: &crate::pipeline::Graph,
    store: &SharedStore,
    bar: &ProgressBar,
    interrupt: &mut Interrupt,
) -> anyhow::Result<Option<ImportReport>> {
    let mut total = ImportReport::default();
    let now = SystemClock.now();
    let mut done = 0;
    for chunk in tasks.chunks(IMPORT_CHUNK) {
        if interrupt.happened() {
            bar.finish_and_clear();
            eprintln!(
                "interrupted: imported {done} of {} task(s) into {} ({} new, {} already \
                 present); run the same command again to finish",
                tasks.len(),
                store.describe(),
                total.inserted,
                total.unchanged
            );
            return Ok(None);
        }
        let r = store
            .import_graph(chunk, graph, now)
            .await
            .with_context(|| {
                format!(
                    "imported {done} of {} task(s) before this error; run the same command again \
                 to finish",
                    tasks.len()
                )
            })?;
        total.inserted += r.inserted;
        total.unchanged += r.unchanged;
        total.conflicting.extend(r.conflicting);
        done += chunk.len();
        bar.inc(chunk.len() as u64);
    }
    Ok(Some(total))
}

fn print_import_report(total: &ImportReport, store: &SharedStore) {
    outln!(
        "imported {} new task(s) into {}; {} already present",
        total.inserted,
        store.describe(),
        total.unchanged
    );
    if !total.conflicting.is_empty() {
        eprintln!(
            "warning: {} task(s) already exist with a different definition and were left as they are: {}",
            total.conflicting.len(),
            total.conflicting.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
        );
    }
}
