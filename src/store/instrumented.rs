//! A [`TaskStore`] decorator that counts and times every call of the store it wraps:
//! `anamo_store_requests_total{operation}`, `anamo_store_errors_total{operation,kind}` (kind from
//! [`StoreError::kind`], never the message) and `anamo_store_request_duration_seconds{operation}`.
//!
//! The wrapped store keeps its own behaviour exactly: every method delegates, and the result
//! (value or error) is passed through untouched.

use std::collections::HashMap;
use std::future::Future;
use std::time::Instant;

use async_trait::async_trait;
use prometheus::{HistogramVec, IntCounterVec};

use super::{Entered, Fence, Leadership, Result, SharedStore, StatusDoc, StoreError, TaskStore};
use crate::clock::Millis;
use crate::metrics::Metrics;
use crate::model::{
    Backlog, Claim, ClaimRequest, Completion, ImportReport, LeaseRef, RequeueReport, StepCounts,
    Task, TaskFilter, TaskSpec, TaskState, WorkerInfo,
};

/// Every operation label this decorator emits (the trait's async methods).
pub const OPERATIONS: [&str; 34] = [
    "create_schema",
    "delete_schema",
    "import",
    "claim",
    "heartbeat",
    "complete",
    "release",
    "requeue_expired",
    "task_states",
    "step_ids",
    "step_ids_paged",
    "settle_waiting",
    "hold_back",
    "get",
    "list",
    "counts",
    "backlog",
    "pass_counts",
    "oldest_pending",
    "steps",
    "count_finished_since",
    "recent_run_times",
    "requeue",
    "cancel",
    "delete",
    "put_worker",
    "remove_worker",
    "list_workers",
    "put_status",
    "list_status",
    "get_status",
    "acquire_leadership",
    "release_leadership",
    "current_leader",
];

/// Wraps a store and records each call on the metrics registry.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: SharedStore,
    requests: IntCounterVec,
    errors: IntCounterVec,
    latency: HistogramVec,
}

impl InstrumentedStore {
    pub fn new(inner: SharedStore, metrics: &Metrics) -> Self {
        InstrumentedStore {
            inner,
            requests: metrics.store_requests.clone(),
            errors: metrics.store_errors.clone(),
            latency: metrics.store_latency.clone(),
        }
    }

    /// The wrapped store, as a [`SharedStore`].
    pub fn wrap(inner: SharedStore, metrics: &Metrics) -> SharedStore {
        std::sync::Arc::new(Self::new(inner, metrics))
    }

    pub fn inner(&self) -> &SharedStore {
        &self.inner
    }

    async fn observe<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = call.await;
        self.latency
            .with_label_values(&[operation])
            .observe(started.elapsed().as_secs_f64());
        self.requests.with_label_values(&[operation]).inc();
        if let Err(e) = &result {
            self.record_error(operation, e);
        }
        result
    }

    fn record_error(&self, operation: &'static str, e: &StoreError) {
        self.errors.with_label_values(&[operation, e.kind()]).inc();
    }
}

#[async_trait]
impl TaskStore for InstrumentedStore {
    async fn create_schema(&self) -> Result<()> {
        self.observe("create_schema", self.inner.create_schema())
            .await
    }

    async fn delete_schema(&self) -> Result<()> {
        self.observe("delete_schema", self.inner.delete_schema())
            .await
    }

    async fn import_graph(
        &self,
        tasks: &[TaskSpec],
        graph: &crate::pipeline::Graph,
        now: Millis,
    ) -> Result<ImportReport> {
        self.observe("import", self.inner.import_graph(tasks, graph, now))
            .await
    }

    async fn claim_batch(&self, req: &ClaimRequest, max: usize, now: Millis) -> Result<Vec<Claim>> {
        self.observe("claim", self.inner.claim_batch(req, max, now))
            .await
    }

    async fn heartbeat(&self, lease: &LeaseRef, ttl_ms: Millis, now: Millis) -> Result<Millis> {
        self.observe("heartbeat", self.inner.heartbeat(lease, ttl_ms, now))
            .await
    }

    async fn complete(
        &self,
        lease: &LeaseRef,
        completion: &Completion,
        now: Millis,
    ) -> Result<TaskState> {
        self.observe("complete", self.inner.complete(lease, completion, now))
            .await
    }

    async fn release(&self, lease: &LeaseRef, now: Millis) -> Result<()> {
        self.observe("release", self.inner.release(lease, now))
            .await
    }

    async fn requeue_expired(
        &self,
        step: &str,
        now: Millis,
        fence: Fence<'_>,
    ) -> Result<RequeueReport> {
        let call = self.inner.requeue_expired(step, now, fence);
        self.observe("requeue_expired", call).await
    }

    async fn task_states(&self, step: &str, ids: &[String]) -> Result<HashMap<String, TaskState>> {
        self.observe("task_states", self.inner.task_states(step, ids))
            .await
    }

    async fn step_ids(
        &self,
        step: &str,
        states: &[TaskState],
        prefix: &str,
    ) -> Result<Vec<(String, TaskState)>> {
        self.observe("step_ids", self.inner.step_ids(step, states, prefix))
            .await
    }

    async fn step_ids_paged(
        &self,
        step: &str,
        states: &[TaskState],
        page: &mut (dyn FnMut(Vec<(String, TaskState)>) + Send),
    ) -> Result<()> {
        self.observe(
            "step_ids_paged",
            self.inner.step_ids_paged(step, states, page),
        )
        .await
    }

    async fn entered_since(
        &self,
        step: &str,
        state: TaskState,
        since: Millis,
    ) -> Result<Vec<Entered>> {
        let call = self.inner.entered_since(step, state, since);
        self.observe("entered_since", call).await
    }

