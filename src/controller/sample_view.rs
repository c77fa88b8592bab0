//! The per-sample view as the controller keeps and publishes it: compact, and one copy shared
//! by the progress refresh (which writes it, [`super::sample_census`]) and the status readers
//! (the page, `/api/status`), who render only the samples they show ([`SharedSamples::view`]).
//!
//! Sample names are numbered once ([`Samples`]); a step's cells are a vector by sample number
//! of one-byte numbers into the step's palette of distinct cells of 8 one-byte counts
//! ([`Column`]), a cell with a count over 254 (or finding the palette full) kept apart at full
//! width. At 1,000,000 tasks,
//! 20,000 samples × 50 steps, that is 1 MB of cells and about 2 MB of names, where cells
//! keyed by name and a whole [`SampleMatrix`] published cost hundreds.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::Serialize;

use crate::model::TaskState;
use crate::pipeline::matrix::{
    OtherStep, SampleMatrix, SampleRow, SamplesView, StateCounts, StepTotals,
};
use crate::pipeline::Graph;

/// The states a [`Cell`] counts itself, in its order (the final states, then the live ones
/// read whole at each refresh: see [`super::tally`]).
pub(super) const KNOWN: [TaskState; 6] = [
    TaskState::Succeeded,
    TaskState::Failed,
    TaskState::Cancelled,
    TaskState::Running,
    TaskState::Retrying,
    TaskState::Held,
];

/// Where a [`Cell`] counts `s` (a state of [`KNOWN`]).
pub(super) fn slot(s: TaskState) -> usize {
    KNOWN.iter().position(|x| *x == s).unwrap_or(0)
}

/// One sample's tasks of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cell {
    /// Its tasks at the step's last full read.
    pub total: u32,
    /// Of them, waiting then: how the waiting-or-pending rest is split.
    pub waiting_at_read: u32,
    /// By [`slot`]: the final and live states (waiting and pending are the rest).
    pub known: [u32; 6],
}

/// A cell number marking a cell kept at full width ([`Column::wide`]).
const WIDE: u8 = u8::MAX;
/// The palette number of the empty cell (so a column grows with zeros).
const EMPTY: u8 = 0;
/// A palette entry no cell uses (no packed cell has a byte [`WIDE`]).
const FREE: u64 = u64::MAX;

impl Cell {
    /// Tasks by state (states without tasks absent).
    pub fn counts(&self) -> StateCounts {
        let mut out: StateCounts = self.by_state().into_iter().collect();
        out.retain(|_, n| *n > 0);
        out
    }

    /// Tasks in each state, [`KNOWN`] then waiting and pending (the rest).
    fn by_state(&self) -> [(TaskState, u64); 8] {
        let known = self.known.iter().fold(0u32, |a, n| a.saturating_add(*n));
        let queued = self.total.saturating_sub(known);
        let waiting = queued.min(self.waiting_at_read);
        let k = |i: usize| (KNOWN[i], u64::from(self.known[i]));
        [
            k(0),
            k(1),
            k(2),
            k(3),
            k(4),
            k(5),
            (TaskState::Waiting, u64::from(waiting)),
            (TaskState::Pending, u64::from(queued - waiting)),
        ]
    }

    /// The cell of tasks counted by state (the waiting ones as waiting at a read).
    fn of(c: &StateCounts) -> Cell {
        let n = |s: TaskState| u32::try_from(c.get(&s).copied().unwrap_or(0)).unwrap_or(u32::MAX);
        let mut cell = Cell {
            total: c
                .values()
                .map(|n| u32::try_from(*n).unwrap_or(u32::MAX))
                .sum(),
            waiting_at_read: n(TaskState::Waiting),
            ..Default::default()
        };
        for (k, s) in cell.known.iter_mut().zip(KNOWN) {
            *k = n(s);
        }
        cell
    }

    fn is_empty(&self) -> bool {
        self.total == 0 && self.known.iter().all(|n| *n == 0)
    }

    /// Its tasks in all (the known states may outnumber a stale total).
    fn tasks(&self) -> u64 {
        self.by_state().iter().map(|(_, n)| n).sum()
    }

    /// Its 8 counts a byte each, when every one is under [`WIDE`].
    fn pack(&self) -> Option<u64> {
        let mut out = [0u8; 8];
        let all = [self.total, self.waiting_at_read]
            .into_iter()
            .chain(self.known);
        for (o, n) in out.iter_mut().zip(all) {
            *o = u8::try_from(n).ok().filter(|n| *n != WIDE)?;
        }
        Some(u64::from_le_bytes(out))
    }

