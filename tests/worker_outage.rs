//! Store outages as the worker sees them (in-process, `anamo::worker::run_with`): an outage
//! shorter than the lease loses no result (the refused completion is written on a retry), on
//! SQLite behind a switchable wrapper and on a private DynamoDB Local that is killed and
//! restarted; cut off for longer than the lease, a worker kills its task.
//!
//! Run through `scripts/test-services run -- cargo nextest run --test worker_outage`; without
//! DynamoDB Local the DynamoDB test fails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anamo::clock::{Clock, SystemClock};
use anamo::model::{TaskSpec, TaskState};
use anamo::store::{SharedStore, StoreError, TaskStore};
use anamo::worker::{WorkerControl, WorkerExit};
use common::worker::*;
use common::Harness;

/// A store outage (shorter than the lease) loses no result: claims back off, heartbeats and
/// the completion are retried until the store is back. The outage lasts until a completion
/// was refused, and the run then checks that it was written on a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_outage_loses_no_result() {
    let h = Harness::sqlite().await;
    let faulty = FaultyStore::new(h.store.clone());
    let run = OutageRun::start(faulty.clone(), &h.store).await;
    faulty.set_down(true);
    let err = faulty.counts("x").await.expect_err("the store is down");
    assert!(err.is_retryable(), "{err}");
    run.wait_for_a_refused_completion(&faulty).await;
    faulty.set_down(false);
    run.finish(&h.store, &faulty).await;
}

/// DynamoDB outage: a private DynamoDB Local (on disk) is killed mid-run and started again on
/// the same port with the same data, once a completion has failed against it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamo_outage_loses_no_result() {
    let Some(mut ddb) = PrivateDynamo::start().await else {
        return;
    };
    let client = common::dynamo_client(&ddb.endpoint).await;
    let store = anamo::store::dynamo::DynamoStore::new(client, "anamo-outage");
    let mut ready = false;
    for _ in 0..50 {
        if store.create_schema().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(ready, "private DynamoDB Local did not come up");
    let store: SharedStore = Arc::new(store);
    // Never set down: it only counts the real store's answers per operation.
    let counting = FaultyStore::new(store.clone());
    let run = OutageRun::start(counting.clone(), &store).await;
    ddb.stop();
    let err = store.counts("x").await.expect_err("DynamoDB Local is down");
    assert!(err.is_retryable(), "{err}");
    run.wait_for_a_refused_completion(&counting).await;
    ddb.resume().await;
    run.finish(&store, &counting).await;
}

/// Six 1 s tasks on two slots; the test takes the store away while two of them run.
struct OutageRun {
    _dir: tempfile::TempDir,
    runs: std::path::PathBuf,
    control: WorkerControl,
    handle: tokio::task::JoinHandle<anamo::worker::Result<WorkerExit>>,
}

const OUTAGE_STEP: &str = "outage";

impl OutageRun {
    async fn start(store: SharedStore, direct: &SharedStore) -> OutageRun {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().join("runs.txt");
        let specs: Vec<TaskSpec> = (0..6)
            .map(|i| {
                TaskSpec::new(
                    OUTAGE_STEP,
                    format!("t{i}"),
                    format!("sleep 1; echo $ANAMO_TASK_ID >> {}", runs.display()),
                )
            })
            .collect();
        import(direct, &specs).await;
        let mut args = fast_args(OUTAGE_STEP, dir.path());
        args.slots = 2;
        // Longer than the outage, DynamoDB Local's restart included.
        args.lease_ttl = Duration::from_secs(20);
        args.heartbeat = Some(Duration::from_millis(500));
        let (control, handle) = spawn_worker_task(args, store);
        wait_until("two tasks running", Duration::from_secs(20), || async {
            direct.counts(OUTAGE_STEP).await.unwrap().running == 2
        })
        .await;
        OutageRun {
            _dir: dir,
            runs,
            control,
            handle,
        }
    }

