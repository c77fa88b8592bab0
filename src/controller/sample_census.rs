//! The reads of the progress refresh's per-sample view and failed-tasks table
//! ([`super::tally`] decides and merges): per step, either every task (the first refresh,
//! every [`REREAD_EVERY`](super::tally::REREAD_EVERY), or when the counters show a change
//! that cannot be read incrementally), or only what changed.
//!
//! A full read on DynamoDB: one Query per shard of each unfinished state, projected to `id`
//! and `state`, and one per shard of each final state, projected to `id`, `updated_at` and
//! `reason`. An incremental one: one Query per shard of each live state the counters say has
//! tasks (running, retrying, held), and one per shard of each final state whose count changed,
//! for the sort keys from the newest entry already seen minus the skew margin. Then one
//! GetItem per new failure that makes the failed-tasks table (at most 20 per step).

use std::collections::HashMap;

use futures::{FutureExt, StreamExt, TryStreamExt};

use super::failures::{newest_first, FailedTasks};
use super::tally::{Changes, ChangesPlan, FullRead, Refresh, StepTally, FINALS, UNFINISHED};
use super::OBSERVE_CONCURRENCY;
use crate::clock::Millis;
use crate::model::StepCounts;
use crate::pipeline::matrix::{self, SampleMatrix};
use crate::pipeline::Graph;
use crate::store::{Result, StoreError, TaskStore};

/// Every step's view kept between refreshes.
#[derive(Debug, Default)]
pub struct Tallies {
    steps: HashMap<String, StepTally>,
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

impl Tallies {
    /// Brings every step with tasks up to date. A step that cannot be read is dropped (read
    /// whole next time) and the first error returned; the others keep their progress.
    pub async fn refresh(&mut self, store: &dyn TaskStore, at: &RefreshInput<'_>) -> Result<()> {
        let mut kept = std::mem::take(&mut self.steps);
        // Collected (and boxed) first: a spawned count's future must not hold the closure.
        let reads: Vec<_> = at
            .with_tasks
            .iter()
            .map(|step| {
                let old = kept.remove(step);
                async move { (step, refresh_step(store, at, step, old).await) }.boxed()
            })
            .collect();
        let done: Vec<_> = futures::stream::iter(reads)
            .buffer_unordered(OBSERVE_CONCURRENCY)
            .collect()
            .await;
        let mut first_error = None;
        for (step, result) in done {
            match result {
                Ok(t) => {
                    self.steps.insert(step.clone(), t);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// The per-sample matrix of the steps with tasks, as last refreshed.
    pub fn matrix(&self, graph: &Graph, with_tasks: &[String]) -> SampleMatrix {
        let steps = with_tasks
            .iter()
            .filter_map(|step| {
                let t = self.steps.get(step)?;
                let cells = t.cells().map(|(s, c)| (s.map(str::to_string), c)).collect();
                Some((step.clone(), cells))
            })
            .collect();
        matrix::from_cells(graph, steps)
    }

    /// The failed tasks of `steps`.
    pub fn failed(&self, steps: &[String]) -> FailedTasks {
        let mut out = FailedTasks::default();
        for t in steps.iter().filter_map(|s| self.steps.get(s)) {
            let (total, dependency, newest) = t.failed();
            out.total += total;
            out.dependency_failed += dependency;
            out.newest = newest_first(std::mem::take(&mut out.newest), newest.to_vec());
        }
        out
    }
}

async fn refresh_step(
    store: &dyn TaskStore,
    at: &RefreshInput<'_>,
    step: &str,
    old: Option<StepTally>,
) -> Result<StepTally> {
    let counts = at.counts.get(step).cloned();
    let plan = match &old {
        Some(t) => t.plan(counts.as_ref(), at.now),
        None => Refresh::Full,
    };
    let (mut tally, fetch) = match (plan, old) {
        (Refresh::Changes(plan), Some(mut t)) => {
            let changes = read_changes(store, step, &plan).await?;
            let fetch = t.apply(at.graph, step, changes, counts);
            (t, fetch)
        }
        (_, old) => {
            let read = read_full(store, step).await?;
            let before = old.as_ref().and_then(StepTally::last_counts);
            StepTally::from_full(at.graph, step, read, (before, counts), at.now)
        }
    };
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

async fn read_full(store: &dyn TaskStore, step: &str) -> Result<FullRead> {
    let unfinished = store.step_ids(step, &UNFINISHED, "").await?;
    let mut finals = Vec::with_capacity(FINALS.len());
    for s in FINALS {
        finals.push((s, store.entered_since(step, s, 0).await?));
    }
    Ok(FullRead { unfinished, finals })
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