    fn unpack(p: u64) -> Cell {
        let p = p.to_le_bytes();
        let mut known = [0u32; 6];
        for (k, n) in known.iter_mut().zip(&p[2..]) {
            *k = u32::from(*n);
        }
        Cell {
            total: u32::from(p[0]),
            waiting_at_read: u32::from(p[1]),
            known,
        }
    }
}

/// One step's cells: by sample number, and the tasks of no sample.
///
/// A cell is one byte, its number in the column's palette of distinct packed cells: a step's
/// cells take few distinct values (a sample's tasks of one step by state), so 20,000 samples
/// cost 20 KB a step instead of 160 KB at 8 bytes a cell. A cell with a count over 254, or
/// one that finds the palette's 255 entries all in use, is kept apart at full width.
#[derive(Debug, Clone)]
pub struct Column {
    /// By sample number: the cell's palette number, or [`WIDE`].
    cells: Vec<u8>,
    /// The packed cells ([`Cell::pack`]) by number, [`FREE`] where no cell uses one; number
    /// [`EMPTY`] is the empty cell's.
    palette: Vec<u64>,
    /// How many cells use each palette number (the empty cell's is not counted).
    uses: Vec<u32>,
    /// The cells marked [`WIDE`] in `cells`.
    wide: HashMap<u32, Cell>,
    none: Cell,
}

/// Columns are equal when their cells are, however numbered.
impl PartialEq for Column {
    fn eq(&self, other: &Self) -> bool {
        let len = self.cells.len().max(other.cells.len()) as u32;
        self.none == other.none && (0..len).all(|i| self.get(Some(i)) == other.get(Some(i)))
    }
}

impl Default for Column {
    fn default() -> Self {
        Column {
            cells: Vec::new(),
            palette: vec![0],
            uses: vec![0],
            wide: HashMap::new(),
            none: Cell::default(),
        }
    }
}

impl Column {
    pub fn get(&self, sample: Option<u32>) -> Cell {
        let Some(i) = sample else { return self.none };
        match self.cells.get(i as usize) {
            Some(&WIDE) => self.wide.get(&i).copied().unwrap_or_default(),
            Some(&n) => self
                .palette
                .get(usize::from(n))
                .map_or_else(Cell::default, |p| Cell::unpack(*p)),
            None => Cell::default(),
        }
    }

    pub fn set(&mut self, sample: Option<u32>, cell: Cell) {
        let Some(i) = sample else {
            self.none = cell;
            return;
        };
        let at = i as usize;
        if at >= self.cells.len() {
            if cell.is_empty() {
                return;
            }
            self.cells.resize(at + 1, EMPTY);
        }
        self.release(self.cells[at], i);
        match cell.pack().and_then(|p| self.number(p)) {
            Some(n) => self.cells[at] = n,
            None => {
                self.cells[at] = WIDE;
                self.wide.insert(i, cell);
            }
        }
    }

    /// The palette number of the packed cell `p`, added if new; `None` when the palette is
    /// full.
    fn number(&mut self, p: u64) -> Option<u8> {
        let n = match self.palette.iter().position(|q| *q == p) {
            Some(n) => n,
            None => match self.palette.iter().position(|q| *q == FREE) {
                Some(n) => {
                    self.palette[n] = p;
                    n
                }
                None if self.palette.len() < usize::from(WIDE) => {
                    self.palette.push(p);
                    self.uses.push(0);
                    self.palette.len() - 1
                }
                None => return None,
            },
        };
        if n != usize::from(EMPTY) {
            self.uses[n] += 1;
        }
        u8::try_from(n).ok()
    }

    /// Drops the use of number `n` by sample `i`'s cell, freeing an entry no cell uses.
    fn release(&mut self, n: u8, i: u32) {
        if n == WIDE {
            self.wide.remove(&i);
            return;
        }
        let n = usize::from(n);
        if n == usize::from(EMPTY) {
            return;
        }
        if let Some(u) = self.uses.get_mut(n) {
            *u = u.saturating_sub(1);
            if *u == 0 {
                self.palette[n] = FREE;
            }
        }
    }

    /// Changes one cell.
    pub fn update(&mut self, sample: Option<u32>, f: impl FnOnce(&mut Cell)) {
        let mut cell = self.get(sample);
        f(&mut cell);
        self.set(sample, cell);
    }

    /// Sets the count of state slot `at` to 0 in every cell.
    pub fn clear_slot(&mut self, at: usize) {
        for i in 0..self.cells.len() as u32 {
            if self.get(Some(i)).known[at] != 0 {
                self.update(Some(i), |c| c.known[at] = 0);
            }
        }
        self.none.known[at] = 0;
    }

