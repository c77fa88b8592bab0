//! `anamo status`: progress per step.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::output::{out, outln, print_json, Table};
use crate::clock::{format_duration_ms, Clock, SystemClock};
use crate::controller::status::{step_report, StepReport};
use crate::store::{SharedStore, StatusDoc};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this step.
    #[arg(long)]
    pub step: Option<String>,
    /// Print the report as JSON (per step: counts, oldest pending, throughput; fleets).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    steps: Vec<StepReport>,
    fleets: Vec<StatusDoc>,
}

pub async fn run(args: StatusArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    let names = match &args.step {
        Some(s) => vec![s.clone()],
        None => store.steps().await?,
    };
    let mut steps = Vec::new();
    for step in &names {
        steps.push(step_report(&store, step, now, None).await?);
    }
    // Fleet reports only (the store also keeps the controller's launch intents).
    let fleets: Vec<StatusDoc> = store
        .list_status()
        .await?
        .into_iter()
        .filter(|d| d.name.starts_with("fleet/"))
        .collect();
    if args.json {
        print_json(&StatusReport { steps, fleets })?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new([
        "STEP",
        "WAITING",
        "PENDING",
        "RUNNING",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "OLDEST PENDING",
        "DONE/MIN",
        "ETA",
    ]);
    for s in &steps {
        let c = &s.counts;
        table.row([
            c.step.clone(),
            c.waiting.to_string(),
            c.pending.to_string(),
            c.running.to_string(),
            c.succeeded.to_string(),
            c.failed.to_string(),
            c.cancelled.to_string(),
            s.oldest_pending_age_ms
                .map(format_duration_ms)
                .unwrap_or("-".into()),
            format!("{:.1}", s.throughput_per_min),
            match s.eta_ms {
                _ if c.unfinished() == 0 => "done".to_string(),
                Some(eta) => format_duration_ms(eta),
                None => "-".to_string(),
            },
        ]);
    }
    if table.is_empty() {
        outln!("no tasks in {}", store.describe());
    } else {
        out!("{}", table.render());
    }
    if !fleets.is_empty() {
        outln!();
        let mut ft = Table::new(["FLEET", "DESIRED", "ACTUAL", "CONDITIONS", "LAST ACTION"]);
        for f in &fleets {
            let b = &f.body;
            let field = |k: &str| b.get(k).map(|v| v.to_string()).unwrap_or("-".into());
            ft.row([
                f.name.trim_start_matches("fleet/").to_string(),
                field("desired"),
                field("actual"),
                b.get("conditions_summary")
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .to_string(),
                b.get("last_action")
                    .and_then(|v| v.as_str())
                    .map(|a| shorten(a, 100))
                    .unwrap_or("-".into()),
            ]);
        }
        out!("{}", ft.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// `s` cut to at most `max` characters, with an ellipsis when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}
