//! Helpers for the worker tests: fast worker options, waiting, a store that can be switched
//! off (every call fails as unavailable), worker processes, a fake IMDS and a private
//! DynamoDB Local that can be stopped and restarted on the same port and data.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anamo::clock::Millis;
use anamo::model::{
    Backlog, Claim, ClaimRequest, Completion, ImportReport, LeaseRef, RequeueReport, StepCounts,
    Task, TaskFilter, TaskSpec, TaskState, WorkerInfo,
};
use anamo::store::{Fence, Leadership, SharedStore, StatusDoc, StoreError, TaskStore};
use anamo::worker::{run_with, WorkerArgs, WorkerControl, WorkerExit};
use async_trait::async_trait;

pub use super::wait::wait_until;

pub fn now() -> Millis {
    anamo::clock::system().now()
}

/// Worker options for tests: short lease and polls, no IMDS, logs under `dir`.
pub fn fast_args(step: &str, dir: &Path) -> WorkerArgs {
    let mut a = WorkerArgs::new(step);
    a.lease_ttl = Duration::from_secs(3);
    a.heartbeat = Some(Duration::from_millis(1000));
    a.poll_interval = Duration::from_millis(100);
    a.imds_endpoint = Some("off".into());
    a.log_dir = Some(dir.join("logs"));
    a.drain_grace = Duration::from_secs(1);
    a
}

pub async fn import(store: &SharedStore, specs: &[TaskSpec]) {
    let report = store.import(specs, now()).await.expect("import");
    assert_eq!(report.inserted as usize, specs.len(), "{report:?}");
}

/// A task `step/long` that writes its shell's pid to `pid_file`, then sleeps 30 s: long enough
/// to be stopped, cancelled or cut off while the test watches that pid.
pub fn long_pid_task(step: &str, pid_file: &std::path::Path) -> TaskSpec {
    TaskSpec::new(
        step,
        "long",
        format!("echo $$ > {}; sleep 30", pid_file.display()),
    )
}

pub async fn get(store: &SharedStore, step: &str, id: &str) -> Task {
    store
        .get(step, id)
        .await
        .expect("get")
        .unwrap_or_else(|| panic!("task {step}/{id} missing"))
}

/// `t` with priority `priority`.
pub fn prio(mut t: TaskSpec, priority: i32) -> TaskSpec {
    t.priority = priority;
    t
}

/// Runs a worker in-process (`anamo::worker::run_with`) on `store`.
pub fn spawn_worker_task(
    args: anamo::worker::WorkerArgs,
    store: SharedStore,
) -> (
    WorkerControl,
    tokio::task::JoinHandle<anamo::worker::Result<WorkerExit>>,
) {
    let control = WorkerControl::new();
    let handle = tokio::spawn(run_with(args, store, control.clone()));
    (control, handle)
}

/// The worker's exit; panics if it did not exit within `timeout` (a hang guard) or failed.
pub async fn join(
    handle: tokio::task::JoinHandle<anamo::worker::Result<WorkerExit>>,
    timeout: Duration,
) -> WorkerExit {
    tokio::time::timeout(timeout, handle)
        .await
        .expect("worker did not exit in time")
        .expect("worker panicked")
        .expect("worker failed")
}

/// Waits until the task is running and returns it.
pub async fn wait_running(store: &SharedStore, step: &str, id: &str, timeout: Duration) -> Task {
    wait_until(&format!("{step}/{id} running"), timeout, || async {
        get(store, step, id).await.state == TaskState::Running
    })
    .await;
    get(store, step, id).await
}

/// Reads a pid written by a task script.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

pub fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

