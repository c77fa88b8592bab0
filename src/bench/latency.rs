//! Reaction times: from a backlog appearing to the launch call (against the controller
//! interval), and from a worker being killed to its task being requeued (against the lease
//! TTL), and from a leader that stops renewing its lease to a follower's first pass as leader
//! (against the leader lease TTL).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;
use serde_json::json;
use tokio::process::Command;

use super::dispatch::{sqlite_store, TempDir};
use super::{BenchConfig, Row};
use crate::clock;
use crate::controller::providers::{ProviderSet, RemoteFactory, WorkerLaunch};
use crate::controller::reload::ManifestSource;
use crate::controller::status::Role;
use crate::controller::{Controller, ControllerConfig};
use crate::manifest::FleetManifest;
use crate::metrics::Metrics;
use crate::model::{TaskSpec, TaskState};
use crate::provider::{
    FleetProvider, Instance, LaunchOutcome, LaunchRequest, ProviderError, ProviderResult,
};

/// Records when `launch` is first called.
#[derive(Debug, Default)]
struct Recorder {
    launched_at: Mutex<Option<Instant>>,
}

#[derive(Debug)]
struct RecordingProvider(Arc<Recorder>);

#[async_trait]
impl FleetProvider for RecordingProvider {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        Ok(Vec::new())
    }
    async fn launch(&self, _: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        let mut at = self.0.launched_at.lock().unwrap_or_else(|p| p.into_inner());
        at.get_or_insert_with(Instant::now);
        Ok(LaunchOutcome::default())
    }
    async fn terminate(&self, _: &[String]) -> ProviderResult<()> {
        Ok(())
    }
    fn kind(&self) -> &'static str {
        "recording"
    }
}

struct RecordingFactory(Arc<Recorder>);

#[async_trait]
impl RemoteFactory for RecordingFactory {
    async fn build(
        &self,
        _: &str,
        _: &FleetManifest,
        _: &WorkerLaunch,
    ) -> Result<Arc<dyn FleetProvider>, ProviderError> {
        Ok(Arc::new(RecordingProvider(self.0.clone())))
    }
}

#[derive(Debug, Serialize)]
struct Latencies {
    interval_s: f64,
    backlog_to_launch_s: Vec<f64>,
    lease_ttl_s: f64,
    sweep_every_s: f64,
    kill_to_requeue_s: Vec<f64>,
    leader_ttl_s: f64,
    leader_lost_to_takeover_s: Vec<f64>,
}

pub(super) async fn run(cfg: &BenchConfig) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let trials = cfg.trials.max(1);
    let interval = cfg.interval;
    let mut launch = Vec::new();
    for k in 0..trials {
        // Backlogs appear at phases spread over the interval.
        let offset = interval.mul_f64((f64::from(k) + 0.5) / f64::from(trials));
        launch.push(backlog_to_launch(cfg, offset).await?);
    }
    let mut requeue = Vec::new();
    for _ in 0..trials.min(3) {
        requeue.push(kill_to_requeue(cfg).await?);
    }
    let mut takeover = Vec::new();
    for _ in 0..trials.min(3) {
        takeover.push(leader_takeover(cfg).await?);
    }
    let l = Latencies {
        interval_s: interval.as_secs_f64(),
        backlog_to_launch_s: launch.clone(),
        lease_ttl_s: cfg.lease_ttl.as_secs_f64(),
        sweep_every_s: interval.as_secs_f64(),
        kill_to_requeue_s: requeue.clone(),
        leader_ttl_s: cfg.lease_ttl.as_secs_f64(),
        leader_lost_to_takeover_s: takeover.clone(),
    };
    let (lmean, lmax) = mean_max(&launch);
    let (rmean, rmax) = mean_max(&requeue);
    let (tmean, tmax) = mean_max(&takeover);
    let iv = interval.as_secs_f64();
    let ttl = cfg.lease_ttl.as_secs_f64();
    let rows = vec![
        Row::new(
            format!("backlog appears → launch call ({} trials)", launch.len()),
            format!("mean {lmean:.2} s, max {lmax:.2} s"),
        )
        .reference(format!("controller interval {iv:.1} s"))
        .ratio(lmax / iv)
        .goal("max ≤ 1 interval (+ pass time)", lmax <= iv * 1.1)
        .note("backlog added at phases spread over the interval; SQLite store"),
        Row::new(
            format!("worker killed (SIGKILL) → task requeued ({} trials)", requeue.len()),
            format!("mean {rmean:.2} s, max {rmax:.2} s"),
        )
        .reference(format!("lease TTL {ttl:.1} s, expiry sweep every {iv:.1} s"))
        .ratio(rmax / ttl)
        .goal("≤ TTL + 1 sweep", rmax <= ttl + iv * 1.1)
        .note("lease expires ≤ TTL after the last heartbeat (every TTL/3); the controller's requeue_expired runs each pass"),
        Row::new(
            format!("leader stops renewing → follower leads ({} trials)", takeover.len()),
            format!("mean {tmean:.2} s, max {tmax:.2} s"),
        )
        .reference(format!("leader lease TTL {ttl:.1} s, follower passes every {iv:.1} s"))
        .ratio(tmax / ttl)
        .goal("≤ TTL + 1 interval", tmax <= ttl + iv * 1.1)
        .note("the leader is dropped without handing its lease over (a crash); SQLite store"),
    ];
    Ok((rows, json!(l)))
}

