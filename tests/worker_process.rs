//! `anamo worker` as a process: SIGTERM drain, kill -9 mid-task, a worker paused (SIGSTOP)
//! past its lease whose late completion is rejected, and claims from several worker processes
//! on one SQLite file.
//!
//! DynamoDB variants need `scripts/test-services run -- cargo nextest run --test worker_process`;
//! without DynamoDB Local they fail.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use anamo::model::{TaskSpec, TaskState, WorkerState};
use common::worker::*;
use common::Harness;
use nix::sys::signal::Signal;

on_both_stores!(
    sigterm_drains_and_hands_back,
    killed_worker_task_is_requeued_and_done_once,
    an_idle_worker_killed_outright_leaves_the_counts_right
);

/// Short leases so that expiry happens within the test.
const FAST: &[&str] = &[
    "--lease-ttl",
    "2s",
    "--heartbeat",
    "500ms",
    "--poll-interval",
    "100ms",
];

/// The JSON log lines of a worker process.
fn log_events(w: &WorkerProcess) -> Vec<serde_json::Value> {
    w.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn find_event<'a>(
    events: &'a [serde_json::Value],
    message_prefix: &str,
    id: &str,
) -> Option<&'a serde_json::Value> {
    events.iter().find(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(message_prefix))
            && e["id"].as_str() == Some(id)
    })
}

/// SIGTERM: stop claiming, let running tasks finish within the drain grace, hand the rest
/// back without counting the attempt, mark the worker gone and exit 0.
async fn sigterm_drains_and_hands_back(h: Harness) {
    let dir = tempfile::tempdir().unwrap();
    let step = "sigterm";
    let pid = dir.path().join("long.pid");
    import(
        &h.store,
        &[
            prio(long_pid_task(step, &pid), 3),
            prio(TaskSpec::new(step, "short", "sleep 1"), 2),
            prio(TaskSpec::new(step, "queued", "true"), 1),
        ],
    )
    .await;
    let mut args = FAST.to_vec();
    args.extend(["--slots", "2", "--drain-grace", "2s"]);
    let mut w = spawn_worker(&h.url, step, dir.path(), "drainer", &args);
    wait_running(&h.store, step, "long", Duration::from_secs(20)).await;
    wait_running(&h.store, step, "short", Duration::from_secs(20)).await;
    wait_until("pid file", Duration::from_secs(5), || async {
        read_pid(&pid).is_some()
    })
    .await;
    let signalled = Instant::now();
    signal(w.pid(), Signal::SIGTERM);
    // The long task (30 s) outlasts this deadline: the worker exits in time only if it stops
    // the task once the grace is over.
    let status = w.wait_exit(Duration::from_secs(20)).await;
    let took = signalled.elapsed();
    assert!(status.success(), "{status}; log:\n{}", w.log_text());
    assert!(
        took >= Duration::from_millis(1800),
        "the long task got the drain grace: {took:?}"
    );

    let long = get(&h.store, step, "long").await;
    assert_eq!(
        (long.state, long.attempts),
        (TaskState::Pending, 0),
        "handed back without counting the attempt"
    );
    assert!(!alive(read_pid(&pid).unwrap()), "the long task was killed");
    let short = get(&h.store, step, "short").await;
    assert_eq!(
        short.state,
        TaskState::Succeeded,
        "finished within the grace"
    );
    let queued = get(&h.store, step, "queued").await;
    assert_eq!((queued.state, queued.attempts), (TaskState::Pending, 0));
    let workers = h.store.list_workers(Some(step)).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].worker_id, "drainer");
    assert_eq!(workers[0].state, WorkerState::Gone);
    let events = log_events(&w);
    assert!(
        find_event(&events, "task handed back", "long").is_some(),
        "{}",
        w.log_text()
    );
}

