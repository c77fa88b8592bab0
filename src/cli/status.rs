//! `anamo status`: progress per step, the newest failed tasks, the fleets as the controller
//! last saw them, and when that was. `--watch` redraws it every `--interval` (in place on a terminal, as repeated
//! plain frames otherwise) until Ctrl-C. The text itself is built in [`super::status_view`].

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::output::{out, print_json};
use super::parse_duration;
use super::status_view::{fit, render_frame, render_text, ControllerSeen, StatusView};
use crate::clock::{format_millis, Clock, SystemClock};
use crate::controller::failures::{read_failed, starved};
use crate::controller::status::{step_report, ControllerDoc, StepReport};
use crate::store::graph::{empty_graph, get_graph};
use crate::store::SharedStore;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this step.
    #[arg(long)]
    pub step: Option<String>,
    /// Print the status as JSON (steps, fleets, controllers).
    #[arg(long, conflicts_with = "watch")]
    pub json: bool,
    /// Keep showing the status, redrawn every `--interval` until Ctrl-C: in place on a
    /// terminal (a bar per step, fleets, last actions), as repeated plain output otherwise.
    #[arg(long)]
    pub watch: bool,
    /// Time between two looks with `--watch`.
    #[arg(long, value_parser = parse_duration, default_value = "2s", requires = "watch")]
    pub interval: Duration,
}

/// Reads one snapshot: every step's progress, the fleets' and controllers' reports.
async fn snapshot(args: &StatusArgs, store: &SharedStore) -> anyhow::Result<StatusView> {
    let now = SystemClock.now();
    let names = match &args.step {
        Some(s) => vec![s.clone()],
        None => store.steps().await?,
    };
    let mut steps = Vec::new();
    for step in &names {
        steps.push(step_report(store, step, now).await?);
    }
    let graph = get_graph(store.as_ref()).await?.unwrap_or_else(empty_graph);
    let failed_tasks = read_failed(store.as_ref(), &graph, &names).await?;
    let with_tasks = match &args.step {
        Some(_) => store.steps().await?,
        None => names.clone(),
    };
    let counts: Vec<_> = steps.iter().map(|s: &StepReport| &s.counts).collect();
    let starved = starved(&graph, &with_tasks, &counts);
    let docs = store.list_status().await?;
    let controllers = ControllerDoc::from_docs(&docs)
        .into_iter()
        .map(|(c, at)| ControllerSeen::new(c, at, now))
        .collect();
    // Fleet reports only (the store also keeps the controller's launch intents).
    let fleets = docs
        .into_iter()
        .filter(|d| d.name.starts_with("fleet/"))
        .collect();
    Ok(StatusView {
        steps,
        fleets,
        controllers,
        failed_tasks,
        starved,
        at: now,
        store: store.describe(),
    })
}

pub async fn run(args: StatusArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    if args.watch {
        return watch(&args, &store).await;
    }
    let view = snapshot(&args, &store).await?;
    if args.json {
        print_json(&view)?;
    } else {
        out!("{}", render_text(&view));
    }
    Ok(ExitCode::SUCCESS)
}

/// Moves the cursor home, and clears the rest of the screen after the frame: the frame is
/// redrawn in place without flicker.
const HOME: &str = "\x1b[H";
const CLEAR_LINE: &str = "\x1b[K";
const CLEAR_BELOW: &str = "\x1b[J";

/// The terminal's columns and rows (100 × 40 when it does not say).
fn terminal_size() -> (usize, usize) {
    match terminal_size::terminal_size() {
        Some((terminal_size::Width(w), terminal_size::Height(h))) => {
            (usize::from(w).max(20), usize::from(h).max(5))
        }
        None => (100, 40),
    }
}

async fn watch(args: &StatusArgs, store: &SharedStore) -> anyhow::Result<ExitCode> {
    let terminal = std::io::stdout().is_terminal();
    let every = humantime::format_duration(args.interval).to_string();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut first = true;
    loop {
        let text = match snapshot(args, store).await {
            Ok(view) if terminal => {
                let (width, height) = terminal_size();
                // One row is left for the cursor after the frame.
                let frame = render_frame(&view, width, &every);
                let lines: Vec<String> = fit(&frame, width, height - 1)
                    .into_iter()
                    .map(|l| format!("{l}{CLEAR_LINE}"))
                    .collect();
                format!("{HOME}{}\n{CLEAR_BELOW}", lines.join("\n"))
            }
            Ok(view) => format!(
                "--- anamo status at {} ---\n{}\n",
                format_millis(view.at),
                render_text(&view)
            ),
            // A store that cannot be read on the first look is an error; later it may be a
            // passing one, shown until the next look.
            Err(e) if first => return Err(e),
            Err(e) => format!("cannot read the store (trying again in {every}): {e:#}\n"),
        };
        if first && terminal {
            out!("\x1b[2J");
        }
        first = false;
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
            // The reader went away (`| head`): nothing more to show.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(ExitCode::SUCCESS);
            }
            return Err(e.into());
        }
        drop(out);
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = &mut ctrl_c => return Ok(ExitCode::SUCCESS),
        }
    }
}
