//! End to end: `anamo up` runs the shipped example (controller + local worker processes on
//! SQLite) to completion — every output file of its align → call (scattered) → joint
//! (gathered per region) → merge data flow checked — and survives a worker killed with -9.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn anamo(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    c.current_dir(dir)
        .env_remove("ANAMO_STORE")
        .env("RUST_LOG", "warn");
    c
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A temporary directory holding (a link to) the shipped `examples/`, as a user's checkout
/// does: the example's tasks run `sh examples/scripts/...` from the working directory.
fn example_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo().join("examples"), dir.path().join("examples")).unwrap();
    dir
}

/// The example's samples (the `align` lines of tasks.tsv) and regions (regions.txt).
fn samples_and_regions() -> (Vec<String>, Vec<String>) {
    let examples = repo().join("examples");
    let samples = lines(&examples.join("tasks.tsv"))
        .into_iter()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split('\t');
            let id = f.next()?.to_string();
            (f.next() == Some("align")).then_some(id)
        })
        .collect();
    let regions = lines(&examples.join("regions.txt"))
        .into_iter()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    (samples, regions)
}

fn up_example(dir: &Path) -> (serde_json::Value, String) {
    let out = anamo(dir)
        .args(["up", "--json", "--manifests", "examples/manifests"])
        .args(["--tasks", "examples/tasks.tsv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "anamo up failed: {stderr}");
    (serde_json::from_slice(&out.stdout).unwrap(), stderr)
}

/// Every file the example's scripts write, with the contents its data flow implies: each
/// sample's alignment, each sample's call per region, each region's joint call set over
/// every sample, and the merged set with its summary.
fn check_example_outputs(out: &Path, samples: &[String], regions: &[String]) {
    for s in samples {
        let bam = std::fs::read_to_string(out.join(format!("align/{s}.bam"))).unwrap();
        assert!(bam.starts_with(&format!("sample\t{s}\n")), "{s}: {bam}");
        for r in regions {
            let vcf = std::fs::read_to_string(out.join(format!("call/{s}/{r}.vcf"))).unwrap();
            assert!(vcf.starts_with(&format!("{r}\t{s}\t")), "{s}/{r}: {vcf}");
        }
    }
    for r in regions {
        let joint = lines(&out.join(format!("joint/{r}.vcf")));
        let n = samples.len();
        assert_eq!(joint[0], format!("#region\t{r}\tsamples\t{n}"), "{joint:?}");
        let mut got: Vec<&str> = joint[1..]
            .iter()
            .map(|l| l.split('\t').nth(1).unwrap())
            .collect();
        got.sort_unstable();
        let mut want: Vec<&str> = samples.iter().map(String::as_str).collect();
        want.sort_unstable();
        assert_eq!(got, want, "joint/{r} holds every sample once");
    }
    let merged = lines(&out.join("merged.vcf"));
    let headers: Vec<&str> = merged
        .iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| l.split('\t').nth(1).unwrap())
        .collect();
    assert_eq!(headers, regions, "merged.vcf holds the regions in order");
    assert_eq!(merged.len(), regions.len() * (samples.len() + 1));
    let summary = std::fs::read_to_string(out.join("summary.txt")).unwrap();
    assert_eq!(
        summary,
        format!(
            "regions\t{}\tsamples\t{}\tgenotypes\t{}\n",
            regions.len(),
            samples.len(),
            regions.len() * samples.len()
        )
    );
}

#[test]
fn up_runs_the_example_pipeline_once_in_dependency_order() {
    let dir = example_dir();
    let (samples, regions) = samples_and_regions();
    assert!(
        samples.len() >= 10 && regions.len() >= 2,
        "{samples:?} {regions:?}"
    );
    let (summary, stderr) = up_example(dir.path());
    let (n, r) = (samples.len() as u64, regions.len() as u64);
    let expected = [("align", n), ("call", n * r), ("joint", r), ("merge", 1)];
    let steps = summary["steps"].as_array().unwrap();
    assert_eq!(steps.len(), expected.len(), "{summary}");
    for (step, total) in expected {
        let row = steps
            .iter()
            .find(|s| s["step"] == step)
            .unwrap_or_else(|| panic!("no step {step}: {summary}"));
        assert_eq!(row["succeeded"], total, "{row}\n{stderr}");
        assert_eq!(row["failed"], 0, "{row}");
        assert_eq!(row["cancelled"], 0, "{row}");
    }
    // Each script checks its inputs (call: the sample's alignment; joint: every listed call;
    // merge: every region's joint set), so every task succeeding at its first attempt means
    // the order held and each got what it needed.
    check_example_outputs(&dir.path().join("anamo-out"), &samples, &regions);
    let list = anamo(dir.path())
        .args(["task", "list", "--json"])
        .output()
        .unwrap();
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout).unwrap();
    let retried: Vec<String> = tasks
        .iter()
        .filter(|t| t["attempts"] != 1)
        .map(|t| format!("{}/{}: {}", t["step"], t["id"], t["attempts"]))
        .collect();
    assert!(retried.is_empty(), "tasks that needed a retry: {retried:?}");
    let runs = lines(&dir.path().join("anamo-out/joint/runs.log"));
    let mut sorted_runs = runs.clone();
    sorted_runs.sort_unstable();
    let mut sorted_regions = regions.clone();
    sorted_regions.sort_unstable();
    assert_eq!(
        sorted_runs, sorted_regions,
        "every joint task ran exactly once"
    );
    for fleet in ["align", "call", "joint", "merge"] {
        let f = &summary["fleets"][fleet];
        assert!(
            f["peak_instances"].as_u64().unwrap() >= 1,
            "{fleet} scaled up from 0: {f}"
        );
        assert_eq!(
            f["final_instances"], f["min_instances"],
            "{fleet} scaled back down: {f}"
        );
        assert!(f["terminations"].as_u64().unwrap() >= 1, "{fleet}: {f}");
    }
    // Running it again changes nothing: every task is already done.
    let (again, _) = up_example(dir.path());
    assert_eq!(again["steps"], summary["steps"]);
    assert_eq!(lines(&dir.path().join("anamo-out/joint/runs.log")), runs);
}

