//! Packing the tail for real: the controller (SQLite store, fake provider) asks the emptiest
//! busy worker to drain through its drain mark in the store; the in-process worker reads the
//! mark at its heartbeat, claims nothing more, exits once its task is done, and the controller
//! then terminates its instance. The other worker goes on.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod common;

use common::worker::{fast_args, get, join, spawn_worker_task, wait_until};

use anamo::clock::{ManualClock, SharedClock};
use anamo::controller::{Controller, ControllerConfig, PassReport};
use anamo::model::{StopReason, TaskSpec, TaskState};
use anamo::planner::{Action, TerminateCause};
use anamo::provider::fake::FakeProvider;
use anamo::store::sqlite::SqliteStore;
use anamo::store::SharedStore;

const FLEET: &str = "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: align\nspec:\n  \
    step: align\n  provider:\n    ec2:\n      launchTemplate:\n        name: lt-align\n  \
    minInstances: 0\n  maxInstances: 4\n  slotsPerInstance: 4\n  bootTimeout: 5m\n";

const HOUR: Duration = Duration::from_secs(3600);
/// Hang guard for every wait.
const GUARD: Duration = Duration::from_secs(60);

fn controller(store: SharedStore, clock: SharedClock, fake: Arc<FakeProvider>) -> Controller {
    let cfg = ControllerConfig::new("test-cluster");
    common::controller_on(cfg, FLEET, store, clock, fake)
}

/// A task that runs until the file `go-{id}` exists in `dir`.
fn gated(dir: &Path, id: &str) -> TaskSpec {
    let go = dir.join(format!("go-{id}"));
    let cmd = format!("while [ ! -f {} ]; do sleep 0.05; done", go.display());
    TaskSpec::new("align", id, cmd)
}

async fn run_on(store: &SharedStore, dir: &Path, ids: &[&str], owner: &str) {
    let specs: Vec<TaskSpec> = ids.iter().map(|id| gated(dir, id)).collect();
    store.import(&specs, common::worker::now()).await.unwrap();
    for id in ids {
        wait_until(&format!("{id} running on {owner}"), GUARD, || async {
            let t = get(store, "align", id).await;
            t.state == TaskState::Running && t.lease.as_ref().is_some_and(|l| l.owner == owner)
        })
        .await;
    }
}

fn actions(r: &PassReport) -> Vec<Action> {
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    r.plan.as_ref().expect("a plan").fleets[0].actions.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_emptiest_worker_drains_exits_and_its_instance_goes() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(&dir.path().join("t.db")).unwrap());
    let start = common::worker::now();
    // The controller's first pass is an hour back, before any task: the tasks that arrive
    // before its second pass are an hour old at the third (few expected within a boot).
    let clock = ManualClock::new(start - HOUR.as_millis() as i64);
    let fake = Arc::new(FakeProvider::new("align", clock.clone()));
    fake.add_instance("i-1", None, start - 90_000);
    fake.add_instance("i-2", None, start - 90_000);
    let mut c = controller(store.clone(), clock.clone(), fake.clone());
    actions(&c.reconcile_once().await);

    let worker = |n: &str, slots: u32| {
        let mut a = fast_args("align", dir.path());
        a.slots = slots;
        a.worker_id = Some(format!("w-{n}"));
        a.instance_id = Some(format!("i-{n}"));
        a.log_dir = Some(dir.path().join(format!("logs-{n}")));
        spawn_worker_task(a, store.clone())
    };
    // i-1's one slot runs a task, then i-2 three of its four: i-1 is the emptiest busy
    // instance, and i-2's free slot is enough for the 0.1 task expected within a boot (four
    // arrivals an hour ago; the planner trusts a rate from four on).
    let (_c1, w1) = worker("1", 1);
    run_on(&store, dir.path(), &["d"], "w-1").await;
    let (c2, w2) = worker("2", 4);
    run_on(&store, dir.path(), &["a", "b", "c"], "w-2").await;
    wait_until(
        "both registrations show their busy slots",
        GUARD,
        || async {
            let busy: Vec<u32> = store
                .list_workers(Some("align"))
                .await
                .unwrap()
                .iter()
                .map(|w| w.busy_slots)
                .collect();
            busy == [1, 3]
        },
    )
    .await;
    clock.advance(Duration::from_secs(10));
    actions(&c.reconcile_once().await);

    clock.set(common::worker::now());
    let third = actions(&c.reconcile_once().await);
    let drained: Vec<&Action> = third
        .iter()
        .filter(|a| matches!(a, Action::DrainWorkers { drain: true, .. }))
        .collect();
    assert_eq!(drained.len(), 1, "{third:?}");
    let Action::DrainWorkers {
        workers, reason, ..
    } = drained[0]
    else {
        unreachable!()
    };
    assert_eq!(workers, &["w-1"], "{reason}");
    assert!(
        reason.contains("draining the emptiest busy instance"),
        "{reason}"
    );
    assert!(store.worker_drain_requested("w-1").await.unwrap());
    assert!(!store.worker_drain_requested("w-2").await.unwrap());

    // Its task done, the drained worker exits (reason `drain`) instead of waiting for work.
    std::fs::write(dir.path().join("go-d"), "").unwrap();
    let exit = join(w1, GUARD).await;
    assert_eq!(exit.reason, StopReason::Drain);
    clock.set(common::worker::now());
    let fourth = actions(&c.reconcile_once().await);
    let gone: Vec<(&Vec<String>, TerminateCause)> = fourth
        .iter()
        .filter_map(|a| match a {
            Action::Terminate { ids, cause, .. } => Some((ids, *cause)),
            _ => None,
        })
        .collect();
    assert_eq!(
        gone,
        [(&vec!["i-1".to_string()], TerminateCause::WorkerExited)],
        "{fourth:?}"
    );
    assert_eq!(get(&store, "align", "d").await.state, TaskState::Succeeded);

    // The other worker was never asked and still runs its tasks.
    assert!(!w2.is_finished());
    for id in ["a", "b", "c"] {
        std::fs::write(dir.path().join(format!("go-{id}")), "").unwrap();
    }
    c2.drain();
    join(w2, GUARD).await;
}
