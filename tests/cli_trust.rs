//! The CLI never loses or invents data, and refuses input that can never run, through the
//! real binary: `up --fresh` deletes only its own store (or one named with `--yes`), reading
//! commands never create a store, a read-only store serves reads, a killed worker leaves no
//! task processes, oversized, non-UTF-8 and empty inputs are told apart at the door, and an
//! interrupted import says how far it got.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn anamo(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    c.current_dir(dir)
        .env_remove("ANAMO_STORE")
        .env("RUST_LOG", "warn");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    anamo(dir).args(args).output().expect("run anamo")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "anamo failed: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "anamo succeeded: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// Waits (bounded by a hang guard, not a timing assertion) until `cond` holds.
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
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
  maxInstances: 1
  scaleDownDelay: 1s
";

/// A directory with a one-step manifest and a one-task file for `up`.
fn up_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("manifests")).unwrap();
    std::fs::write(dir.path().join("manifests/work.yaml"), ONE_STEP).unwrap();
    std::fs::write(dir.path().join("tasks.tsv"), "t1\twork\ttrue\n").unwrap();
    dir
}

fn up(dir: &Path, store: Option<&str>, extra: &[&str]) -> Output {
    let mut c = anamo(dir);
    if let Some(s) = store {
        // As the walkthrough does: the store comes from the environment.
        c.env("ANAMO_STORE", s);
    }
    c.args([
        "up",
        "--json",
        "--manifests",
        "manifests",
        "--tasks",
        "tasks.tsv",
    ])
    .args(["--interval", "1s", "--linger", "0s"])
    .args(extra)
    .output()
    .expect("run anamo up")
}

