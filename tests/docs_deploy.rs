//! The deployment files in `deploy/` and the `Dockerfile` agree with the code:
//!
//! * `deploy/worker-user-data.sh` renders `manifests/user-data.sh.tmpl` exactly like the
//!   controller does (`anamo::provider::user_data`);
//! * every `ANAMO_*` variable of `deploy/controller.env.example` is one `anamo controller`
//!   reads, and the systemd unit's command line parses;
//! * the unit passes `systemd-analyze verify` (Debian's `systemd` package, installed by
//!   `scripts/test-services`; without it the test fails), and a broken copy of it does not;
//! * the Docker build copies every directory the sources `include_str!` from, and its default
//!   command parses.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anamo::provider::user_data::WorkerValues;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn anamo_help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "200")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "anamo {} --help: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn render_with_script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("deploy/worker-user-data.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "worker-user-data.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn values(step: &str, store: &str) -> WorkerValues {
    WorkerValues {
        cluster: "anamo".into(),
        fleet: step.into(),
        step: step.into(),
        store: store.into(),
        region: None,
        slots: 1,
        lease_ttl: Duration::from_secs(60),
        heartbeat: Duration::from_secs(20),
        idle_exit: None,
        worker_args: Vec::new(),
        anamo_url: None,
        log_url: None,
        extra: BTreeMap::new(),
    }
}

#[test]
fn worker_user_data_script_renders_like_the_controller() {
    // Defaults: those of a fleet manifest that sets nothing.
    let v = values("align", "dynamodb://genomics-tasks");
    assert_eq!(
        render_with_script(&["--step", "align", "--store", "dynamodb://genomics-tasks"]),
        v.render_default().unwrap()
    );

    // Everything set, durations normalized, worker arguments quoted.
    let mut v = values("call", "dynamodb://genomics-tasks");
    v.cluster = "genomics-prod".into();
    v.fleet = "call-fleet".into();
    v.region = Some("eu-west-1".into());
    v.slots = 4;
    v.lease_ttl = Duration::from_secs(120);
    v.heartbeat = Duration::from_secs(40);
    v.idle_exit = Some(Duration::from_secs(900));
    v.worker_args = vec!["--poll-interval".into(), "2s".into(), "it's a $test".into()];
    v.anamo_url = Some("s3://artifacts/anamo/anamo".into());
    v.log_url = Some("s3://genomics-logs/anamo".into());
    let script = render_with_script(&[
        "--step",
        "call",
        "--fleet",
        "call-fleet",
        "--cluster",
        "genomics-prod",
        "--store",
        "dynamodb://genomics-tasks",
        "--region",
        "eu-west-1",
        "--slots",
        "4",
        "--lease-ttl",
        "2m",
        "--idle-exit",
        "15m",
        "--anamo-url",
        "s3://artifacts/anamo/anamo",
        "--log-url",
        "s3://genomics-logs/anamo",
        "--",
        "--poll-interval",
        "2s",
        "it's a $test",
    ]);
    assert_eq!(script, v.render_default().unwrap());
    assert!(!script.contains("{{"), "{script}");

    // A heartbeat of a third of a lease that is not a multiple of 3 s.
    let mut v = values("joint", "dynamodb://t");
    v.lease_ttl = Duration::from_secs(100);
    v.heartbeat = anamo::manifest::default_heartbeat(v.lease_ttl);
    v.idle_exit = Some(Duration::from_millis(1500));
    assert_eq!(
        render_with_script(&[
            "--step",
            "joint",
            "--store",
            "dynamodb://t",
            "--lease-ttl",
            "100s",
            "--idle-exit",
            "1500ms"
        ]),
        v.render_default().unwrap()
    );
}