fn mean_max(v: &[f64]) -> (f64, f64) {
    let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
    (mean, v.iter().copied().fold(0.0, f64::max))
}

/// A controller running passes every interval; a backlog imported `offset` after its first
/// pass; the time from the import returning to the provider's launch call.
async fn backlog_to_launch(cfg: &BenchConfig, offset: Duration) -> anyhow::Result<f64> {
    let dir = TempDir::new("anamo-bench-latency")?;
    let (store, _) = sqlite_store(&dir)?;
    store.create_schema().await?;
    let clock = clock::system();
    let recorder = Arc::new(Recorder::default());
    let mut ccfg = ControllerConfig::new("bench");
    ccfg.interval = cfg.interval;
    let mut controller = bench_controller(cfg, &dir, ccfg, store.clone(), recorder.clone())?;
    let launched = || {
        *recorder
            .launched_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    };
    let give_up = Instant::now() + cfg.interval * 5 + Duration::from_secs(10);
    let passes = async {
        while launched().is_none() && Instant::now() < give_up {
            controller.reconcile_once().await;
            tokio::time::sleep(cfg.interval).await;
        }
    };
    let backlog = async {
        tokio::time::sleep(offset).await;
        store
            .import(&[TaskSpec::new("lat", "t1", "true")], clock.now())
            .await?;
        Ok::<Instant, anyhow::Error>(Instant::now())
    };
    let ((), appeared) = tokio::join!(passes, backlog);
    let appeared = appeared?;
    let at = launched().ok_or_else(|| anyhow::anyhow!("no launch within the time allowed"))?;
    Ok(at.saturating_duration_since(appeared).as_secs_f64())
}

