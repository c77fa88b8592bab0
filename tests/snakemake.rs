//! The Snakemake executor plugin (integrations/snakemake) with the real Snakemake from
//! `scripts/test-services` (`ANAMO_TEST_SNAKEMAKE`): the example workflow (per-sample scatter,
//! gather, report) run with `--executor anamo` against `anamo controller` and local workers,
//! on SQLite and on DynamoDB Local, gives byte for byte the outputs of a plain
//! `snakemake --cores 1` run; a failing job is reported with its reason and output; a worker
//! killed mid-job has its task requeued and Snakemake still finishes; Ctrl-C of Snakemake cancels
//! its tasks; and the plugin's own pytest suite passes.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use common::http::free_port;
use common::process::{run_with_timeout, ProcessGuard};
use common::services;
use common::wait::wait_for;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

/// Hang guard for one workflow run (it takes a few tens of seconds on a busy machine).
const RUN_LIMIT: Duration = Duration::from_secs(600);
const ANAMO: &str = env!("CARGO_BIN_EXE_anamo");

fn plugin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/snakemake")
}

fn snakemake_bin() -> Option<PathBuf> {
    services::tool(
        "ANAMO_TEST_SNAKEMAKE",
        "Snakemake with the anamo executor plugin",
        None,
    )
}

/// A copy of the example workflow and its manifests in a fresh directory, a store, and the
/// environment every anamo and Snakemake process of the test gets.
struct Workflow {
    dir: tempfile::TempDir,
    store: String,
    env: Vec<(String, String)>,
    snakemake: PathBuf,
}

impl Workflow {
    fn new(snakemake: &Path, store: Option<(String, Vec<(String, String)>)>) -> Workflow {
        let dir = tempfile::tempdir().expect("tempdir");
        let example = plugin_dir().join("example");
        std::fs::copy(example.join("Snakefile"), dir.path().join("Snakefile")).unwrap();
        std::fs::create_dir(dir.path().join("manifests")).unwrap();
        for f in std::fs::read_dir(example.join("manifests")).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(
                &f,
                dir.path().join("manifests").join(f.file_name().unwrap()),
            )
            .unwrap();
        }
        let (store, env) = store.unwrap_or_else(|| {
            (
                format!("sqlite://{}", dir.path().join("tasks.db").display()),
                Vec::new(),
            )
        });
        let wf = Workflow {
            dir,
            store,
            env,
            snakemake: snakemake.to_path_buf(),
        };
        let (st, _, err) = run_with_timeout(
            "anamo table create",
            wf.anamo().args(["table", "create"]),
            Duration::from_secs(120),
        );
        assert!(st.success(), "anamo table create failed: {err}");
        wf
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn anamo(&self) -> Command {
        let mut c = Command::new(ANAMO);
        c.current_dir(self.path())
            .envs(self.env.iter().cloned())
            .args(["--store", &self.store]);
        c
    }

    fn controller(&self) -> ProcessGuard {
        let log = std::fs::File::create(self.path().join("controller.log")).unwrap();
        let port = free_port().to_string();
        ProcessGuard::spawn(
            "anamo controller",
            self.anamo()
                .args(["controller", "--manifests", "manifests", "--interval", "1s"])
                .args(["--progress-interval", "1s", "--log-dir", "anamo-logs"])
                .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
        )
    }

    /// `snakemake --executor anamo` with the example's step mapping, plus `extra`.
    fn snakemake(&self, extra: &[&str]) -> Command {
        let mut c = Command::new(&self.snakemake);
        c.current_dir(self.path())
            .envs(self.env.iter().cloned())
            .args(["--executor", "anamo", "--jobs", "4", "--latency-wait", "10"])
            .args([
                "--seconds-between-status-checks",
                "1",
                "--anamo-binary",
                ANAMO,
            ])
            .args([
                "--anamo-store",
                &self.store,
                "--anamo-steps",
                "gather=summary",
            ])
            .args(extra);
        c
    }

    fn run_snakemake(&self, extra: &[&str]) -> (ExitStatus, String) {
        let (st, out, err) = run_with_timeout("snakemake", &mut self.snakemake(extra), RUN_LIMIT);
        (st, format!("{out}{err}"))
    }

    fn tasks(&self) -> Vec<Value> {
        let (st, out, err) = run_with_timeout(
            "anamo task list",
            self.anamo().args(["task", "list", "--json"]),
            Duration::from_secs(60),
        );
        assert!(st.success(), "anamo task list failed: {err}");
        serde_json::from_str(&out).expect("task list JSON")
    }

    fn task(&self, step: &str, id: &str) -> Option<Value> {
        self.tasks()
            .into_iter()
            .find(|t| t["step"] == step && t["id"] == id)
    }

