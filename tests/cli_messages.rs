//! What the binary says when something is wrong: every manifest problem at once, usage errors
//! that name every way out, and an `up` run that ends with failed tasks saying which and how to
//! see them.

use std::path::Path;
use std::process::{Command, Output};

fn anamo(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    c.current_dir(dir)
        .env_remove("ANAMO_STORE")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    c
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

const FLEET_A: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: a
spec:
  step: a
  provider: {local: {}}
  maxInstances: -1
  slotsPerInstance: 2
  maxInstance: 3
  scaleDownDely: 30s
";

const FLEET_B: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: b
spec:
  step: b
  provider:
    local: {}
  minInstances: 4
  maxInstances: 2
  slotsPerInstance: 0
  dependsOn: [a, c, ghost]
";

/// Cannot be read at all (no provider), but its step is known.
const FLEET_C: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: c
spec:
  step: c
  maxInstances: 1
";

#[test]
fn manifest_validate_reports_every_problem_of_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("a.yaml"), FLEET_A).unwrap();
    std::fs::write(m.join("b.yaml"), FLEET_B).unwrap();
    std::fs::write(m.join("c.yaml"), FLEET_C).unwrap();
    let out = anamo(dir.path())
        .args(["manifest", "validate", "manifests"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for expected in [
        "manifests/a.yaml:8:17: fleet a: spec.maxInstances: expected a whole number, 1 or more",
        "manifests/a.yaml:10:3: fleet a: spec.maxInstance: unknown field `maxInstance`",
        "did you mean `maxInstances`?",
        "manifests/a.yaml:11:3: fleet a: spec.scaleDownDely: unknown field",
        "did you mean `scaleDownDelay`?",
        "manifests/b.yaml:9: fleet b: spec.minInstances: 4 is greater than maxInstances 2",
        "manifests/b.yaml:11: fleet b: spec.slotsPerInstance: must be at least 1",
        "manifests/b.yaml:12: fleet b: spec.dependsOn: step `ghost` is not run by any fleet",
        "manifests/c.yaml:",
        "fleet c: spec.provider: missing field `provider`",
    ] {
        assert!(err.contains(expected), "`{expected}` missing from:\n{err}");
    }
    assert!(err.contains("(7 problems)"), "{err}");
    // Step `c` is run by fleet c, which could not be read: depending on it is not a problem.
    assert!(!err.contains("step `c` is not run"), "{err}");
}

#[test]
fn requeue_and_cancel_say_that_id_or_state_selects() {
    let dir = tempfile::tempdir().unwrap();
    for cmd in ["requeue", "cancel"] {
        let out = anamo(dir.path())
            .args(["task", cmd, "--step", "align"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains("--id <ID>|--state <STATE>"),
            "{cmd} without a selection:\n{err}"
        );
    }
    let help = anamo(dir.path())
        .args(["task", "cancel", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("--force"), "cancel has no --force: {help}");
    assert!(!help.to_lowercase().contains("requeue"), "{help}");
    let help = anamo(dir.path())
        .args(["task", "requeue", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--force") && help.contains("running"),
        "{help}"
    );
}

#[test]
fn usage_does_not_show_an_optional_store_as_required() {
    let dir = tempfile::tempdir().unwrap();
    let out = anamo(dir.path())
        .env("ANAMO_STORE", "sqlite://tasks.db")
        .args(["task", "requeue", "--step", "align"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let usage = err
        .lines()
        .find(|l| l.starts_with("Usage:"))
        .unwrap_or_else(|| panic!("no usage line in:\n{err}"));
    assert!(!usage.contains("--store"), "{usage}");
}

const FAILING_FLEET: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: work
spec:
  step: work
  provider:
    local: {}
  maxInstances: 1
  maxAttempts: 1
  scaleDownDelay: 1s
";

#[test]
fn up_with_failed_tasks_says_how_many_where_and_how_to_see_them() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("work.yaml"), FAILING_FLEET).unwrap();
    std::fs::write(
        dir.path().join("tasks.tsv"),
        "ok1\twork\ttrue\nbad1\twork\texit 3\nbad2\twork\texit 4\n",
    )
    .unwrap();
    let out = anamo(dir.path())
        .args([
            "--store",
            "sqlite://run.db",
            "up",
            "--manifests",
            "manifests",
            "--tasks",
            "tasks.tsv",
            "--interval",
            "200ms",
            "--linger",
            "2s",
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("error: 2 task(s) failed (2 in work)"), "{err}");
    assert!(
        err.contains("anamo --store sqlite://run.db task list --state failed"),
        "{err}"
    );
    // The command it names works and lists exactly the failed tasks.
    let list = anamo(dir.path())
        .args([
            "--store",
            "sqlite://run.db",
            "task",
            "list",
            "--state",
            "failed",
            "--ids",
        ])
        .output()
        .unwrap();
    let ids = String::from_utf8_lossy(&list.stdout);
    let mut ids: Vec<&str> = ids.lines().collect();
    ids.sort();
    assert_eq!(ids, ["bad1", "bad2"]);
}

/// The example's graph with a small scatter list, for the pipeline's bad inputs below.
const PIPELINE: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata: {name: align}
spec: {step: align, provider: {local: {}}, maxInstances: 1}
---
apiVersion: anamo.dev/v1
kind: Fleet
metadata: {name: call}
spec:
  step: call
  key: [sample, region]
  scatter: {part: region, file: regions.txt}
  dependsOn: [align]
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

/// Pipeline input that could never run is refused before anything is written, naming the
/// file, line and field: a scatter file without items (in a manifest and given to `task
/// import`), a task id missing a key part, and a gather over a key value no upstream task can
/// have (a region that is not in the scatter list). A gather over a step without tasks yet is
/// only warned about: dependents may be imported before their upstream tasks.
#[test]
fn pipeline_input_that_could_never_run_is_refused_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let m = d.join("manifests");
    std::fs::create_dir(&m).unwrap();
    std::fs::write(m.join("pipeline.yaml"), PIPELINE).unwrap();
    std::fs::write(m.join("regions.txt"), "# no regions yet\n\n").unwrap();
    let validate = anamo(d)
        .args(["manifest", "validate", "manifests"])
        .output()
        .unwrap();
    assert_eq!(validate.status.code(), Some(1));
    let err = stderr(&validate);
    assert!(
        err.contains("manifests/pipeline.yaml:")
            && err.contains("fleet call: spec.scatter: scatters over an empty list"),
        "{err}"
    );

    std::fs::write(m.join("regions.txt"), "chr1\nchr2\n").unwrap();
    std::fs::write(d.join("empty.txt"), "# nothing\n").unwrap();
    std::fs::write(d.join("t.tsv"), "S1\talign\ttrue\n").unwrap();
    let scatter = anamo(d)
        .args(["--store", "sqlite://t.db", "task", "import", "t.tsv"])
        .args(["--scatter-file", "empty.txt", "--step", "align"])
        .output()
        .unwrap();
    assert!(!scatter.status.success());
    let err = stderr(&scatter);
    assert!(
        err.contains("empty.txt:1: the scatter list has no items"),
        "{err}"
    );

    std::fs::write(
        d.join("t.tsv"),
        "S1\talign\ttrue\nS1\tcall\ttrue\nchr1\tjoint\ttrue\nchr9\tjoint\ttrue\nS1/\tcall\ttrue\n",
    )
    .unwrap();
    let import = anamo(d)
        .args(["--store", "sqlite://t.db", "task", "import", "t.tsv"])
        .args(["--manifests", "manifests"])
        .output()
        .unwrap();
    assert!(!import.status.success());
    let err = stderr(&import);
    assert!(
        err.contains("t.tsv:4: task joint/chr9 would wait forever")
            && err.contains("scattered over [chr1, chr2]"),
        "{err}"
    );
    assert!(
        err.contains("t.tsv:5: task id `S1/` of step `call`"),
        "{err}"
    );
    // Nothing was written: no task, and no graph.
    let list = anamo(d)
        .args(["--store", "sqlite://t.db", "task", "list", "--json"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.status.success() || listed.trim() == "[]",
        "{listed}{}",
        stderr(&list)
    );

    // A gather over a step with no tasks yet is imported (its upstream tasks may come later),
    // with a warning that names the steps.
    std::fs::write(d.join("joint.tsv"), "chr1\tjoint\ttrue\n").unwrap();
    let early = anamo(d)
        .args(["--store", "sqlite://t.db", "task", "import", "joint.tsv"])
        .args(["--manifests", "manifests"])
        .output()
        .unwrap();
    assert!(early.status.success(), "{}", stderr(&early));
    assert!(
        stderr(&early).contains(
            "warning: joint.tsv: 1 task(s) of step `joint` gather over step `call`, which has \
             no tasks yet"
        ),
        "{}",
        stderr(&early)
    );
}