/// kill -9 of a worker mid-task: the task is requeued once its lease expires (as the controller
/// does) and another worker completes it, once.
async fn killed_worker_task_is_requeued_and_done_once(h: Harness) {
    let dir = tempfile::tempdir().unwrap();
    let step = "kill9";
    let runs = dir.path().join("runs.txt");
    let pid1 = dir.path().join("attempt1.pid");
    let script = format!(
        "if [ \"$ANAMO_ATTEMPT\" = 1 ]; then echo $$ > {}; sleep 30; fi; echo $ANAMO_WORKER_ID >> {}",
        pid1.display(),
        runs.display()
    );
    import(&h.store, &[TaskSpec::new(step, "victim", script)]).await;
    let mut a = spawn_worker(&h.url, step, dir.path(), "worker-a", FAST);
    wait_running(&h.store, step, "victim", Duration::from_secs(20)).await;
    wait_until("pid file", Duration::from_secs(5), || async {
        read_pid(&pid1).is_some()
    })
    .await;
    signal(a.pid(), Signal::SIGKILL);
    a.wait_exit(Duration::from_secs(5)).await;
    // The task's own process group outlives a SIGKILLed worker (nothing records its result).
    let orphan = read_pid(&pid1).unwrap();

    // What the controller does: requeue once the lease has expired. On DynamoDB a silent
    // worker's tasks are looked at once its registration is older than the lease TTL it
    // records (2 s here; docs/dynamodb-table.md, "Lease expiry"), so well before the 60 s a
    // registration without one is trusted for (the bound is a hang guard).
    wait_until(
        "lease expiry requeues the task",
        Duration::from_secs(30),
        || async {
            let report = h
                .store
                .requeue_expired(step, now(), anamo::store::Fence::Unfenced)
                .await
                .unwrap();
            report.requeued == vec!["victim".to_string()]
        },
    )
    .await;
    let mut b = spawn_worker(
        &h.url,
        step,
        dir.path(),
        "worker-b",
        &[FAST, &["--max-tasks", "1"]].concat(),
    );
    let status = b.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}; log:\n{}", b.log_text());
    let t = get(&h.store, step, "victim").await;
    assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 2));
    assert_eq!(t.result.unwrap().worker_id, "worker-b");
    assert_eq!(std::fs::read_to_string(&runs).unwrap(), "worker-b\n");
    kill_group(orphan);
}

/// A worker paused (SIGSTOP) past its leases: another worker re-claims and completes its
/// tasks; resumed, the stale worker's completion is rejected and it kills the task it is still
/// running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_worker_loses_its_leases() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "sigstop";
    let d = dir.path().display();
    // First attempts: `long` runs for 30 s, `short` for 2 s (it ends while its worker is
    // paused). Later attempts are quick.
    let long = format!(
        "echo $$ > {d}/long.$ANAMO_ATTEMPT.pid; if [ $ANAMO_ATTEMPT = 1 ]; then sleep 30; fi; \
         echo $ANAMO_WORKER_ID >> {d}/long.runs"
    );
    let short = format!(
        "if [ $ANAMO_ATTEMPT = 1 ]; then sleep 2; fi; echo $ANAMO_WORKER_ID >> {d}/short.runs"
    );
    import(
        &h.store,
        &[
            TaskSpec::new(step, "long", long),
            TaskSpec::new(step, "short", short),
        ],
    )
    .await;
    let mut a = spawn_worker(
        &h.url,
        step,
        dir.path(),
        "stale",
        &[FAST, &["--slots", "2"]].concat(),
    );
    wait_running(&h.store, step, "long", Duration::from_secs(20)).await;
    wait_running(&h.store, step, "short", Duration::from_secs(20)).await;
    let long1 = dir.path().join("long.1.pid");
    wait_until("pid file", Duration::from_secs(5), || async {
        read_pid(&long1).is_some()
    })
    .await;
    signal(a.pid(), Signal::SIGSTOP);

    wait_until("both leases expire", Duration::from_secs(10), || async {
        h.store
            .requeue_expired(step, now(), anamo::store::Fence::Unfenced)
            .await
            .unwrap();
        h.store.counts(step).await.unwrap().pending == 2
    })
    .await;
    let mut b = spawn_worker(
        &h.url,
        step,
        dir.path(),
        "fresh",
        &[FAST, &["--slots", "2", "--max-tasks", "2"]].concat(),
    );
    let status = b.wait_exit(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}; log:\n{}", b.log_text());
    // `short`'s first attempt has ended while its worker was paused.
    wait_until(
        "stale short attempt ends",
        Duration::from_secs(5),
        || async {
            std::fs::read_to_string(dir.path().join("short.runs"))
                .map(|t| t.lines().count() == 2)
                .unwrap_or(false)
        },
    )
    .await;
    let long_pid = read_pid(&long1).unwrap();
    assert!(alive(long_pid), "the paused worker's task runs on");

    signal(a.pid(), Signal::SIGCONT);
    wait_until(
        "the stale worker kills its task",
        Duration::from_secs(5),
        || async { !alive(long_pid) },
    )
    .await;
    wait_until(
        "the stale worker reports both losses",
        Duration::from_secs(5),
        || async {
            let ev = log_events(&a);
            find_event(&ev, "lease lost", "long").is_some()
                && find_event(&ev, "lease lost", "short").is_some()
        },
    )
    .await;
    let events = log_events(&a);
    // `short` had ended: its completion was sent and rejected by the store.
    let short_lost = find_event(&events, "lease lost", "short").unwrap();
    assert_eq!(short_lost["cause"], "taken over", "{}", a.log_text());
    assert!(find_event(&events, "task finished", "short").is_none());

    for id in ["long", "short"] {
        let t = get(&h.store, step, id).await;
        assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 2), "{id}");
        assert_eq!(t.result.unwrap().worker_id, "fresh", "{id}");
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("long.runs")).unwrap(),
        "fresh\n"
    );

    signal(a.pid(), Signal::SIGTERM);
    let status = a.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let stale = h
        .store
        .list_workers(Some(step))
        .await
        .unwrap()
        .into_iter()
        .find(|w| w.worker_id == "stale")
        .unwrap();
    assert_eq!(stale.state, WorkerState::Gone);
}

