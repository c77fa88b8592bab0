//! `anamo sample show|hold|resume|drop|retry` and `task requeue`'s cascade through the real
//! binary on a SQLite store without a published graph (every step keyed by the sample, tasks'
//! own `--depends-on`): the actions reach every step, retry and requeue carry the dependents
//! that failed because of a task, and an unknown sample is a clear error that changes nothing.

mod common;

use std::path::Path;

use anamo::store::{promote, StoreUrl};
use common::cli::{anamo, ok};

/// `STEP/ID STATE` of every task, sorted.
fn states(d: &Path, url: &str) -> Vec<String> {
    let list = ok(&anamo(d, url, &["task", "list"]));
    let mut out: Vec<String> = list
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{}/{} {}", f[0], f[1], f[2])
        })
        .collect();
    out.sort();
    out
}

#[test]
fn sample_actions_reach_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("t.db").display());
    for (step, id) in [("align", "S1"), ("align", "S2"), ("qc", "S1")] {
        ok(&anamo(
            d,
            &url,
            &["task", "add", "--step", step, "--id", id, "--", "true"],
        ));
    }
    let out = ok(&anamo(d, &url, &["sample", "hold", "S1"]));
    assert!(out.contains("held 2 task(s)"), "{out}");
    assert_eq!(
        states(d, &url),
        ["align/S1 held", "align/S2 pending", "qc/S1 held"]
    );
    let show = ok(&anamo(d, &url, &["sample", "show", "S1"]));
    assert!(show.contains("align") && show.contains("qc"), "{show}");
    assert!(show.contains("held by user"), "{show}");
    assert!(!show.contains("S2"), "{show}");

    ok(&anamo(d, &url, &["sample", "resume", "S1"]));
    assert_eq!(
        states(d, &url),
        ["align/S1 pending", "align/S2 pending", "qc/S1 pending"]
    );
    let out = ok(&anamo(d, &url, &["sample", "drop", "S1"]));
    assert!(out.contains("cancelled 2 task(s)"), "{out}");
    assert_eq!(
        states(d, &url),
        ["align/S1 cancelled", "align/S2 pending", "qc/S1 cancelled"]
    );

    let before = states(d, &url);
    for action in ["show", "drop", "hold", "resume", "retry"] {
        let bad = anamo(d, &url, &["sample", action, "NA000"]);
        assert!(
            !bad.status.success(),
            "sample {action} of an unknown sample"
        );
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains("no task of sample `NA000`"), "{action}: {err}");
    }
    assert_eq!(states(d, &url), before, "nothing changed");
}

/// Fails align/S1's attempt for good and lets the promotion fail call/S1 because of it (as
/// the controller's pass would), through the library on the same store.
async fn fail_align_s1(url: &str) {
    use anamo::model::{ClaimRequest, Completion, Outcome, TaskResult};
    let store = anamo::store::open(&url.parse::<StoreUrl>().unwrap())
        .await
        .unwrap();
    let now = anamo::clock::Clock::now(&anamo::clock::SystemClock);
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w".into(),
        ttl_ms: 60_000,
    };
    let c = store.claim(&req, now).await.unwrap().expect("align/S1");
    assert_eq!(c.task.id(), "S1");
    let done = Completion {
        outcome: Outcome::FailedPermanently,
        retry_delay: None,
        result: TaskResult {
            exit_code: Some(3),
            error: Some("exit 3".into()),
            worker_id: "w".into(),
            ..Default::default()
        },
    };
    store.complete(&c.lease(), &done, now).await.unwrap();
    let graph = anamo::store::graph::empty_graph();
    promote::promote_waiting(store.as_ref(), &graph, "call", now + 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn retry_and_requeue_carry_the_dependents_that_failed_because_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("t.db").display());
    for (step, deps) in [("align", None), ("call", Some("align"))] {
        let mut args = vec!["task", "add", "--step", step, "--id", "S1"];
        args.extend(deps.map(|s| ["--depends-on", s]).into_iter().flatten());
        args.extend(["--", "true"]);
        ok(&anamo(d, &url, &args));
    }
    let failed = ["align/S1 failed", "call/S1 failed"];
    let again = ["align/S1 pending", "call/S1 waiting"];

    fail_align_s1(&url).await;
    assert_eq!(states(d, &url), failed);
    let out = ok(&anamo(d, &url, &["sample", "retry", "S1"]));
    assert!(
        out.contains("requeued 1 failed task(s) and 1 dependent(s)"),
        "{out}"
    );
    assert_eq!(states(d, &url), again);

    fail_align_s1(&url).await;
    let out = ok(&anamo(
        d,
        &url,
        &[
            "task",
            "requeue",
            "--step",
            "align",
            "--id",
            "S1",
            "--no-dependents",
        ],
    ));
    assert!(!out.contains("dependent"), "{out}");
    assert_eq!(states(d, &url), ["align/S1 pending", "call/S1 failed"]);
    let out = ok(&anamo(
        d,
        &url,
        &["task", "requeue", "--step", "align", "--id", "S1"],
    ));
    assert!(
        out.contains("requeued 1 dependent(s)") && out.contains("call/S1"),
        "{out}"
    );
    assert_eq!(states(d, &url), again);
}
