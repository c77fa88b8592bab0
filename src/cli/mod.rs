//! The command line: `anamo <command>`.

mod output;
mod status;
mod table;
mod task;

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
    /// Where the tasks live: sqlite://PATH or dynamodb://TABLE.
    #[arg(
        long,
        global = true,
        env = "ANAMO_STORE",
        default_value = "sqlite://anamo.db"
    )]
    pub store: String,
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
    /// Progress per step: counts by state, oldest pending task, throughput.
    Status(status::StatusArgs),
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, cli.verbose);
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
    match cli.command {
        Command::Table(cmd) => table::run(cmd, open_store(&cli.store).await?).await,
        Command::Task(cmd) => task::run(cmd, open_store(&cli.store).await?).await,
        Command::Status(args) => status::run(args, open_store(&cli.store).await?).await,
    }
}

pub async fn open_store(url: &str) -> anyhow::Result<SharedStore> {
    let url: StoreUrl = url.parse()?;
    Ok(store::open(&url).await?)
}

/// Parses durations like `90s`, `5m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration like 30s, 5m, 1h: {e}"))
}
