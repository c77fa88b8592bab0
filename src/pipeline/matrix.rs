//! Samples across steps as a matrix (`anamo sample list`, the status page's per-sample view):
//! per sample and step, how many of the sample's tasks are in each state, and one glyph that
//! sums the cell up. Which tasks belong to a sample is [`Graph::sample_of`], the same notion
//! `anamo sample show` uses. Pure: the store reads the ids and states.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Graph;
use crate::model::TaskState;

/// Tasks by state (states without tasks absent).
pub type StateCounts = BTreeMap<TaskState, u64>;

/// Every sample × every step keyed by the sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SampleMatrix {
    /// The steps with tasks that belong to a sample, dependencies first.
    pub steps: Vec<String>,
    /// One row per sample, by name.
    pub samples: Vec<SampleRow>,
    /// Per step of `steps`: how many samples are in each glyph's condition, and its tasks.
    pub totals: Vec<StepTotals>,
    /// Steps whose tasks belong to no sample (gathers over every sample), with their tasks.
    pub other_steps: Vec<OtherStep>,
}

/// One sample's tasks per step (steps where it has none are absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampleRow {
    pub sample: String,
    pub steps: BTreeMap<String, StateCounts>,
}

/// A step's column summed up.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StepTotals {
    pub step: String,
    /// Samples with at least one task in the step.
    pub samples: u64,
    /// Samples whose every task of the step succeeded.
    pub done: u64,
    /// Samples with a failed task in the step.
    pub failed: u64,
    /// The step's tasks (of every sample) by state.
    pub tasks: StateCounts,
}

/// A step not keyed by the sample, with its tasks by state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OtherStep {
    pub step: String,
    pub tasks: StateCounts,
}

/// What one cell shows, in the order the rules are tried: a failure wins over a hold, a hold
/// over progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Glyph {
    /// No task of the sample in the step, or none started yet.
    NotYet,
    /// Some task failed.
    Failed,
    /// Some task is held (`sample hold`).
    Held,
    /// Every task succeeded.
    Done,
    /// Nothing left to run and some tasks were cancelled (the sample was dropped).
    Cancelled,
    /// Some of the tasks succeeded.
    Partial { done: u64, total: u64 },
    /// Running, none succeeded yet.
    Running,
}

/// `12 succeeded, 3 running` (states in their order), or `no task`.
pub fn states_text(c: Option<&StateCounts>) -> String {
    let parts: Vec<String> = c
        .into_iter()
        .flatten()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    if parts.is_empty() {
        "no task".into()
    } else {
        parts.join(", ")
    }
}

/// The glyph of a cell.
pub fn glyph(cell: Option<&StateCounts>) -> Glyph {
    let Some(c) = cell else {
        return Glyph::NotYet;
    };
    let n = |s: TaskState| c.get(&s).copied().unwrap_or(0);
    let total: u64 = c.values().sum();
    let done = n(TaskState::Succeeded);
    let unfinished = total - done - n(TaskState::Failed) - n(TaskState::Cancelled);
    if total == 0 {
        Glyph::NotYet
    } else if n(TaskState::Failed) > 0 {
        Glyph::Failed
    } else if n(TaskState::Held) > 0 {
        Glyph::Held
    } else if done == total {
        Glyph::Done
    } else if unfinished == 0 {
        Glyph::Cancelled
    } else if done > 0 {
        Glyph::Partial { done, total }
    } else if n(TaskState::Running) > 0 {
        Glyph::Running
    } else {
        Glyph::NotYet
    }
}

impl Glyph {
    /// The cell's text: Unicode symbols, or `ascii` ones for pipes, `NO_COLOR` and dumb
    /// terminals.
    pub fn text(self, ascii: bool) -> String {
        let (fancy, plain) = match self {
            Glyph::NotYet => ("·", "."),
            Glyph::Failed => ("✗", "X"),
            Glyph::Held => ("H", "H"),
            Glyph::Done => ("✓", "ok"),
            Glyph::Cancelled => ("–", "-"),
            Glyph::Running => ("▸", ">"),
            Glyph::Partial { done, total } => return format!("{done}/{total}"),
        };
        if ascii { plain } else { fancy }.to_string()
    }

    /// The legend, one entry per glyph.
    pub fn legend(ascii: bool) -> String {
        let entries = [
            (Glyph::Done, "all done"),
            (Glyph::Partial { done: 3, total: 24 }, "3 of 24 tasks done"),
            (Glyph::Running, "running"),
            (Glyph::NotYet, "not started (or no task yet)"),
            (Glyph::Failed, "a task failed"),
            (Glyph::Held, "held"),
            (Glyph::Cancelled, "cancelled (dropped)"),
        ];
        let parts: Vec<String> = entries
            .iter()
            .map(|(g, what)| format!("{} = {what}", g.text(ascii)))
            .collect();
        parts.join(", ")
    }

