//! `anamo worker --metrics-addr`: the worker serves `/metrics` with the per-step task
//! durations (by outcome) and claim conflicts of the attempts it ran.

mod common;

use common::cli;
use common::http::{free_port, get};
use common::process::{terminate, Kill};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The value of the sample line starting with `series ` (exact series, labels in order).
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn worker_serves_task_durations_and_claim_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("w.db").display());
    let anamo = env!("CARGO_BIN_EXE_anamo");
    let step = "metered";
    let mut tasks = String::new();
    for i in 0..3 {
        tasks.push_str(&format!(
            r#"{{"id":"ok{i}","step":"{step}","script":"true","max_attempts":1}}"#
        ));
        tasks.push('\n');
    }
    for i in 0..2 {
        tasks.push_str(&format!(
            r#"{{"id":"bad{i}","step":"{step}","script":"false","max_attempts":1}}"#
        ));
        tasks.push('\n');
    }
    tasks.push_str(&format!(
        r#"{{"id":"slow","step":"{step}","script":"sleep 30","max_attempts":1,"timeout_secs":1}}"#
    ));
    tasks.push('\n');
    std::fs::write(dir.path().join("tasks.jsonl"), tasks).unwrap();
    cli::ok(&cli::anamo(
        dir.path(),
        &store,
        &["task", "import", "tasks.jsonl"],
    ));

    let port = free_port();
    let child = Command::new(anamo)
        .current_dir(dir.path())
        .env("ANAMO_METRICS_ADDR", format!("127.0.0.1:{port}"))
        .args(["--store", &store, "worker", "--step", step])
        .args(["--slots", "2", "--poll-interval", "100ms"])
        .args(["--idle-exit", "20s", "--imds-endpoint", "off"])
        .args(["--log-dir", "logs"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);

    let count = |body: &str, outcome: &str| {
        sample(
            body,
            &format!("anamo_task_duration_seconds_count{{outcome=\"{outcome}\",step=\"{step}\"}}"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let body = loop {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "the worker exited early"
        );
        if let Some((200, body)) = get(port, "/metrics") {
            if count(&body, "timeout").is_some() && count(&body, "succeeded") == Some(3.0) {
                break body;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not publish its task durations in time"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(count(&body, "succeeded"), Some(3.0), "{body}");
    assert_eq!(count(&body, "failed"), Some(2.0), "{body}");
    assert_eq!(count(&body, "timeout"), Some(1.0), "{body}");
    assert_eq!(count(&body, "lease_lost"), None, "{body}");
    let slow = sample(
        &body,
        &format!("anamo_task_duration_seconds_sum{{outcome=\"timeout\",step=\"{step}\"}}"),
    )
    .unwrap();
    assert!((0.9..30.0).contains(&slow), "{body}");
    // SQLite claims are one statement: they never lose a race, but the series is there.
    assert_eq!(
        sample(
            &body,
            &format!("anamo_claim_conflicts_total{{step=\"{step}\"}}")
        ),
        Some(0.0),
        "{body}"
    );
    // Only the worker's own metrics: no controller series that would read as a stale one.
    assert!(!body.contains("anamo_last_successful_reconcile"), "{body}");
    assert!(!body.contains("anamo_leader"), "{body}");
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));

    // The endpoint goes away with the worker.
    let status = terminate(&mut child.0, Duration::from_secs(30), "the worker");
    assert!(status.success(), "{status}");
    assert!(get(port, "/metrics").is_none());
}

#[test]
fn worker_refuses_a_busy_metrics_addr() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("w.db").display());
    // A worker needs a store that exists (it never creates one).
    let created = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args(["--store", &store, "table", "create"])
        .status()
        .unwrap();
    assert!(created.success());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .current_dir(dir.path())
        .args(["--store", &store, "worker", "--step", "metered"])
        .args(["--metrics-addr", &addr, "--imds-endpoint", "off"])
        .args(["--log-dir", "logs", "--idle-exit", "1s"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot serve metrics on"), "{err}");
}
