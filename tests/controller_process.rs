//! `anamo controller` as a process: serves its endpoints, runs a workload with local workers,
//! and on SIGTERM gives up, drains its workers and exits 0.

mod common;

use common::cli;
use common::http::{free_port, get};
use common::process::{terminate, Kill};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FLEET: &str = "apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: work
spec:
  step: work
  provider:
    local: {}
  minInstances: 1
  maxInstances: 2
  slotsPerInstance: 2
  scaleDownDelay: 1s
  leaseTTL: 5s
";

fn workers_of(store: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .map(|c| {
                    let c = String::from_utf8_lossy(&c).replace('\0', " ");
                    c.contains(store) && c.contains(" worker ")
                })
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn controller_serves_runs_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::write(dir.path().join("manifests/work.yaml"), FLEET).unwrap();
    let store = format!("sqlite://{}", dir.path().join("c.db").display());
    let anamo = env!("CARGO_BIN_EXE_anamo");
    let mut tasks = String::new();
    for i in 0..6 {
        tasks.push_str(&format!("t{i}\twork\tsleep 0.2\n"));
    }
    std::fs::write(dir.path().join("tasks.tsv"), tasks).unwrap();
    cli::ok(&cli::anamo(
        dir.path(),
        &store,
        &["task", "import", "tasks.tsv"],
    ));
    let port = free_port();
    let child = Command::new(anamo)
        .current_dir(dir.path())
        .args([
            "--store",
            &store,
            "controller",
            "--manifests",
            "manifests",
            "--interval",
            "1s",
            "--progress-interval",
            "1s",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some((200, body)) = get(port, "/readyz") {
            assert!(body.contains("ready"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "controller never became ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));
    // The workload finishes; the fleet keeps its minimum of one instance.
    loop {
        let (code, body) = get(port, "/api/status").expect("status");
        assert_eq!(code, 200);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let done = v["steps"]
            .as_array()
            .and_then(|s| s.first())
            .is_some_and(|s| s["succeeded"] == 6);
        if done && v["fleets"][0]["actual"] == 1 {
            assert_eq!(v["role"], "leader");
            break;
        }
        assert!(Instant::now() < deadline, "workload did not finish: {v}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let metrics = get(port, "/metrics").unwrap().1;
    assert!(
        metrics.contains("anamo_tasks{state=\"succeeded\",step=\"work\"} 6"),
        "{metrics}"
    );
    assert_eq!(workers_of(&store), 1, "minInstances keeps one worker");
    // SIGTERM: the controller drains its workers and exits 0.
    let status = terminate(&mut child.0, Duration::from_secs(30), "controller");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        workers_of(&store),
        0,
        "workers were stopped with the controller"
    );
}
