//! The command line: `anamo <command>`.

mod bench;
mod completions;
mod controller;
mod manifest;
mod output;
mod simulate;
mod status;
mod status_view;
mod table;
mod task;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::store::{self, SharedStore, StoreUrl};
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
    /// `controller` and `plan` use the Controller manifest's `store` first].
    #[arg(long, global = true, env = "ANAMO_STORE")]
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

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let store = cli.store.as_deref();
    let default_store = || store.unwrap_or(DEFAULT_STORE);
    match cli.command {
        Command::Table(cmd) => table::run(cmd, open_store(default_store()).await?).await,
        Command::Task(cmd) => task::run(cmd, open_store(default_store()).await?).await,
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

pub async fn open_store(url: &str) -> anyhow::Result<SharedStore> {
    open_store_in(url, None).await
}

/// Opens a store in an explicit AWS region (the Controller manifest's `region`).
pub async fn open_store_in(url: &str, region: Option<&str>) -> anyhow::Result<SharedStore> {
    let url: StoreUrl = url.parse()?;
    Ok(store::open_in(&url, region).await?)
}

/// Parses durations like `90s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 5m, 1h: {e}"))
}
