//! Step progress for the status page, `/api/status` and the `anamo_tasks*` metrics: exact
//! counts of every state and the throughput (as defined by
//! [`throughput_per_min`](super::status::throughput_per_min)), read every `progressInterval` in the background
//! instead of in every pass.
//!
//! A pass reads only what the planner can use (a [`Backlog`](crate::model::Backlog), bounded by
//! each fleet's limits). Counting every task is a read per task — DynamoDB reads, and charges
//! for, each counted item — so with a hundred thousand tasks it would take most of a pass and
//! grow with every task ever finished. The count runs beside the passes, one at a time; a
//! pass never waits for it. It also refreshes the page's failed-tasks table and per-sample
//! view ([`super::sample_census`]), reading what changed since the previous count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::{FutureExt, StreamExt};
use tokio::task::JoinHandle;
use tracing::warn;

use super::failures::{starved, FailedTasks};
use super::sample_census::{RefreshInput, Tallies};
use super::status::{StepReport, THROUGHPUT_WINDOW_MS};
use super::step_progress::StepProgress;
use super::SharedStatus;
use crate::clock::Millis;
use crate::metrics::Metrics;
use crate::model::{StepCounts, TaskState};
use crate::pipeline::Graph;
use crate::store::dynamo::RECOUNT_EVERY;
use crate::store::graph::{empty_graph, get_graph};
use crate::store::{SharedStore, StoreError};

/// Counts progress every `interval`, one count at a time.
pub(super) struct Census {
    interval: Millis,
    store: SharedStore,
    published: Arc<Published>,
    last_started: Option<Millis>,
    running: Option<JoinHandle<()>>,
}

/// Where a count's results go.
struct Published {
    status: SharedStatus,
    metrics: Arc<Metrics>,
    /// The counts each step's counters last followed.
    prev_counts: Mutex<HashMap<String, StepCounts>>,
    /// The per-sample view and failed tasks, kept between counts (one count at a time).
    tallies: tokio::sync::Mutex<Tallies>,
    /// What the steps' reports are made from between counts.
    progress: tokio::sync::Mutex<StepProgress>,
}

impl Census {
    pub(super) fn new(
        interval: Millis,
        store: SharedStore,
        status: SharedStatus,
        metrics: Arc<Metrics>,
    ) -> Self {
        let view = status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .samples
            .clone();
        Census {
            interval,
            store,
            published: Arc::new(Published {
                status,
                metrics,
                prev_counts: Mutex::new(HashMap::new()),
                tallies: tokio::sync::Mutex::new(Tallies::of(view)),
                progress: tokio::sync::Mutex::default(),
            }),
            last_started: None,
            running: None,
        }
    }

    /// Starts counting `steps` if a count is due and none is running.
    pub(super) fn start_if_due(&mut self, steps: Vec<String>, now: Millis) {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        if self
            .last_started
            .is_some_and(|t| now.saturating_sub(t) < self.interval)
        {
            return;
        }
        self.last_started = Some(now);
        let (store, published) = (self.store.clone(), self.published.clone());
        self.running = Some(tokio::spawn(async move {
            let started = std::time::Instant::now();
            let mut memory = published.progress.lock().await;
            let reports = step_reports(&store, &mut memory, &steps, now).await;
            drop(memory);
            published
                .metrics
                .progress_count_duration
                .observe(started.elapsed().as_secs_f64());
            let counts: HashMap<String, StepCounts> = reports
                .iter()
                .flatten()
                .map(|r| (r.counts.step.clone(), r.counts.clone()))
                .collect();
            let mut tallies = published.tallies.lock().await;
            let samples = read_samples(&store, &mut tallies, &steps, &counts, now).await;
            drop(tallies);
            published.apply(&steps, reports);
            published.apply_samples(samples);
        }));
    }

    /// Waits for the count in flight, if any (for callers that show progress after each pass,
    /// like `anamo up`, and for tests).
    pub(super) async fn settle(&mut self) {
        if let Some(handle) = self.running.take() {
            if let Err(e) = handle.await {
                warn!(error = %e, "the progress count did not finish");
            }
        }
    }
}

