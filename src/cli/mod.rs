//! The command line: `anamo <command>`.
//!
//! Commands write standard output through `output::out!`/`outln!`, never `print!`/`println!`
//! (which panic on a closed pipe); clippy's `print_stdout` lint holds every command to that.

#![warn(clippy::print_stdout)]

mod bench;
mod completions;
mod controller;
mod import_graph;
mod manifest;
mod output;
mod sample;
mod sample_list;
mod sample_logs;
mod simulate;
mod simulate_capacity;
mod simulate_sweep;
mod status;
mod status_view;
mod table;
mod table_migrate;
mod task;
mod task_logs;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::store::{self, OpenMode, SharedStore, StoreUrl};
use crate::telemetry::{self, LogFormat};

pub use output::Table;

const ABOUT: &str = "Run tens of thousands of per-sample tasks on fleets that scale themselves.";

const EXAMPLES: &str = "\
Examples:
  anamo up --manifests examples/manifests --tasks examples/tasks.tsv
  anamo --store dynamodb://anamo-tasks table create
  anamo --store dynamodb://anamo-tasks task import samples.tsv
  anamo status --step align
  anamo task list --step align --state succeeded
";

#[derive(Debug, Parser)]
#[command(name = "anamo", version, about = ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// Where the tasks live: sqlite://PATH or dynamodb://TABLE [default: sqlite://anamo.db;
    /// `controller` and `plan` use the Controller manifest's `store` first] [env: ANAMO_STORE=]
    // ANAMO_STORE is read by `store_given`, not clap's `env`: with it, clap shows `--store` in
    // every usage line as if it were required whenever the variable is set.
    #[arg(long, global = true)]
    pub store: Option<String>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "ANAMO_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or delete the task table.
    #[command(subcommand)]
    Table(table::TableCommand),
    /// Import, add, list, show, requeue, cancel or delete tasks.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// Samples across steps: list them all, or show, drop, hold, resume or retry one.
    #[command(subcommand)]
    Sample(sample::SampleCommand),
    /// Progress per step: counts by state, oldest pending task, throughput, fleets.
    Status(status::StatusArgs),
    /// Run the manifests locally: SQLite store, local worker processes, live progress.
    Up(up::UpArgs),
    /// The long-running service that scales each step's fleet to its backlog.
    Controller(controller::ControllerArgs),
    /// What the controller would do now and why (changes nothing).
    Plan(controller::PlanArgs),
    /// The agent on each instance: claims tasks of a step, runs them, records results.
    Worker(crate::worker::WorkerArgs),
    /// Validate manifests or print their JSON Schema.
    #[command(subcommand)]
    Manifest(manifest::ManifestCommand),
    /// Replay a task trace through the planner with a simulated clock and provider, next to
    /// two baseline policies.
    Simulate(simulate::SimulateArgs),
    /// Measure dispatch throughput, claims/s, embedded mode, a reconcile pass at scale and
    /// reaction latencies, each against its limit.
    Bench(bench::BenchArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell).
    Completions(completions::CompletionsArgs),
}

/// The store when neither `--store` nor a Controller manifest names one.
pub const DEFAULT_STORE: &str = "sqlite://anamo.db";

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `up` shows progress bars and action lines, `bench` a table; their logs only say what
    // goes wrong.
    let quiet = matches!(cli.command, Command::Up(_) | Command::Bench(_));
    telemetry::init(cli.log_format, cli.verbose, quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The store URL given: `--store`, else a non-empty `ANAMO_STORE`.
fn store_given(flag: Option<String>) -> Option<String> {
    flag.or_else(|| {
        std::env::var("ANAMO_STORE")
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let store = store_given(cli.store);
    let store = store.as_deref();
    let default_store = || store.unwrap_or(DEFAULT_STORE);
    match cli.command {
        Command::Table(cmd) => table::run(cmd, default_store()).await,
        Command::Task(cmd) => {
            let store = open_store_as(default_store(), cmd.opening()).await?;
            task::run(cmd, store).await
        }
        Command::Sample(cmd) => sample::run(cmd, open_store(default_store()).await?).await,
        Command::Status(args) => status::run(args, open_store(default_store()).await?).await,
        Command::Up(args) => up::run(args, store).await,
        Command::Controller(args) => controller::run_controller(args, store).await,
        Command::Plan(args) => controller::run_plan(args, store).await,
        Command::Worker(args) => {
            let store = open_store(default_store()).await?;
            crate::worker::run(args, store).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Manifest(cmd) => manifest::run(cmd),
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(args) => bench::run(args, store).await,
        Command::Completions(args) => completions::run(args),
    }
}

/// Opens a store that must exist (a missing SQLite file is an error, never created).
pub async fn open_store(url: &str) -> anyhow::Result<SharedStore> {
    open_store_as(url, OpenMode::Existing).await
}

/// Opens a store, creating a missing SQLite store: for `table create`, imports and `up` only.
pub async fn open_store_creating(url: &str) -> anyhow::Result<SharedStore> {
    open_store_as(url, OpenMode::Create).await
}

async fn open_store_as(url: &str, mode: OpenMode) -> anyhow::Result<SharedStore> {
    let url: StoreUrl = url.parse()?;
    Ok(store::open_with(&url, None, mode).await?)
}

/// Opens a store that must exist in an explicit AWS region (the Controller manifest's
/// `region`).
pub async fn open_store_in(url: &str, region: Option<&str>) -> anyhow::Result<SharedStore> {
    let url: StoreUrl = url.parse()?;
    Ok(store::open_with(&url, region, OpenMode::Existing).await?)
}

/// Parses durations like `90s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 5m, 1h: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Options and arguments of `cmd` and its subcommands that have no help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || id == "help" || id == "version" {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_says_what_it_does() {
        let mut missing = Vec::new();
        undocumented(&super::Cli::command(), "anamo", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:?}");
    }
}
