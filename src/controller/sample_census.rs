//! The reads of the progress refresh's per-sample view and failed-tasks table
//! ([`super::tally`] decides and merges): per step, either every task (the first refresh,
//! every [`REREAD_EVERY`](super::tally::REREAD_EVERY), or when the counters show a change
//! that cannot be read incrementally), or only what changed.
//!
//! A full read on DynamoDB: one Query per shard of each unfinished state, projected to `id`
//! and `state`, counted into the step's new column a page at a time ([`FULL_READS_AT_ONCE`]
//! step at a time), and one per shard of each final state, projected to `id`, `updated_at` and
//! `reason`. An incremental one: one Query per shard of each live state the counters say has
//! tasks (running, retrying, held), and one per shard of each final state whose count changed,
//! for the sort keys from the newest entry already seen minus the skew margin. Then one
//! GetItem per new failure that makes the failed-tasks table (at most 20 per step).

use std::collections::HashMap;

use futures::{FutureExt, StreamExt, TryStreamExt};

use std::sync::Arc;

use super::failures::{newest_first, FailedTasks};
use super::sample_view::{CellSink, Column, Samples, SharedSamples};
use super::tally::{Changes, ChangesPlan, FullRead, Refresh, StepTally, FINALS, UNFINISHED};
use super::OBSERVE_CONCURRENCY;
use crate::clock::Millis;
use crate::model::StepCounts;
use crate::pipeline::matrix::SampleMatrix;
use crate::pipeline::Graph;
use crate::store::{Result, StoreError, TaskStore};

/// Every step's view kept between refreshes: the cells in the shared view (published as they
/// are, [`SharedSamples`]), the rest here.
#[derive(Debug, Default)]
pub struct Tallies {
    steps: HashMap<String, StepTally>,
    view: Arc<SharedSamples>,
}

/// One refresh's inputs.
pub struct RefreshInput<'a> {
    pub graph: &'a Graph,
    /// Every step that has tasks.
    pub with_tasks: &'a [String],
    /// The steps' counters just read (steps whose counters could not be read are absent).
    pub counts: &'a HashMap<String, StepCounts>,
    pub now: Millis,
}

/// How many steps a refresh reads whole at once: each holds its new column and a page of ids
/// until it is done.
const FULL_READS_AT_ONCE: usize = 1;
/// How many steps' changes a refresh reads at once: each reads its shards at once (up to 16
/// Queries in flight, each holding a connection and its buffers in the controller).
const CHANGES_AT_ONCE: usize = 4;

impl Tallies {
    /// The tallies of `view`, the one the status publishes.
    pub fn of(view: Arc<SharedSamples>) -> Tallies {
        Tallies {
            steps: HashMap::new(),
            view,
        }
    }

    /// The view this refreshes.
    pub fn view(&self) -> &Arc<SharedSamples> {
        &self.view
    }