/// Claims on one SQLite file from several OS processes, each `anamo worker` with its own
/// connection (the conformance suite's `claim_is_exclusive_under_concurrency` shares one
/// in-process store): every task is claimed once, runs once and succeeds on its first
/// attempt, and more than one process did the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_claims_are_exclusive_across_processes() {
    const TASKS: usize = 300;
    const PROCESSES: usize = 4;
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "procs";
    let runs = dir.path().join("runs.txt");
    let specs: Vec<TaskSpec> = (0..TASKS)
        .map(|i| {
            TaskSpec::new(
                step,
                format!("t{i:04}"),
                format!("echo $ANAMO_TASK_ID >> {}", runs.display()),
            )
        })
        .collect();
    import(&h.store, &specs).await;
    let args = [
        "--slots",
        "4",
        "--lease-ttl",
        "60s",
        "--poll-interval",
        "50ms",
        "--idle-exit",
        "2s",
    ];
    let mut workers: Vec<WorkerProcess> = (0..PROCESSES)
        .map(|i| spawn_worker(&h.url, step, dir.path(), &format!("proc{i}"), &args))
        .collect();
    for w in &mut workers {
        // A hang guard: the run takes seconds.
        let status = w.wait_exit(Duration::from_secs(300)).await;
        assert!(status.success(), "{status}; log:\n{}", w.log_text());
    }
    let text = std::fs::read_to_string(&runs).unwrap();
    let ran: Vec<&str> = text.lines().collect();
    let once: std::collections::HashSet<&str> = ran.iter().copied().collect();
    assert_eq!(
        (ran.len(), once.len()),
        (TASKS, TASKS),
        "every task ran exactly once"
    );
    let tasks = h
        .store
        .list(&anamo::model::TaskFilter {
            step: Some(step.into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(tasks.len(), TASKS);
    let mut by_worker = std::collections::BTreeMap::<String, usize>::new();
    for t in &tasks {
        assert_eq!(
            (t.state, t.attempts),
            (TaskState::Succeeded, 1),
            "claimed once: {t:?}"
        );
        let worker = t.result.as_ref().map(|r| r.worker_id.clone());
        *by_worker.entry(worker.unwrap_or_default()).or_default() += 1;
    }
    assert!(
        by_worker.len() >= 2,
        "the processes shared the work (else nothing ran concurrently): {by_worker:?}"
    );
}

/// A worker writes the progress counter deltas it keeps (DynamoDB: a busy worker writes them
/// together, about every 2 s) as soon as it is idle: an idle instance is what a scale-down
/// terminates, and a worker killed with deltas unwritten leaves the step's counts wrong
/// (pending too high, which holds the fleet up) until the next recount. The kill comes a
/// second after the last task succeeded, before the deltas' own flush interval, with the
/// heartbeat that would also write them 30 s away. (SQLite counts its rows: exact anyway.)
async fn an_idle_worker_killed_outright_leaves_the_counts_right(h: Harness) {
    let dir = tempfile::tempdir().unwrap();
    let step = "idlekill";
    let ids: Vec<String> = (0..3).map(|i| format!("t{i}")).collect();
    let tasks: Vec<TaskSpec> = ids
        .iter()
        .map(|id| TaskSpec::new(step, id, "true"))
        .collect();
    import(&h.store, &tasks).await;
    assert_eq!(h.store.counts(step).await.unwrap().pending, 3);
    let args = [
        "--slots",
        "2",
        "--lease-ttl",
        "60s",
        "--heartbeat",
        "30s",
        "--poll-interval",
        "100ms",
    ];
    let mut w = spawn_worker(&h.url, step, dir.path(), "idle", &args);
    wait_until("every task succeeded", Duration::from_secs(20), || async {
        for id in &ids {
            if get(&h.store, step, id).await.state != TaskState::Succeeded {
                return false;
            }
        }
        true
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(w.pid(), Signal::SIGKILL);
    w.wait_exit(Duration::from_secs(5)).await;
    let c = h.store.counts(step).await.unwrap();
    assert_eq!((c.pending, c.running, c.succeeded), (0, 0, 3), "{c:?}");
}
