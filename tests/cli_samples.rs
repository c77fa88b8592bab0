//! `anamo sample show|hold|resume|drop` through the real binary on a SQLite store without a
//! published graph (every step keyed by the sample): the actions reach every step, and an
//! unknown sample is a clear error that changes nothing.

use std::path::Path;
use std::process::{Command, Output};

fn anamo(dir: &Path, store: &str, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    c.current_dir(dir).arg("--store").arg(store).args(args);
    c.output().expect("run anamo")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "anamo failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `STEP/ID STATE` of every task, sorted.
fn states(d: &Path, url: &str) -> Vec<String> {
    let list = ok(&anamo(d, url, &["task", "list"]));
    let mut out: Vec<String> = list
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{}/{} {}", f[0], f[1], f[2])
        })
        .collect();
    out.sort();
    out
}

#[test]
fn sample_actions_reach_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite://{}", d.join("t.db").display());
    for (step, id) in [("align", "S1"), ("align", "S2"), ("qc", "S1")] {
        ok(&anamo(
            d,
            &url,
            &["task", "add", "--step", step, "--id", id, "--", "true"],
        ));
    }
    let out = ok(&anamo(d, &url, &["sample", "hold", "S1"]));
    assert!(out.contains("held 2 task(s)"), "{out}");
    assert_eq!(
        states(d, &url),
        ["align/S1 held", "align/S2 pending", "qc/S1 held"]
    );
    let show = ok(&anamo(d, &url, &["sample", "show", "S1"]));
    assert!(show.contains("align") && show.contains("qc"), "{show}");
    assert!(show.contains("held by user"), "{show}");
    assert!(!show.contains("S2"), "{show}");

    ok(&anamo(d, &url, &["sample", "resume", "S1"]));
    assert_eq!(
        states(d, &url),
        ["align/S1 pending", "align/S2 pending", "qc/S1 pending"]
    );
    let out = ok(&anamo(d, &url, &["sample", "drop", "S1"]));
    assert!(out.contains("cancelled 2 task(s)"), "{out}");
    assert_eq!(
        states(d, &url),
        ["align/S1 cancelled", "align/S2 pending", "qc/S1 cancelled"]
    );

    let before = states(d, &url);
    for action in ["show", "drop", "hold", "resume"] {
        let bad = anamo(d, &url, &["sample", action, "NA000"]);
        assert!(
            !bad.status.success(),
            "sample {action} of an unknown sample"
        );
        let err = String::from_utf8_lossy(&bad.stderr);
        assert!(err.contains("no task of sample `NA000`"), "{action}: {err}");
    }
    assert_eq!(states(d, &url), before, "nothing changed");
}
