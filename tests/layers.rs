//! The crate's top-level modules form layers that only point down (cli → controller/sim →
//! planner → provider/worker → store/manifest → model): no module reaches, directly or through
//! others, back into one that uses it. Read from the source text (`crate::NAME` outside
//! `#[cfg(test)]` code), so a new upward import fails here with the files that make the circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules of `src/` (a file or a directory each), by name.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods = BTreeMap::new();
    let entries = std::fs::read_dir(src).expect("read src/");
    for entry in entries {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 file name")
            .to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        } else {
            continue;
        }
        mods.insert(name, files);
    }
    mods
}

/// The modules `text` names as `crate::NAME`, before its first `#[cfg(test)]`.
fn uses(text: &str, names: &BTreeSet<String>) -> BTreeSet<String> {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.match_indices("crate::")
        .filter_map(|(at, _)| {
            let rest = &text[at + "crate::".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            names.contains(name).then(|| name.to_string())
        })
        .collect()
}

/// A path of edges from `from` back to `to`, if there is one.
fn path_to(
    graph: &BTreeMap<String, BTreeMap<String, PathBuf>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if !seen.insert(from.to_string()) {
        return None;
    }
    for next in graph.get(from)?.keys() {
        if next == to {
            return Some(vec![from.to_string(), to.to_string()]);
        }
        if let Some(mut rest) = path_to(graph, next, to, seen) {
            rest.insert(0, from.to_string());
            return Some(rest);
        }
    }
    None
}

#[test]
fn top_level_modules_import_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    assert!(
        names.contains("store") && names.contains("cli"),
        "src/ was not read: {names:?}"
    );
    // module → module it uses → one file that uses it
    let mut graph: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (name, files) in &mods {
        for file in files {
            let text = std::fs::read_to_string(file).expect("read a source file");
            for used in uses(&text, &names) {
                if &used != name {
                    graph
                        .entry(name.clone())
                        .or_default()
                        .entry(used)
                        .or_insert_with(|| file.clone());
                }
            }
        }
    }
    for name in &names {
        if let Some(circle) = path_to(&graph, name, name, &mut BTreeSet::new()) {
            let steps: Vec<String> = circle
                .windows(2)
                .map(|w| format!("{} → {} ({})", w[0], w[1], graph[&w[0]][&w[1]].display()))
                .collect();
            panic!(
                "the modules import each other in a circle:\n  {}\nmove what the lower layer \
                 needs down into it (or into a module below both)",
                steps.join("\n  ")
            );
        }
    }
}

#[test]
fn the_reader_sees_imports_and_skips_test_code() {
    let names: BTreeSet<String> = ["cli", "store"].map(String::from).into();
    let text = "use crate::store::open;\nfn f() { crate::cli::run() }\n#[cfg(test)]\nmod t { use crate::x; }";
    assert_eq!(uses(text, &names), names);
    let text = "fn f() {}\n#[cfg(test)]\nmod t { use crate::cli::Command; }";
    assert!(uses(text, &names).is_empty());
}
