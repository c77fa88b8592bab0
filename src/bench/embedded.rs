//! Embedded mode against the physical limit: `anamo up` on trivial tasks, and `xargs -P`
//! spawning `sh -c true` for the same list with the same parallelism.

use std::process::Stdio;
use std::time::Instant;

use serde::Serialize;
use serde_json::json;
use tokio::process::Command;

use super::dispatch::TempDir;
use super::{BenchConfig, Row};

#[derive(Debug, Serialize)]
struct Embedded {
    tasks: u64,
    slots: u32,
    up_seconds: f64,
    xargs_seconds: f64,
    ratio: f64,
}

pub(super) async fn run(cfg: &BenchConfig) -> anyhow::Result<(Vec<Row>, serde_json::Value)> {
    let dir = TempDir::new("anamo-bench-up")?;
    let (n, slots) = (cfg.up_tasks, cfg.up_slots);
    let manifest = format!(
        "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: bench\nspec:\n  step: bench\n  \
         provider:\n    local: {{}}\n  maxInstances: 1\n  slotsPerInstance: {slots}\n  \
         scaleDownDelay: 1s\n"
    );
    let manifest_path = dir.0.join("fleet.yaml");
    std::fs::write(&manifest_path, manifest)?;
    let mut tasks = String::new();
    let mut ids = String::new();
    for i in 0..n {
        tasks.push_str(&format!("t{i:07}\tbench\ttrue\n"));
        ids.push_str(&format!("t{i:07}\n"));
    }
    let tasks_path = dir.0.join("tasks.tsv");
    std::fs::write(&tasks_path, tasks)?;
    let ids_path = dir.0.join("ids.txt");
    std::fs::write(&ids_path, ids)?;

    // anamo up: import, scale up, run everything, stop the worker, exit. `--linger 0s`: the
    // wait for the fleet to scale back down (a display of the controller at work, 60 s at
    // most by default) is not part of getting the work done.
    let started = Instant::now();
    let out = Command::new(&cfg.exe)
        .arg("--store")
        .arg(format!("sqlite://{}", dir.0.join("anamo.db").display()))
        .arg("up")
        .arg("--manifests")
        .arg(&manifest_path)
        .arg("--tasks")
        .arg(&tasks_path)
        .arg("--fresh")
        .args(["--interval", "1s", "--linger", "0s", "--json"])
        .arg("--log-dir")
        .arg(dir.0.join("logs"))
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .output()
        .await?;
    let up_seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        anyhow::bail!(
            "anamo up failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The physical limit: spawning the same number of `sh -c true` with the same parallelism.
    let started = Instant::now();
    let status = Command::new("xargs")
        .arg("-P")
        .arg(slots.to_string())
        .args(["-n1", "sh", "-c", "true"])
        .stdin(std::fs::File::open(&ids_path)?)
        .stdout(Stdio::null())
        .status()
        .await?;
    let xargs_seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        anyhow::bail!("xargs failed: {status}");
    }
    let e = Embedded {
        tasks: n,
        slots,
        up_seconds,
        xargs_seconds,
        ratio: up_seconds / xargs_seconds.max(1e-9),
    };
    let row = Row::new(
        format!("anamo up, {n} `true` tasks, 1 local worker × {slots} slots"),
        format!("{:.1} s ({:.0} tasks/s)", up_seconds, n as f64 / up_seconds),
    )
    .reference(format!(
        "xargs -P {slots} -n1 sh -c true: {:.1} s ({:.0}/s)",
        xargs_seconds,
        n as f64 / xargs_seconds.max(1e-9)
    ))
    .ratio(e.ratio)
    .goal("≤ 1.5×", e.ratio <= 1.5)
    .note("whole command: start, import, scale up, run, stop the worker (--linger 0s, 1 s controller interval)");
    Ok((vec![row], json!(e)))
}
