//! `anamo status` through the real binary next to a real controller process (SQLite store,
//! local fleets): the same throughput as `/api/status` and `/metrics`, "finished, N failed",
//! a rejected manifest change, `--watch` frames when stdout is not a terminal (and Ctrl-C),
//! and a warning once the controller has stopped.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::http::http_get;
use common::observability::Workload;
use common::process::{run_with_timeout, ProcessGuard};
use common::wait::wait_for;

fn status(w: &Workload, args: &[&str]) -> String {
    let (st, out, err) = run_with_timeout(
        "anamo status",
        Command::new(env!("CARGO_BIN_EXE_anamo"))
            .env_remove("ANAMO_STORE")
            .args(["--store", &w.store_url, "status"])
            .args(args),
        Duration::from_secs(60),
    );
    assert!(st.success(), "anamo status {args:?} failed: {err}");
    out
}

fn all_finished(w: &Workload) -> Option<()> {
    ["align", "call"]
        .iter()
        .all(|s| {
            w.step_counts(s).is_some_and(|c| {
                c["waiting"] + c["pending"] + c["running"] == 0 && c["succeeded"] > 0
            })
        })
        .then_some(())
}

/// The step's throughput in `/metrics`.
fn metric(w: &Workload, step: &str) -> Option<f64> {
    let body = http_get(w.addr, "/metrics").ok()?.body;
    let prefix = format!("anamo_step_throughput_per_minute{{step=\"{step}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn steps_by_name(v: &Value) -> Vec<(String, f64, u64)> {
    let mut out: Vec<(String, f64, u64)> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["throughput_per_min"].as_f64().unwrap(),
                s["finished_in_window"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn break_manifest(dir: &Path) {
    let file = dir.join("manifests/fleets.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replacen("maxInstances: 2", "maxInstances: two", 1),
    )
    .unwrap();
}

#[test]
fn status_tells_the_same_story_as_the_controller_and_notices_when_it_stops() {
    // 10 align tasks (S010 fails) and 10 call tasks (S010's fails on its dependency).
    let mut w = Workload::start(10, 0.1);
    wait_for("every task finished", Duration::from_secs(120), || {
        all_finished(&w)
    });

    // One throughput: the controller's count (after the last completion), the CLI's and
    // the metric are all "finished in the last 5 minutes, per minute": 10 / 5.
    let api = wait_for(
        "a count after the last task",
        Duration::from_secs(60),
        || {
            let st = w.status();
            let steps = steps_by_name(&st);
            (steps.len() == 2 && steps.iter().all(|s| s.2 == 10)).then_some(steps)
        },
    );
    let cli: Value = serde_json::from_str(&status(&w, &["--json"])).expect("status --json");
    assert_eq!(steps_by_name(&cli), api, "anamo status and /api/status");
    for (step, per_min, _) in &api {
        assert!((per_min - 2.0).abs() < 1e-9, "{step}: {per_min}/min");
        let m = wait_for("the throughput metric", Duration::from_secs(30), || {
            metric(&w, step)
        });
        assert!(
            (m - per_min).abs() < 1e-9,
            "{step}: metric {m}, status {per_min}"
        );
    }

    let text = status(&w, &[]);
    for step in ["align", "call"] {
        let line = text.lines().find(|l| l.starts_with(step)).expect(&text);
        assert!(line.ends_with("finished, 1 failed"), "{text}");
    }
    assert!(text.contains("controller anamo ("), "{text}");
    assert!(!text.contains("warning"), "{text}");

    // A rejected manifest change: the controller keeps going, `status` says so.
    break_manifest(w.dir.path());
    wait_for(
        "the rejection in /api/status",
        Duration::from_secs(60),
        || w.status()["manifest_error"].as_str().map(str::to_string),
    );
    let text = wait_for("the rejection in status", Duration::from_secs(30), || {
        let t = status(&w, &[]);
        t.contains("a manifest change was rejected").then_some(t)
    });
    assert!(text.contains("fleets.yaml"), "{text}");
    assert!(text.contains("maxInstances"), "{text}");

    // `--watch` into a file (not a terminal): plain frames, one after the other, until Ctrl-C.
    let out_path = w.dir.path().join("watch.out");
    let mut watch = ProcessGuard::spawn(
        "anamo status --watch",
        Command::new(env!("CARGO_BIN_EXE_anamo"))
            .env_remove("ANAMO_STORE")
            .args(["--store", &w.store_url, "status", "--watch"])
            .args(["--interval", "200ms"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).unwrap()),
    );
    let frames = wait_for("two --watch frames", Duration::from_secs(60), || {
        let t = std::fs::read_to_string(&out_path).unwrap_or_default();
        // A frame is complete once the next one has started.
        (t.matches("--- anamo status at ").count() >= 3).then_some(t)
    });
    assert!(!frames.contains('\x1b'), "no terminal codes into a file");
    let frames: Vec<&str> = frames
        .split("--- anamo status at ")
        .skip(1)
        .take(2)
        .collect();
    for f in &frames {
        assert!(f.contains("finished, 1 failed"), "{f}");
        assert!(f.contains("\nFLEET"), "{f}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let ended = wait_for("--watch to end on Ctrl-C", Duration::from_secs(30), || {
        watch.try_wait()
    });
    assert!(ended.success(), "--watch ended with {ended}");

    // The controller stops (SIGTERM): its fleets are no longer "Ready" but stale. (A
    // controller that dies or hangs says nothing; then its report's age, more than 3
    // intervals, gives it away: see `cli::status_view`'s tests.)
    w.stop();
    let text = status(&w, &[]);
    assert!(
        text.contains("warning: controller anamo (") && text.contains(" stopped "),
        "{text}"
    );
    assert!(text.contains("stale (was: "), "{text}");
    let json: Value = serde_json::from_str(&status(&w, &["--json"])).unwrap();
    assert_eq!(json["controllers"][0]["stale"], true, "{json}");
}
