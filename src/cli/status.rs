//! `anamo status`: progress per step.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::output::{print_json, Table};
use crate::clock::{format_duration_ms, Clock, Millis, SystemClock};
use crate::model::StepCounts;
use crate::store::{SharedStore, StatusDoc};

/// Window over which throughput is measured.
const THROUGHPUT_WINDOW_MS: Millis = 10 * 60 * 1000;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only this step.
    #[arg(long)]
    pub step: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct StepStatus {
    #[serde(flatten)]
    pub counts: StepCounts,
    /// Age of the oldest pending task in milliseconds.
    pub oldest_pending_age_ms: Option<Millis>,
    /// Tasks finished per minute over the last 10 minutes.
    pub throughput_per_min: f64,
}

#[derive(Debug, Serialize)]
struct StatusReport {
    steps: Vec<StepStatus>,
    fleets: Vec<StatusDoc>,
}

pub async fn step_statuses(
    store: &SharedStore,
    only: Option<&str>,
    now: Millis,
) -> anyhow::Result<Vec<StepStatus>> {
    let steps = match only {
        Some(s) => vec![s.to_string()],
        None => store.steps().await?,
    };
    let mut out = Vec::new();
    for step in steps {
        let counts = store.counts(&step).await?;
        let finished = store
            .count_finished_since(&step, now - THROUGHPUT_WINDOW_MS)
            .await?;
        out.push(StepStatus {
            oldest_pending_age_ms: counts.oldest_pending_at.map(|t| (now - t).max(0)),
            throughput_per_min: finished as f64 / (THROUGHPUT_WINDOW_MS as f64 / 60_000.0),
            counts,
        });
    }
    Ok(out)
}

pub async fn run(args: StatusArgs, store: SharedStore) -> anyhow::Result<ExitCode> {
    let now = SystemClock.now();
    let steps = step_statuses(&store, args.step.as_deref(), now).await?;
    let fleets = store.list_status().await?;
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
        ]);
    }
    if table.is_empty() {
        println!("no tasks in {}", store.describe());
    } else {
        print!("{}", table.render());
    }
    if !fleets.is_empty() {
        println!();
        let mut ft = Table::new(["FLEET", "DESIRED", "ACTUAL", "CONDITIONS", "LAST ACTION"]);
        for f in &fleets {
            let b = &f.body;
            let field = |k: &str| b.get(k).map(|v| v.to_string()).unwrap_or("-".into());
            ft.row([
                f.name.clone(),
                field("desired"),
                field("actual"),
                b.get("conditions_summary")
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .to_string(),
                b.get("last_action")
                    .and_then(|v| v.as_str())
                    .unwrap_or("-")
                    .to_string(),
            ]);
        }
        print!("{}", ft.render());
    }
    Ok(ExitCode::SUCCESS)
}