impl Drop for Census {
    fn drop(&mut self) {
        if let Some(handle) = &self.running {
            handle.abort();
        }
    }
}

impl Published {
    /// Publishes a count: the steps it read replace the reports; a step it could not read
    /// keeps its previous report (its `counted_at` says how old it is).
    fn apply(&self, steps: &[String], reports: Vec<Option<StepReport>>) {
        let mut fresh = Vec::with_capacity(steps.len());
        let mut prev = self.prev_counts.lock().unwrap_or_else(|p| p.into_inner());
        for r in reports.into_iter().flatten() {
            update_step_metrics(&self.metrics, &mut prev, &r);
            fresh.push(r);
        }
        drop(prev);
        let mut st = self.status.write().unwrap_or_else(|p| p.into_inner());
        let mut reports = Vec::with_capacity(steps.len());
        for step in steps {
            let old = st.steps.iter().position(|r| &r.counts.step == step);
            match fresh.iter().position(|r| &r.counts.step == step) {
                Some(i) => reports.push(fresh.swap_remove(i)),
                None => {
                    if let Some(i) = old {
                        reports.push(st.steps.swap_remove(i));
                    }
                }
            }
        }
        st.steps = reports;
    }
}

/// How many steps' own reads (a whole count, an oldest pending time, a throughput seed) a
/// refresh sends at once: each is 2 Queries per shard at once (16 at 8 shards), and every
/// request in flight holds a connection and its buffers in the controller.
const STEPS_AT_ONCE: usize = 2;

/// Every step's report at `now` (`None`: its counts could not be read, logged), reading what
/// `memory` says is due ([`super::step_progress`]): the counts of the steps due for a recount
/// through `counts`, the others' in one `pass_counts`, the oldest pending times that can have
/// moved, and the throughput's seed of steps not counted before.
async fn step_reports(
    store: &SharedStore,
    memory: &mut StepProgress,
    steps: &[String],
    now: Millis,
) -> Vec<Option<StepReport>> {
    memory.retain(steps);
    let whole = memory.counted_whole(steps, RECOUNT_EVERY);
    let rest: Vec<String> = steps
        .iter()
        .filter(|s| !whole.contains(s))
        .cloned()
        .collect();
    // Collected (and boxed) first: a spawned count's future must not hold the closure.
    let whole_reads: Vec<_> = whole
        .iter()
        .map(|step| {
            async move {
                let read = store.counts(step).await;
                (step.clone(), read, std::time::Instant::now())
            }
            .boxed()
        })
        .collect();
    let whole_reads = futures::stream::iter(whole_reads)
        .buffered(STEPS_AT_ONCE)
        .collect::<Vec<_>>();
    let rest_read = async {
        match rest.is_empty() {
            true => Ok(Vec::new()),
            false => store.pass_counts(&rest).await,
        }
    };
    let (whole_reads, rest_read) = futures::join!(whole_reads, rest_read);
    let mut counts: HashMap<String, StepCounts> = HashMap::new();
    for (step, read, returned) in whole_reads {
        match read {
            Ok(c) => {
                memory.note_counted_whole(&c, now, returned);
                counts.insert(step, c);
            }
            Err(e) => warn!(step, error = %e, "cannot count step progress"),
        }
    }
    match rest_read {
        Ok(read) => {
            let oldest = memory.oldest_to_read(&read, now);
            let times = read_each(&oldest, |s| store.oldest_pending(s)).await;
            for c in read {
                if let Some(at) = times.get(&c.step) {
                    memory.note_oldest(&c, *at, now);
                }
                counts.insert(c.step.clone(), c);
            }
        }
        Err(e) => warn!(error = %e, "cannot read the steps' progress counters"),
    }
    let unseeded: Vec<String> = memory
        .unseeded(steps)
        .into_iter()
        .filter(|s| counts.contains_key(s))
        .collect();
    let since = now - THROUGHPUT_WINDOW_MS;
    let seeds = read_each(&unseeded, |s| store.count_finished_since(s, since)).await;
    for (step, n) in seeds {
        memory.seed(&step, n, now);
    }
    steps
        .iter()
        .map(|step| counts.remove(step).map(|c| memory.report(c, now)))
        .collect()
}