    /// Waits (while the store is away) until a task finished and its completion failed.
    async fn wait_for_a_refused_completion(&self, store: &FaultyStore) {
        wait_until("a completion refused", Duration::from_secs(60), || async {
            store.errors_of("complete") > 0
        })
        .await;
    }

    /// Waits until every result is in, then checks each was written once, the refused
    /// completions included (written on a retry).
    async fn finish(self, direct: &SharedStore, store: &FaultyStore) {
        wait_until("all tasks recorded", Duration::from_secs(120), || async {
            direct
                .counts(OUTAGE_STEP)
                .await
                .map(|c| c.succeeded == 6)
                .unwrap_or(false)
        })
        .await;
        self.control.drain();
        let exit = join(self.handle, Duration::from_secs(15)).await;
        assert_eq!(
            exit.stats.results_lost + exit.stats.lease_lost,
            0,
            "{:?}",
            exit.stats
        );
        assert_eq!(exit.stats.succeeded, 6);
        assert!(store.errors_of("complete") > 0);
        assert_eq!(
            store.succeeded_of("complete"),
            6,
            "each result written once, the refused ones on a retry"
        );
        let text = std::fs::read_to_string(&self.runs).unwrap();
        assert_eq!(text.lines().count(), 6, "no task ran twice:\n{text}");
    }
}

/// Cut off from the store for longer than the lease, a worker kills its task: someone else may
/// have it by now.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cut_off_worker_kills_its_task() {
    let h = Harness::sqlite().await;
    let faulty = FaultyStore::new(h.store.clone());
    let dir = tempfile::tempdir().unwrap();
    let step = "cutoff";
    let pid = dir.path().join("pid");
    import(&h.store, &[long_pid_task(step, &pid)]).await;
    let mut args = fast_args(step, dir.path());
    args.lease_ttl = Duration::from_secs(2);
    args.heartbeat = Some(Duration::from_millis(500));
    let (control, handle) = spawn_worker_task(args, faulty.clone());
    wait_running(&h.store, step, "long", Duration::from_secs(10)).await;
    wait_until("pid file", Duration::from_secs(5), || async {
        read_pid(&pid).is_some()
    })
    .await;
    let p = read_pid(&pid).unwrap();
    faulty.set_down(true);
    // A hang guard (ten times the 2 s lease), not a timing.
    wait_until("task killed", Duration::from_secs(20), || async {
        !alive(p)
    })
    .await;
    let seen_dead_at = SystemClock.now();
    // The worker kills its task when the lease it last renewed runs out, not before: that
    // expiry is the one the store holds (no renewal reached it after the cut).
    let t = get(&h.store, step, "long").await;
    let expires_at = t.lease.expect("the task still has its lease").expires_at;
    assert!(
        seen_dead_at >= expires_at,
        "killed {} ms before the lease ran out",
        expires_at - seen_dead_at
    );
    // The kill and the count are two steps of the worker: wait for the count too.
    wait_until(
        "the lost lease counted",
        Duration::from_secs(20),
        || async { control.stats().lease_lost == 1 },
    )
    .await;
    faulty.set_down(false);
    control.drain();
    let exit = join(handle, Duration::from_secs(15)).await;
    assert_eq!(exit.stats.succeeded + exit.stats.failed, 0);
    // Nothing was written: the task stays running until the controller requeues it.
    let t = get(&h.store, step, "long").await;
    assert_eq!(t.state, TaskState::Running);
    let report = h
        .store
        .requeue_expired(step, now(), anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    assert_eq!(report.requeued, vec!["long".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_store_really_fails() {
    let h = Harness::sqlite().await;
    let f = FaultyStore::new(h.store.clone());
    f.set_down(true);
    assert!(matches!(
        f.counts("x").await,
        Err(StoreError::Unavailable { .. })
    ));
    f.set_down(false);
    f.counts("x").await.unwrap();
}