/// The shipped example manifests with tasks of the first step that take seconds, as real
/// ones do: `call` gets its work in two bursts, one per wave of `align` tasks, and its
/// workers sit idle in between. The shipped `scaleDownDelay` rides that gap out instead of
/// terminating the workers only to launch them again for the next burst.
#[test]
fn the_example_fleets_do_not_flap_between_bursts_of_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut tasks = String::new();
    // 12 samples on 6 align slots: two waves of 6-second tasks; `call` is scattered over
    // the example's regions, `joint` gathers per region and `merge` once.
    for i in 0..12 {
        tasks.push_str(&format!("S{i:02}\talign\tsleep 6\n"));
        tasks.push_str(&format!("S{i:02}\tcall\tsleep 0.1\n"));
    }
    let (_, regions) = samples_and_regions();
    for r in &regions {
        tasks.push_str(&format!("{r}\tjoint\ttrue\n"));
    }
    tasks.push_str("all\tmerge\ttrue\n");
    std::fs::write(dir.path().join("tasks.tsv"), tasks).unwrap();
    let out = anamo(dir.path())
        .args(["up", "--json", "--manifests"])
        .arg(repo().join("examples/manifests"))
        .args(["--tasks", "tasks.tsv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "anamo up failed: {stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = regions.len() as u64;
    let expected = [("align", 12), ("call", 12 * r), ("joint", r), ("merge", 1)];
    let steps = summary["steps"].as_array().unwrap();
    for (step, total) in expected {
        let row = steps.iter().find(|s| s["step"] == step).unwrap();
        assert_eq!(row["succeeded"], total, "{row}");
    }
    for fleet in ["align", "call", "joint"] {
        let f = &summary["fleets"][fleet];
        assert_eq!(
            f["launches"], f["peak_instances"],
            "{fleet} was scaled down between bursts and launched again: {f}"
        );
        assert_eq!(f["final_instances"], 0, "{fleet} scaled back down: {f}");
    }
}

const ONE_STEP: &str = "apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: work
spec:
  step: work
  provider:
    local: {}
  maxInstances: 2
  slotsPerInstance: 2
  scaleDownDelay: 1s
  leaseTTL: 3s
  heartbeat: 1s
";

/// Pids of worker processes whose command line mentions `needle`.
fn worker_pids(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) && cmd.contains(" worker ") {
            pids.push(pid);
        }
    }
    pids
}

#[test]
fn a_worker_killed_with_sigkill_has_its_task_requeued_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("work.yaml"), ONE_STEP).unwrap();
    let mut tasks = String::new();
    for i in 0..12 {
        tasks.push_str(&format!(
            "t{i:02}\twork\techo $ANAMO_TASK_ID $PPID >> started.log; sleep 2; echo $ANAMO_TASK_ID >> done.log\n"
        ));
    }
    std::fs::write(dir.path().join("tasks.tsv"), tasks).unwrap();
    let db = dir.path().join("kill.db");
    let store = format!("sqlite://{}", db.display());
    let up = anamo(dir.path())
        .args([
            "--store",
            &store,
            "up",
            "--json",
            "--manifests",
            "manifests",
            "--tasks",
            "tasks.tsv",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until a worker runs a task (a task's parent is its worker: `$PPID` in
    // started.log), then kill that busy worker hard.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        let done = lines(&dir.path().join("done.log"));
        let pids = worker_pids(&store);
        let busy = lines(&dir.path().join("started.log"))
            .iter()
            .filter_map(|l| l.split_once(' '))
            .filter(|(task, _)| !done.iter().any(|d| d == task))
            .filter_map(|(_, ppid)| ppid.parse::<i32>().ok())
            .find(|ppid| pids.contains(ppid));
        if let Some(pid) = busy {
            break pid;
        }
        assert!(Instant::now() < deadline, "no worker ran a task");
        std::thread::sleep(Duration::from_millis(100));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "anamo up failed after a worker was killed: {stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["steps"][0]["succeeded"], 12, "{summary}");
    // Every task finished; the killed worker's task(s) were started again after the lease
    // expired. (Its orphaned script may also have finished: at least once, by design.)
    let done = lines(&dir.path().join("done.log"));
    let started = lines(&dir.path().join("started.log"));
    assert_eq!(done.iter().collect::<HashSet<_>>().len(), 12, "{done:?}");
    assert!(
        started.len() > 12,
        "the killed worker's task was started again after its lease expired: {started:?}"
    );
    // Its result was recorded once, by the second attempt.
    let list = anamo(dir.path())
        .args(["--store", &store, "task", "list", "--json"])
        .output()
        .unwrap();
    let tasks: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let retried: Vec<&serde_json::Value> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["attempts"].as_u64() == Some(2))
        .collect();
    assert!(!retried.is_empty(), "{tasks}");
    for t in retried {
        assert_eq!(t["state"], "succeeded");
        assert_eq!(t["result"]["exit_code"], 0);
    }
}
