//! The controller against AWS stand-ins: the task store on DynamoDB Local, EC2 and Auto
//! Scaling on moto (issue 6 acceptance). Controllers run in-process (driven pass by pass) on
//! providers whose SDK clients point at moto, or as `anamo controller` processes reaching the
//! services through the SDKs' per-service endpoint variables; real `anamo worker` processes
//! stand in for the instances' workers.
//!
//! Run through `scripts/test-services run -- cargo nextest run --test controller_aws`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anamo::clock::{self, ManualClock, SharedClock};
use anamo::controller::status::Role;
use anamo::controller::ControllerConfig;
use anamo::model::{TaskSpec, TaskState, WorkerInfo, WorkerState};
use anamo::planner::{ConditionStatus, ConditionType};
use anamo::provider::fault::Op;
use anamo::provider::{TAG_CONTROLLER, TAG_FLEET, TAG_LAUNCH_BATCH, TAG_STEP};
use common::controller_aws::{pass, tail, AwsWorld, FleetYaml};
use common::moto::{unique, Fault};
use common::worker::{spawn_worker, WorkerProcess};

fn system_clock() -> SharedClock {
    clock::system()
}

/// The launch intents the controller keeps in the store (`launch/<fleet>`).
async fn intents(w: &AwsWorld, fleet: &str) -> Vec<serde_json::Value> {
    let docs = w.store().list_status().await.expect("list status docs");
    docs.into_iter()
        .find(|d| d.name == format!("launch/{fleet}"))
        .and_then(|d| d.body.as_array().cloned())
        .unwrap_or_default()
}

/// The `anamo:launch-batch` tags of the instances.
async fn batches(w: &AwsWorld, ids: &[String]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for id in ids {
        let tags = w.moto.instance_tags(id).await;
        out.insert(tags.get(TAG_LAUNCH_BATCH).cloned().unwrap_or_default());
    }
    out
}

