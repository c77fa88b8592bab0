//! Why tasks failed, and every sample, at a glance, end to end: a controller works through a
//! small workload (10 samples: `align` then `call`; `align/S010` fails with exit 7 and
//! `call/S010` fails because of it), and then
//!
//! * `/api/status` lists `align/S010` with its exit code, log line, attempts and log link,
//!   counts `call/S010` as failed because of a dependency, and has every sample × step;
//! * the status page in headless Chromium (`ANAMO_TEST_CHROMIUM_BIN`, from
//!   `scripts/test-services`) shows the same failed tasks and the same glyph per sample and
//!   step as `/api/status` says, also for a search (`/?sample=S01`);
//! * `anamo status` (text and `--json`) shows the same failed task from the store.

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use anamo::model::TaskState;
use anamo::pipeline::matrix::{glyph, states_text, StateCounts};
use common::browser::chromium;
use common::http::get_json;
use common::observability::Workload;
use common::services::tool;
use common::wait::wait_for;

/// The API's tasks-by-state of one cell, as the matrix counts them.
fn cell(v: &Value) -> Option<StateCounts> {
    let map = v.as_object()?;
    Some(
        map.iter()
            .map(|(k, n)| (k.parse::<TaskState>().unwrap(), n.as_u64().unwrap()))
            .collect(),
    )
}

/// The page shows the failed tasks and the samples `/api/status` has.
fn page_matches_api(dom: &str, st: &Value) {
    let failed = &st["failed_tasks"];
    assert!(
        dom.contains(&format!(
            "id=\"failed\" data-total=\"{}\" data-dependency-failed=\"{}\"",
            failed["total"], failed["dependency_failed"]
        )),
        "{dom}"
    );
    for t in failed["newest"].as_array().unwrap() {
        let row = format!(
            "data-task-step=\"{}\" data-id=\"{}\" data-exit-code=\"{}\" data-attempts=\"{}\" \
             data-href=\"{}\"",
            t["step"].as_str().unwrap(),
            t["id"].as_str().unwrap(),
            t["exit_code"],
            t["attempts"],
            t["log_href"].as_str().unwrap()
        );
        assert!(dom.contains(&row), "no failed row {row} in\n{dom}");
    }
    let samples = &st["samples"];
    let rows = samples["samples"].as_array().unwrap();
    assert_eq!(
        dom.matches("class=\"sample-row\"").count(),
        rows.len(),
        "{dom}"
    );
    for r in rows {
        let name = r["sample"].as_str().unwrap();
        let mut want = format!("<tr class=\"sample-row\" data-sample=\"{name}\"><td>{name}</td>");
        for step in samples["steps"].as_array().unwrap() {
            let step = step.as_str().unwrap();
            let counts = cell(&r["steps"][step]);
            let g = glyph(counts.as_ref());
            want.push_str(&format!(
                "<td class=\"cell glyph-{n}\" data-cell-step=\"{step}\" data-glyph=\"{n}\" \
                 title=\"{title}\">{text}</td>",
                n = g.name(),
                title = states_text(counts.as_ref()),
                text = g.text(false),
            ));
        }
        assert!(dom.contains(&want), "no row {want} in\n{dom}");
    }
}

#[test]
fn failed_tasks_and_samples_on_the_page_the_api_and_the_cli() {
    let Some(chromium_bin) = tool("ANAMO_TEST_CHROMIUM_BIN", "chromium", None) else {
        return;
    };
    let workload = Workload::start(10, 0.1);
    let st = wait_for(
        "both failures counted in /api/status",
        Duration::from_secs(120),
        || {
            let st = workload.status();
            let done = st["steps"]
                .as_array()?
                .iter()
                .all(|s| s["waiting"] == 0 && s["pending"] == 0 && s["running"] == 0);
            (done && st["failed_tasks"]["total"] == 2 && st["samples"]["total"] == 10).then_some(st)
        },
    );
    let failed = &st["failed_tasks"];
    assert_eq!(failed["dependency_failed"], 1, "{failed}");
    let t = &failed["newest"][0];
    assert_eq!(failed["newest"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(
        (t["sample"].as_str(), t["step"].as_str(), t["id"].as_str()),
        (Some("S010"), Some("align"), Some("S010"))
    );
    assert_eq!(t["exit_code"], 7);
    assert_eq!(t["attempts"], 1);
    assert_eq!(t["log_href"], "/api/tasks/align/S010/log?attempt=1");
    let samples = &st["samples"];
    assert_eq!(samples["steps"], serde_json::json!(["align", "call"]));
    assert_eq!(samples["totals"][0]["done"], 9);
    assert_eq!(samples["totals"][1]["failed"], 1);

    let profile = tempfile::tempdir().unwrap();
    let base = format!("http://{}/", workload.addr);
    page_matches_api(
        &chromium(&chromium_bin, profile.path(), &["--dump-dom"], &base),
        &st,
    );
    let st = get_json(workload.addr, "/api/status?sample=S01");
    assert_eq!(st["samples"]["matched"], 1, "{}", st["samples"]);
    let dom = chromium(
        &chromium_bin,
        profile.path(),
        &["--dump-dom"],
        &format!("{base}?sample=S01"),
    );
    assert!(
        dom.contains("value=\"S01\""),
        "the search box keeps the search"
    );
    page_matches_api(&dom, &st);

    let anamo = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_anamo"))
            .args(["--store", &workload.store_url])
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = anamo(&["status"]);
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("S010"))
        .unwrap_or_else(|| panic!("no failed row in\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(&row[..3], ["S010", "align", "S010"], "{text}");
    assert!(
        row.contains(&"7") && row.contains(&"1/1"),
        "exit 7, 1 of 1 attempts: {text}"
    );
    assert!(
        text.contains("1 more failed because a task they depend on failed"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&anamo(&["status", "--json"])).unwrap();
    assert_eq!(json["failed_tasks"]["newest"][0]["id"], "S010");
}