    fn controller_log(&self) -> String {
        std::fs::read_to_string(self.path().join("controller.log")).unwrap_or_default()
    }
}

/// The example's outputs from a plain local `snakemake --cores 1` run.
fn local_outputs(snakemake: &Path) -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        plugin_dir().join("example/Snakefile"),
        dir.path().join("Snakefile"),
    )
    .unwrap();
    let (st, out, err) = run_with_timeout(
        "snakemake --cores 1",
        Command::new(snakemake)
            .current_dir(dir.path())
            .args(["--cores", "1"]),
        RUN_LIMIT,
    );
    assert!(st.success(), "local snakemake failed:\n{out}{err}");
    outputs(dir.path())
}

const OUTPUTS: [&str; 5] = [
    "results/counts/S1.tsv",
    "results/counts/S2.tsv",
    "results/counts/S3.tsv",
    "results/all.tsv",
    "results/report.txt",
];

fn outputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    OUTPUTS
        .iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(f))
                .unwrap_or_else(|e| panic!("{f} missing in {}: {e}", dir.display()));
            (f.to_string(), bytes)
        })
        .collect()
}

/// Runs the example on `wf` and checks outputs and tasks.
fn run_example_and_compare(wf: &Workflow, snakemake: &Path) {
    let expected = local_outputs(snakemake);
    let _controller = wf.controller();
    let (st, log) = wf.run_snakemake(&[]);
    assert!(
        st.success(),
        "snakemake --executor anamo failed:\n{log}\ncontroller:\n{}",
        wf.controller_log()
    );
    assert_eq!(
        outputs(wf.path()),
        expected,
        "outputs differ from a local run"
    );
    let mut done: Vec<(String, String, String)> = wf
        .tasks()
        .iter()
        .map(|t| {
            (
                t["step"].as_str().unwrap_or_default().to_string(),
                t["id"].as_str().unwrap_or_default().to_string(),
                t["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    done.sort();
    let want: Vec<(String, String, String)> = [
        ("count", "sample=S1"),
        ("count", "sample=S2"),
        ("count", "sample=S3"),
        ("summary", "gather"),
        ("summary", "report"),
    ]
    .iter()
    .map(|(s, i)| (s.to_string(), i.to_string(), "succeeded".to_string()))
    .collect();
    assert_eq!(done, want, "one succeeded task per job, steps as mapped");
}

#[test]
fn example_workflow_on_sqlite_matches_a_local_run() {
    let Some(snakemake) = snakemake_bin() else {
        return;
    };
    let wf = Workflow::new(&snakemake, None);
    run_example_and_compare(&wf, &snakemake);
}

#[test]
fn example_workflow_on_dynamodb_local_matches_a_local_run() {
    let Some(snakemake) = snakemake_bin() else {
        return;
    };
    let Some(endpoint) = common::dynamo_endpoint() else {
        return;
    };
    let table = common::unique_name("anamo-snakemake");
    let env = vec![("AWS_ENDPOINT_URL".to_string(), endpoint)];
    let wf = Workflow::new(&snakemake, Some((format!("dynamodb://{table}"), env)));
    run_example_and_compare(&wf, &snakemake);
}

#[test]
fn failing_job_is_reported_with_its_reason_and_output() {
    let Some(snakemake) = snakemake_bin() else {
        return;
    };
    let wf = Workflow::new(&snakemake, None);
    let _controller = wf.controller();
    let (st, log) = wf.run_snakemake(&["--config", "fail=S2"]);
    assert!(!st.success(), "the workflow must fail:\n{log}");
    assert!(
        log.contains("anamo task count/sample=S2 failed"),
        "no failure report for S2:\n{log}"
    );
    assert!(log.contains("exit 3"), "no reason in the report:\n{log}");
    assert!(
        log.contains("count: no reads for S2"),
        "no output tail in the report:\n{log}"
    );
    let task = wf.task("count", "sample=S2").expect("task of S2");
    assert_eq!(task["state"], "failed");
    // A non-zero exit fails at once: Snakemake, not anamo, retries jobs.
    assert_eq!(task["attempts"], 1, "{task}");
}

/// Pids of the local workers of `step` on the store at `path` (from /proc).
fn workers_of(path: &Path, step: &str) -> Vec<i32> {
    let needle = path.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<i32>().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains(&needle)
                && cmd.contains(" worker ")
                && cmd.contains(&format!(" {step} ")))
            .then_some(pid)
        })
        .collect()
}

fn wait_running(wf: &Workflow, step: &str, id: &str) {
    wait_for(&format!("{step}/{id} running"), RUN_LIMIT, || {
        wf.task(step, id)
            .filter(|t| t["state"] == "running")
            .map(|_| ())
    });
}

#[test]
fn killed_worker_mid_job_is_requeued_and_snakemake_finishes() {
    let Some(snakemake) = snakemake_bin() else {
        return;
    };
    let expected = local_outputs(&snakemake);
    let wf = Workflow::new(&snakemake, None);
    let _controller = wf.controller();
    let log = std::fs::File::create(wf.path().join("snakemake.log")).unwrap();
    let mut sm = ProcessGuard::spawn(
        "snakemake",
        wf.snakemake(&["--config", "slow=S1", "slow_secs=20"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    wait_running(&wf, "count", "sample=S1");
    let workers = workers_of(wf.path(), "count");
    assert!(!workers.is_empty(), "no worker of step count found");
    for pid in workers {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let status = wait_for("snakemake to finish", RUN_LIMIT, || sm.try_wait());
    let log = std::fs::read_to_string(wf.path().join("snakemake.log")).unwrap_or_default();
    assert!(
        status.success(),
        "snakemake failed after the worker was killed:\n{log}"
    );
    assert_eq!(
        outputs(wf.path()),
        expected,
        "outputs differ from a local run"
    );
    let task = wf.task("count", "sample=S1").expect("task of S1");
    assert_eq!(task["state"], "succeeded");
    assert_eq!(
        task["attempts"], 2,
        "the killed attempt and the rerun: {task}"
    );
}

/// Ctrl-C of Snakemake (SIGINT to its process group, as a terminal sends it) cancels the tasks it submitted: the running one
/// ends `cancelled` and its process is stopped, none stays pending or running.
#[test]
fn ctrl_c_of_snakemake_cancels_its_tasks() {
    let Some(snakemake) = snakemake_bin() else {
        return;
    };
    let wf = Workflow::new(&snakemake, None);
    let _controller = wf.controller();
    let log = std::fs::File::create(wf.path().join("snakemake.log")).unwrap();
    let mut sm = ProcessGuard::spawn(
        "snakemake",
        wf.snakemake(&["--config", "slow=S1", "slow_secs=300"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    wait_running(&wf, "count", "sample=S1");
    kill(Pid::from_raw(-(sm.pid() as i32)), Signal::SIGINT).expect("SIGINT to snakemake's group");
    let status = wait_for("snakemake to stop", RUN_LIMIT, || sm.try_wait());
    let log = std::fs::read_to_string(wf.path().join("snakemake.log")).unwrap_or_default();
    assert!(
        !status.success(),
        "snakemake succeeded after Ctrl-C:\n{log}"
    );
    let task = wf.task("count", "sample=S1").expect("task of S1");
    assert_eq!(task["state"], "cancelled", "after Ctrl-C: {task}\n{log}");
    let live: Vec<Value> = wf
        .tasks()
        .into_iter()
        .filter(|t| ["waiting", "pending", "running"].contains(&t["state"].as_str().unwrap_or("")))
        .collect();
    assert!(
        live.is_empty(),
        "tasks left to run after Ctrl-C: {live:?}\n{log}"
    );
    wait_for("the cancelled task's process to stop", RUN_LIMIT, || {
        (!sleeping_script_running(wf.path())).then_some(())
    });
}

/// Whether a `sleep 300` of the example's slow job still runs.
fn sleeping_script_running(_dir: &Path) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read(e.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " ").trim() == "sleep 300")
            .unwrap_or(false)
    })
}

/// The EC2 fleets the plugin README shows (`example/ec2`) are valid manifests.
#[test]
fn ec2_example_fleets_validate() {
    let dir = plugin_dir().join("example/ec2");
    let (st, out, err) = run_with_timeout(
        "anamo manifest validate",
        Command::new(ANAMO)
            .arg("manifest")
            .arg("validate")
            .arg(&dir),
        Duration::from_secs(60),
    );
    assert!(st.success(), "example/ec2 is not valid: {out}{err}");
    assert!(out.contains("2 fleet(s) and a controller"), "{out}");
}

#[test]
fn plugin_unit_tests_pass() {
    let Some(snakemake) = snakemake_bin() else {
        return;
    };
    let python = snakemake.with_file_name("python");
    let (st, out, err) = run_with_timeout(
        "pytest",
        Command::new(python).current_dir(plugin_dir()).args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests",
        ]),
        Duration::from_secs(300),
    );
    assert!(
        st.success(),
        "the plugin's pytest suite failed:\n{out}{err}"
    );
    assert!(out.contains(" passed"), "pytest ran no test:\n{out}");
}