// ---- 1. a launch-template fleet follows the backlog -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_template_fleet_scales_with_the_backlog_and_back_down() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2_with_user_data(&w.template)
        .set("minInstances", "1")
        .set("scaleDownDelay", "2s")
        .set("bootTimeout", "2m")
        .yaml();
    // Eight short tasks and two long ones: while the long ones run, the other instances
    // go idle and are scaled down; the busy ones must stay.
    let mut tasks: Vec<TaskSpec> = (0..8)
        .map(|i| TaskSpec::new("align", format!("short{i}"), "sleep 1"))
        .collect();
    tasks.push(TaskSpec::new("align", "long0", "sleep 6"));
    tasks.push(TaskSpec::new("align", "long1", "sleep 6"));
    w.store()
        .import(&tasks, clock::system().now())
        .await
        .unwrap();

    let factory = w.factory();
    let mut c = w.controller(&yaml, system_clock(), &factory, |_| {});
    let plan = pass(&mut c).await;
    assert_eq!(
        plan.fleet("align").unwrap().launch_count(),
        3,
        "10 tasks at 2 per instance want 5, capped at maxInstances 3"
    );
    let ids = w.live_instances("align").await;
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert_eq!(w.run_instances_calls(), 1);
    assert_eq!(batches(&w, &ids).await.len(), 1, "one launch batch");
    for id in &ids {
        let tags = w.moto.instance_tags(id).await;
        assert_eq!(tags[TAG_FLEET], "align", "{tags:?}");
        assert_eq!(tags[TAG_STEP], "align");
        assert_eq!(tags[TAG_CONTROLLER], w.cluster);
        assert!(tags[TAG_LAUNCH_BATCH].starts_with("align-"), "{tags:?}");
        let ud = w.moto.user_data(id).await.expect("user data");
        for needle in [
            "exec /usr/local/bin/anamo worker",
            "--step 'align'",
            "--slots '2'",
            "--lease-ttl '5s'",
            "--heartbeat '1s'",
            &format!("ANAMO_STORE={}", w.harness.url),
            &format!("ANAMO_CLUSTER={}", w.cluster),
        ] {
            assert!(ud.contains(needle), "user data lacks {needle:?}:\n{ud}");
        }
    }

    // Real workers stand in for the instances' workers, one per moto instance.
    let mut workers: BTreeMap<String, WorkerProcess> = BTreeMap::new();
    for id in &ids {
        let name = format!("w-{id}");
        let args = [
            "--instance-id",
            id,
            "--slots",
            "2",
            "--lease-ttl",
            "5s",
            "--heartbeat",
            "1s",
            "--poll-interval",
            "200ms",
        ];
        workers.insert(
            id.clone(),
            spawn_worker(&w.harness.url, "align", w.dir.path(), &name, &args),
        );
    }

    let started = Instant::now();
    // A hang guard (the run takes about 10 s), not a timing.
    let deadline = started + Duration::from_secs(180);
    let mut terminated: Vec<(Duration, String)> = Vec::new();
    let mut terminated_while_another_was_busy = false;
    loop {
        let plan = pass(&mut c).await;
        let fp = plan.fleet("align").unwrap();
        assert_eq!(fp.launch_count(), 0, "no launch beyond the first: {fp:?}");
        let store_workers = w.store().list_workers(Some("align")).await.unwrap();
        let gone_now: Vec<String> = fp.terminated_ids().iter().map(|s| s.to_string()).collect();
        for id in &gone_now {
            for wk in store_workers
                .iter()
                .filter(|wk| wk.instance_id.as_deref() == Some(id.as_str()))
            {
                assert_eq!(wk.busy_slots, 0, "terminated a busy instance: {wk:?}");
                assert!(
                    plan.at - wk.last_busy_at >= 2000,
                    "terminated before scaleDownDelay: idle {} ms: {wk:?}",
                    plan.at - wk.last_busy_at
                );
            }
            if store_workers
                .iter()
                .any(|wk| wk.busy_slots > 0 && wk.instance_id.as_deref().is_some_and(|i| i != id))
            {
                terminated_while_another_was_busy = true;
            }
            terminated.push((started.elapsed(), id.clone()));
        }
        // What moto shows: a terminated instance's worker vanishes with it (kill -9), and
        // no worker that the store shows busy runs on a terminated instance.
        let states = w.instances("align").await;
        assert_eq!(
            states.len(),
            3,
            "never more than the first batch: {states:?}"
        );
        for (id, state) in &states {
            if state == "terminated" {
                assert!(
                    terminated.iter().any(|(_, t)| t == id),
                    "{id} terminated by someone else?"
                );
                if let Some(mut wp) = workers.remove(id) {
                    let _ = wp.child.kill();
                    let _ = wp.child.wait();
                }
            }
        }
        let counts = w.store().counts("align").await.unwrap();
        let live = states.values().filter(|s| *s == "running").count();
        if counts.succeeded == 10 && live == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backlog not drained / fleet not scaled down in time: {counts:?} {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!("terminations (since workers started): {terminated:?}");

    for t in w
        .store()
        .list(&anamo::model::TaskFilter::default())
        .await
        .unwrap()
    {
        assert_eq!(t.state, TaskState::Succeeded, "{t:?}");
        assert_eq!(
            t.attempts, 1,
            "a task ran twice: its instance was terminated while busy? {t:?}"
        );
    }
    assert_eq!(
        terminated.len(),
        2,
        "down to minInstances 1: {terminated:?}"
    );
    assert!(
        terminated_while_another_was_busy,
        "an idle instance was scaled down while another was still busy: {terminated:?}"
    );
    let survivor = w.live_instances("align").await;
    assert_eq!(survivor.len(), 1);
    let wp = workers
        .get_mut(&survivor[0])
        .expect("the kept instance's worker");
    assert!(
        wp.child.try_wait().unwrap().is_none(),
        "the kept instance's worker still runs"
    );
    // The status shows what a pass observed (before it acted): one more pass.
    let r = c.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert!(r
        .plan
        .unwrap()
        .fleet("align")
        .unwrap()
        .actions
        .iter()
        .all(|a| matches!(a, anamo::planner::Action::RequeueExpired { .. })));
    let st = c.status().read().unwrap().clone();
    assert_eq!(st.fleets[0].actual, 1, "{:?}", st.fleets[0]);
}

// ---- 2. a crash between RunInstances and writing down its outcome ---------------------------

#[tokio::test]
async fn a_controller_killed_right_after_run_instances_launches_nothing_more_on_restart() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template).yaml();
    w.import("align", 10, "true").await;

    let f1 = w.factory();
    let hanging = f1
        .provider_for(&yaml, "align")
        .inner()
        .hang_after_next_launch();
    let mut first = w.controller(&yaml, system_clock(), &f1, |_| {});
    // The pass hangs once RunInstances has returned; dropping it is the crash.
    tokio::select! {
        _ = first.reconcile_once() => panic!("the pass was meant to hang after the launch"),
        waited = tokio::time::timeout(Duration::from_secs(20), hanging.notified()) => {
            waited.expect("the launch was never made");
        }
    }
    drop(first);
    let ids = w.live_instances("align").await;
    assert_eq!(ids.len(), 3);
    assert_eq!(w.run_instances_calls(), 1);
    let batch = batches(&w, &ids).await.into_iter().next().unwrap();
    let written = intents(&w, "align").await;
    assert_eq!(written.len(), 1, "{written:?}");
    assert_eq!(
        written[0]["batch"],
        batch.as_str(),
        "the intent was written ahead"
    );
    assert_eq!(written[0]["confirmed"], false, "and never confirmed");

    let f2 = w.factory();
    let mut second = w.controller(&yaml, system_clock(), &f2, |_| {});
    for _ in 0..3 {
        let plan = pass(&mut second).await;
        assert_eq!(plan.fleet("align").unwrap().launch_count(), 0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let p2 = f2.provider_for(&yaml, "align");
    assert!(
        p2.launches().is_empty(),
        "the batch's instances are listed: nothing to re-issue"
    );
    w.assert_launched_once("align", 3).await;
}

#[tokio::test]
async fn a_launch_whose_response_was_lost_is_not_repeated_after_a_restart() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template).yaml();
    w.import("align", 10, "true").await;
    // moto launches, the answer is lost: the controller sees a server error.
    w.moto
        .faults
        .inject(Fault::new("RunInstances", "InternalError", 1).after_execution(500));

    let f1 = w.factory();
    let mut first = w.controller(&yaml, system_clock(), &f1, |_| {});
    let r = first.reconcile_once().await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].to_string().contains("launch failed"),
        "{:?}",
        r.errors
    );
    let ids = w.live_instances("align").await;
    assert_eq!(ids.len(), 3, "moto did launch");
    let batch = batches(&w, &ids).await.into_iter().next().unwrap();
    drop(first);

    // The restarted controller cannot list at first (throttled), so it re-issues the
    // unconfirmed intent: the provider finds the batch by its tag (moto ignores ClientToken).
    let f2 = w.factory();
    let p2 = f2.provider_for(&yaml, "align");
    p2.throttle_next(Op::List, 1);
    let mut second = w.controller(&yaml, system_clock(), &f2, |_| {});
    let r = second.reconcile_once().await;
    assert_eq!(r.errors.len(), 1, "only the listing failed: {:?}", r.errors);
    let launches = p2.launches();
    assert_eq!(launches.len(), 1, "{launches:?}");
    assert_eq!(launches[0].batch_token, batch, "the same batch, re-issued");
    assert_eq!(launches[0].count, 3);
    assert_eq!(
        w.run_instances_calls(),
        1,
        "found by tag, not launched again"
    );
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let plan = pass(&mut second).await;
        assert_eq!(plan.fleet("align").unwrap().launch_count(), 0);
    }
    assert_eq!(p2.launches().len(), 1);
    w.assert_launched_once("align", 3).await;
}