/// `read` of each of `steps`, [`STEPS_AT_ONCE`] at a time; a step that fails is logged
/// and left out.
async fn read_each<'a, T, F, Fut>(steps: &'a [String], read: F) -> HashMap<String, T>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>> + Send + 'a,
    T: Send + 'a,
{
    let reads: Vec<_> = steps
        .iter()
        .map(|s| {
            let fut = read(s);
            async move { (s.clone(), fut.await) }.boxed()
        })
        .collect();
    let done: Vec<_> = futures::stream::iter(reads)
        .buffered(STEPS_AT_ONCE)
        .collect()
        .await;
    let mut out = HashMap::new();
    for (step, r) in done {
        match r {
            Ok(v) => {
                out.insert(step, v);
            }
            Err(e) => warn!(step, error = %e, "cannot read step progress"),
        }
    }
    out
}

/// What a count reads beside the steps' progress.
struct SamplesRead {
    failed: FailedTasks,
    graph: Graph,
    /// Every step that has tasks.
    with_tasks: Vec<String>,
}

/// The failed tasks and every sample × step, refreshed with the steps' progress.
async fn read_samples(
    store: &SharedStore,
    tallies: &mut Tallies,
    steps: &[String],
    counts: &HashMap<String, StepCounts>,
    now: Millis,
) -> Result<SamplesRead, StoreError> {
    let graph = get_graph(store.as_ref()).await?.unwrap_or_else(empty_graph);
    let with_tasks = store.steps().await?;
    let input = RefreshInput {
        graph: &graph,
        with_tasks: &with_tasks,
        counts,
        now,
    };
    tallies.refresh(store.as_ref(), &input).await?;
    Ok(SamplesRead {
        failed: tallies.failed(steps),
        graph,
        with_tasks,
    })
}

impl Published {
    /// Publishes the failed tasks and the starved gathers (by the steps' counts just
    /// published; the samples' view is published as the refresh writes it); a failed read
    /// keeps the previous ones.
    fn apply_samples(&self, read: Result<SamplesRead, StoreError>) {
        match read {
            Ok(r) => {
                let mut st = self.status.write().unwrap_or_else(|p| p.into_inner());
                let now_starved = {
                    let counts: Vec<&StepCounts> = st.steps.iter().map(|s| &s.counts).collect();
                    starved(&r.graph, &r.with_tasks, &counts)
                };
                st.starved = now_starved;
                st.failed_tasks = r.failed;
            }
            Err(e) => warn!(error = %e, "cannot read the failed tasks and samples"),
        }
    }
}

fn update_step_metrics(m: &Metrics, prev: &mut HashMap<String, StepCounts>, r: &StepReport) {
    let c = &r.counts;
    for s in TaskState::ALL {
        m.tasks
            .with_label_values(&[&c.step, s.as_str()])
            .set(c.get(s) as i64);
    }
    m.oldest_pending_age
        .with_label_values(&[&c.step])
        .set(r.oldest_pending_age_ms.unwrap_or(0) as f64 / 1000.0);
    m.throughput
        .with_label_values(&[&c.step])
        .set(r.throughput_per_min);
    // Counters follow the counts' growth (deletes and requeues never make them go back).
    if let Some(before) = prev.get(&c.step) {
        let grew = |now: u64, before: u64| now.saturating_sub(before);
        m.tasks_completed
            .with_label_values(&[&c.step])
            .inc_by(grew(c.succeeded, before.succeeded));
        m.tasks_failed
            .with_label_values(&[&c.step])
            .inc_by(grew(c.failed, before.failed));
    } else {
        // Make the series exist from the first count.
        m.tasks_completed.with_label_values(&[&c.step]).inc_by(0);
        m.tasks_failed.with_label_values(&[&c.step]).inc_by(0);
    }
    prev.insert(c.step.clone(), c.clone());
}