    /// The non-empty cells of samples, by sample number.
    pub fn cells(&self) -> impl Iterator<Item = (u32, Cell)> + '_ {
        (0..self.cells.len() as u32)
            .map(|i| (i, self.get(Some(i))))
            .filter(|(_, c)| !c.is_empty())
    }

    /// The cell of the tasks of no sample.
    pub fn none(&self) -> Cell {
        self.none
    }

    /// Gives back the room a full read's growth left.
    pub fn shrink(&mut self) {
        self.cells.shrink_to_fit();
        self.wide.shrink_to_fit();
    }
}

/// Sample names, each numbered once in the order first seen (one allocation per name, shared
/// by the list and the index).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    names: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
}

impl Samples {
    pub fn number(&mut self, name: &str) -> u32 {
        if let Some(n) = self.numbers.get(name) {
            return *n;
        }
        let n = self.names.len() as u32;
        let name: Arc<str> = name.into();
        self.names.push(name.clone());
        self.numbers.insert(name, n);
        n
    }

    pub fn name(&self, n: u32) -> &str {
        self.names.get(n as usize).map_or("", |s| s)
    }
}

/// Where a step's tasks are counted: the names, the step's column, and how ids map to samples.
pub struct CellSink<'a> {
    pub names: &'a mut Samples,
    pub column: &'a mut Column,
    pub graph: &'a Graph,
    pub step: &'a str,
}

impl CellSink<'_> {
    /// Changes the cell of the sample task `id` belongs to.
    pub fn update(&mut self, id: &str, f: impl FnOnce(&mut Cell)) {
        let sample = self
            .graph
            .sample_of(self.step, id)
            .map(|s| self.names.number(s));
        self.column.update(sample, f);
    }
}

/// What the page shows besides the rows: computed once per refresh ([`SampleView::finish`]).
#[derive(Debug, Clone, Default, PartialEq)]
struct Shown {
    /// The steps with tasks of a sample, dependencies first.
    steps: Vec<String>,
    totals: Vec<StepTotals>,
    other_steps: Vec<OtherStep>,
    /// The samples with a task in one of `steps`, by name.
    rows: Vec<u32>,
}

/// Every step's column, by step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleView {
    pub names: Samples,
    pub columns: HashMap<String, Column>,
    shown: Shown,
}

/// `done` and `failed` of a cell as [`crate::pipeline::matrix::glyph`] sums them up.
fn done_or_failed(c: &Cell) -> (bool, bool) {
    let failed = c.known[slot(TaskState::Failed)] > 0;
    let held = c.known[slot(TaskState::Held)] > 0;
    let total = c.tasks();
    let done =
        total > 0 && !failed && !held && u64::from(c.known[slot(TaskState::Succeeded)]) == total;
    (done, failed)
}

impl SampleView {
    /// Keeps the steps of `with_tasks` only and sums the view up for the page.
    pub fn finish(&mut self, graph: &Graph, with_tasks: &[String]) {
        self.columns.retain(|s, _| with_tasks.contains(s));
        let mut steps = Vec::new();
        let mut other_steps = Vec::new();
        let mut with_row = vec![false; self.names.names.len()];
        for step in with_tasks {
            let Some(col) = self.columns.get(step) else {
                continue;
            };
            let mut any = false;
            for (i, _) in col.cells() {
                any = true;
                if let Some(r) = with_row.get_mut(i as usize) {
                    *r = true;
                }
            }
            if any {
                steps.push(step.clone());
            }
            if !col.none().is_empty() {
                let tasks = col.none().counts();
                if !tasks.is_empty() {
                    other_steps.push(OtherStep {
                        step: step.clone(),
                        tasks,
                    });
                }
            }
        }
        let order = graph.in_order();
        steps.sort_by_key(|s| {
            let at = order.iter().position(|o| o == s).unwrap_or(order.len());
            (at, s.clone())
        });
        let totals = steps.iter().map(|s| self.step_totals(s)).collect();
        let mut rows: Vec<u32> = (0..with_row.len() as u32)
            .filter(|i| with_row[*i as usize])
            .collect();
        rows.sort_by(|a, b| self.names.name(*a).cmp(self.names.name(*b)));
        self.shown = Shown {
            steps,
            totals,
            other_steps,
            rows,
        };
    }

