//! `anamo sample list` through the real binary on SQLite and on DynamoDB Local, on the shipped
//! example (24 samples: align per sample, call scattered over 4 regions, joint per region,
//! merge once) imported with its manifests: one row per sample, one column per step keyed by
//! the sample (the gathers are listed apart), a glyph per cell (done, failed, held, dropped,
//! not yet), the counts rows, the filters, ASCII off a terminal, and `--json` with the
//! per-sample per-step counts.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use anamo::model::{ClaimRequest, Completion, Outcome, TaskResult};
use common::cli::ok;
use common::Harness;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `anamo --store URL ARGS` in the repository, with the DynamoDB Local endpoint when there is
/// one and nothing of the caller's `ANAMO_*`/`AWS_*` environment.
fn anamo(h: &Harness, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ANAMO_") || k.starts_with("AWS_") || k == "NO_COLOR" {
            c.env_remove(k);
        }
    }
    if let Some(endpoint) = h
        .url
        .starts_with("dynamodb://")
        .then(common::dynamo_endpoint)
    {
        c.env(
            "AWS_ENDPOINT_URL",
            endpoint.expect("DynamoDB Local endpoint"),
        )
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    }
    c.current_dir(repo())
        .env("RUST_LOG", "warn")
        .arg("--store")
        .arg(&h.url)
        .args(args);
    c.output().expect("run anamo")
}

/// Ends the pending `align` tasks of these samples: succeeded, or failed for good.
async fn run_align(h: &Harness, samples: &[(&str, bool)]) {
    let req = ClaimRequest {
        step: "align".into(),
        owner: "w".into(),
        ttl_ms: 60_000,
    };
    let now = anamo::clock::Clock::now(&anamo::clock::SystemClock);
    for c in h.store.claim_batch(&req, 100, now).await.unwrap() {
        let Some((_, good)) = samples.iter().find(|(s, _)| *s == c.task.id()) else {
            h.store.release(&c.lease(), now).await.unwrap();
            continue;
        };
        let done = Completion {
            outcome: if *good {
                Outcome::Succeeded
            } else {
                Outcome::FailedPermanently
            },
            retry_delay: None,
            result: TaskResult {
                exit_code: Some(if *good { 0 } else { 3 }),
                worker_id: "w".into(),
                ..Default::default()
            },
        };
        h.store.complete(&c.lease(), &done, now).await.unwrap();
    }
}

/// The whitespace-separated cells of the line starting with `first`.
fn row(text: &str, first: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(first))
        .unwrap_or_else(|| panic!("no row {first} in\n{text}"));
    line.split_whitespace().map(str::to_string).collect()
}

async fn the_example_as_a_matrix(h: Harness) {
    ok(&anamo(
        &h,
        &[
            "task",
            "import",
            "--manifests",
            "examples/manifests",
            "examples/tasks.tsv",
        ],
    ));
    let text = ok(&anamo(&h, &["sample", "list"]));
    assert_eq!(row(&text, "SAMPLE"), ["SAMPLE", "align", "call"], "{text}");
    assert_eq!(row(&text, "NA12878"), ["NA12878", ".", "."], "{text}");
    assert_eq!(row(&text, "(done)"), ["(done)", "0/24", "0/24"], "{text}");
    assert!(text.contains("call: 96 waiting"), "{text}");
    assert!(text.contains("joint (not per sample): 4 waiting"), "{text}");
    assert!(text.contains("merge (not per sample): 1 waiting"), "{text}");
    assert!(text.is_ascii(), "not a terminal: ASCII\n{text}");

    run_align(&h, &[("NA12878", true), ("NA12891", false)]).await;
    ok(&anamo(&h, &["sample", "hold", "NA12892"]));
    ok(&anamo(&h, &["sample", "drop", "HG00096"]));
    let text = ok(&anamo(&h, &["sample", "list"]));
    assert_eq!(row(&text, "NA12878"), ["NA12878", "ok", "."], "{text}");
    assert_eq!(row(&text, "NA12891")[1], "X", "{text}");
    assert_eq!(row(&text, "NA12892"), ["NA12892", "H", "H"], "{text}");
    assert_eq!(row(&text, "HG00096"), ["HG00096", "-", "-"], "{text}");
    assert_eq!(row(&text, "(done)"), ["(done)", "1/24", "0/24"], "{text}");
    assert_eq!(row(&text, "(failed)"), ["(failed)", "1", "0"], "{text}");
    assert!(
        text.contains("legend: ok = all done, 3/24 = 3 of 24 tasks done"),
        "{text}"
    );

    let failed = ok(&anamo(&h, &["sample", "list", "--state", "failed"]));
    let samples: Vec<&str> = failed
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with('('))
        .collect();
    assert_eq!(samples.len(), 1, "{failed}");
    assert!(samples[0].starts_with("NA12891"), "{failed}");

    let call = ok(&anamo(&h, &["sample", "list", "--step", "call"]));
    assert_eq!(row(&call, "SAMPLE"), ["SAMPLE", "call"], "{call}");
    assert!(!call.contains("joint"), "{call}");

    let json: Value = serde_json::from_str(&ok(&anamo(&h, &["sample", "list", "--json"])))
        .expect("--json prints JSON");
    let s = json["samples"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["sample"] == "NA12892")
        .expect("NA12892 in the JSON");
    assert_eq!(s["steps"]["align"]["held"], 1, "{s}");
    assert_eq!(s["steps"]["call"]["held"], 4, "{s}");
    assert_eq!(json["samples"].as_array().unwrap().len(), 24);
    assert_eq!(json["totals"][0]["step"], "align");
    assert_eq!(json["totals"][0]["done"], 1);
    assert_eq!(
        json["totals"][1]["tasks"]["cancelled"], 4,
        "{}",
        json["totals"]
    );

    // What `sample list` reads: the steps, then one Query per state partition of each step
    // (a page each here), as docs/dynamodb-table.md says.
    if h.url.starts_with("dynamodb://") {
        let graph = anamo::store::graph::get_graph(h.store.as_ref())
            .await
            .unwrap()
            .expect("the manifests' graph was published");
        // A store reads each step's shard count once (one GetItem per step): not measured.
        anamo::store::samples::sample_matrix(h.store.as_ref(), &graph, None)
            .await
            .unwrap();
        let (before, units) = (h.requests.total(), h.requests.read_units());
        let m = anamo::store::samples::sample_matrix(h.store.as_ref(), &graph, None)
            .await
            .unwrap();
        assert_eq!(m.samples.len(), 24);
        let requests = h.requests.total() - before;
        let read_units = h.requests.read_units() - units;
        eprintln!("sample list of the example: {requests} requests, {read_units} read units");
        assert_eq!(requests, 1 + 4 * 8, "{:?}", h.requests.by_kind());
    }

    let bad = anamo(&h, &["sample", "list", "--step", "cal"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("no task in step `cal`") && err.contains("align, call, joint, merge"),
        "{err}"
    );
}

on_both_stores!(the_example_as_a_matrix);