/// A controller of one fleet (step `lat`, provider recording its launch calls) on `store`.
fn bench_controller(
    cfg: &BenchConfig,
    dir: &TempDir,
    ccfg: ControllerConfig,
    store: crate::store::SharedStore,
    recorder: Arc<Recorder>,
) -> anyhow::Result<Controller> {
    let clock = clock::system();
    let set = crate::manifest::parse_str(
        "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: lat\nspec:\n  step: lat\n  \
         provider:\n    ec2:\n      launchTemplate:\n        name: bench\n  maxInstances: 5\n",
        "bench.yaml",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let launch = WorkerLaunch {
        store_url: format!("sqlite://{}", dir.0.join("bench.db").display()),
        exe: cfg.exe.clone(),
        log_dir: None,
        env: BTreeMap::new(),
        force_local: false,
        binary_url: None,
    };
    let providers = ProviderSet::new(
        launch,
        clock.clone(),
        "bench",
        Some(Box::new(RecordingFactory(recorder))),
    );
    Ok(Controller::new(
        ccfg,
        store,
        clock,
        ManifestSource::fixed(set),
        providers,
        Arc::new(Metrics::new()),
    ))
}

/// Two controllers of one cluster share a store; the leader stops renewing its lease, as a
/// crashed or SIGKILLed one does (it is dropped without `shutdown`, which would hand the lease
/// over at once); the follower passes every interval. The time from the leader's last renewal
/// to the follower's first pass as leader.
pub(super) async fn leader_takeover(cfg: &BenchConfig) -> anyhow::Result<f64> {
    let dir = TempDir::new("anamo-bench-takeover")?;
    let (store, _) = sqlite_store(&dir)?;
    store.create_schema().await?;
    let controller = |identity: &str| {
        let mut ccfg = ControllerConfig::new("bench");
        ccfg.identity = identity.to_string();
        ccfg.interval = cfg.interval;
        ccfg.leader_election = true;
        ccfg.leader_ttl = cfg.lease_ttl;
        bench_controller(cfg, &dir, ccfg, store.clone(), Arc::default())
    };
    let mut leader = controller("bench-a")?;
    let mut follower = controller("bench-b")?;
    let renewed = Instant::now();
    if leader.reconcile_once().await.role != Role::Leader {
        anyhow::bail!("the first controller did not take the leadership");
    }
    drop(leader);
    // Not in step with the lease: the follower's passes start half an interval later.
    tokio::time::sleep(cfg.interval.mul_f64(0.5)).await;
    let deadline = renewed + cfg.lease_ttl * 3 + cfg.interval * 3;
    loop {
        if follower.reconcile_once().await.role == Role::Leader {
            return Ok(renewed.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            anyhow::bail!("no takeover within 3 leader lease TTLs");
        }
        tokio::time::sleep(cfg.interval).await;
    }
}

/// A worker process runs a long task; it is killed with SIGKILL; `requeue_expired` runs every
/// interval (as the controller's pass does) until the task is back to pending.
async fn kill_to_requeue(cfg: &BenchConfig) -> anyhow::Result<f64> {
    let dir = TempDir::new("anamo-bench-kill")?;
    let (store, _) = sqlite_store(&dir)?;
    store.create_schema().await?;
    let clock = clock::system();
    let hold = cfg.lease_ttl + cfg.interval * 2 + Duration::from_secs(5);
    store
        .import(
            &[TaskSpec::new(
                "kill",
                "t1",
                format!("sleep {}", hold.as_secs()),
            )],
            clock.now(),
        )
        .await?;
    let ttl_ms = cfg.lease_ttl.as_millis();
    let mut worker = Command::new(&cfg.exe)
        .arg("--store")
        .arg(format!("sqlite://{}", dir.0.join("bench.db").display()))
        .args(["worker", "--step", "kill", "--imds-endpoint", "off"])
        .args(["--spot-poll", "0s", "--poll-interval", "100ms"])
        .arg("--lease-ttl")
        .arg(format!("{ttl_ms}ms"))
        .arg("--log-dir")
        .arg(dir.0.join("logs"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = worker
        .id()
        .ok_or_else(|| anyhow::anyhow!("the worker has no pid"))? as i32;
    // Wait for the task to run.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = store.get("kill", "t1").await?;
        if t.is_some_and(|t| t.state == TaskState::Running) {
            break;
        }
        if Instant::now() > deadline {
            anyhow::bail!("the worker did not claim the task within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let a heartbeat or two happen, at a phase that does not line up with the TTL.
    tokio::time::sleep(cfg.lease_ttl.mul_f64(0.5)).await;
    let task_procs = children_of(pid);
    let killed = Instant::now();
    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
    let _ = worker.wait().await;
    // The task's process group outlives its worker: end it after measuring.
    let result = async {
        let deadline = killed + cfg.lease_ttl * 3 + cfg.interval * 3;
        loop {
            let r = store
                .requeue_expired("kill", clock.now(), crate::store::Fence::Unfenced)
                .await?;
            if r.requeued.iter().any(|id| id == "t1") {
                return Ok(killed.elapsed().as_secs_f64());
            }
            if Instant::now() > deadline {
                anyhow::bail!("the task was not requeued within 3 lease TTLs");
            }
            tokio::time::sleep(cfg.interval).await;
        }
    }
    .await;
    for p in task_procs {
        let _ = nix::sys::signal::killpg(Pid::from_raw(p), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    result
}

/// Pids whose parent is `pid` (from /proc).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    // `pid (comm) state ppid ...`; comm may contain spaces.
                    let rest = &s[s.rfind(')')? + 2..];
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(pid)
        })
        .collect()
}
