//! `docs/architecture.md` stays true: every source path it names (`src/...`, `tests/...`,
//! `docs/...`) exists, and every module of `src/lib.rs` is placed in one of its layers.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn page() -> String {
    std::fs::read_to_string(repo().join("docs/architecture.md")).expect("docs/architecture.md")
}

/// The backquoted spans of `text` that look like repository paths.
fn paths(text: &str) -> Vec<&str> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| ["src/", "tests/", "docs/"].iter().any(|p| s.starts_with(p)))
        .filter(|s| !s.contains(' '))
        .collect()
}

#[test]
fn every_path_it_names_exists() {
    let text = page();
    let named = paths(&text);
    assert!(named.len() > 20, "the page names its modules: {named:?}");
    let missing: Vec<&&str> = named
        .iter()
        .filter(|p| !Path::new(&repo().join(p)).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist (moved or renamed? update the \
         page): {missing:?}"
    );
}

#[test]
fn every_top_level_module_has_a_place() {
    let text = page();
    let named = paths(&text);
    let lib = std::fs::read_to_string(repo().join("src/lib.rs")).unwrap();
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(modules.len() > 10, "{modules:?}");
    // Modules the page does not need to place: benchmarks, the task importer, logging set-up.
    let outside = ["bench", "import", "telemetry"];
    let unplaced: Vec<&&str> = modules
        .iter()
        .filter(|m| !outside.contains(m))
        .filter(|m| {
            let (dir, file) = (format!("src/{m}/"), format!("src/{m}.rs"));
            !named
                .iter()
                .any(|p| p.starts_with(&dir) || *p == file.as_str())
        })
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules of src/lib.rs missing from docs/architecture.md: {unplaced:?}"
    );
}

#[test]
fn paths_are_found_in_backquotes_only() {
    assert_eq!(
        paths("see `src/a.rs` and src/b.rs, `anamo plan`, `tests/x.rs`"),
        vec!["src/a.rs", "tests/x.rs"]
    );
}