/// Kills a process group left behind by a test (best effort).
pub fn kill_group(pgid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

// ---- a store that can be switched off ------------------------------------------------------

/// Wraps a store; while `down`, every call fails with `StoreError::Unavailable` without
/// reaching the real store (a network partition, as the worker sees it). Counts, per
/// operation, the calls it refused and the errors the real store returned, so a test can see
/// that e.g. a completion was refused and then retried.
#[derive(Debug)]
pub struct FaultyStore {
    inner: SharedStore,
    down: AtomicBool,
    /// Operation → (refused here, failed in the real store, succeeded).
    calls: std::sync::Mutex<BTreeMap<String, (u64, u64, u64)>>,
    /// The next call of this operation fails (once).
    /// The operation to refuse, after letting this many of its calls through.
    fail_next: std::sync::Mutex<Option<(&'static str, u32)>>,
}

impl FaultyStore {
    pub fn new(inner: SharedStore) -> Arc<FaultyStore> {
        Arc::new(FaultyStore {
            inner,
            down: AtomicBool::new(false),
            calls: Default::default(),
            fail_next: std::sync::Mutex::new(None),
        })
    }
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    /// Calls refused while down (or by [`FaultyStore::fail_next_call`]).
    pub fn refused(&self) -> u64 {
        self.calls.lock().unwrap().values().map(|c| c.0).sum()
    }
    /// Calls of `op` (e.g. "complete") refused here or failed in the real store.
    pub fn errors_of(&self, op: &str) -> u64 {
        let calls = self.calls.lock().unwrap();
        calls.get(op).map_or(0, |c| c.0 + c.1)
    }
    /// Calls of `op` that the real store answered without an error.
    pub fn succeeded_of(&self, op: &str) -> u64 {
        self.calls.lock().unwrap().get(op).map_or(0, |c| c.2)
    }
    /// Makes the next call of `op` (e.g. "list status") fail, and only that one.
    pub fn fail_next_call(&self, op: &'static str) {
        self.fail_call_after(op, 0);
    }
    /// Lets `skip` calls of `op` through, then makes the next one fail, and only that one.
    pub fn fail_call_after(&self, op: &'static str, skip: u32) {
        *self.fail_next.lock().unwrap() = Some((op, skip));
    }
    fn count(&self, op: &str, which: fn(&mut (u64, u64, u64)) -> &mut u64) {
        let mut calls = self.calls.lock().unwrap();
        *which(calls.entry(op.to_string()).or_default()) += 1;
    }
    /// Refuses the call while down, else runs it on the real store; counts either way.
    async fn call<T>(
        &self,
        op: &str,
        inner: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let once = {
            let mut next = self.fail_next.lock().unwrap();
            match next.as_mut() {
                Some((o, 0)) if *o == op => next.take().is_some(),
                Some((o, skip)) if *o == op => {
                    *skip -= 1;
                    false
                }
                _ => false,
            }
        };
        if once || self.down.load(Ordering::SeqCst) {
            self.count(op, |c| &mut c.0);
            return Err(StoreError::Unavailable {
                operation: op.to_string(),
                message: "test outage".into(),
            });
        }
        let out = inner.await;
        match &out {
            Ok(_) => self.count(op, |c| &mut c.2),
            Err(_) => self.count(op, |c| &mut c.1),
        }
        out
    }
}

#[async_trait]
impl TaskStore for FaultyStore {
    async fn create_schema(&self) -> Result<(), StoreError> {
        self.call("create schema", self.inner.create_schema()).await
    }
    async fn delete_schema(&self) -> Result<(), StoreError> {
        self.call("delete schema", self.inner.delete_schema()).await
    }
    async fn import_graph(
        &self,
        tasks: &[TaskSpec],
        graph: &anamo::pipeline::Graph,
        now: Millis,
    ) -> Result<ImportReport, StoreError> {
        self.call("import", self.inner.import_graph(tasks, graph, now))
            .await
    }
    async fn claim_batch(
        &self,
        req: &ClaimRequest,
        max: usize,
        now: Millis,
    ) -> Result<Vec<Claim>, StoreError> {
        self.call("claim", self.inner.claim_batch(req, max, now))
            .await
    }
    async fn heartbeat(
        &self,
        lease: &LeaseRef,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Millis, StoreError> {
        self.call("heartbeat", self.inner.heartbeat(lease, ttl_ms, now))
            .await
    }
    async fn complete(
        &self,
        lease: &LeaseRef,
        completion: &Completion,
        now: Millis,
    ) -> Result<TaskState, StoreError> {
        self.call("complete", self.inner.complete(lease, completion, now))
            .await
    }
    async fn release(&self, lease: &LeaseRef, now: Millis) -> Result<(), StoreError> {
        self.call("release", self.inner.release(lease, now)).await
    }
    async fn requeue_expired(
        &self,
        step: &str,
        now: Millis,
        fence: Fence<'_>,
    ) -> Result<RequeueReport, StoreError> {
        self.call(
            "requeue expired",
            self.inner.requeue_expired(step, now, fence),
        )
        .await
    }
    async fn task_states(
        &self,
        step: &str,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, TaskState>, StoreError> {
        self.call("task states", self.inner.task_states(step, ids))
            .await
    }
    async fn step_ids(
        &self,
        step: &str,
        states: &[TaskState],
        prefix: &str,
    ) -> Result<Vec<(String, TaskState)>, StoreError> {
        self.call("step ids", self.inner.step_ids(step, states, prefix))
            .await
    }
    async fn entered_since(
        &self,
        step: &str,
        state: TaskState,
        since: i64,
    ) -> Result<Vec<anamo::store::Entered>, StoreError> {
        self.call(
            "entered since",
            self.inner.entered_since(step, state, since),
        )
        .await
    }
    async fn settle_waiting(
        &self,
        step: &str,
        id: &str,
        priority: i32,
        to: TaskState,
        reason: Option<&str>,
        now: Millis,
    ) -> Result<bool, StoreError> {
        let call = self
            .inner
            .settle_waiting(step, id, priority, to, reason, now);
        self.call("settle waiting", call).await
    }
    async fn hold_back(&self, step: &str, id: &str, now: Millis) -> Result<bool, StoreError> {
        self.call("hold back", self.inner.hold_back(step, id, now))
            .await
    }
    async fn get(&self, step: &str, id: &str) -> Result<Option<Task>, StoreError> {
        self.call("get", self.inner.get(step, id)).await
    }
    async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        self.call("list", self.inner.list(filter)).await
    }
    async fn counts(&self, step: &str) -> Result<StepCounts, StoreError> {
        self.call("counts", self.inner.counts(step)).await
    }
    async fn backlog(&self, step: &str, pending_limit: u64) -> Result<Backlog, StoreError> {
        self.call("backlog", self.inner.backlog(step, pending_limit))
            .await
    }
    async fn steps(&self) -> Result<Vec<String>, StoreError> {
        self.call("steps", self.inner.steps()).await
    }
    async fn requeue(
        &self,
        step: &str,
        id: &str,
        force: bool,
        now: Millis,
    ) -> Result<(), StoreError> {
        self.call("requeue", self.inner.requeue(step, id, force, now))
            .await
    }
    async fn cancel(&self, step: &str, id: &str, now: Millis) -> Result<(), StoreError> {
        self.call("cancel", self.inner.cancel(step, id, now)).await
    }
    async fn delete(&self, step: &str, id: &str) -> Result<(), StoreError> {
        self.call("delete", self.inner.delete(step, id)).await
    }
    async fn hold(&self, step: &str, id: &str, now: Millis) -> Result<(), StoreError> {
        self.call("hold", self.inner.hold(step, id, now)).await
    }
    async fn resume(&self, step: &str, id: &str, now: Millis) -> Result<(), StoreError> {
        self.call("resume", self.inner.resume(step, id, now)).await
    }
    async fn retry_due(&self, step: &str, now: Millis) -> Result<u64, StoreError> {
        self.call("retry due", self.inner.retry_due(step, now))
            .await
    }
    async fn put_worker(&self, worker: &WorkerInfo, fence: Fence<'_>) -> Result<(), StoreError> {
        self.call("put worker", self.inner.put_worker(worker, fence))
            .await
    }
    async fn remove_worker(&self, worker_id: &str, fence: Fence<'_>) -> Result<(), StoreError> {
        self.call("remove worker", self.inner.remove_worker(worker_id, fence))
            .await
    }
    async fn list_workers(&self, step: Option<&str>) -> Result<Vec<WorkerInfo>, StoreError> {
        self.call("list workers", self.inner.list_workers(step))
            .await
    }
    async fn set_worker_drain(
        &self,
        step: &str,
        worker_id: &str,
        drain: bool,
        fence: Fence<'_>,
    ) -> Result<(), StoreError> {
        let write = self.inner.set_worker_drain(step, worker_id, drain, fence);
        self.call("set worker drain", write).await
    }
    async fn worker_drain_requested(&self, worker_id: &str) -> Result<bool, StoreError> {
        let read = self.inner.worker_drain_requested(worker_id);
        self.call("worker drain requested", read).await
    }
    async fn refresh_worker(&self, worker: &WorkerInfo) -> Result<bool, StoreError> {
        self.call("refresh worker", self.inner.refresh_worker(worker))
            .await
    }
    async fn put_status(&self, doc: &StatusDoc, fence: Fence<'_>) -> Result<(), StoreError> {
        self.call("put status", self.inner.put_status(doc, fence))
            .await
    }
    async fn list_status(&self) -> Result<Vec<StatusDoc>, StoreError> {
        self.call("list status", self.inner.list_status()).await
    }
    async fn get_status(&self, name: &str) -> Result<Option<StatusDoc>, StoreError> {
        self.call("get status", self.inner.get_status(name)).await
    }
    async fn acquire_leadership(
        &self,
        cluster: &str,
        owner: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Option<Leadership>, StoreError> {
        self.call(
            "acquire leadership",
            self.inner.acquire_leadership(cluster, owner, ttl_ms, now),
        )
        .await
    }
    async fn release_leadership(&self, cluster: &str, owner: &str) -> Result<(), StoreError> {
        self.call(
            "release leadership",
            self.inner.release_leadership(cluster, owner),
        )
        .await
    }
    async fn current_leader(&self, cluster: &str) -> Result<Option<Leadership>, StoreError> {
        self.call("current leader", self.inner.current_leader(cluster))
            .await
    }
    fn claim_conflicts(&self) -> u64 {
        self.inner.claim_conflicts()
    }
    fn describe(&self) -> String {
        format!("faulty({})", self.inner.describe())
    }
}

// ---- worker processes ----------------------------------------------------------------------

/// An `anamo worker` process; killed (SIGKILL) on drop if still running.
pub use super::process::Logged as WorkerProcess;

/// Environment a worker process needs to reach the store of `url` (DynamoDB Local's endpoint).
pub fn store_env(url: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    if url.starts_with("dynamodb://") {
        if let Ok(endpoint) = std::env::var("ANAMO_TEST_DYNAMODB_ENDPOINT") {
            env.push(("AWS_ENDPOINT_URL".into(), endpoint));
        }
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ] {
            env.push((k.into(), v.into()));
        }
    }
    env
}

/// Starts `anamo --store URL --log-format json worker --step STEP ARGS...` with its stderr in
/// `dir/<name>.log`.
pub fn spawn_worker(url: &str, step: &str, dir: &Path, name: &str, args: &[&str]) -> WorkerProcess {
    let log = dir.join(format!("{name}.log"));
    let stderr = std::fs::File::create(&log).expect("worker log");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args([
            "--store",
            url,
            "--log-format",
            "json",
            "worker",
            "--step",
            step,
        ])
        .args(["--worker-id", name, "--imds-endpoint", "off"])
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .args(args)
        .envs(store_env(url))
        .env_remove("ANAMO_STEP")
        .env_remove("ANAMO_WORKER_ID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start anamo worker");
    WorkerProcess { child, log }
}

// ---- a fake instance metadata service -------------------------------------------------------

/// IMDSv2 on a free loopback port: `PUT /latest/api/token` hands out a token;
/// `GET /latest/meta-data/spot/instance-action` is 404 until [`FakeImds::interrupt`], then 200
/// with a JSON notice; `GET /latest/meta-data/events/recommendations/rebalance` likewise until
/// [`FakeImds::recommend_rebalance`]. Requests without the token get 401.
pub struct FakeImds {
    pub url: String,
    notice: Arc<AtomicBool>,
    rebalance: Arc<AtomicBool>,
    pub spot_polls: Arc<AtomicU64>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeImds {
    pub async fn start() -> FakeImds {
        use axum::http::{HeaderMap, StatusCode};
        use axum::routing::{get, put};

        const TOKEN: &str = "test-token";
        let notice = Arc::new(AtomicBool::new(false));
        let rebalance = Arc::new(AtomicBool::new(false));
        let r = rebalance.clone();
        let polls = Arc::new(AtomicU64::new(0));
        let authorized = |h: &HeaderMap| {
            h.get("x-aws-ec2-metadata-token")
                .and_then(|v| v.to_str().ok())
                == Some(TOKEN)
        };
        let (n, p) = (notice.clone(), polls.clone());
        let app = axum::Router::new()
            .route(
                "/latest/api/token",
                put(|h: HeaderMap| async move {
                    // Like IMDS: the token's TTL comes back in a header.
                    let ttl = h
                        .get("x-aws-ec2-metadata-token-ttl-seconds")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("21600")
                        .to_string();
                    ([("x-aws-ec2-metadata-token-ttl-seconds", ttl)], TOKEN)
                }),
            )
            .route(
                "/latest/meta-data/instance-id",
                get(move |h: HeaderMap| async move {
                    if authorized(&h) {
                        (StatusCode::OK, "i-0123456789abcdef0".to_string())
                    } else {
                        (StatusCode::UNAUTHORIZED, String::new())
                    }
                }),
            )
            .route(
                "/latest/meta-data/spot/instance-action",
                get(move |h: HeaderMap| async move {
                    if !authorized(&h) {
                        return (StatusCode::UNAUTHORIZED, String::new());
                    }
                    p.fetch_add(1, Ordering::SeqCst);
                    if n.load(Ordering::SeqCst) {
                        (
                            StatusCode::OK,
                            r#"{"action": "terminate", "time": "2030-01-01T00:02:00Z"}"#
                                .to_string(),
                        )
                    } else {
                        (StatusCode::NOT_FOUND, "Not Found".to_string())
                    }
                }),
            );
        let app = app.route(
            "/latest/meta-data/events/recommendations/rebalance",
            get(move |h: HeaderMap| async move {
                if !authorized(&h) {
                    (StatusCode::UNAUTHORIZED, String::new())
                } else if r.load(Ordering::SeqCst) {
                    (
                        StatusCode::OK,
                        r#"{"noticeTime": "2030-01-01T00:00:00Z"}"#.to_string(),
                    )
                } else {
                    (StatusCode::NOT_FOUND, "Not Found".to_string())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeImds {
            url,
            notice,
            rebalance,
            spot_polls: polls,
            server,
        }
    }

    pub fn recommend_rebalance(&self) {
        self.rebalance.store(true, Ordering::SeqCst);
    }

    pub fn interrupt(&self) {
        self.notice.store(true, Ordering::SeqCst);
    }

    pub fn polls(&self) -> u64 {
        self.spot_polls.load(Ordering::SeqCst)
    }
}

impl Drop for FakeImds {
    fn drop(&mut self) {
        self.server.abort();
    }
}

// ---- a private DynamoDB Local --------------------------------------------------------------

/// A DynamoDB Local of our own, on disk (`-dbPath`), so it can be stopped and started again
/// on the same port with the same data. Fails the test when test-services did not provide the
/// jar and java (`None` only when skipping was allowed).
pub struct PrivateDynamo {
    pub endpoint: String,
    port: u16,
    db_dir: tempfile::TempDir,
    jar_dir: PathBuf,
    java: PathBuf,
    child: Option<std::process::Child>,
}

impl PrivateDynamo {
    pub async fn start() -> Option<PrivateDynamo> {
        let jar_dir = super::services::tool(
            "ANAMO_TEST_DYNAMODB_JAR_DIR",
            "DynamoDB Local's jar directory",
            None,
        )?;
        let java = super::services::tool("ANAMO_TEST_JAVA", "java (for DynamoDB Local)", None)?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            l.local_addr().unwrap().port()
        };
        let mut d = PrivateDynamo {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            db_dir: tempfile::tempdir().expect("tempdir"),
            jar_dir,
            java,
            child: None,
        };
        d.resume().await;
        Some(d)
    }

    /// Starts the server (again) and waits until it answers.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = std::process::Command::new(&self.java)
            .current_dir(&self.jar_dir)
            .arg("-Djava.library.path=./DynamoDBLocal_lib")
            .args([
                "-jar",
                "DynamoDBLocal.jar",
                "-sharedDb",
                "-disableTelemetry",
            ])
            .arg("-dbPath")
            .arg(self.db_dir.path())
            .args(["-port", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start DynamoDB Local");
        self.child = Some(child);
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "private DynamoDB Local did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the server (SIGKILL): every request fails until [`PrivateDynamo::resume`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateDynamo {
    fn drop(&mut self) {
        self.stop();
    }
}
