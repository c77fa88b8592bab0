//! The worker run in-process (`anamo::worker::run_with`) against real stores: exactly-once
//! results under contention, exit-code handling, timeouts, nested tasks, drain, wall time and
//! idle exit. Store outages are in `tests/worker_outage.rs`, spot notices in
//! `tests/worker_spot.rs`.
//!
//! DynamoDB variants need `scripts/test-services run -- cargo nextest run --test worker_run`;
//! without DynamoDB Local they fail.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anamo::model::{TaskSpec, TaskState, WorkerState};
use anamo::worker::StopReason;
use common::worker::*;
use common::Harness;

on_both_stores!(every_task_runs_exactly_once, exit_codes_decide_the_outcome);

/// 8 workers × 4 slots on 2,000 tasks: every task runs once and succeeds once.
async fn every_task_runs_exactly_once(h: Harness) {
    const TASKS: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.txt");
    let step = "many";
    let specs: Vec<TaskSpec> = (0..TASKS)
        .map(|i| {
            TaskSpec::new(
                step,
                format!("t{i:05}"),
                format!("echo $ANAMO_TASK_ID >> {}", runs.display()),
            )
        })
        .collect();
    import(&h.store, &specs).await;
    let started = Instant::now();
    let before = h.requests.total();
    let mut workers = Vec::new();
    for w in 0..8 {
        let mut args = fast_args(step, dir.path());
        args.slots = 4;
        // No heartbeats (their requests would blur the per-task figure), so the lease must
        // outlast any wait on a loaded machine: an expired lease would be claimed again.
        args.lease_ttl = Duration::from_secs(600);
        args.heartbeat = None;
        args.idle_exit = Some(Duration::from_millis(1500));
        args.worker_id = Some(format!("w{w}"));
        workers.push(spawn_worker_task(args, h.store.clone()).1);
    }
    let mut claimed = 0;
    for w in workers {
        let exit = join(w, Duration::from_secs(150)).await;
        assert_eq!(exit.reason, StopReason::Idle);
        assert_eq!(exit.stats.lease_lost + exit.stats.results_lost, 0);
        claimed += exit.stats.claimed;
    }
    let elapsed = started.elapsed();
    let requests = h.requests.total() - before;
    eprintln!(
        "{}: {TASKS} tasks by 8x4 slots in {elapsed:?}, {requests} store requests ({:.2}/task)",
        h.store.describe(),
        requests as f64 / TASKS as f64
    );
    assert_eq!(claimed as usize, TASKS);
    let text = std::fs::read_to_string(&runs).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), TASKS, "every task ran exactly once");
    let unique: HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(unique.len(), TASKS);
    let counts = h.store.counts(step).await.unwrap();
    assert_eq!(counts.succeeded as usize, TASKS, "{counts:?}");
    let workers = h.store.list_workers(Some(step)).await.unwrap();
    assert_eq!(workers.len(), 8);
    assert!(
        workers.iter().all(|w| w.state == WorkerState::Gone),
        "{workers:?}"
    );
}