// ---- 3. two controllers for one cluster -----------------------------------------------------

#[tokio::test]
async fn only_one_of_two_controllers_launches_and_the_other_takes_over_when_it_dies() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template).yaml();
    w.import("align", 10, "true").await;
    let ttl = Duration::from_secs(3);
    let ha = |id: &'static str| {
        move |cfg: &mut ControllerConfig| {
            cfg.leader_election = true;
            cfg.leader_ttl = ttl;
            cfg.identity = id.to_string();
        }
    };
    let (fa, fb) = (w.factory(), w.factory());
    let mut a = w.controller(&yaml, system_clock(), &fa, ha("ctl-a"));
    let mut b = w.controller(&yaml, system_clock(), &fb, ha("ctl-b"));
    for _ in 0..4 {
        assert_eq!(a.reconcile_once().await.role, Role::Leader);
        assert_eq!(b.reconcile_once().await.role, Role::Follower);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(w.run_instances_calls(), 1, "one leader, one launch");
    assert_eq!(w.live_instances("align").await.len(), 3);
    let before = w.store().current_leader(&w.cluster).await.unwrap().unwrap();
    assert_eq!(before.owner, "ctl-a");

    // a is killed: it neither renews nor releases its lease.
    drop(a);
    let killed = Instant::now();
    let left = Duration::from_millis((before.expires_at - clock::system().now()).max(0) as u64);
    loop {
        if b.reconcile_once().await.role == Role::Leader {
            break;
        }
        // A hang guard (ten times the lease), not a timing: how fast a follower takes over
        // is a benchmark figure, not a test.
        assert!(killed.elapsed() < ttl * 10, "no takeover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    eprintln!(
        "in-process takeover after {takeover:?} (lease TTL {ttl:?}, {left:?} of it left at the kill)"
    );
    // Safety, which load cannot break: no takeover before the lease ran out.
    assert!(
        takeover + Duration::from_millis(50) >= left,
        "the lease was honoured until it expired: {takeover:?} < {left:?}"
    );
    let after = w.store().current_leader(&w.cluster).await.unwrap().unwrap();
    assert_eq!(after.owner, "ctl-b");
    assert!(after.fencing > before.fencing, "{before:?} -> {after:?}");
    for _ in 0..3 {
        let r = b.reconcile_once().await;
        assert_eq!(r.role, Role::Leader);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        w.run_instances_calls(),
        1,
        "the new leader launched nothing more"
    );
    assert_eq!(w.instances("align").await.len(), 3);
}

/// The leadership lease's owner and fencing token, as the store has it.
async fn leader(w: &AwsWorld) -> Option<(String, u64)> {
    w.store()
        .current_leader(&w.cluster)
        .await
        .unwrap()
        .map(|l| (l.owner, l.fencing))
}

/// Watches moto for `secs`: the fleet never has more than one controller's launches (3).
async fn watch(w: &AwsWorld, what: &str, secs: u64) -> BTreeMap<String, String> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let all = w.instances("align").await;
        assert!(all.len() <= 3, "{what}: more than one launch: {all:?}");
        if Instant::now() >= deadline {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controller_processes_one_killed_with_sigkill() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template).yaml();
    w.import("align", 6, "true").await;
    let manifests = w.write_manifests("manifests", &yaml);
    let manifests = manifests.to_str().unwrap();
    let args = |id: &'static str| -> Vec<String> {
        [
            "--manifests",
            manifests,
            "--cluster",
            &w.cluster,
            "--leader-election",
            "--leader-ttl",
            "3s",
            "--interval",
            "1s",
            "--identity",
            id,
            "--metrics-addr",
            "127.0.0.1:0",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let spawn = |id: &'static str| {
        let a = args(id);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        w.spawn_controller(id, &a)
    };

    let mut a = spawn("ctl-a");
    let start = Instant::now();
    while leader(&w).await.map(|l| l.0).as_deref() != Some("ctl-a") {
        assert!(a.running(), "ctl-a exited:\n{}", tail(&a.log, 30));
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "ctl-a never led:\n{}",
            tail(&a.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut b = spawn("ctl-b");
    let start = Instant::now();
    while w.live_instances("align").await.len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "ctl-a launched nothing:\n{}",
            tail(&a.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both run for a few passes: b stays a follower.
    watch(&w, "both running", 3).await;
    assert!(b.running(), "ctl-b exited:\n{}", tail(&b.log, 30));
    let (owner, fencing) = leader(&w).await.unwrap();
    assert_eq!(owner, "ctl-a");

    a.kill9();
    let killed = Instant::now();
    let lease = w.store().current_leader(&w.cluster).await.unwrap().unwrap();
    assert_eq!(lease.owner, "ctl-a");
    let left = Duration::from_millis((lease.expires_at - clock::system().now()).max(0) as u64);
    loop {
        let all = w.instances("align").await;
        assert!(all.len() <= 3, "during the takeover: {all:?}");
        if leader(&w).await.map(|l| l.0).as_deref() == Some("ctl-b") {
            break;
        }
        // A hang guard (ten times the 3 s lease), not a timing.
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "ctl-b never took over:\n{}",
            tail(&b.log, 30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let takeover = killed.elapsed();
    eprintln!(
        "process takeover after {takeover:?} (lease TTL 3s, {left:?} of it left at the kill, \
         interval 1s)"
    );
    // Safety, which load cannot break: no takeover before the lease ran out.
    assert!(
        takeover + Duration::from_millis(50) >= left,
        "the lease was honoured until it expired: {takeover:?} < {left:?}"
    );
    let (_, new_fencing) = leader(&w).await.unwrap();
    assert!(new_fencing > fencing);
    // The new leader finds the fleet complete: nothing is launched again.
    let all = watch(&w, "after the takeover", 3).await;
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all.values().all(|s| s == "running"), "{all:?}");
    assert!(b.running(), "ctl-b exited:\n{}", tail(&b.log, 30));
    let log = b.log_text();
    assert!(log.contains("became the leader"), "{}", tail(&b.log, 30));
}

// ---- 4. throttling and capacity errors ------------------------------------------------------

#[tokio::test]
async fn a_throttled_launch_is_retried_next_pass_with_the_same_batch() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template).yaml();
    w.import("align", 6, "true").await;
    let clock = ManualClock::new(clock::system().now());
    let factory = w.factory();
    let p = factory.provider_for(&yaml, "align");
    p.throttle_next(Op::Launch, 1);
    let mut c = w.controller(&yaml, clock.clone(), &factory, |_| {});

    let r = c.reconcile_once().await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].to_string().contains("throttled"),
        "{:?}",
        r.errors
    );
    let st = c.status().read().unwrap().clone();
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("throttled")),
        "the error is reported: {:?}",
        st.last_error
    );
    assert!(
        st.recent_actions.iter().any(|a| !a.ok),
        "{:?}",
        st.recent_actions
    );
    assert!(w.live_instances("align").await.is_empty());
    let written = intents(&w, "align").await;
    assert_eq!(written.len(), 1, "the intent stays: {written:?}");
    assert_eq!(written[0]["confirmed"], false);

    clock.advance(Duration::from_secs(1));
    let r = c.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let launches = p.launches();
    assert_eq!(launches.len(), 2, "{launches:?}");
    assert_eq!(
        launches[0].batch_token, launches[1].batch_token,
        "re-issued with the same batch token"
    );
    assert_eq!(launches[1].count, 3);
    assert_eq!(
        r.plan.unwrap().fleet("align").unwrap().launch_count(),
        0,
        "no new launch on top of the re-issued one"
    );
    let ids = w.live_instances("align").await;
    assert_eq!(ids.len(), 3);
    assert_eq!(
        batches(&w, &ids).await,
        BTreeSet::from([launches[0].batch_token.clone()])
    );
    clock.advance(Duration::from_secs(1));
    let r = c.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(p.launches().len(), 2);
    assert_eq!(w.instances("align").await.len(), 3);
}