    /// A short class-like name (`done`, `partial`, …) for the status page.
    pub fn name(self) -> &'static str {
        match self {
            Glyph::NotYet => "not-yet",
            Glyph::Failed => "failed",
            Glyph::Held => "held",
            Glyph::Done => "done",
            Glyph::Cancelled => "cancelled",
            Glyph::Running => "running",
            Glyph::Partial { .. } => "partial",
        }
    }
}

/// The matrix of the tasks `(step, [(id, state)])` read from the store.
pub fn build(graph: &Graph, steps: Vec<(String, Vec<(String, TaskState)>)>) -> SampleMatrix {
    let cells = steps
        .into_iter()
        .map(|(step, tasks)| {
            let mut by_sample: BTreeMap<Option<String>, StateCounts> = BTreeMap::new();
            for (id, state) in tasks {
                let sample = graph.sample_of(&step, &id).map(str::to_string);
                *by_sample
                    .entry(sample)
                    .or_default()
                    .entry(state)
                    .or_default() += 1;
            }
            (step, by_sample.into_iter().collect())
        })
        .collect();
    from_cells(graph, cells)
}

/// A step's tasks counted per sample (`None`: the tasks of no sample).
pub type StepCells = (String, Vec<(Option<String>, StateCounts)>);

/// The matrix of each step's tasks already counted per sample; empty cells are left out.
pub fn from_cells(graph: &Graph, steps: Vec<StepCells>) -> SampleMatrix {
    let mut rows: BTreeMap<String, BTreeMap<String, StateCounts>> = BTreeMap::new();
    let mut per_sample_steps = Vec::new();
    let mut other_steps = Vec::new();
    for (step, cells) in steps {
        let mut other = StateCounts::new();
        let mut any_sample = false;
        for (sample, counts) in cells.into_iter().filter(|(_, c)| !c.is_empty()) {
            match sample {
                Some(sample) => {
                    any_sample = true;
                    rows.entry(sample).or_default().insert(step.clone(), counts);
                }
                None => {
                    for (state, n) in counts {
                        *other.entry(state).or_default() += n;
                    }
                }
            }
        }
        if any_sample {
            per_sample_steps.push(step.clone());
        }
        if !other.is_empty() {
            other_steps.push(OtherStep { step, tasks: other });
        }
    }
    let order = graph.in_order();
    per_sample_steps.sort_by_key(|s| {
        let at = order.iter().position(|o| o == s).unwrap_or(order.len());
        (at, s.clone())
    });
    let samples: Vec<SampleRow> = rows
        .into_iter()
        .map(|(sample, steps)| SampleRow { sample, steps })
        .collect();
    let totals = per_sample_steps
        .iter()
        .map(|s| step_totals(s, &samples))
        .collect();
    SampleMatrix {
        steps: per_sample_steps,
        samples,
        totals,
        other_steps,
    }
}

fn step_totals(step: &str, samples: &[SampleRow]) -> StepTotals {
    let mut t = StepTotals {
        step: step.to_string(),
        ..Default::default()
    };
    for cell in samples.iter().filter_map(|r| r.steps.get(step)) {
        t.samples += 1;
        match glyph(Some(cell)) {
            Glyph::Done => t.done += 1,
            Glyph::Failed => t.failed += 1,
            _ => {}
        }
        for (state, n) in cell {
            *t.tasks.entry(*state).or_default() += n;
        }
    }
    t
}

impl SampleMatrix {
    /// Only `step`'s column (when given) and only the samples with a task in `state` in the
    /// columns kept (when given). Totals follow the columns; they still count every sample.
    pub fn filtered(mut self, step: Option<&str>, state: Option<TaskState>) -> SampleMatrix {
        if let Some(step) = step {
            self.steps.retain(|s| s == step);
            self.totals.retain(|t| t.step == step);
            self.other_steps.retain(|o| o.step == step);
            for row in &mut self.samples {
                row.steps.retain(|s, _| s == step);
            }
            self.samples.retain(|r| !r.steps.is_empty());
        }
        if let Some(state) = state {
            self.samples.retain(|r| {
                r.steps
                    .values()
                    .any(|c| c.get(&state).is_some_and(|n| *n > 0))
            });
        }
        self
    }

    /// The rows whose sample contains `query` (case-insensitive; every row for an empty one),
    /// at most `limit` of them, and how many matched.
    pub fn search(&self, query: &str, limit: usize) -> (Vec<&SampleRow>, usize) {
        let q = query.trim().to_lowercase();
        let matched: Vec<&SampleRow> = self
            .samples
            .iter()
            .filter(|r| q.is_empty() || r.sample.to_lowercase().contains(&q))
            .collect();
        let n = matched.len();
        (matched.into_iter().take(limit).collect(), n)
    }
}