    async fn settle_waiting(
        &self,
        step: &str,
        id: &str,
        priority: i32,
        to: TaskState,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool> {
        let call = self
            .inner
            .settle_waiting(step, id, priority, to, reason, now);
        self.observe("settle_waiting", call).await
    }

    async fn hold_back(&self, step: &str, id: &str, now: Millis) -> Result<bool> {
        self.observe("hold_back", self.inner.hold_back(step, id, now))
            .await
    }

    async fn get(&self, step: &str, id: &str) -> Result<Option<Task>> {
        self.observe("get", self.inner.get(step, id)).await
    }

    async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        self.observe("list", self.inner.list(filter)).await
    }

    async fn counts(&self, step: &str) -> Result<StepCounts> {
        self.observe("counts", self.inner.counts(step)).await
    }

    async fn backlog(&self, step: &str, pending_limit: u64) -> Result<Backlog> {
        self.observe("backlog", self.inner.backlog(step, pending_limit))
            .await
    }

    async fn pass_counts(&self, steps: &[String]) -> Result<Vec<StepCounts>> {
        self.observe("pass_counts", self.inner.pass_counts(steps))
            .await
    }

    async fn oldest_pending(&self, step: &str) -> Result<Option<Millis>> {
        self.observe("oldest_pending", self.inner.oldest_pending(step))
            .await
    }

    async fn steps(&self) -> Result<Vec<String>> {
        self.observe("steps", self.inner.steps()).await
    }

    async fn count_finished_since(&self, step: &str, since: Millis) -> Result<u64> {
        // Delegated (not the trait's default), so a backend's own query is what runs.
        self.observe(
            "count_finished_since",
            self.inner.count_finished_since(step, since),
        )
        .await
    }

    async fn recent_run_times(&self, step: &str, limit: usize) -> Result<Vec<Millis>> {
        self.observe("recent_run_times", self.inner.recent_run_times(step, limit))
            .await
    }

    async fn requeue(&self, step: &str, id: &str, force: bool, now: Millis) -> Result<()> {
        self.observe("requeue", self.inner.requeue(step, id, force, now))
            .await
    }

    async fn cancel(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        self.observe("cancel", self.inner.cancel(step, id, now))
            .await
    }

    async fn delete(&self, step: &str, id: &str) -> Result<()> {
        self.observe("delete", self.inner.delete(step, id)).await
    }

    async fn hold(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        self.observe("hold", self.inner.hold(step, id, now)).await
    }

    async fn resume(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        self.observe("resume", self.inner.resume(step, id, now))
            .await
    }

    async fn retry_due(&self, step: &str, now: Millis) -> Result<u64> {
        self.observe("retry_due", self.inner.retry_due(step, now))
            .await
    }

    async fn put_worker(&self, worker: &WorkerInfo, fence: Fence<'_>) -> Result<()> {
        self.observe("put_worker", self.inner.put_worker(worker, fence))
            .await
    }

    async fn remove_worker(&self, worker_id: &str, fence: Fence<'_>) -> Result<()> {
        self.observe("remove_worker", self.inner.remove_worker(worker_id, fence))
            .await
    }

    async fn list_workers(&self, step: Option<&str>) -> Result<Vec<WorkerInfo>> {
        self.observe("list_workers", self.inner.list_workers(step))
            .await
    }

    async fn set_worker_drain(
        &self,
        step: &str,
        worker_id: &str,
        drain: bool,
        fence: Fence<'_>,
    ) -> Result<()> {
        self.observe(
            "set_worker_drain",
            self.inner.set_worker_drain(step, worker_id, drain, fence),
        )
        .await
    }

    async fn worker_drain_requested(&self, worker_id: &str) -> Result<bool> {
        self.observe(
            "worker_drain_requested",
            self.inner.worker_drain_requested(worker_id),
        )
        .await
    }

    async fn refresh_worker(&self, worker: &WorkerInfo) -> Result<bool> {
        self.observe("refresh_worker", self.inner.refresh_worker(worker))
            .await
    }

    async fn put_status(&self, doc: &StatusDoc, fence: Fence<'_>) -> Result<()> {
        self.observe("put_status", self.inner.put_status(doc, fence))
            .await
    }

    async fn list_status(&self) -> Result<Vec<StatusDoc>> {
        self.observe("list_status", self.inner.list_status()).await
    }

    async fn get_status(&self, name: &str) -> Result<Option<StatusDoc>> {
        self.observe("get_status", self.inner.get_status(name))
            .await
    }

    async fn acquire_leadership(
        &self,
        cluster: &str,
        owner: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Option<Leadership>> {
        self.observe(
            "acquire_leadership",
            self.inner.acquire_leadership(cluster, owner, ttl_ms, now),
        )
        .await
    }

    async fn release_leadership(&self, cluster: &str, owner: &str) -> Result<()> {
        self.observe(
            "release_leadership",
            self.inner.release_leadership(cluster, owner),
        )
        .await
    }

    async fn current_leader(&self, cluster: &str) -> Result<Option<Leadership>> {
        self.observe("current_leader", self.inner.current_leader(cluster))
            .await
    }

    fn batch_counts(&self) {
        self.inner.batch_counts()
    }

    async fn flush(&self) -> Result<()> {
        self.inner.flush().await
    }

    fn claim_conflicts(&self) -> u64 {
        self.inner.claim_conflicts()
    }

    fn note_lease_ttl(&self, owner: &str, ttl_ms: Millis) {
        self.inner.note_lease_ttl(owner, ttl_ms)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
#[path = "instrumented_tests.rs"]
mod tests;