#[test]
fn up_fresh_deletes_only_a_store_it_made_or_one_named_with_yes() {
    let dir = up_dir();
    let d = dir.path();
    // The user's own store, made by `table create`, with a task in it.
    ok(&run(
        d,
        &["--store", "sqlite://tasks.db", "table", "create"],
    ));
    ok(&run(
        d,
        &[
            "--store",
            "sqlite://tasks.db",
            "task",
            "add",
            "--step",
            "mine",
            "--id",
            "keep",
            "--",
            "true",
        ],
    ));
    let err = failed(&up(d, Some("sqlite://tasks.db"), &["--fresh"]));
    assert!(
        err.contains("--fresh would delete sqlite://tasks.db")
            && err.contains("did not create")
            && err.contains("--yes"),
        "{err}"
    );
    let show = ["--store", "sqlite://tasks.db", "task", "show"];
    ok(&run(
        d,
        &[&show[..], &["--step", "mine", "--id", "keep"]].concat(),
    ));

    // Named explicitly with --yes: deleted, and said so.
    let out = up(d, Some("sqlite://tasks.db"), &["--fresh", "--yes"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(err.contains("--fresh: deleted tasks.db"), "{err}");
    let gone = run(
        d,
        &[&show[..], &["--step", "mine", "--id", "keep"]].concat(),
    );
    assert!(failed(&gone).contains("not found"));

    // That run made the store anew: a plain --fresh may delete it now.
    let out = up(d, Some("sqlite://tasks.db"), &["--fresh"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("--fresh: deleted tasks.db") && err.contains("created by an earlier"),
        "{err}"
    );
}

#[test]
fn reading_commands_on_a_missing_sqlite_store_create_nothing() {
    let dir = up_dir();
    let d = dir.path();
    let missing_dir = d.join("missing-dir");
    let in_missing_dir = format!("sqlite://{}", missing_dir.join("x.db").display());
    for store in ["sqlite://typo.db", in_missing_dir.as_str()] {
        let commands: [&[&str]; 8] = [
            &["status"],
            &["status", "--json"],
            &["task", "list"],
            &["task", "show", "--step", "a", "--id", "b"],
            &["task", "requeue", "--step", "a", "--state", "failed"],
            &["task", "delete", "--step", "a", "--id", "b"],
            &["table", "delete", "--yes"],
            &["plan", "--manifests", "manifests"],
        ];
        for args in commands {
            let out = run(d, &[&["--store", store][..], args].concat());
            let err = failed(&out);
            let path = store.trim_start_matches("sqlite://");
            assert!(
                err.contains(&format!(
                    "no store at {path}; create it with `anamo table create`"
                )),
                "{args:?}: {err}"
            );
        }
    }
    assert!(!d.join("typo.db").exists(), "no file was created");
    assert!(!missing_dir.exists(), "no directory was created");
    // Creating commands still create.
    ok(&run(d, &["--store", "sqlite://typo.db", "table", "create"]));
    assert!(d.join("typo.db").exists());
}

#[test]
fn a_read_only_store_serves_reads_and_names_itself_in_errors() {
    // A read-only file in a writable directory, and one in a read-only directory (where the
    // WAL's shared-memory file cannot be made either).
    for dir_writable in [true, false] {
        read_only_store_serves_reads(dir_writable);
    }
}

fn read_only_store_serves_reads(dir_writable: bool) {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("ro.db");
    let store = format!("sqlite://{}", db.display());
    let add = |id: &str| -> Vec<String> {
        [
            "--store", &store, "task", "add", "--step", "s", "--id", id, "--", "true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    ok(&anamo(d).args(add("t1")).output().unwrap());
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    mode(&db, 0o444);
    // Root writes whatever the mode says: the reader runs as `nobody` then. /proc/self
    // belongs to the effective user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    mode(
        d,
        match (dir_writable, root) {
            (true, true) => 0o777,
            (true, false) => 0o755,
            (false, _) => 0o555,
        },
    );
    let as_reader = |args: &[String]| {
        let mut c = anamo(d);
        c.args(args);
        if root {
            c.uid(65534).gid(65534);
        }
        c.output().unwrap()
    };
    let reading = |args: &[&str]| {
        let mut all = vec!["--store".to_string(), store.clone()];
        all.extend(args.iter().map(|a| a.to_string()));
        as_reader(&all)
    };
    let status = ok(&reading(&["status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["steps"][0]["pending"], 1, "{v}");
    let list = ok(&reading(&["task", "list", "--ids"]));
    assert_eq!(list.trim(), "t1");
    ok(&reading(&["task", "show", "--step", "s", "--id", "t1"]));
    let err = failed(&as_reader(&add("t2")));
    assert!(
        err.contains(&db.display().to_string()) && err.contains("readonly"),
        "{err}"
    );
    // So that the temporary directory can be removed.
    mode(d, 0o755);
}

#[test]
fn a_worker_killed_with_sigkill_leaves_no_task_processes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = format!("sqlite://{}", d.join("w.db").display());
    let leader = d.join("leader.pid");
    let child = d.join("child.pid");
    let script = format!(
        "sleep 600 & echo $! > {}; echo $$ > {}; wait",
        child.display(),
        leader.display()
    );
    ok(&run(
        d,
        &[
            "--store", &store, "task", "add", "--step", "hold", "--id", "t1", "--", &script,
        ],
    ));
    let mut worker = anamo(d)
        .args(["--store", &store, "worker", "--step", "hold"])
        .args(["--imds-endpoint", "off", "--log-dir", "logs"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read_pid =
        |p: &Path| -> Option<i32> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    wait_for("the task to start", Duration::from_secs(60), || {
        read_pid(&leader).is_some() && read_pid(&child).is_some()
    });
    let pids = [read_pid(&leader).unwrap(), read_pid(&child).unwrap()];
    let _cleanup = KillGroup(pids[0]);
    assert!(pids.iter().all(|p| alive(*p)), "the task runs: {pids:?}");
    worker.kill().unwrap();
    worker.wait().unwrap();
    wait_for(
        "the task's processes to end with their worker",
        Duration::from_secs(60),
        || pids.iter().all(|p| !alive(*p)),
    );
}

/// Kills what is left of a task's process group when the test ends (even when it fails).
struct KillGroup(i32);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// True while `pid` exists and is not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn tasks_execve_would_refuse_are_refused_at_import_and_add() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let store = "sqlite://t.db";
    let big = "x".repeat(200 * 1024);
    std::fs::write(
        d.join("big.tsv"),
        format!("a\tstep\ttrue\nb\tstep\techo ok\nc\tstep\techo\t{big}\n"),
    )
    .unwrap();
    let err = failed(&run(d, &["--store", store, "task", "import", "big.tsv"]));
    assert!(
        err.contains("big.tsv:3: `args[0]` is 204800 bytes; execve accepts at most 131071 bytes"),
        "{err}"
    );
    assert!(err.contains("nothing was imported"), "{err}");
    let list = ok(&run(d, &["--store", store, "task", "list", "--ids"]));
    assert_eq!(list, "", "nothing written");
    // `task add`: arguments the shell passed to anamo, too many together for a task.
    let part = "y".repeat(100 * 1024);
    let mut args = vec![
        "--store", store, "task", "add", "--step", "s", "--id", "i", "--", "echo",
    ];
    args.extend(std::iter::repeat_n(part.as_str(), 12));
    let err = failed(&run(d, &args));
    assert!(err.contains("execve accepts at most"), "{err}");
    assert_eq!(
        ok(&run(d, &["--store", store, "task", "list", "--ids"])),
        ""
    );
}

#[test]
fn non_utf8_task_files_and_manifests_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut tasks = b"a\tstep\ttrue\nb\tstep\techo caf".to_vec();
    tasks.extend_from_slice(&[0xe9, b'\n']);
    std::fs::write(d.join("latin1.tsv"), tasks).unwrap();
    let err = failed(&run(
        d,
        &["--store", "sqlite://t.db", "task", "import", "latin1.tsv"],
    ));
    assert!(err.contains("latin1.tsv:2: not valid UTF-8"), "{err}");

    std::fs::create_dir(d.join("m")).unwrap();
    let mut yaml = ONE_STEP
        .replace("maxInstances: 1", "maxInstances: 1 # caf")
        .into_bytes();
    let at = yaml.iter().position(|b| *b == b'#').unwrap() + 5;
    yaml.insert(at, 0xe9);
    std::fs::write(d.join("m/work.yaml"), yaml).unwrap();
    let err = failed(&run(d, &["manifest", "validate", "m"]));
    assert!(err.contains("work.yaml:9: not valid UTF-8"), "{err}");
}

#[test]
fn an_empty_import_file_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("empty.tsv"), "").unwrap();
    std::fs::write(d.join("comments.tsv"), "# nothing yet\n\n").unwrap();
    for file in ["empty.tsv", "comments.tsv"] {
        let out = run(d, &["--store", "sqlite://t.db", "task", "import", file]);
        ok(&out);
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("warning: {file} has no tasks")),
            "{file}: {err}"
        );
    }
}

/// Ctrl-C mid-import: the import stops between two batches and says how far it got; the same
/// command finishes it. The test holds the database's write lock until the signal is sent, so
/// the signal lands before the import is done on any machine.
#[test]
fn an_interrupted_import_says_how_far_it_got_and_running_it_again_finishes() {
    const N: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("big.db");
    let store = format!("sqlite://{}", db.display());
    let mut tsv = String::with_capacity(N * 40);
    for i in 0..N {
        tsv.push_str(&format!("S{i:06}\talign\tbwa mem ref.fa S{i:06}.fq\n"));
    }
    std::fs::write(d.join("big.tsv"), tsv).unwrap();
    ok(&run(d, &["--store", &store, "table", "create"]));
    let lock = rusqlite::Connection::open(&db).unwrap();
    lock.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut import = anamo(d)
        .args(["--store", &store, "task", "import", "big.tsv"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(import.stderr.take().unwrap());
    let mut said = String::new();
    // No hang: without the line, the import gives up on the lock after its 30 s busy timeout.
    while !said.contains("importing 50000 tasks") {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("anamo ended without starting the import: {said}");
        }
        said.push_str(&line);
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(import.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    lock.execute_batch("COMMIT").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = import.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status:?} {said}{rest}");
    // The signal is seen between two batches: before the first (when it came before the
    // first batch was sent) or after one that waited for the lock (the runtime notices a
    // signal a moment after it comes). Whatever it says was imported is exactly what is there.
    let said_n: usize = rest
        .split("interrupted: imported ")
        .nth(1)
        .and_then(|r| r.split(" of 50000 task(s)").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `imported N of 50000`: {rest}"));
    assert!(said_n < N && said_n % 500 == 0, "{said_n}: {rest}");
    assert!(
        rest.contains("run the same command again to finish"),
        "{rest}"
    );
    let count = |c: &rusqlite::Connection| -> i64 {
        c.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(
        count(&lock),
        said_n as i64,
        "what it said it imported is there"
    );
    let again = ok(&run(d, &["--store", &store, "task", "import", "big.tsv"]));
    assert!(
        again.contains(&format!("imported {} new task(s)", N - said_n))
            && again.contains(&format!("{said_n} already present")),
        "{again}"
    );
    assert_eq!(count(&lock), N as i64);
}
