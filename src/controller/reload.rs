//! Hot reload of the manifests: a changed file takes effect on the next pass; an invalid change
//! is logged and rejected, and the last good set stays in force; the rejection is kept
//! ([`ManifestSource::rejected`]) for the status page and `anamo status` until the files load.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::manifest::{self, ManifestError, ManifestSet};

#[derive(Debug)]
pub struct ManifestSource {
    path: PathBuf,
    current: ManifestSet,
    /// Fingerprint (names, sizes, mtimes) of the files behind `current` or behind the last
    /// rejected attempt, so an unchanged broken file is not re-reported every pass.
    fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
    /// Why the files on disk are not in force: the last rejected change, until one loads.
    rejected: Option<String>,
}

/// What a reload check found.
#[derive(Debug)]
pub enum Reload {
    Unchanged,
    Applied,
    Rejected(ManifestError),
}

impl ManifestSource {
    /// Loads the manifests; an error here is fatal (there is no last good set yet).
    pub fn open(path: &Path) -> Result<Self, ManifestError> {
        let fingerprint = fingerprint(path);
        let current = manifest::load(path)?;
        Ok(ManifestSource {
            path: path.to_path_buf(),
            current,
            fingerprint,
            rejected: None,
        })
    }

    /// A fixed set (tests, `anamo plan` on parsed input).
    pub fn fixed(set: ManifestSet) -> Self {
        ManifestSource {
            path: PathBuf::new(),
            current: set,
            fingerprint: Vec::new(),
            rejected: None,
        }
    }

    pub fn current(&self) -> &ManifestSet {
        &self.current
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last rejected change (with every problem, file and line), while the files on disk
    /// still do not load; `None` when they are the ones in force.
    pub fn rejected(&self) -> Option<&str> {
        self.rejected.as_deref()
    }

    /// Re-reads the manifests if any file changed.
    pub fn reload(&mut self) -> Reload {
        if self.path.as_os_str().is_empty() {
            return Reload::Unchanged;
        }
        let fp = fingerprint(&self.path);
        if fp == self.fingerprint {
            return Reload::Unchanged;
        }
        self.fingerprint = fp;
        match manifest::load(&self.path) {
            Ok(set) => {
                self.rejected = None;
                if set == self.current {
                    Reload::Unchanged
                } else {
                    self.current = set;
                    Reload::Applied
                }
            }
            Err(e) => {
                self.rejected = Some(e.to_string());
                Reload::Rejected(e)
            }
        }
    }
}

fn fingerprint(path: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut files = Vec::new();
    let entries: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    } else {
        vec![path.to_path_buf()]
    };
    for p in entries {
        let is_yaml = matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml") | Some("yml")
        );
        if !is_yaml && path.is_dir() {
            continue;
        }
        let meta = std::fs::metadata(&p).ok();
        files.push((
            p,
            meta.as_ref().map(|m| m.len()).unwrap_or(0),
            meta.and_then(|m| m.modified().ok()),
        ));
    }
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: align\nspec:\n  step: align\n  provider:\n    local: {}\n  maxInstances: 2\n";

    #[test]
    fn invalid_change_keeps_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("align.yaml");
        std::fs::write(&file, FLEET).unwrap();
        let mut src = ManifestSource::open(dir.path()).unwrap();
        assert!(matches!(src.reload(), Reload::Unchanged));
        std::fs::write(&file, FLEET.replace("maxInstances: 2", "maxInstances: two")).unwrap();
        match src.reload() {
            Reload::Rejected(e) => assert!(e.to_string().contains("align.yaml"), "{e}"),
            other => panic!("expected rejection, got {other:?}"),
        }
        assert_eq!(src.current().fleets[0].spec.max_instances, 2);
        let shown = src
            .rejected()
            .expect("the rejection is kept for the status");
        assert!(shown.contains("align.yaml"), "{shown}");
        // The same broken file is not reported again, but stays rejected.
        assert!(matches!(src.reload(), Reload::Unchanged));
        assert!(src.rejected().is_some());
        std::fs::write(&file, FLEET.replace("maxInstances: 2", "maxInstances: 5")).unwrap();
        assert!(matches!(src.reload(), Reload::Applied));
        assert_eq!(src.current().fleets[0].spec.max_instances, 5);
        assert_eq!(src.rejected(), None);
    }
}
