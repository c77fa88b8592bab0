//! `anamo bench`: throughput, scale and latency figures measured in one run, each beside the
//! limit it is compared with (see [`crate::bench`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::output::{out, outln, print_json, Table};
use super::parse_duration;
use crate::bench::{self, BenchConfig, BenchRun, Part};
use crate::worker::DispatchLoad;

const AFTER_HELP: &str = "\
Examples:
  scripts/test-services run -- target/release/anamo bench
  anamo bench --only reconcile --tasks 10000 --steps 5 --dynamodb-endpoint http://127.0.0.1:8000
  anamo bench --only dispatch,claims --json

Without a DynamoDB endpoint the DynamoDB rows are skipped (with a note). Figures depend on
the machine: compare the ratios, and see BENCHMARKS.md for a recorded run.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP)]
pub struct BenchArgs {
    /// DynamoDB Local endpoint for the DynamoDB rows.
    #[arg(long, env = "ANAMO_TEST_DYNAMODB_ENDPOINT")]
    pub dynamodb_endpoint: Option<String>,
    /// Parts to run [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
    /// Dispatch: in-process workers.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Dispatch: slots per worker.
    #[arg(long, default_value_t = 4)]
    pub slots: u32,
    /// Dispatch: tasks per store.
    #[arg(long, default_value_t = 2000)]
    pub dispatch_tasks: u64,
    /// Dispatch: the tasks' command (e.g. `sleep 2`, with a short `--dispatch-lease-ttl`, for
    /// tasks that heartbeat).
    #[arg(long, default_value = crate::worker::DEFAULT_BENCH_COMMAND)]
    pub task_command: String,
    /// Dispatch: the workers' lease TTL (they heartbeat every third of it).
    #[arg(long, value_parser = parse_duration, default_value = crate::manifest::DEFAULT_LEASE_TTL_ARG)]
    pub dispatch_lease_ttl: Duration,
    /// Dispatch: seconds of the raw UpdateItem loop.
    #[arg(long, default_value_t = 5.0)]
    pub raw_secs: f64,
    /// Claims: concurrent claim + complete loops.
    #[arg(long, default_value_t = 16)]
    pub claimers: usize,
    /// Claims: tasks per store.
    #[arg(long, default_value_t = 2000)]
    pub claim_tasks: u64,
    /// Embedded: tasks for `anamo up` and xargs.
    #[arg(long, default_value_t = 5000)]
    pub up_tasks: u64,
    /// Embedded: slots of the local worker (and xargs -P).
    #[arg(long, default_value_t = 8)]
    pub up_slots: u32,
    /// Reconcile: pending tasks in DynamoDB Local.
    #[arg(long, default_value_t = 100_000)]
    pub tasks: u64,
    /// Reconcile: steps (one fleet each) the tasks are spread over.
    #[arg(long, default_value_t = 20)]
    pub steps: u32,
    /// Latency: trials.
    #[arg(long, default_value_t = 5)]
    pub trials: u32,
    /// Latency: controller interval (and expiry sweep).
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub interval: Duration,
    /// Latency: lease TTL of the killed worker, and of the leader that stops renewing.
    #[arg(long, value_parser = parse_duration, default_value = "6s")]
    pub lease_ttl: Duration,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Internal: run one reconcile measurement on the store with the manifests in DIR and
    /// print it as JSON (the reconcile part runs this in a child process).
    #[arg(long, hide = true)]
    pub reconcile_child: Option<PathBuf>,
}

pub async fn run(args: BenchArgs, store: Option<&str>) -> anyhow::Result<ExitCode> {
    if let Some(dir) = &args.reconcile_child {
        let store = store.context("--reconcile-child needs --store")?;
        let out = bench::reconcile_child(dir, store).await?;
        outln!("{}", serde_json::to_string(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let cfg = BenchConfig {
        dynamodb_endpoint: args.dynamodb_endpoint.filter(|e| !e.is_empty()),
        parts: if args.only.is_empty() {
            Part::ALL.to_vec()
        } else {
            args.only.clone()
        },
        dispatch: DispatchLoad {
            workers: args.workers,
            slots: args.slots,
            tasks: args.dispatch_tasks,
            command: args.task_command,
            lease_ttl: args.dispatch_lease_ttl,
        },
        raw_secs: args.raw_secs,
        claimers: args.claimers,
        claim_tasks: args.claim_tasks,
        up_tasks: args.up_tasks,
        up_slots: args.up_slots,
        tasks: args.tasks,
        steps: args.steps,
        trials: args.trials,
        interval: args.interval,
        lease_ttl: args.lease_ttl,
        exe: std::env::current_exe().context("cannot find the anamo executable")?,
    };
    let result = bench::run(&cfg).await?;
    if args.json {
        print_json(&result)?;
    } else {
        out!("{}", render(&result));
    }
    Ok(ExitCode::SUCCESS)
}

/// The results as a text table.
pub fn render(r: &BenchRun) -> String {
    let mut out = format!(
        "machine: {} cores, {} memory, {}\n\n",
        r.machine.nproc, r.machine.memory, r.machine.cpu
    );
    let mut t = Table::new(["BENCHMARK", "FIGURE", "REFERENCE", "RATIO", "GOAL", "MET"]);
    for row in &r.rows {
        t.row([
            row.name.clone(),
            row.figure.clone(),
            row.reference.clone(),
            row.ratio.map(|x| format!("{x:.2}")).unwrap_or_default(),
            row.goal.clone(),
            match row.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => String::new(),
            },
        ]);
    }
    out.push_str(&t.render());
    let notes: Vec<&bench::Row> = r.rows.iter().filter(|r| !r.note.is_empty()).collect();
    if !notes.is_empty() {
        out.push_str("\nnotes:\n");
        for row in notes {
            out.push_str(&format!("  {}: {}\n", row.name, row.note));
        }
    }
    out
}