#[tokio::test]
async fn a_capacity_error_stalls_the_fleet_for_the_cool_off() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template).yaml();
    w.import("align", 6, "true").await;
    // EC2 itself answers: the error goes through the provider's AWS error mapping.
    w.moto.faults.inject(Fault::new(
        "RunInstances",
        "InsufficientInstanceCapacity",
        1,
    ));
    let clock = ManualClock::new(clock::system().now());
    let factory = w.factory();
    let p = factory.provider_for(&yaml, "align");
    let mut c = w.controller(&yaml, clock.clone(), &factory, |cfg| {
        cfg.cool_off = Duration::from_secs(30)
    });

    let r = c.reconcile_once().await;
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(
        r.errors[0].to_string().contains("insufficient capacity"),
        "{:?}",
        r.errors
    );
    assert!(w.live_instances("align").await.is_empty());
    assert!(
        intents(&w, "align").await.is_empty(),
        "nothing launched: no intent"
    );

    for _ in 0..2 {
        clock.advance(Duration::from_secs(10));
        let plan = pass(&mut c).await;
        let fp = plan.fleet("align").unwrap();
        assert_eq!(fp.launch_count(), 0, "no launch during the cool-off");
        let stalled = fp.condition(ConditionType::Stalled).unwrap();
        assert_eq!(stalled.status, ConditionStatus::True, "{stalled:?}");
        assert!(
            stalled.message.contains("InsufficientInstanceCapacity")
                && stalled.message.contains("injected by the test"),
            "the AWS code and message: {}",
            stalled.message
        );
    }
    // Published for the status page and `anamo status`.
    let doc = w
        .store()
        .list_status()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.name == "fleet/align")
        .expect("fleet status doc");
    let conditions = doc.body["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Stalled" && c["status"] == "True"),
        "{conditions:?}"
    );
    assert_eq!(p.launches().len(), 1, "one try before the cool-off");
    assert_eq!(w.run_instances_calls(), 1);

    clock.advance(Duration::from_secs(11));
    let plan = pass(&mut c).await;
    let fp = plan.fleet("align").unwrap();
    assert_eq!(fp.launch_count(), 3, "launched after the cool-off");
    assert_ne!(
        fp.condition(ConditionType::Stalled).unwrap().status,
        ConditionStatus::True
    );
    assert_eq!(w.live_instances("align").await.len(), 3);
}