/// Exit codes, retries, fail-now codes, timeouts, signals, environment and arguments.
async fn exit_codes_decide_the_outcome(h: Harness) {
    let dir = tempfile::tempdir().unwrap();
    let step = "codes";
    let mut specs = Vec::new();
    let mut ok = TaskSpec::new(
        step,
        "ok",
        r#"echo "id=$ANAMO_TASK_ID step=$ANAMO_STEP attempt=$ANAMO_ATTEMPT worker=$ANAMO_WORKER_ID foo=$FOO args=$1,$2"; echo to-stderr >&2"#,
    );
    ok.env.insert("FOO".into(), "bar".into());
    ok.args = vec!["a b".into(), "c".into()];
    specs.push(ok);
    let mut retry = TaskSpec::new(
        step,
        "retry-then-fail",
        "echo attempt $ANAMO_ATTEMPT; exit 1",
    );
    retry.max_attempts = 2;
    specs.push(retry);
    let mut fail_now = TaskSpec::new(step, "fail-now", "exit 3");
    fail_now.fail_exit_codes = vec![3];
    specs.push(fail_now);
    let mut only_listed = TaskSpec::new(step, "not-retryable", "exit 5");
    only_listed.retry_exit_codes = vec![4];
    specs.push(only_listed);
    let mut retryable = TaskSpec::new(step, "retryable", "exit $((3 + ANAMO_ATTEMPT))");
    retryable.retry_exit_codes = vec![4];
    retryable.max_attempts = 2;
    specs.push(retryable);
    let mut timeout = TaskSpec::new(step, "timeout", "echo started; sleep 30");
    timeout.timeout_secs = Some(1);
    timeout.max_attempts = 1;
    specs.push(timeout);
    let mut killed = TaskSpec::new(step, "signal", "kill -9 $$");
    killed.max_attempts = 1;
    specs.push(killed);
    let mut second_try = TaskSpec::new(step, "second-try", "test $ANAMO_ATTEMPT -ge 2");
    second_try.max_attempts = 3;
    specs.push(second_try);
    import(&h.store, &specs).await;

    let mut args = fast_args(step, dir.path());
    args.slots = 3;
    args.idle_exit = Some(Duration::from_millis(800));
    args.worker_id = Some("codes-worker".into());
    args.instance_id = Some("i-test".into());
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    let exit = join(handle, Duration::from_secs(60)).await;
    assert_eq!(exit.reason, StopReason::Idle);

    let t = get(&h.store, step, "ok").await;
    assert_eq!(t.state, TaskState::Succeeded);
    let r = t.result.unwrap();
    assert_eq!(r.exit_code, Some(0));
    assert_eq!(r.worker_id, "codes-worker");
    assert_eq!(r.instance_id.as_deref(), Some("i-test"));
    assert!(
        r.log_tail
            .contains("id=ok step=codes attempt=1 worker=codes-worker foo=bar args=a b,c"),
        "{}",
        r.log_tail
    );
    assert!(r.log_tail.contains("to-stderr"), "{}", r.log_tail);
    let log = dir.path().join("logs").join(step).join("ok.1.log");
    assert!(std::fs::read_to_string(&log).unwrap().contains("foo=bar"));

    let t = get(&h.store, step, "retry-then-fail").await;
    assert_eq!((t.state, t.attempts), (TaskState::Failed, 2));
    let r = t.result.unwrap();
    assert_eq!(r.exit_code, Some(1));
    assert_eq!(r.error.as_deref(), Some("exit 1"));
    assert!(r.log_tail.contains("attempt 2"), "{}", r.log_tail);

    let t = get(&h.store, step, "fail-now").await;
    assert_eq!((t.state, t.attempts), (TaskState::Failed, 1));
    assert_eq!(t.result.unwrap().exit_code, Some(3));

    let t = get(&h.store, step, "not-retryable").await;
    assert_eq!((t.state, t.attempts), (TaskState::Failed, 1));

    let t = get(&h.store, step, "retryable").await;
    assert_eq!(
        (t.state, t.attempts),
        (TaskState::Failed, 2),
        "exit 4 retried, then exit 5"
    );
    assert_eq!(t.result.unwrap().exit_code, Some(5));

    let t = get(&h.store, step, "timeout").await;
    assert_eq!((t.state, t.attempts), (TaskState::Failed, 1));
    let r = t.result.unwrap();
    assert_eq!(r.error.as_deref(), Some("timeout"));
    assert!(
        r.duration_ms >= 1000 && r.duration_ms < 10_000,
        "{}",
        r.duration_ms
    );
    assert!(r.log_tail.contains("started"));

    let t = get(&h.store, step, "signal").await;
    assert_eq!(t.state, TaskState::Failed);
    let r = t.result.unwrap();
    assert_eq!((r.exit_code, r.error.as_deref()), (None, Some("signal 9")));

    let t = get(&h.store, step, "second-try").await;
    assert_eq!((t.state, t.attempts), (TaskState::Succeeded, 2));
    // A task that prints nothing leaves no log file (it is created with the first byte).
    assert_eq!(t.result.unwrap().log_tail, "");
    for attempt in [1, 2] {
        let log = dir.path().join("logs").join(step);
        let log = log.join(format!("second-try.{attempt}.log"));
        assert!(!log.exists(), "{} exists", log.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nested_tasks_run_with_bounded_parallelism() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "nested";
    let mut par = TaskSpec::new(step, "parallel", "four sleeps");
    par.subtasks = (0..4)
        .map(|i| format!("echo sub{i} start; sleep 1; echo sub{i} $ANAMO_SUBTASK_INDEX done"))
        .collect();
    par.subtask_parallelism = Some(2);
    let mut failing = TaskSpec::new(step, "one-fails", "label");
    failing.subtasks = vec!["true".into(), "echo oops >&2; exit 7".into(), "true".into()];
    failing.subtask_parallelism = Some(3);
    failing.max_attempts = 1;
    import(&h.store, &[par, failing]).await;

    let mut args = fast_args(step, dir.path());
    args.slots = 2;
    args.idle_exit = Some(Duration::from_millis(800));
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    join(handle, Duration::from_secs(60)).await;

    let t = get(&h.store, step, "parallel").await;
    assert_eq!(t.state, TaskState::Succeeded);
    let r = t.result.unwrap();
    assert_eq!(r.subtasks.len(), 4);
    assert!(r.subtasks.iter().all(|s| s.exit_code == Some(0)));
    // Four 1 s commands two at a time: about 2 s, not 1 s (unbounded) or 4 s (serial).
    assert!(
        (1900..3900).contains(&r.duration_ms),
        "took {} ms",
        r.duration_ms
    );
    for i in 0..4 {
        assert!(
            r.log_tail.contains(&format!("[{i}] sub{i} {i} done")),
            "{}",
            r.log_tail
        );
    }

    let t = get(&h.store, step, "one-fails").await;
    assert_eq!(t.state, TaskState::Failed);
    let r = t.result.unwrap();
    assert_eq!(r.exit_code, Some(7));
    assert_eq!(r.error.as_deref(), Some("exit 7"));
    let codes: Vec<Option<i32>> = r.subtasks.iter().map(|s| s.exit_code).collect();
    assert_eq!(codes, vec![Some(0), Some(7), Some(0)]);
    assert!(r.log_tail.contains("[1] oops"), "{}", r.log_tail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_exit_marks_gone_and_runs_the_command() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("idle-exit-ran");
    let step = "idle";
    import(&h.store, &[TaskSpec::new(step, "a", "sleep 0.5")]).await;
    let mut args = fast_args(step, dir.path());
    args.idle_exit = Some(Duration::from_secs(1));
    args.on_idle_exit = Some(format!("echo $ANAMO_WORKER_ID > {}", marker.display()));
    args.worker_id = Some("idler".into());
    let started = Instant::now();
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    let exit = join(handle, Duration::from_secs(30)).await;
    let took = started.elapsed();
    assert_eq!(exit.reason, StopReason::Idle);
    assert_eq!(exit.stats.succeeded, 1);
    // The task's 0.5 s, then 1 s idle (measured from the end of the task): a lower bound,
    // which load cannot break; `join`'s deadline only catches a hang.
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "idler");
    let workers = h.store.list_workers(Some(step)).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].state, WorkerState::Gone);
    assert_eq!(workers[0].busy_slots, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_tasks_exits_after_n_tasks() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "max";
    let specs: Vec<TaskSpec> = (0..5)
        .map(|i| TaskSpec::new(step, format!("t{i}"), "true"))
        .collect();
    import(&h.store, &specs).await;
    let mut args = fast_args(step, dir.path());
    args.slots = 2;
    args.max_tasks = Some(3);
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    let exit = join(handle, Duration::from_secs(30)).await;
    assert_eq!(exit.reason, StopReason::MaxTasks);
    assert_eq!(exit.stats.succeeded, 3);
    let counts = h.store.counts(step).await.unwrap();
    assert_eq!((counts.succeeded, counts.pending), (3, 2));
}

/// Drain (what SIGTERM does): tasks that finish within the grace are recorded, the rest are
/// handed back without counting the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_hands_back_unfinished_tasks() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "drain";
    let pid = dir.path().join("long.pid");
    // `short` ends when the test says so (once the drain began), not after a guessed time; the
    // grace leaves it ample room, `long` (600 s) outlasts it and `join`'s hang guard.
    let release = dir.path().join("release");
    let short = format!(
        "i=0; while [ ! -e {} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done",
        release.display()
    );
    import(
        &h.store,
        &[
            prio(
                TaskSpec::new(
                    step,
                    "long",
                    format!("echo $$ > {}; sleep 600", pid.display()),
                ),
                3,
            ),
            prio(TaskSpec::new(step, "short", short), 2),
            prio(TaskSpec::new(step, "never", "true"), 1),
        ],
    )
    .await;
    let mut args = fast_args(step, dir.path());
    args.slots = 2;
    args.drain_grace = Duration::from_secs(10);
    let (control, handle) = spawn_worker_task(args, h.store.clone());
    wait_running(&h.store, step, "long", Duration::from_secs(10)).await;
    wait_running(&h.store, step, "short", Duration::from_secs(10)).await;
    control.drain();
    std::fs::write(&release, "").unwrap();
    let exit = join(handle, Duration::from_secs(120)).await;
    assert_eq!(exit.reason, StopReason::Signal);
    let all = h.store.list(&Default::default()).await.unwrap();
    let states: Vec<_> = all.iter().map(|t| (t.id(), t.state, t.attempts)).collect();
    assert_eq!(
        (exit.stats.succeeded, exit.stats.handed_back),
        (1, 1),
        "{states:?}"
    );

    let long = get(&h.store, step, "long").await;
    assert_eq!((long.state, long.attempts), (TaskState::Pending, 0));
    assert!(long.lease.is_none());
    assert!(
        !alive(read_pid(&pid).unwrap()),
        "the handed-back task was killed"
    );
    let short = get(&h.store, step, "short").await;
    assert_eq!(short.state, TaskState::Succeeded);
    let never = get(&h.store, step, "never").await;
    assert_eq!((never.state, never.attempts), (TaskState::Pending, 0));
    let w = &h.store.list_workers(Some(step)).await.unwrap()[0];
    assert_eq!(w.state, WorkerState::Gone);
}