/// A bounded part of the matrix: the samples matching a search, at most a limit of them
/// (the status page and `/api/status`).
#[derive(Debug, Clone, Serialize)]
pub struct SamplesView<'a> {
    /// What the sample names were searched for (case-insensitive; empty: every sample).
    pub query: String,
    pub steps: &'a [String],
    /// Samples in all, and how many of them match the query.
    pub total: usize,
    pub matched: usize,
    /// The first matching samples by name (`matched` may be more).
    pub samples: Vec<&'a SampleRow>,
    pub totals: &'a [StepTotals],
    pub other_steps: &'a [OtherStep],
}

impl SampleMatrix {
    /// At most `limit` samples containing `query` ([`SampleMatrix::search`]).
    pub fn view(&self, query: &str, limit: usize) -> SamplesView<'_> {
        let (samples, matched) = self.search(query, limit);
        SamplesView {
            query: query.trim().to_string(),
            steps: &self.steps,
            total: self.samples.len(),
            matched,
            samples,
            totals: &self.totals,
            other_steps: &self.other_steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Edge, StepNode};

    fn cell(states: &[(TaskState, u64)]) -> StateCounts {
        states.iter().copied().collect()
    }

    #[test]
    fn glyphs_follow_their_rules_in_order() {
        use TaskState::*;
        assert_eq!(glyph(None), Glyph::NotYet);
        assert_eq!(glyph(Some(&cell(&[(Succeeded, 24)]))), Glyph::Done);
        assert_eq!(
            glyph(Some(&cell(&[(Succeeded, 3), (Pending, 21)]))),
            Glyph::Partial { done: 3, total: 24 }
        );
        assert_eq!(
            glyph(Some(&cell(&[(Succeeded, 23), (Failed, 1)]))),
            Glyph::Failed
        );
        assert_eq!(
            glyph(Some(&cell(&[(Held, 1), (Succeeded, 2)]))),
            Glyph::Held
        );
        assert_eq!(
            glyph(Some(&cell(&[(Succeeded, 2), (Cancelled, 22)]))),
            Glyph::Cancelled
        );
        assert_eq!(glyph(Some(&cell(&[(Running, 1)]))), Glyph::Running);
        assert_eq!(
            glyph(Some(&cell(&[(Waiting, 5), (Retrying, 1)]))),
            Glyph::NotYet
        );
        assert_eq!(Glyph::Partial { done: 3, total: 24 }.text(true), "3/24");
        assert_eq!(Glyph::Done.text(false), "✓");
        assert_eq!(Glyph::Done.text(true), "ok");
        assert!(Glyph::legend(true).is_ascii());
    }

    fn pipeline_graph() -> Graph {
        let node = |key: &[&str], deps: &[&str]| StepNode {
            key: key.iter().map(|s| s.to_string()).collect(),
            depends_on: deps.iter().map(|s| Edge::to(*s)).collect(),
            ..StepNode::plain()
        };
        let mut g = Graph {
            sample_part: "sample".into(),
            ..Default::default()
        };
        g.steps.insert("align".into(), node(&["sample"], &[]));
        g.steps
            .insert("call".into(), node(&["sample", "region"], &["align"]));
        g.steps.insert("joint".into(), node(&["region"], &["call"]));
        g
    }

    #[test]
    fn samples_group_their_scattered_tasks_and_gathers_stay_apart() {
        use TaskState::*;
        let g = pipeline_graph();
        let ids = |v: &[(&str, TaskState)]| -> Vec<(String, TaskState)> {
            v.iter().map(|(i, s)| (i.to_string(), *s)).collect()
        };
        let m = build(
            &g,
            vec![
                ("joint".into(), ids(&[("chr1", Waiting)])),
                (
                    "call".into(),
                    ids(&[
                        ("S1/chr1", Succeeded),
                        ("S1/chr2", Running),
                        ("S2/chr1", Failed),
                    ]),
                ),
                ("align".into(), ids(&[("S1", Succeeded), ("S2", Succeeded)])),
            ],
        );
        assert_eq!(m.steps, ["align", "call"], "dependencies first");
        assert_eq!(m.samples.len(), 2);
        assert_eq!(
            glyph(m.samples[0].steps.get("call")),
            Glyph::Partial { done: 1, total: 2 }
        );
        assert_eq!(glyph(m.samples[1].steps.get("call")), Glyph::Failed);
        assert_eq!(m.totals[0].done, 2);
        assert_eq!(m.totals[1].failed, 1);
        assert_eq!(m.totals[1].tasks.get(&Succeeded), Some(&1));
        assert_eq!(m.other_steps[0].step, "joint");

        let only_failed = m.clone().filtered(None, Some(Failed));
        assert_eq!(only_failed.samples.len(), 1);
        assert_eq!(only_failed.samples[0].sample, "S2");
        let only_align = m.clone().filtered(Some("align"), None);
        assert_eq!(only_align.steps, ["align"]);
        assert!(only_align.samples.iter().all(|r| r.steps.len() == 1));
        let (found, n) = m.search("s2", 10);
        assert_eq!((found.len(), n), (1, 1));
        assert_eq!(m.search("", 1).1, 2);
    }
}
