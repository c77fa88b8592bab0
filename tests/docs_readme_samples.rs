//! The README's "Follow your samples" walkthrough runs as written (its `sh` block through `sh`,
//! `anamo` being the built binary, in a directory holding `examples/`) and does what its
//! comments say: the list has a row per sample with a column per step keyed by the sample,
//! hold and drop reach the sample's 5 tasks, the list filters, and `--json` parses.

use std::path::PathBuf;
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first ```` ```sh ```` block of the README section `heading`.
fn block(heading: &str) -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut lines = readme.lines().skip_while(|l| l.trim_end() != heading);
    assert!(lines.next().is_some(), "README has no section `{heading}`");
    lines
        .skip_while(|l| l.trim() != "```sh")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_follow_your_samples_walkthrough_runs() {
    let script = block("## Follow your samples");
    assert!(script.contains("anamo sample hold NA12878"), "{script}");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(repo().join("examples"), dir.path().join("examples")).unwrap();
    // Each command's output after a marker line, to check it against its comment.
    let marked: String = script
        .lines()
        .map(|l| format!("echo '>>> {}'\n{l}\n", l.replace('\'', "")))
        .collect();
    let full = format!("set -eu\nanamo() {{ \"$ANAMO_BIN\" \"$@\"; }}\n{marked}");
    let mut cmd = Command::new("sh");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("ANAMO_") || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    let out = cmd
        .arg("-c")
        .arg(&full)
        .current_dir(dir.path())
        .env("ANAMO_BIN", env!("CARGO_BIN_EXE_anamo"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "the walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let output = |command: &str| -> String {
        let at = stdout
            .find(&format!(">>> {command}"))
            .unwrap_or_else(|| panic!("no `{command}` in\n{stdout}"));
        let rest = &stdout[at..];
        let rest = &rest[rest.find('\n').map_or(rest.len(), |i| i + 1)..];
        rest[..rest.find(">>> ").unwrap_or(rest.len())].to_string()
    };
    let list = output("anamo sample list   ");
    let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["SAMPLE", "align", "call"], "{list}");
    assert_eq!(
        list.lines()
            .filter(|l| l.starts_with("NA") || l.starts_with("HG"))
            .count(),
        24
    );
    assert!(list.contains("legend: "), "{list}");
    assert!(output("anamo sample hold").contains("held 5 task(s)"));
    assert!(output("anamo sample show").contains("NA12878/chr20"));
    assert!(output("anamo sample resume").contains("resumed 5 task(s)"));
    assert!(output("anamo sample drop").contains("cancelled 5 task(s)"));
    let cancelled = output("anamo sample list --state cancelled");
    assert!(
        cancelled.lines().nth(1).unwrap().starts_with("HG00096"),
        "{cancelled}"
    );
    assert!(output("anamo sample retry").contains("requeued 0 failed task(s)"));
    let json: serde_json::Value =
        serde_json::from_str(&output("anamo sample list --json")).expect("JSON");
    assert_eq!(json["samples"].as_array().map(Vec::len), Some(24));
}