/// `--wall-time`: no claims after it; a task still running a drain grace later is killed and
/// recorded as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wall_time_stops_claiming_then_times_out() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "wall";
    // Longer than `join`'s deadline: the worker only exits in time if it kills the task.
    let mut long = TaskSpec::new(step, "long", "sleep 600");
    long.max_attempts = 2;
    long.priority = 1;
    import(&h.store, &[long, TaskSpec::new(step, "later", "true")]).await;
    let mut args = fast_args(step, dir.path());
    args.wall_time = Some(Duration::from_millis(500));
    args.drain_grace = Duration::from_millis(500);
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    let exit = join(handle, Duration::from_secs(60)).await;
    assert_eq!(exit.reason, StopReason::WallTime);
    let t = get(&h.store, step, "long").await;
    // Recorded as a failed attempt (retried: attempts remain).
    assert_eq!((t.state, t.attempts), (TaskState::Pending, 1));
    assert_eq!(t.result.unwrap().error.as_deref(), Some("timeout"));
    let later = get(&h.store, step, "later").await;
    assert_eq!((later.state, later.attempts), (TaskState::Pending, 0));
}

/// A task cancelled by the user while running loses its lease: the worker kills it and writes
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_task_is_killed() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "cancel";
    let pid = dir.path().join("pid");
    import(&h.store, &[long_pid_task(step, &pid)]).await;
    let mut args = fast_args(step, dir.path());
    args.lease_ttl = Duration::from_secs(2);
    args.heartbeat = Some(Duration::from_millis(300));
    let (control, handle) = spawn_worker_task(args, h.store.clone());
    wait_running(&h.store, step, "long", Duration::from_secs(10)).await;
    wait_until("pid file", Duration::from_secs(5), || async {
        read_pid(&pid).is_some()
    })
    .await;
    h.store.cancel(step, "long", now()).await.unwrap();
    let p = read_pid(&pid).unwrap();
    wait_until("task killed", Duration::from_secs(5), || async {
        !alive(p)
    })
    .await;
    wait_until("lease lost counted", Duration::from_secs(5), || async {
        control.stats().lease_lost == 1
    })
    .await;
    control.drain();
    join(handle, Duration::from_secs(10)).await;
    let t = get(&h.store, step, "long").await;
    assert_eq!(t.state, TaskState::Cancelled);
    assert!(t.result.is_none());
}