// ---- 5. an Auto Scaling group fleet ----------------------------------------------------------

/// Creates an Auto Scaling group (min 0, max 5, desired 0) on the world's launch template.
/// An `autoscaling` fleet on `group`: up to 5 instances, a 10 minute scale-down delay, a 30 s
/// lease with a 10 s heartbeat.
fn asg_fleet(group: &str) -> FleetYaml {
    FleetYaml::autoscaling(group)
        .set("maxInstances", "5")
        .set("scaleDownDelay", "10m")
        .set("leaseTTL", "30s")
        .set("heartbeat", "10s")
}

async fn create_group(w: &AwsWorld) -> String {
    let name = unique("anamo-ctl-asg");
    w.moto
        .asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(&w.template)
                .version("$Default")
                .build(),
        )
        .min_size(0)
        .max_size(5)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("create the Auto Scaling group in moto");
    name
}

async fn register(w: &AwsWorld, instance: &str, busy: u32) {
    let now = clock::system().now();
    w.register_worker(instance, busy, now - 60_000, now).await;
}

#[tokio::test]
async fn an_auto_scaling_group_follows_the_backlog_and_protects_busy_instances() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let group = create_group(&w).await;
    let yaml = asg_fleet(&group).yaml();
    let factory = w.factory();
    let p = factory.provider_for(&yaml, "align");
    let mut c = w.controller(&yaml, system_clock(), &factory, |_| {});

    w.import("align", 6, "true").await;
    let plan = pass(&mut c).await;
    assert_eq!(plan.fleet("align").unwrap().launch_count(), 3);
    let (desired, members) = w.moto.describe_group(&group).await;
    assert_eq!(desired, 3, "SetDesiredCapacity follows the backlog");
    assert_eq!(members.len(), 3);
    for _ in 0..2 {
        let plan = pass(&mut c).await;
        assert_eq!(plan.fleet("align").unwrap().launch_count(), 0);
    }
    assert_eq!(w.moto.describe_group(&group).await.0, 3, "raised once");

    // More work: the group grows to maxInstances.
    let more: Vec<TaskSpec> = (0..4)
        .map(|i| TaskSpec::new("align", format!("more{i}"), "true"))
        .collect();
    w.store()
        .import(&more, clock::system().now())
        .await
        .unwrap();
    let plan = pass(&mut c).await;
    assert_eq!(
        plan.fleet("align").unwrap().launch_count(),
        2,
        "10 tasks want 5 instances; 3 are there: {:?}",
        plan.fleet("align").unwrap()
    );
    let (desired, members) = w.moto.describe_group(&group).await;
    assert_eq!(desired, 5);
    assert_eq!(members.len(), 5);
    assert_eq!(p.launches().len(), 2, "{:?}", p.launches());

    // Workers register: two are busy, the others idle.
    let ids: Vec<String> = members.keys().cloned().collect();
    for (n, id) in ids.iter().enumerate() {
        register(&w, id, u32::from(n < 2)).await;
    }
    pass(&mut c).await;
    let (_, members) = w.moto.describe_group(&group).await;
    let protected: BTreeSet<&String> = members
        .iter()
        .filter(|(_, p)| **p)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        protected,
        ids[..2].iter().collect(),
        "busy ones are protected"
    );

    // The first one goes idle: it loses its protection.
    register(&w, &ids[0], 0).await;
    pass(&mut c).await;
    let (desired, members) = w.moto.describe_group(&group).await;
    let protected: BTreeSet<&String> = members
        .iter()
        .filter(|(_, p)| **p)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(protected, BTreeSet::from([&ids[1]]), "idle ones lose it");
    assert_eq!(desired, 5, "nothing scaled in (scaleDownDelay 10m)");
}

