//! `anamo sample ...`: every sample at a glance (list, in [`super::sample_list`]), and one
//! sample across every step (show, drop, hold, resume, retry). Which tasks belong to a sample is the
//! store's pipeline graph's call (`Graph::sample_of`; every step keyed by the sample when
//! no graph was published); the work is `store::samples`.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::output::{outln, print_json, Table};
use crate::clock::{format_millis, Clock, SystemClock};
use crate::store::graph::{empty_graph, get_graph};
use crate::store::samples::{apply, retry, sample_tasks, SampleAction};
use crate::store::SharedStore;

#[derive(Debug, Subcommand)]
pub enum SampleCommand {
    /// Every sample × every step keyed by it: one glyph per cell (done, `3/24` partly done,
    /// failed, held, not yet, cancelled), the samples done and failed per step, and the
    /// legend. Plain ASCII when the output is not a terminal or with `NO_COLOR`/`ANAMO_ASCII`.
    #[command(
        after_help = "Examples:\n  anamo sample list\n  anamo sample list --step call \
                            --state failed\n  anamo sample list --json"
    )]
    List(super::sample_list::ListArgs),
    /// Every task of the sample in every step: state, attempts, reason, where its log is with
    /// the command that prints it, and the end of its last attempt's output.
    #[command(after_help = "Example:\n  anamo sample show NA12878")]
    Show(ShowArgs),
    /// Drop the sample: cancel every unfinished task of it in every step (a running task's
    /// worker stops it). Tasks waiting for it are then cancelled, not failed; gathers go on
    /// without it per their onFailure rule.
    #[command(after_help = "Example:\n  anamo sample drop NA12878")]
    Drop(IdArg),
    /// Hold the sample: its pending and waiting tasks are not claimed until resumed.
    #[command(after_help = "Example:\n  anamo sample hold NA12878")]
    Hold(IdArg),
    /// Resume a held sample: its held tasks return to the state they were held in.
    #[command(after_help = "Example:\n  anamo sample resume NA12878")]
    Resume(IdArg),
    /// Retry the sample: requeue its tasks that failed on their own and then, in dependency
    /// order, the tasks (of any sample or gather) that failed or were cancelled because of
    /// them.
    #[command(after_help = "Example:\n  anamo sample retry NA12878")]
    Retry(IdArg),
}

#[derive(Debug, Args)]
pub struct IdArg {
    /// The sample, as the sample part of task ids (`NA12878` of `call/NA12878/chr1`).
    pub id: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The sample, as the sample part of task ids (`NA12878` of `call/NA12878/chr1`).
    pub id: String,
    /// Print the tasks as JSON (each with `log`: its attempt, URL and command).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: SampleCommand, store: SharedStore) -> anyhow::Result<ExitCode> {
    let graph = get_graph(store.as_ref()).await?.unwrap_or_else(empty_graph);
    let now = SystemClock.now();
    let (id, action, verb) = match cmd {
        SampleCommand::Show(a) => return show(a, &store, &graph).await,
        SampleCommand::List(a) => return super::sample_list::run(a, &store, &graph).await,
        SampleCommand::Retry(a) => {
            let (roots, carried) = retry(store.as_ref(), &graph, &a.id, now).await?;
            outln!(
                "sample {}: requeued {} failed task(s) and {} dependent(s)",
                a.id,
                roots.len(),
                carried.len()
            );
            for (step, id) in roots.iter().chain(&carried) {
                outln!("  {step}/{id}");
            }
            return Ok(ExitCode::SUCCESS);
        }
        SampleCommand::Drop(a) => (a.id, SampleAction::Drop, "cancelled"),
        SampleCommand::Hold(a) => (a.id, SampleAction::Hold, "held"),
        SampleCommand::Resume(a) => (a.id, SampleAction::Resume, "resumed"),
    };
    let r = apply(store.as_ref(), &graph, &id, action, now).await?;
    outln!("sample {id}: {verb} {} task(s)", r.changed.len());
    for (step, task, state) in &r.skipped {
        outln!("  left {step}/{task}: it is {state}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn show(
    a: ShowArgs,
    store: &SharedStore,
    graph: &crate::pipeline::Graph,
) -> anyhow::Result<ExitCode> {
    let found = sample_tasks(store.as_ref(), graph, &a.id).await?;
    if found.is_empty() {
        anyhow::bail!(
            "no task of sample `{}` in any step; give the sample part of task ids \
             (`NA12878` of `call/NA12878/chr1`), see `anamo task list`",
            a.id
        );
    }
    let mut tasks = Vec::with_capacity(found.len());
    for t in &found {
        if let Some(task) = store.get(&t.step, &t.id).await? {
            tasks.push(task);
        }
    }
    let shown = super::sample_logs::shown(&tasks);
    if a.json {
        print_json(&shown)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(["STEP", "ID", "STATE", "ATTEMPTS", "UPDATED", "REASON"]);
    for t in &tasks {
        table.row([
            t.step().to_string(),
            t.id().to_string(),
            t.state.to_string(),
            format!("{}/{}", t.attempts, t.spec.max_attempts),
            format_millis(t.updated_at),
            t.reason.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    super::output::out!("{}", table.render());
    super::sample_logs::print_logs(&shown);
    for t in &tasks {
        let Some(r) = &t.result else { continue };
        if !r.log_tail.is_empty() {
            outln!(
                "{}/{} log tail:\n{}",
                t.step(),
                t.id(),
                r.log_tail.trim_end()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