#[test]
fn worker_user_data_script_rejects_bad_input() {
    for args in [
        vec!["--step", "a"],
        vec![
            "--step",
            "a",
            "--store",
            "dynamodb://t",
            "--lease-ttl",
            "soon",
        ],
        vec!["--step", "a", "--store", "dynamodb://t", "--slots", "0"],
        vec![
            "--step",
            "a",
            "--store",
            "dynamodb://t",
            "--heartbeat",
            "2m",
        ],
        vec!["--step", "a'b", "--store", "dynamodb://t"],
        vec!["--step", "a", "--store", "dynamodb://t", "--bogus", "x"],
    ] {
        let out = Command::new("bash")
            .arg(repo().join("deploy/worker-user-data.sh"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
        assert!(out.stdout.is_empty(), "{args:?} printed user data");
    }
}

#[test]
fn controller_env_example_names_only_variables_anamo_reads() {
    let env = read("deploy/controller.env.example");
    let help = format!("{}\n{}", anamo_help(&["controller"]), anamo_help(&[]));
    let mut seen = 0;
    for line in env.lines() {
        let line = line.trim_start_matches('#');
        let Some((name, _)) = line.split_once('=') else {
            continue;
        };
        if name.starts_with("ANAMO_") && !name.contains(' ') {
            assert!(
                help.contains(&format!("[env: {name}=")),
                "{name} is not read by `anamo controller`"
            );
            seen += 1;
        }
    }
    assert!(seen >= 5, "{seen}");
}

#[test]
fn systemd_unit_command_line_parses() {
    let unit = read("deploy/anamo-controller.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/anamo"));
    let args: Vec<&str> = words.collect();
    anamo_help(&args);
    assert!(unit.contains("EnvironmentFile=/etc/anamo/controller.env"));
    assert!(read("deploy/controller.env.example").starts_with("# /etc/anamo/controller.env"));
    // README shows the same unit.
    let readme = read("README.md");
    assert!(readme.contains("deploy/anamo-controller.service"));
    assert!(
        readme.contains(exec),
        "README's unit differs from deploy/: {exec}"
    );
}

/// `systemd-analyze verify` of `unit` written as `<dir>/anamo-controller.service`: whether it
/// passed, and the lines of its output about the unit (unknown or misspelled settings are only
/// warnings, so they count too).
fn systemd_verify(analyze: &Path, dir: &Path, unit: &str) -> (bool, Vec<String>) {
    let path = dir.join("anamo-controller.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", analyze.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let relevant = stderr
        .lines()
        .filter(|l| l.contains("anamo-controller.service"))
        .map(str::to_string)
        .collect();
    (out.status.success(), relevant)
}

#[test]
fn systemd_unit_verifies() {
    let Some(analyze) = common::services::tool(
        "ANAMO_TEST_SYSTEMD_ANALYZE_BIN",
        "systemd-analyze (Debian package `systemd`)",
        Some("systemd-analyze"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = read("deploy/anamo-controller.service")
        .replace("/usr/local/bin/anamo", env!("CARGO_BIN_EXE_anamo"));
    let (ok, relevant) = systemd_verify(&analyze, dir.path(), &unit);
    assert!(
        ok && relevant.is_empty(),
        "systemd-analyze verify: {relevant:#?}"
    );

    // The check has teeth: a misspelled setting and a command that does not exist are caught.
    let broken = unit.replace("Restart=always", "Restrat=always");
    let (_, relevant) = systemd_verify(&analyze, dir.path(), &broken);
    assert!(
        relevant.iter().any(|l| l.contains("Restrat")),
        "a misspelled setting went unnoticed: {relevant:#?}"
    );
    let broken = unit.replace(env!("CARGO_BIN_EXE_anamo"), "/nonexistent/anamo");
    let (ok, relevant) = systemd_verify(&analyze, dir.path(), &broken);
    assert!(
        !ok && relevant.iter().any(|l| l.contains("/nonexistent/anamo")),
        "a missing ExecStart binary went unnoticed: {relevant:#?}"
    );
}

/// Files the sources embed with `include_str!`/`include_bytes!`, relative to the repository.
fn embedded_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            embedded_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for macro_ in ["include_str!(\"", "include_bytes!(\""] {
                for (i, _) in text.match_indices(macro_) {
                    let rest = &text[i + macro_.len()..];
                    let rel = &rest[..rest.find('"').unwrap()];
                    let file = path.parent().unwrap().join(rel);
                    let file = std::fs::canonicalize(&file)
                        .unwrap_or_else(|e| panic!("{}: {rel}: {e}", path.display()));
                    out.push(file.strip_prefix(repo()).unwrap().to_path_buf());
                }
            }
        }
    }
}

#[test]
fn dockerfile_copies_what_the_build_needs() {
    let dockerfile = read("Dockerfile");
    let copied: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w[..w.len() - 1].to_vec()
        })
        .collect();
    for needed in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(
            copied.contains(&needed),
            "{needed} is not copied: {copied:?}"
        );
    }
    let mut embedded = Vec::new();
    embedded_files(&repo().join("src"), &mut embedded);
    for file in embedded {
        let top = file
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_str()
            .unwrap();
        assert!(
            copied.contains(&top),
            "src embeds {} but the Dockerfile does not copy {top}/",
            file.display()
        );
    }
    let ignored = read(".dockerignore");
    for c in &copied {
        assert!(
            !ignored.lines().any(|l| l.trim_end_matches('/') == *c),
            ".dockerignore hides {c}"
        );
    }
    // The image's default command.
    assert!(dockerfile.contains("ENTRYPOINT [\"anamo\"]"));
    let cmd = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("CMD "))
        .expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let cmd: Vec<&str> = cmd.iter().map(String::as_str).collect();
    anamo_help(&cmd);
}