#[tokio::test]
async fn an_auto_scaling_group_whose_new_members_show_late_is_not_raised_twice() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let group = create_group(&w).await;
    let yaml = asg_fleet(&group).yaml();
    let factory = w.factory();
    let p = factory.provider_for(&yaml, "align");
    let mut c = w.controller(&yaml, system_clock(), &factory, |_| {});
    w.import("align", 6, "true").await;
    // The group takes a while to create the members of a raised desired capacity.
    p.inner().lag_next_lists(3);
    let plan = pass(&mut c).await;
    assert_eq!(plan.fleet("align").unwrap().launch_count(), 3);
    assert_eq!(w.moto.describe_group(&group).await.0, 3);
    for _ in 0..2 {
        let plan = pass(&mut c).await;
        let fp = plan.fleet("align").unwrap();
        assert_eq!(
            fp.launch_count(),
            0,
            "the raised capacity counts while its members are not listed: {fp:?}"
        );
        assert_eq!(fp.status.launching, 3, "{fp:?}");
    }
    assert_eq!(w.moto.describe_group(&group).await.0, 3, "raised once");
    // The members show up: they are the launch, not more capacity on top of it.
    let plan = pass(&mut c).await;
    let fp = plan.fleet("align").unwrap();
    assert_eq!(fp.status.instances, 3, "{fp:?}");
    assert_eq!(fp.status.launching, 0, "{fp:?}");
    // ...so more backlog raises the capacity further.
    let more: Vec<TaskSpec> = (0..4)
        .map(|i| TaskSpec::new("align", format!("more{i}"), "true"))
        .collect();
    w.store()
        .import(&more, clock::system().now())
        .await
        .unwrap();
    let plan = pass(&mut c).await;
    assert_eq!(plan.fleet("align").unwrap().launch_count(), 2);
    assert_eq!(w.moto.describe_group(&group).await.0, 5);
}

