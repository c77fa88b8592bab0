//! A gather over a step without any task, at run time (issue 16's "bad input"): manifests
//! declaring the upstream step are valid and the gather's tasks are imported (dependents may
//! come before their upstream tasks), but they can only wait. That is never silent:
//! `anamo status` (text and `--json`, on SQLite and DynamoDB Local) warns, naming both steps
//! and what to do, and `anamo up`, which nothing else adds tasks to, stops instead of waiting
//! forever, with the same warning and a failure status.

#[macro_use]
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::Harness;

const PIPELINE: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata: {name: call}
spec:
  step: call
  key: [sample, region]
  provider: {local: {}}
  maxInstances: 1
---
apiVersion: anamo.dev/v1
kind: Fleet
metadata: {name: joint}
spec:
  step: joint
  key: [region]
  dependsOn: [call]
  provider: {local: {}}
  maxInstances: 1
";

const WARNING: &str =
    "2 task(s) of step `joint` wait for step `call`, which has no tasks: they run once its tasks \
     are added";

fn setup(dir: &Path) {
    std::fs::create_dir(dir.join("manifests")).unwrap();
    std::fs::write(dir.join("manifests/pipeline.yaml"), PIPELINE).unwrap();
    std::fs::write(
        dir.join("joint.tsv"),
        "chr1\tjoint\ttrue\nchr2\tjoint\ttrue\n",
    )
    .unwrap();
}

fn anamo(h: &Harness, dir: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ANAMO_") || k.starts_with("AWS_") {
            c.env_remove(k);
        }
    }
    if h.url.starts_with("dynamodb://") {
        let endpoint = common::dynamo_endpoint().expect("DynamoDB Local endpoint");
        c.env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true");
    }
    c.current_dir(dir)
        .env("RUST_LOG", "warn")
        .args(["--store", &h.url])
        .args(args);
    c.output().expect("run anamo")
}

async fn status_warns_of_a_gather_over_a_step_without_tasks(h: Harness) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let import = anamo(
        &h,
        d,
        &["task", "import", "--manifests", "manifests", "joint.tsv"],
    );
    assert!(import.status.success(), "{import:?}");
    let out = anamo(&h, d, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains(&format!("warning: {WARNING}")), "{text}");
    assert!(
        text.contains("anamo task cancel --step joint --state waiting"),
        "{text}"
    );
    let out = anamo(&h, d, &["status", "--step", "joint", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        json["starved"],
        serde_json::json!([{"step": "joint", "upstream": "call", "waiting": 2}])
    );

    // Once the upstream step has a task, the gather just waits for it: no warning.
    std::fs::write(d.join("call.tsv"), "S1/chr1\tcall\ttrue\n").unwrap();
    let import = anamo(&h, d, &["task", "import", "call.tsv"]);
    assert!(import.status.success(), "{import:?}");
    let out = anamo(&h, d, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("warning"), "{text}");
}

on_both_stores!(status_warns_of_a_gather_over_a_step_without_tasks);

#[test]
fn up_stops_when_only_gathers_over_a_step_without_tasks_are_left() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (status, stdout, stderr) = common::process::run_with_timeout(
        "anamo up",
        Command::new(env!("CARGO_BIN_EXE_anamo"))
            .current_dir(d)
            .env_remove("ANAMO_STORE")
            .env("RUST_LOG", "warn")
            .args(["--store", "sqlite://t.db", "up", "--manifests", "manifests"])
            .args(["--tasks", "joint.tsv"]),
        // A hang guard: without the fix `up` waits forever.
        Duration::from_secs(120),
    );
    assert!(!status.success(), "{stdout}\n{stderr}");
    let all = format!("{stdout}\n{stderr}");
    assert!(all.contains(WARNING), "{all}");
    assert!(all.contains("stopped with unfinished tasks"), "{all}");
}

/// Key patterns that match nothing are refused before anything is written, saying where: a
/// `--scatter-part` that is not a part of the step's key (naming the file and the flag), and
/// a `task add` id without every part of its step's key.
#[test]
fn key_parts_that_match_nothing_are_refused_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    std::fs::write(d.join("regions.txt"), "chr1\nchr2\n").unwrap();
    std::fs::write(d.join("call.tsv"), "S1\tcall\ttrue\n").unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_anamo"))
            .current_dir(d)
            .env_remove("ANAMO_STORE")
            .env("RUST_LOG", "warn")
            .args(["--store", "sqlite://k.db"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "task",
        "import",
        "call.tsv",
        "--manifests",
        "manifests",
        "--scatter-file",
        "regions.txt",
        "--step",
        "call",
        "--scatter-part",
        "chunk",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("regions.txt: --scatter-part `chunk` is not a part of step `call`'s key"),
        "{err}"
    );
    // Publish the graph, then add a task whose id lacks the region.
    std::fs::write(d.join("ok.tsv"), "S1/chr1\tcall\ttrue\n").unwrap();
    let out = run(&["task", "import", "ok.tsv", "--manifests", "manifests"]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["task", "add", "--step", "call", "--id", "S2", "--", "true"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("task id `S2` of step `call` must have 2 parts `sample/region`"),
        "{err}"
    );
    let list = run(&["task", "list", "--ids"]);
    assert_eq!(
        String::from_utf8_lossy(&list.stdout).trim(),
        "S1/chr1",
        "nothing added"
    );
}