on_both_stores!(bench_reports_requests_per_task);

/// The dispatch benchmark: 8 workers x 4 slots on trivial tasks. Printed figures go into the
/// report; the bounds only catch gross regressions. A task costs its completion plus its share
/// of a batch claim (on DynamoDB one query for the batch and one conditional write per task),
/// plus registrations and idle polls.
async fn bench_reports_requests_per_task(h: Harness) {
    let report = anamo::worker::bench_dispatch(
        h.store.clone(),
        || h.store.clone(),
        &h.requests,
        &anamo::worker::DispatchLoad::trivial(8, 4, 1000),
    )
    .await
    .unwrap();
    eprintln!("{}", serde_json::to_string(&report).unwrap());
    assert_eq!(report.succeeded, 1000);
    assert!(report.requests_per_task > 1.0, "{report:?}");
    assert!(report.requests_per_task < 4.0, "{report:?}");
}

/// `--vcpus-per-task` overrides `--slots`: the worker registers as many slots as this
/// machine's processors fit (1 vCPU per task: one per processor).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn derived_slots_reach_the_registration() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let step = "derived";
    import(&h.store, &[TaskSpec::new(step, "a", "true")]).await;
    let mut args = fast_args(step, dir.path());
    args.slots = 1;
    args.vcpus_per_task = Some(1);
    args.max_tasks = Some(1);
    let (_, handle) = spawn_worker_task(args, h.store.clone());
    let exit = join(handle, Duration::from_secs(30)).await;
    assert_eq!(exit.reason, StopReason::MaxTasks);
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    let workers = h.store.list_workers(Some(step)).await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].slots, cpus);
}
