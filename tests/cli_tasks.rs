//! The task CLI against both stores: bulk import (all or nothing), status, list, show,
//! requeue, cancel.

mod common;

use common::cli::{anamo, ok};

fn tsv(n: usize, bad_line: Option<usize>) -> String {
    let mut s = String::from("id\tstep\tscript\n");
    for i in 1..=n {
        if Some(i + 1) == bad_line {
            s.push_str(&format!("S{i:05}\talign\n"));
        } else {
            s.push_str(&format!("S{i:05}\talign\tbwa mem ref.fa S{i:05}.fq\n"));
        }
    }
    s
}

async fn bulk_import_is_all_or_nothing(store: &str) {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.tsv");
    std::fs::write(&bad, tsv(10_000, Some(5_000))).unwrap();
    let out = anamo(dir.path(), store, &["task", "import", "bad.tsv"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.tsv:5000: expected `id<TAB>step<TAB>script`"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    let status = ok(&anamo(dir.path(), store, &["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        v["steps"].as_array().unwrap().len(),
        0,
        "nothing written: {v}"
    );

    let good = dir.path().join("good.tsv");
    std::fs::write(&good, tsv(10_000, None)).unwrap();
    let out = ok(&anamo(dir.path(), store, &["task", "import", "good.tsv"]));
    assert!(out.contains("imported 10000 new task(s)"), "{out}");
    let again = ok(&anamo(dir.path(), store, &["task", "import", "good.tsv"]));
    assert!(
        again.contains("imported 0 new task(s)") && again.contains("10000 already present"),
        "{again}"
    );
    let status = ok(&anamo(
        dir.path(),
        store,
        &["status", "--step", "align", "--json"],
    ));
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["steps"][0]["pending"], 10_000, "{v}");

    // A few admin commands on the imported pool.
    ok(&anamo(
        dir.path(),
        store,
        &["task", "cancel", "--step", "align", "--id", "S00001"],
    ));
    let show = ok(&anamo(
        dir.path(),
        store,
        &["task", "show", "--step", "align", "--id", "S00001"],
    ));
    assert!(
        show.contains("state:     cancelled") && show.contains("cancelled by user"),
        "{show}"
    );
    let out = ok(&anamo(
        dir.path(),
        store,
        &["task", "requeue", "--step", "align", "--state", "cancelled"],
    ));
    assert!(out.contains("requeued 1 task(s)"), "{out}");
    let ids = ok(&anamo(
        dir.path(),
        store,
        &[
            "task", "list", "--step", "align", "--state", "pending", "--ids", "--limit", "3",
        ],
    ));
    assert_eq!(
        ids.lines().collect::<Vec<_>>(),
        vec!["S00001", "S00002", "S00003"]
    );
    let missing = anamo(
        dir.path(),
        store,
        &["task", "show", "--step", "align", "--id", "nope"],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("task align/nope not found"));
}

#[tokio::test]
async fn sqlite_bulk_import_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("t.db").display());
    bulk_import_is_all_or_nothing(&store).await;
}

#[tokio::test]
async fn dynamodb_bulk_import_is_all_or_nothing() {
    let Some(h) = common::Harness::dynamo().await else {
        return;
    };
    bulk_import_is_all_or_nothing(&h.url).await;
    h.store.delete_schema().await.unwrap();
}

#[test]
fn bad_store_urls_and_missing_tables_say_how_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = anamo(dir.path(), "postgres://x", &["status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("expected sqlite://PATH or dynamodb://TABLE"),
        "{err}"
    );
}
