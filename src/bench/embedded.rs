//! Embedded mode against the physical limit: `anamo up` on trivial tasks, and `xargs -P`
//! spawning `sh -c true` for the same list with the same parallelism.

use std::path::{Path, PathBuf};
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
    let files = write_inputs(&dir, n, slots)?;
    let up_seconds = time_up(cfg, &dir, &files).await?;
    let xargs_seconds = time_xargs(slots, &files.ids).await?;
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

/// The files both runs read.
struct Inputs {
    /// One local fleet with `slots` slots.
    manifest: PathBuf,
    /// `n` tasks running `true`.
    tasks: PathBuf,
    /// The same tasks' ids, one a line, for xargs.
    ids: PathBuf,
}

fn write_inputs(dir: &TempDir, n: u64, slots: u32) -> anyhow::Result<Inputs> {
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
    Ok(Inputs {
        manifest: manifest_path,
        tasks: tasks_path,
        ids: ids_path,
    })
}

/// Seconds `anamo up` takes: import, scale up, run everything, stop the worker, exit.
/// `--linger 0s`: the wait for the fleet to scale back down (a display of the controller at
/// work, 60 s at most by default) is not part of getting the work done.
async fn time_up(cfg: &BenchConfig, dir: &TempDir, files: &Inputs) -> anyhow::Result<f64> {
    let started = Instant::now();
    let out = Command::new(&cfg.exe)
        .arg("--store")
        .arg(format!("sqlite://{}", dir.0.join("anamo.db").display()))
        .arg("up")
        .arg("--manifests")
        .arg(&files.manifest)
        .arg("--tasks")
        .arg(&files.tasks)
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
    Ok(up_seconds)
}

/// The physical limit: seconds spawning the same number of `sh -c true` with the same
/// parallelism takes.
async fn time_xargs(slots: u32, ids: &Path) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = Command::new("xargs")
        .arg("-P")
        .arg(slots.to_string())
        .args(["-n1", "sh", "-c", "true"])
        .stdin(std::fs::File::open(ids)?)
        .stdout(Stdio::null())
        .status()
        .await?;
    let xargs_seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        anyhow::bail!("xargs failed: {status}");
    }
    Ok(xargs_seconds)
}
