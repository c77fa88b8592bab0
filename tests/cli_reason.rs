//! `task list` says why: the REASON column (with when a retrying task is due), and the
//! `held` and `retrying` states accepted by `--state`.

mod common;

use anamo::model::{ClaimRequest, Completion, Outcome, TaskResult, TaskState};
use anamo::pipeline::RetryDelay;
use anamo::store::StoreUrl;
use common::cli::{anamo, ok};

#[tokio::test]
async fn task_list_shows_why_and_when_a_retry_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let d = dir.path();
    for id in ["S1", "S2", "S3"] {
        ok(&anamo(
            d,
            &url,
            &["task", "add", "--step", "align", "--id", id, "--", "false"],
        ));
    }
    ok(&anamo(
        d,
        &url,
        &["task", "cancel", "--step", "align", "--id", "S1"],
    ));

    // S2's attempt fails with a retry delay: it waits in `retrying`.
    let store = anamo::store::open(&url.parse::<StoreUrl>().unwrap())
        .await
        .unwrap();
    let now = anamo::clock::Clock::now(&anamo::clock::SystemClock);
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w".into(),
        ttl_ms: 60_000,
    };
    let claim = loop {
        let c = store
            .claim(&req, now)
            .await
            .unwrap()
            .expect("a pending task");
        if c.task.id() == "S2" {
            break c;
        }
        store.release(&c.lease(), now).await.unwrap();
        store.hold("align", c.task.id(), now).await.unwrap();
    };
    let done = Completion {
        outcome: Outcome::Failed,
        retry_delay: Some(RetryDelay {
            initial_ms: 3_600_000,
            max_ms: 3_600_000,
        }),
        result: TaskResult {
            exit_code: Some(3),
            error: Some("exit 3".into()),
            worker_id: "w".into(),
            ..Default::default()
        },
    };
    let st = store.complete(&claim.lease(), &done, now).await.unwrap();
    assert_eq!(st, TaskState::Retrying);
    store.hold("align", "S3", now).await.unwrap();
    drop(store);

    let list = ok(&anamo(d, &url, &["task", "list", "--step", "align"]));
    let header = list.lines().next().unwrap_or_default();
    assert!(header.contains("REASON"), "{list}");
    let line = |id: &str| {
        list.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(id))
            .unwrap_or_else(|| panic!("no line for {id}: {list}"))
            .to_string()
    };
    assert!(line("S1").contains("cancelled by user"), "{list}");
    let s2 = line("S2");
    assert!(
        s2.contains("retrying") && s2.contains("exit 3; retry at "),
        "{list}"
    );
    assert!(line("S3").contains("held by user"), "{list}");

    let held = ok(&anamo(
        d,
        &url,
        &["task", "list", "--state", "held", "--ids"],
    ));
    assert_eq!(held.trim(), "S3");
    let retrying = ok(&anamo(
        d,
        &url,
        &["task", "list", "--state", "retrying", "--ids"],
    ));
    assert_eq!(retrying.trim(), "S2");
    let bad = anamo(d, &url, &["task", "list", "--state", "paused"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("held, retrying"), "{err}");
}
