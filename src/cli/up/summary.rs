//! The end of `anamo up`: each fleet's figures gathered over the passes, the summary tables (or
//! JSON), what to run when tasks failed, and the exit code.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use super::super::output::{out, outln, Table};
use crate::clock::{format_duration_ms, SharedClock};
use crate::manifest::ManifestSet;
use crate::metrics::Metrics;
use crate::model::StepCounts;
use crate::planner::{Plan, TerminateCause};
use crate::store::SharedStore;

#[derive(Debug, Default, serde::Serialize)]
pub(super) struct FleetSummary {
    peak_instances: u32,
    launches: u64,
    terminations: u64,
    final_instances: u32,
    min_instances: u32,
}

/// Each fleet's summary, by fleet name.
pub(super) type Summaries = BTreeMap<String, FleetSummary>;

/// A fleet's `minInstances` in `set` (0 for a fleet no longer there).
pub(super) fn min_instances(set: &ManifestSet, fleet: &str) -> u32 {
    set.fleet(fleet).map(|m| m.spec.min_instances).unwrap_or(0)
}

/// Takes in a pass's plan: each fleet's instances now and at the most.
pub(super) fn record_plan(summaries: &mut Summaries, plan: Option<&Plan>, set: &ManifestSet) {
    for f in plan.iter().flat_map(|p| &p.fleets) {
        let s = summaries.entry(f.fleet.clone()).or_default();
        s.peak_instances = s.peak_instances.max(f.status.instances);
        s.final_instances = f.status.instances;
        s.min_instances = min_instances(set, &f.fleet);
    }
}

/// Takes in each fleet's launches and terminations as counted by `metrics`.
fn record_counts(summaries: &mut Summaries, metrics: &Metrics) {
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
}

/// How the run ended, for the summary.
pub(super) struct RunEnd<'a> {
    pub store: &'a SharedStore,
    pub store_url: &'a str,
    pub metrics: &'a Metrics,
    pub clock: &'a SharedClock,
    pub started_at: i64,
    pub log_dir: &'a Path,
    pub json: bool,
    pub interrupted: bool,
}

/// Prints the summary of the run (each step's counts, each fleet's figures) and what to do
/// about failed or unfinished tasks; returns the exit code.
pub(super) async fn report(end: RunEnd<'_>, mut summaries: Summaries) -> anyhow::Result<ExitCode> {
    record_counts(&mut summaries, end.metrics);
    let mut steps = Vec::new();
    for step in end.store.steps().await? {
        steps.push(end.store.counts(&step).await?);
    }
    if end.json {
        super::super::output::print_json(
            &serde_json::json!({ "steps": steps, "fleets": summaries }),
        )?;
    } else {
        print_tables(&steps, &summaries);
        outln!(
            "\nfinished in {}; task logs in {}",
            format_duration_ms(end.clock.now() - end.started_at),
            end.log_dir.join("tasks").display()
        );
    }
    if let Some(message) = failed_summary(&steps, end.store_url) {
        eprintln!("{message}");
    }
    Ok(exit_code(&steps, end.interrupted))
}

fn print_tables(steps: &[StepCounts], summaries: &Summaries) {
    let mut t = Table::new([
        "STEP",
        "SUCCEEDED",
        "FAILED",
        "CANCELLED",
        "UNFINISHED",
        "TOTAL",
    ]);
    for c in steps {
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
    for (fleet, s) in summaries {
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
}

/// 130 when interrupted, failure with unfinished or failed tasks (saying so for unfinished
/// ones), success otherwise.
fn exit_code(steps: &[StepCounts], interrupted: bool) -> ExitCode {
    if interrupted {
        eprintln!("interrupted: workers were drained; run `anamo up` again to continue");
        return ExitCode::from(130);
    }
    if steps.iter().any(|c| c.unfinished() > 0) {
        eprintln!("stopped with unfinished tasks");
        return ExitCode::FAILURE;
    }
    let failed: u64 = steps.iter().map(|c| c.failed).sum();
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
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
    let store = if store_url == super::super::DEFAULT_STORE {
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
        let msg = failed_summary(&steps, super::super::super::DEFAULT_STORE).unwrap();
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
}