#[tokio::test]
async fn an_auto_scaling_group_scales_in_idle_instances_and_keeps_busy_ones() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let group = create_group(&w).await;
    let yaml = asg_fleet(&group)
        .set("scaleDownDelay", "2s")
        .set("leaseTTL", "10m")
        .yaml();
    let factory = w.factory();
    let mut c = w.controller(&yaml, system_clock(), &factory, |_| {});
    w.import("align", 4, "true").await;
    pass(&mut c).await;
    let (desired, members) = w.moto.describe_group(&group).await;
    assert_eq!(desired, 2);
    let ids: Vec<String> = members.keys().cloned().collect();
    // Their workers took every task (nothing pending any more): one is still busy, the other
    // has been idle for longer than scaleDownDelay.
    for _ in 0..4 {
        let req = anamo::model::ClaimRequest {
            step: "align".into(),
            owner: format!("w-{}", ids[0]),
            ttl_ms: 600_000,
        };
        let now = clock::system().now();
        w.store().claim(&req, now).await.unwrap().expect("a task");
    }
    register(&w, &ids[0], 2).await;
    let now = clock::system().now();
    let mut idle = WorkerInfo {
        worker_id: format!("w-{}", ids[1]),
        step: "align".into(),
        instance_id: Some(ids[1].clone()),
        slots: 2,
        busy_slots: 0,
        started_at: now - 60_000,
        last_seen: now,
        last_busy_at: now - 5_000,
        state: WorkerState::Active,
        stop_reason: None,
        drain_requested: false,
    };
    w.store()
        .put_worker(&idle, anamo::store::Fence::Unfenced)
        .await
        .unwrap();

    let plan = pass(&mut c).await;
    assert_eq!(
        plan.fleet("align").unwrap().terminated_ids(),
        [ids[1].as_str()],
        "{:?}",
        plan.fleet("align").unwrap()
    );
    let (desired, members) = w.moto.describe_group(&group).await;
    assert_eq!(
        desired, 1,
        "terminated with a decrement of the desired capacity"
    );
    assert_eq!(
        members.keys().collect::<Vec<_>>(),
        [&ids[0]],
        "the busy one stays"
    );
    assert!(members[&ids[0]], "and is protected from scale-in");
    // The idle worker's registration goes once its instance is gone and it has exited.
    idle.state = WorkerState::Gone;
    w.store()
        .put_worker(&idle, anamo::store::Fence::Unfenced)
        .await
        .unwrap();
    pass(&mut c).await;
    assert_eq!(w.moto.describe_group(&group).await.0, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_changes_nothing_and_controller_once_launches_through_the_sdk_endpoints() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2_with_user_data(&w.template).yaml();
    w.import("align", 10, "true").await;
    let manifests = w.write_manifests("manifests", &yaml);
    let run = |args: &[&str]| {
        let out = w.anamo().args(args).output().expect("run anamo");
        assert!(
            out.status.success(),
            "anamo {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let m = manifests.to_str().unwrap();
    let plan = run(&["plan", "--json", "--manifests", m, "--cluster", &w.cluster]);
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("plan JSON");
    assert_eq!(plan["fleets"][0]["desired"], 3, "{plan}");
    assert!(
        w.instances("align").await.is_empty(),
        "a dry run launches nothing"
    );

    run(&[
        "controller",
        "--once",
        "--manifests",
        m,
        "--cluster",
        &w.cluster,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    // moto launches MinCount (1) of a MinCount=1, MaxCount=3 request.
    let ids = w.live_instances("align").await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let ud = w.moto.user_data(&ids[0]).await.expect("user data");
    assert!(
        ud.contains(&format!("ANAMO_STORE={}", w.harness.url)),
        "{ud}"
    );
    assert!(ud.contains("REGION='us-east-1'"), "the SDK's region: {ud}");
    let tags = w.moto.instance_tags(&ids[0]).await;
    assert_eq!(tags[TAG_CONTROLLER], w.cluster);
    // A second pass completes the fleet, counting the first one.
    run(&[
        "controller",
        "--once",
        "--manifests",
        m,
        "--cluster",
        &w.cluster,
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    assert_eq!(w.live_instances("align").await.len(), 2);
}

#[tokio::test]
async fn a_leader_that_lost_and_regained_the_lease_reloads_the_other_leaders_launches() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template).yaml();
    let clock = ManualClock::new(clock::system().now());
    let ha = |id: &'static str| {
        move |cfg: &mut ControllerConfig| {
            cfg.leader_election = true;
            cfg.leader_ttl = Duration::from_secs(3);
            cfg.identity = id.to_string();
        }
    };
    let (fa, fb) = (w.factory(), w.factory());
    let mut b = w.controller(&yaml, clock.clone(), &fb, ha("ctl-b"));
    // b leads first, while there is nothing to do.
    assert_eq!(b.reconcile_once().await.role, Role::Leader);
    assert!(w.instances("align").await.is_empty());

    // b stalls past its lease; a leads, launches, and dies before writing the outcome.
    clock.advance(Duration::from_secs(4));
    w.import("align", 6, "true").await;
    let hanging = fa
        .provider_for(&yaml, "align")
        .inner()
        .hang_after_next_launch();
    let mut a = w.controller(&yaml, clock.clone(), &fa, ha("ctl-a"));
    tokio::select! {
        _ = a.reconcile_once() => panic!("the pass was meant to hang after the launch"),
        waited = tokio::time::timeout(Duration::from_secs(20), hanging.notified()) => {
            waited.expect("a never launched");
        }
    }
    drop(a);
    assert_eq!(w.live_instances("align").await.len(), 3);
    assert_eq!(w.run_instances_calls(), 1);

    // b comes back after a's lease expired and leads again. Its listing lags behind a's
    // launch: only a's launch intent, in the store, tells it the instances are coming.
    clock.advance(Duration::from_secs(4));
    let pb = fb.provider_for(&yaml, "align");
    pb.inner().lag_next_lists(2);
    for _ in 0..3 {
        let r = b.reconcile_once().await;
        assert_eq!(r.role, Role::Leader);
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        let plan = r.plan.unwrap();
        let fp = plan.fleet("align").unwrap();
        assert_eq!(fp.launch_count(), 0, "{fp:?}");
        clock.advance(Duration::from_secs(1));
    }
    w.assert_launched_once("align", 3).await;
}