    /// Brings every step with tasks up to date. A step that cannot be read is dropped (read
    /// whole next time) and the first error returned; the others keep their progress.
    pub async fn refresh(&mut self, store: &dyn TaskStore, at: &RefreshInput<'_>) -> Result<()> {
        let mut kept = std::mem::take(&mut self.steps);
        let view = &*self.view;
        let (mut full, mut changes) = (Vec::new(), Vec::new());
        for step in at.with_tasks {
            let old = kept.remove(step);
            let plan = match &old {
                Some(t) => t.plan(at.counts.get(step), at.now),
                None => Refresh::Full,
            };
            match (plan, old) {
                (Refresh::Changes(plan), Some(t)) => {
                    changes.push(refresh_changes(store, at, view, step, plan, t).boxed())
                }
                (_, old) => full.push(refresh_full(store, at, view, step, old).boxed()),
            }
        }
        // Collected (and boxed) first: a spawned count's future must not hold the closure.
        let (full, changes) = futures::join!(
            futures::stream::iter(full)
                .buffer_unordered(FULL_READS_AT_ONCE)
                .collect::<Vec<_>>(),
            futures::stream::iter(changes)
                .buffer_unordered(CHANGES_AT_ONCE)
                .collect::<Vec<_>>()
        );
        let mut first_error = None;
        for (step, result) in full.into_iter().chain(changes) {
            match result {
                Ok(t) => {
                    self.steps.insert(step, t);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        view.write().finish(at.graph, at.with_tasks);
        first_error.map_or(Ok(()), Err)
    }

    /// Every sample × step as last refreshed (the view's [`SampleView::matrix`]).
    ///
    /// [`SampleView::matrix`]: super::sample_view::SampleView::matrix
    pub fn matrix(&self) -> SampleMatrix {
        self.view.read().matrix()
    }

    /// The failed tasks of `steps`.
    pub fn failed(&self, steps: &[String]) -> FailedTasks {
        let view = self.view.read();
        let mut out = FailedTasks::default();
        for (step, t) in steps.iter().filter_map(|s| Some((s, self.steps.get(s)?))) {
            let empty = Column::default();
            let column = view.columns.get(step).unwrap_or(&empty);
            let (total, dependency, newest) = t.failed(column);
            out.total += total;
            out.dependency_failed += dependency;
            out.newest = newest_first(std::mem::take(&mut out.newest), newest.to_vec());
        }
        out
    }
}

/// Reads what changed of `step` and applies it to its cells.
async fn refresh_changes(
    store: &dyn TaskStore,
    at: &RefreshInput<'_>,
    view: &SharedSamples,
    step: &String,
    plan: ChangesPlan,
    mut tally: StepTally,
) -> (String, Result<StepTally>) {
    let changes = match read_changes(store, step, &plan).await {
        Ok(c) => c,
        Err(e) => return (step.clone(), Err(e)),
    };
    let fetch = {
        let mut v = view.write();
        let v = &mut *v;
        let column = v.columns.entry(step.clone()).or_default();
        let counts = at.counts.get(step).cloned();
        tally.apply(&mut sink(&mut v.names, column, at, step), changes, counts)
    };
    (
        step.clone(),
        add_failed(store, at, step, tally, fetch).await,
    )
}

/// Reads every task of `step` into a new column (the unfinished ones page by page), then
/// replaces its cells with it.
async fn refresh_full(
    store: &dyn TaskStore,
    at: &RefreshInput<'_>,
    view: &SharedSamples,
    step: &String,
    old: Option<StepTally>,
) -> (String, Result<StepTally>) {
    let mut column = Column::default();
    let read = read_full(store, step, &mut |page| {
        let mut v = view.write();
        StepTally::count_unfinished(&mut sink(&mut v.names, &mut column, at, step), &page);
    })
    .await;
    let read = match read {
        Ok(r) => r,
        Err(e) => return (step.clone(), Err(e)),
    };
    let (tally, fetch) = {
        let mut v = view.write();
        let v = &mut *v;
        let before = old.as_ref().and_then(StepTally::last_counts);
        let counts = at.counts.get(step).cloned();
        let mut sink = sink(&mut v.names, &mut column, at, step);
        let out = StepTally::from_full(&mut sink, read, (before, counts), at.now);
        column.shrink();
        v.columns.insert(step.clone(), column);
        out
    };
    (
        step.clone(),
        add_failed(store, at, step, tally, fetch).await,
    )
}

/// Where `step`'s tasks are counted: `column`, its samples numbered in `names`.
fn sink<'a>(
    names: &'a mut Samples,
    column: &'a mut Column,
    at: &'a RefreshInput<'_>,
    step: &'a str,
) -> CellSink<'a> {
    CellSink {
        names,
        column,
        graph: at.graph,
        step,
    }
}

/// Gets the new failed tasks `fetch` for the failed-tasks table.
async fn add_failed(
    store: &dyn TaskStore,
    at: &RefreshInput<'_>,
    step: &str,
    mut tally: StepTally,
    fetch: Vec<String>,
) -> Result<StepTally> {
    let gets: Vec<_> = fetch.iter().map(|id| store.get(step, id).boxed()).collect();
    let tasks: Vec<_> = futures::stream::iter(gets)
        .buffer_unordered(OBSERVE_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?
        .into_iter()
        .flatten()
        .collect();
    tally.add_failed(at.graph, &tasks);
    Ok(tally)
}

/// Every task of `step`: the unfinished ones handed to `page` as read, the final ones with
/// their times.
async fn read_full(
    store: &dyn TaskStore,
    step: &str,
    page: &mut (dyn FnMut(Vec<(String, crate::model::TaskState)>) + Send),
) -> Result<FullRead> {
    store.step_ids_paged(step, &UNFINISHED, page).await?;
    let mut finals = Vec::with_capacity(FINALS.len());
    for s in FINALS {
        finals.push((s, store.entered_since(step, s, 0).await?));
    }
    Ok(FullRead {
        unfinished: Vec::new(),
        finals,
    })
}
/// The reads of `plan`, the states at once.
async fn read_changes(store: &dyn TaskStore, step: &str, plan: &ChangesPlan) -> Result<Changes> {
    let live: Vec<_> = plan
        .live
        .iter()
        .map(|&s| {
            async move {
                let ids = store.step_ids(step, &[s], "").await?;
                Ok::<_, StoreError>((s, ids.into_iter().map(|(id, _)| id).collect()))
            }
            .boxed()
        })
        .collect();
    let finals: Vec<_> = plan
        .finals
        .iter()
        .map(|&(s, since)| {
            async move { Ok((s, store.entered_since(step, s, since).await?)) }.boxed()
        })
        .collect();
    let (live, finals) = futures::future::try_join(
        futures::future::try_join_all(live),
        futures::future::try_join_all(finals),
    )
    .await?;
    Ok(Changes { live, finals })
}
