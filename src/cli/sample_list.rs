//! `anamo sample list`: every sample × every step keyed by it, one glyph per cell
//! ([`crate::pipeline::matrix`]), a row of counts per step, the steps that are not per sample,
//! and the legend. The text is a pure function of the matrix ([`render`]).

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;

use super::output::{ascii_output, out, print_json, Table};
use crate::model::TaskState;
use crate::pipeline::matrix::{glyph, states_text, Glyph, SampleMatrix};
use crate::pipeline::Graph;
use crate::store::samples::sample_matrix;
use crate::store::SharedStore;

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this step's column (and the samples with tasks in it).
    #[arg(long)]
    pub step: Option<String>,
    /// Only the samples with a task in this state: waiting, pending, running, succeeded,
    /// failed, cancelled, held or retrying.
    #[arg(long, value_parser = |s: &str| s.parse::<TaskState>())]
    pub state: Option<TaskState>,
    /// Print the matrix as JSON: per sample and step the tasks by state, per step the totals.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(a: ListArgs, store: &SharedStore, graph: &Graph) -> anyhow::Result<ExitCode> {
    let m = sample_matrix(store.as_ref(), graph, a.step.as_deref()).await?;
    if let Some(step) = &a.step {
        if m.steps.is_empty() && m.other_steps.is_empty() {
            let known = store.steps().await?;
            anyhow::bail!(
                "no task in step `{step}`; the steps with tasks are: {} (see `anamo status`)",
                if known.is_empty() {
                    "none yet".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
    let m = m.filtered(a.step.as_deref(), a.state);
    if a.json {
        print_json(&m)?;
    } else {
        out!("{}", render(&m, ascii_output()));
    }
    Ok(ExitCode::SUCCESS)
}

/// The matrix as text: the table, a `done` row (samples done / samples with tasks) and a
/// `failed` row per step, the steps that are not per sample, and the legend.
pub fn render(m: &SampleMatrix, ascii: bool) -> String {
    let mut out = String::new();
    if m.steps.is_empty() && m.other_steps.is_empty() {
        return "no tasks\n".into();
    }
    if !m.steps.is_empty() {
        let header = std::iter::once("SAMPLE".to_string()).chain(m.steps.iter().cloned());
        let mut table = Table::new(header);
        for row in &m.samples {
            let cells = m.steps.iter().map(|s| glyph(row.steps.get(s)).text(ascii));
            table.row(std::iter::once(row.sample.clone()).chain(cells));
        }
        let done = m.totals.iter().map(|t| format!("{}/{}", t.done, t.samples));
        table.row(std::iter::once("(done)".to_string()).chain(done));
        let failed = m.totals.iter().map(|t| t.failed.to_string());
        table.row(std::iter::once("(failed)".to_string()).chain(failed));
        out.push_str(&table.render());
        if m.samples.is_empty() {
            out.push_str("no sample matches\n");
        }
        for t in &m.totals {
            let _ = writeln!(out, "{}: {}", t.step, states_text(Some(&t.tasks)));
        }
    }
    for o in &m.other_steps {
        let _ = writeln!(
            out,
            "{} (not per sample): {}",
            o.step,
            states_text(Some(&o.tasks))
        );
    }
    if !m.steps.is_empty() {
        let _ = writeln!(out, "legend: {}", Glyph::legend(ascii));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::matrix::build;

    #[test]
    fn renders_a_matrix_with_counts_and_legend() {
        let g = Graph::default();
        let m = build(
            &g,
            vec![
                (
                    "align".into(),
                    vec![
                        ("S1".into(), TaskState::Succeeded),
                        ("S2".into(), TaskState::Failed),
                    ],
                ),
                ("qc".into(), vec![("S1".into(), TaskState::Held)]),
            ],
        );
        let text = render(&m, true);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["SAMPLE", "align", "qc"]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["S1", "ok", "H"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            ["S2", "X", "."]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            ["(done)", "1/2", "0/1"]
        );
        assert_eq!(
            lines[4].split_whitespace().collect::<Vec<_>>(),
            ["(failed)", "1", "0"]
        );
        assert!(text.contains("align: 1 succeeded, 1 failed"), "{text}");
        assert!(text.is_ascii(), "{text}");
        assert!(render(&m, false).contains('✓'));
    }
}