    fn step_totals(&self, step: &str) -> StepTotals {
        let mut t = StepTotals {
            step: step.to_string(),
            ..Default::default()
        };
        let Some(col) = self.columns.get(step) else {
            return t;
        };
        let mut sum = [0u64; 8];
        for (_, c) in col.cells() {
            t.samples += 1;
            let (done, failed) = done_or_failed(&c);
            t.done += u64::from(done);
            t.failed += u64::from(failed);
            for (s, (_, n)) in sum.iter_mut().zip(c.by_state()) {
                *s += n;
            }
        }
        t.tasks = Cell::default()
            .by_state()
            .into_iter()
            .zip(sum)
            .map(|((state, _), n)| (state, n))
            .filter(|(_, n)| *n > 0)
            .collect();
        t
    }

    fn row(&self, n: u32) -> SampleRow {
        let steps = self
            .shown
            .steps
            .iter()
            .filter_map(|s| {
                let c = self.columns.get(s)?.get(Some(n));
                (!c.is_empty()).then(|| (s.clone(), c.counts()))
            })
            .filter(|(_, c)| !c.is_empty())
            .collect::<BTreeMap<_, _>>();
        SampleRow {
            sample: self.names.name(n).to_string(),
            steps,
        }
    }

    /// At most `limit` samples containing `query` (case-insensitive; every one for an empty
    /// query), by name, with the page's sums.
    pub fn view(&self, query: &str, limit: usize) -> SamplesPage {
        let q = query.trim().to_lowercase();
        let matched: Vec<u32> = self
            .shown
            .rows
            .iter()
            .copied()
            .filter(|n| q.is_empty() || self.names.name(*n).to_lowercase().contains(&q))
            .collect();
        SamplesPage {
            query: query.trim().to_string(),
            steps: self.shown.steps.clone(),
            total: self.shown.rows.len(),
            matched: matched.len(),
            samples: matched.iter().take(limit).map(|n| self.row(*n)).collect(),
            totals: self.shown.totals.clone(),
            other_steps: self.shown.other_steps.clone(),
        }
    }

    /// Every sample × step (for comparisons and small views: it costs hundreds of bytes a
    /// cell).
    pub fn matrix(&self) -> SampleMatrix {
        SampleMatrix {
            steps: self.shown.steps.clone(),
            samples: self.shown.rows.iter().map(|n| self.row(*n)).collect(),
            totals: self.shown.totals.clone(),
            other_steps: self.shown.other_steps.clone(),
        }
    }

    /// The view of a matrix already built.
    pub fn of_matrix(graph: &Graph, m: &SampleMatrix) -> SampleView {
        let mut v = SampleView::default();
        for row in &m.samples {
            let n = v.names.number(&row.sample);
            for (step, counts) in &row.steps {
                v.columns
                    .entry(step.clone())
                    .or_default()
                    .set(Some(n), Cell::of(counts));
            }
        }
        for o in &m.other_steps {
            v.columns
                .entry(o.step.clone())
                .or_default()
                .set(None, Cell::of(&o.tasks));
        }
        let mut steps = m.steps.clone();
        steps.extend(m.other_steps.iter().map(|o| o.step.clone()));
        v.finish(graph, &steps);
        v
    }
}

/// What the page and `/api/status` show of the view ([`SamplesView`], owned).
#[derive(Debug, Clone, Serialize)]
pub struct SamplesPage {
    pub query: String,
    pub steps: Vec<String>,
    pub total: usize,
    pub matched: usize,
    pub samples: Vec<SampleRow>,
    pub totals: Vec<StepTotals>,
    pub other_steps: Vec<OtherStep>,
}

impl SamplesPage {
    /// As the matrix's own view.
    pub fn as_view(&self) -> SamplesView<'_> {
        SamplesView {
            query: self.query.clone(),
            steps: &self.steps,
            total: self.total,
            matched: self.matched,
            samples: self.samples.iter().collect(),
            totals: &self.totals,
            other_steps: &self.other_steps,
        }
    }
}

/// The published view: written by the progress refresh in place (briefly, between its reads),
/// read by the status readers.
#[derive(Debug, Default)]
pub struct SharedSamples(RwLock<SampleView>);

impl SharedSamples {
    pub fn new(v: SampleView) -> Self {
        SharedSamples(RwLock::new(v))
    }

    /// At most `limit` samples containing `query` ([`SampleView::view`]).
    pub fn view(&self, query: &str, limit: usize) -> SamplesPage {
        self.read().view(query, limit)
    }

    pub fn read(&self) -> RwLockReadGuard<'_, SampleView> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, SampleView> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
#[path = "sample_view_tests.rs"]
mod tests;
