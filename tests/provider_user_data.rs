//! User data: the shipped template (`manifests/user-data.sh.tmpl`) and the example's, rendered
//! from the example manifests, checked with `bash -n`, and the worker command line they start
//! run against a stub `anamo` to see the exact arguments.

use std::path::Path;
use std::process::Command;

use clap::Parser;

use anamo::cli::{Cli, Command as CliCommand};
use anamo::manifest::{self, ManifestSet};
use anamo::provider::ec2::Ec2FleetConfig;
use anamo::provider::user_data::{self, UserDataError, WorkerValues, DEFAULT_TEMPLATE};

fn example() -> ManifestSet {
    manifest::load_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/genomics-ec2.yaml"),
    )
    .expect("the example manifests load")
}

fn values(set: &ManifestSet, fleet: &str) -> WorkerValues {
    let controller = set
        .controller
        .as_ref()
        .expect("the example has a controller");
    WorkerValues::for_fleet(
        set.fleet(fleet).unwrap(),
        controller.cluster(),
        &controller.spec.store,
        controller.spec.region.as_deref(),
    )
}

fn bash_syntax_ok(script: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("user-data.sh");
    std::fs::write(&path, script).unwrap();
    let out = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "bash -n: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The arguments `run-worker.sh` (written by the user data) passes to `anamo`, one per entry;
/// checked against the real command line parser.
fn worker_command(rendered: &str) -> Vec<String> {
    let args = worker_argv(rendered);
    let cli = Cli::try_parse_from(std::iter::once("anamo".to_string()).chain(args.clone()))
        .unwrap_or_else(|e| panic!("anamo does not accept {args:?}: {e}"));
    assert!(matches!(cli.command, CliCommand::Worker(_)), "{args:?}");
    args
}

fn worker_argv(rendered: &str) -> Vec<String> {
    let start = rendered.find("<<'RUN'\n").expect("run-worker.sh heredoc") + "<<'RUN'\n".len();
    let end = start + rendered[start..].find("\nRUN\n").expect("heredoc end");
    let dir = tempfile::tempdir().unwrap();
    let stub = dir.path().join("anamo");
    std::fs::write(&stub, "#!/bin/bash\nprintf '%s\\n' \"$@\"\n").unwrap();
    // Run through bash, not executed itself: no ETXTBSY race with other tests' forks.
    let script =
        rendered[start..end].replace("/usr/local/bin/anamo", &format!("bash {}", stub.display()));
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn shipped_template_renders_for_an_idle_exiting_fleet() {
    let set = example();
    let rendered = values(&set, "align").render_default().unwrap();
    assert!(
        !rendered.contains("{{"),
        "every placeholder is filled:\n{rendered}"
    );
    bash_syntax_ok(&rendered);
    assert!(rendered.starts_with("#!/bin/bash\n"));
    assert!(rendered.contains("ANAMO_STORE=dynamodb://genomics-tasks\n"));
    assert!(rendered.contains("ANAMO_CLUSTER=genomics-prod\n"));
    assert!(rendered.contains("REGION='eu-west-1'"));
    assert!(rendered.contains("ANAMO_URL=''"));
    assert_eq!(
        worker_command(&rendered),
        [
            "worker",
            "--step",
            "align",
            "--slots",
            "2",
            "--lease-ttl",
            "120s",
            "--heartbeat",
            "40s",
            "--log-dir",
            "/var/log/anamo",
            "--idle-exit",
            "900s",
            "--on-idle-exit",
            "shutdown -h now",
        ]
    );
}

#[test]
fn shipped_template_without_idle_exit_and_with_worker_args() {
    let set = example();
    let mut v = values(&set, "call");
    v.worker_args = vec![
        "--max-tasks".into(),
        "10".into(),
        "--worker-id".into(),
        "it's a test".into(),
    ];
    v.anamo_url = Some("s3://bucket/bin/anamo".into());
    v.log_url = Some("s3://genomics-logs/anamo/run-1".into());
    v.region = None;
    let rendered = v.render_default().unwrap();
    bash_syntax_ok(&rendered);
    assert!(rendered.contains("ANAMO_URL='s3://bucket/bin/anamo'"));
    assert!(rendered.contains("REGION=''"));
    assert_eq!(
        worker_command(&rendered),
        [
            "worker",
            "--step",
            "call",
            "--slots",
            "4",
            "--lease-ttl",
            "120s",
            "--heartbeat",
            "40s",
            "--log-dir",
            "/var/log/anamo",
            "--log-url",
            "s3://genomics-logs/anamo/run-1",
            "--max-tasks",
            "10",
            "--worker-id",
            "it's a test",
        ]
    );
}

#[test]
fn the_example_fleet_renders_its_user_data_through_the_fleet_config() {
    let set = example();
    let align = set.fleet("align").unwrap();
    let v = values(&set, "align");
    let cfg = Ec2FleetConfig::from_manifest(align, &v).unwrap();
    // The example points `userData` at the shipped template.
    let ud = cfg
        .user_data
        .as_deref()
        .expect("the example fleet has userData");
    assert_eq!(ud, v.render_default().unwrap());
    assert_eq!(cfg.cluster, "genomics-prod");
    assert_eq!(cfg.fleet, "align");
    assert_eq!(cfg.step, "align");
    // Labels and spec tags become instance tags.
    assert_eq!(cfg.tags["team"], "genomics");
    assert_eq!(cfg.tags["Project"], "wgs-cohort-2024");
    assert_eq!(cfg.tags["CostCenter"], "sequencing");

    // A fleet without userData uses the launch template's.
    let joint = set.fleet("joint").unwrap();
    let cfg = Ec2FleetConfig::from_manifest(joint, &values(&set, "joint")).unwrap();
    assert_eq!(cfg.user_data, None);
    // A fleet of another provider is refused.
    let asg = manifest::load_file(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples/genomics-autoscaling.yaml"),
    )
    .unwrap();
    let err = Ec2FleetConfig::from_manifest(&asg.fleets[0], &v).unwrap_err();
    assert_eq!(err.kind(), "config");
}

#[test]
fn unknown_placeholders_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("boot.sh");
    std::fs::write(&path, "#!/bin/bash\necho {{step}} {{bucket}} {{ owner }}\n").unwrap();
    let set = example();
    let err = values(&set, "align").render_file(&path).unwrap_err();
    assert!(
        matches!(err, UserDataError::UnknownPlaceholders { ref names, .. }
            if names == &["bucket", "owner"])
    );
    let msg = err.to_string();
    assert!(
        msg.contains("{{bucket}}") && msg.contains("{{owner}}"),
        "{msg}"
    );
    assert!(msg.contains("boot.sh"), "{msg}");

    // Extra values fill them.
    let mut v = values(&set, "align");
    v.extra.insert("bucket".into(), "s3://data".into());
    v.extra.insert("owner".into(), "lab".into());
    assert_eq!(
        v.render_file(&path).unwrap(),
        "#!/bin/bash\necho align s3://data lab\n"
    );

    let missing = v.render_file(&dir.path().join("nope.sh")).unwrap_err();
    assert!(matches!(missing, UserDataError::Read { .. }));
}

#[test]
fn the_default_template_is_the_shipped_file() {
    let on_disk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/user-data.sh.tmpl"),
    )
    .unwrap();
    assert_eq!(on_disk, DEFAULT_TEMPLATE);
    // Every placeholder it uses is a standard one.
    let set = example();
    let names = values(&set, "align").values();
    user_data::render("shipped", DEFAULT_TEMPLATE, &names).unwrap();
}

/// A fleet with `vcpusPerTask` passes it (and `memoryPerTaskGiB`) to the worker, which derives
/// its slots from its machine; the real command line parser takes the flags.
#[test]
fn slots_derived_per_type_reach_the_worker_command() {
    let set = example();
    let mut fleet = set.fleet("call").unwrap().clone();
    fleet.spec.slots_per_instance = 1;
    fleet.spec.vcpus_per_task = Some(4);
    fleet.spec.memory_per_task_gib = Some(7.5);
    let v = WorkerValues::for_fleet(&fleet, "c", "sqlite://x.db", None);
    let rendered = v.render_default().unwrap();
    bash_syntax_ok(&rendered);
    let args = worker_command(&rendered);
    let at = args
        .iter()
        .position(|a| a == "--vcpus-per-task")
        .expect("--vcpus-per-task passed");
    assert_eq!(
        args[at..at + 4],
        ["--vcpus-per-task", "4", "--memory-per-task-gib", "7.5"]
    );
}
