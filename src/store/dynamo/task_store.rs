//! The [`TaskStore`] implementation of [`DynamoStore`]: it only routes each call to the module
//! of its concern (see the module documentation of [`super`]).

use super::*;

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create_schema(&self) -> Result<()> {
        table::create_schema(self).await
    }

    async fn delete_schema(&self) -> Result<()> {
        table::delete_schema(self).await
    }

    async fn import_graph(
        &self,
        tasks: &[TaskSpec],
        graph: &crate::pipeline::Graph,
        now: Millis,
    ) -> Result<ImportReport> {
        transitions::import(self, tasks, graph, now).await
    }

    async fn claim_batch(&self, req: &ClaimRequest, max: usize, now: Millis) -> Result<Vec<Claim>> {
        // An idle worker polls here: its kept counter deltas are written once due.
        self.write_due_counts("claim").await;
        claims::claim_batch(self, req, max, now).await
    }

    async fn heartbeat(&self, lease: &LeaseRef, ttl_ms: Millis, now: Millis) -> Result<Millis> {
        self.write_due_counts("heartbeat").await;
        leases::heartbeat(self, lease, ttl_ms, now).await
    }

    fn batch_counts(&self) {
        self.unwritten.batch();
    }

    async fn flush(&self) -> Result<()> {
        self.write_counts("flush", true).await
    }

    async fn complete(
        &self,
        lease: &LeaseRef,
        completion: &Completion,
        now: Millis,
    ) -> Result<TaskState> {
        leases::complete(self, lease, completion, now).await
    }

    async fn release(&self, lease: &LeaseRef, now: Millis) -> Result<()> {
        leases::release(self, lease, now).await
    }

    async fn requeue_expired(
        &self,
        step: &str,
        now: Millis,
        fence: Fence<'_>,
    ) -> Result<RequeueReport> {
        lease_expiry::requeue_expired(self, step, now, fence).await
    }

    async fn task_states(&self, step: &str, ids: &[String]) -> Result<HashMap<String, TaskState>> {
        graph::task_states(self, step, ids).await
    }

    async fn step_ids(
        &self,
        step: &str,
        states: &[TaskState],
        prefix: &str,
    ) -> Result<Vec<(String, TaskState)>> {
        graph::step_ids(self, step, states, prefix).await
    }

    async fn step_ids_paged(
        &self,
        step: &str,
        states: &[TaskState],
        page: &mut (dyn FnMut(Vec<(String, TaskState)>) + Send),
    ) -> Result<()> {
        graph::step_ids_paged(self, step, states, page).await
    }

    async fn entered_since(
        &self,
        step: &str,
        state: TaskState,
        since: Millis,
    ) -> Result<Vec<Entered>> {
        graph::entered_since(self, step, state, since).await
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
        graph::settle_waiting(self, step, id, priority, to, reason, now).await
    }

    async fn hold_back(&self, step: &str, id: &str, now: Millis) -> Result<bool> {
        graph::hold_back(self, step, id, now).await
    }

    async fn get(&self, step: &str, id: &str) -> Result<Option<Task>> {
        reads::get(self, step, id).await
    }

    async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        reads::list(self, filter).await
    }

    async fn counts(&self, step: &str) -> Result<StepCounts> {
        counters::counts(self, step).await
    }

    async fn backlog(&self, step: &str, pending_limit: u64) -> Result<Backlog> {
        reads::backlog(self, step, pending_limit).await
    }

    async fn pass_counts(&self, steps: &[String]) -> Result<Vec<StepCounts>> {
        counters::pass_counts(self, steps).await
    }

    async fn oldest_pending(&self, step: &str) -> Result<Option<Millis>> {
        self.read_oldest_pending(step).await
    }

    async fn count_finished_since(&self, step: &str, since: Millis) -> Result<u64> {
        reads::count_finished_since(self, step, since).await
    }

    async fn recent_run_times(&self, step: &str, limit: usize) -> Result<Vec<Millis>> {
        reads::recent_run_times(self, step, limit).await
    }

    async fn steps(&self) -> Result<Vec<String>> {
        reads::steps(self).await
    }

    async fn requeue(&self, step: &str, id: &str, force: bool, now: Millis) -> Result<()> {
        transitions::requeue(self, step, id, force, now).await
    }

    async fn cancel(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        transitions::cancel(self, step, id, now).await
    }

    async fn delete(&self, step: &str, id: &str) -> Result<()> {
        transitions::delete(self, step, id).await
    }

    async fn hold(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        hold::hold(self, step, id, now).await
    }

    async fn resume(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        hold::resume(self, step, id, now).await
    }

    async fn retry_due(&self, step: &str, now: Millis) -> Result<u64> {
        hold::retry_due(self, step, now).await
    }

    async fn put_worker(&self, worker: &WorkerInfo, fence: Fence<'_>) -> Result<()> {
        workers::put_worker(self, worker, fence).await
    }

    async fn remove_worker(&self, worker_id: &str, fence: Fence<'_>) -> Result<()> {
        workers::remove_worker(self, worker_id, fence).await
    }

    async fn list_workers(&self, step: Option<&str>) -> Result<Vec<WorkerInfo>> {
        workers::list_workers(self, step).await
    }

    async fn set_worker_drain(
        &self,
        step: &str,
        worker_id: &str,
        drain: bool,
        fence: Fence<'_>,
    ) -> Result<()> {
        workers::set_worker_drain(self, step, worker_id, drain, fence).await
    }

    async fn worker_drain_requested(&self, worker_id: &str) -> Result<bool> {
        workers::worker_drain_requested(self, worker_id).await
    }
    async fn refresh_worker(&self, worker: &WorkerInfo) -> Result<bool> {
        workers::refresh_worker(self, worker).await
    }

    async fn put_status(&self, doc: &StatusDoc, fence: Fence<'_>) -> Result<()> {
        status::put_status(self, doc, fence).await
    }

    async fn list_status(&self) -> Result<Vec<StatusDoc>> {
        status::list_status(self).await
    }

    async fn get_status(&self, name: &str) -> Result<Option<StatusDoc>> {
        status::get_status(self, name).await
    }

    async fn acquire_leadership(
        &self,
        cluster: &str,
        owner: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Option<Leadership>> {
        leader::acquire_leadership(self, cluster, owner, ttl_ms, now).await
    }

    async fn release_leadership(&self, cluster: &str, owner: &str) -> Result<()> {
        leader::release_leadership(self, cluster, owner).await
    }

    async fn current_leader(&self, cluster: &str) -> Result<Option<Leadership>> {
        leader::current_leader(self, cluster).await
    }

    fn claim_conflicts(&self) -> u64 {
        self.contention.lost()
    }

    fn note_lease_ttl(&self, owner: &str, ttl_ms: Millis) {
        self.lease_ttls.note(owner, ttl_ms);
    }

    fn describe(&self) -> String {
        format!("dynamodb://{}", self.table)
    }
}
