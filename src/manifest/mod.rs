//! Fleet manifests: Kubernetes-style YAML documents that declare, per pipeline step, a fleet of
//! instances (`kind: Fleet`) and the controller's own settings (`kind: Controller`).
//!
//! ```yaml
//! apiVersion: anamo.dev/v1
//! kind: Fleet
//! metadata:
//!   name: align
//! spec:
//!   step: align
//!   provider:
//!     local: {}
//!   maxInstances: 3
//!   slotsPerInstance: 2
//! ```
//!
//! [`load`] reads a file or a directory of them, [`ManifestSet`] is the validated result, and
//! [`schema`] is the JSON schema of a document (committed as `manifests/schema.json`).
//! Problems are reported all at once, each as `file:LINE: fleet NAME: spec.field: message`.

mod budget;
mod capacity;
mod cycles;
mod hints;
mod keys;
mod load;
mod pipeline;
mod requirements;
mod types;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

pub use capacity::{DEFAULT_FALLBACK_INTERRUPTIONS, DEFAULT_FALLBACK_WINDOW, MAX_OVERRIDES};
pub use load::{load, load_dir, load_file, load_files, parse_sources, parse_str};
pub use requirements::{glob, InstanceRequirements, Range, TaskSize, TypeInfo};
pub use types::*;

/// Result type of manifest loading.
pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// Why manifests could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A directory holds no `*.yaml` or `*.yml` file.
    #[error("no manifests (*.yaml, *.yml) in {}", path.display())]
    Empty { path: PathBuf },
    /// Documents that are not valid YAML, or do not have the shape of a manifest.
    #[error("{}", render_problems("cannot parse the manifests", problems))]
    Parse { problems: Vec<Problem> },
    /// Documents that parsed but do not make sense (alone or together).
    #[error("{}", render_problems("invalid manifests", problems))]
    Invalid { problems: Vec<Problem> },
}

impl ManifestError {
    /// A fixed label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ManifestError::Read { .. } => "read",
            ManifestError::Empty { .. } => "empty",
            ManifestError::Parse { .. } => "parse",
            ManifestError::Invalid { .. } => "invalid",
        }
    }

    /// The individual problems (empty for read errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ManifestError::Parse { problems } | ManifestError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

fn render_problems(what: &str, problems: &[Problem]) -> String {
    match problems {
        [one] => format!("{what}: {one}"),
        many => {
            let mut s = format!("{what} ({} problems):", many.len());
            for p in many {
                s.push_str("\n  ");
                s.push_str(&p.to_string());
            }
            s
        }
    }
}

/// One thing wrong with the manifests, located as precisely as known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line in `file`.
    pub line: Option<usize>,
    /// 1-based column, for syntax and type errors.
    pub column: Option<usize>,
    /// `fleet NAME` or `controller NAME`, when known.
    pub subject: Option<String>,
    /// Dotted field path, e.g. `spec.minInstances`.
    pub field: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(s) = &self.subject {
            write!(f, "{s}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A validated fleet, with the file it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetManifest {
    pub source: PathBuf,
    /// Line of `source` where the document starts.
    pub line: usize,
    pub metadata: Metadata,
    pub spec: FleetSpec,
}

impl FleetManifest {
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    pub fn step(&self) -> &str {
        &self.spec.step
    }

    /// The EC2 user-data template, resolved against the manifest's directory.
    pub fn user_data_path(&self) -> Option<PathBuf> {
        match &self.spec.provider {
            ProviderSpec::Ec2(ec2) => ec2
                .user_data
                .as_deref()
                .map(|p| validate::resolve_relative(&self.source, p)),
            _ => None,
        }
    }
}

/// The validated controller document, with the file it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ControllerManifest {
    pub source: PathBuf,
    /// Line of `source` where the document starts.
    pub line: usize,
    pub metadata: Metadata,
    pub spec: ControllerSpec,
}

impl ControllerManifest {
    /// The cluster name (`metadata.name`).
    pub fn cluster(&self) -> &str {
        &self.metadata.name
    }
}

/// Every document of a set of manifest files, validated together.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ManifestSet {
    /// Fleets in file order (files sorted by name).
    pub fleets: Vec<FleetManifest>,
    pub controller: Option<ControllerManifest>,
}

impl ManifestSet {
    /// The fleet named `name`.
    pub fn fleet(&self, name: &str) -> Option<&FleetManifest> {
        self.fleets.iter().find(|f| f.name() == name)
    }

    /// The fleet that runs `step`.
    pub fn fleet_for_step(&self, step: &str) -> Option<&FleetManifest> {
        self.fleets.iter().find(|f| f.step() == step)
    }

    /// Steps in file order.
    pub fn steps(&self) -> impl Iterator<Item = &str> {
        self.fleets.iter().map(FleetManifest::step)
    }

    /// Fleets ordered so that every fleet comes after the steps it depends on (ties by name).
    /// Validation guarantees there is no cycle.
    pub fn in_dependency_order(&self) -> Vec<&FleetManifest> {
        let mut done: Vec<&str> = Vec::new();
        let mut left: Vec<&FleetManifest> = self.fleets.iter().collect();
        left.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::with_capacity(left.len());
        while !left.is_empty() {
            let ready = left
                .iter()
                .position(|f| f.spec.upstream_steps().all(|d| done.contains(&d)))
                // A cycle or a missing step (not possible after validation): keep going.
                .unwrap_or(0);
            let f = left.remove(ready);
            done.push(f.step());
            out.push(f);
        }
        out
    }
}

/// The JSON schema of one manifest document (a Fleet or a Controller), as committed in
/// `manifests/schema.json` and printed by `anamo manifest schema`.
pub fn schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(types::AnyDocument).to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "description".into(),
            "An anamo manifest document: `kind: Fleet` (the instances running one pipeline \
             step) or `kind: Controller` (the controller's settings)."
                .into(),
        );
    }
    schema
}

/// [`schema`] as pretty-printed JSON with a trailing newline: the content of
/// `manifests/schema.json`.
pub fn schema_json() -> String {
    let mut s = serde_json::to_string_pretty(&schema()).expect("a JSON value serializes");
    s.push('\n');
    s
}

/// Where the committed schema lives, relative to the crate root.
pub const SCHEMA_PATH: &str = "manifests/schema.json";
