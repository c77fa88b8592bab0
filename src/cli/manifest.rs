//! `anamo manifest validate|schema`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::output::outln;
use crate::manifest;

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Check manifest files or directories, alone and together (unique steps, dependsOn
    /// targets, limits). Prints every problem with file, line and field.
    Validate {
        /// Files or directories (default: manifests).
        #[arg(default_value = "manifests")]
        paths: Vec<PathBuf>,
    },
    /// Print the JSON Schema of manifest documents (for editors; committed as
    /// manifests/schema.json).
    Schema,
}

pub fn run(cmd: ManifestCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ManifestCommand::Schema => {
            outln!("{}", manifest::schema_json());
            Ok(ExitCode::SUCCESS)
        }
        ManifestCommand::Validate { paths } => {
            let mut files = Vec::new();
            for p in &paths {
                if p.is_dir() {
                    let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| {
                            matches!(f.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                        })
                        .collect();
                    if found.is_empty() {
                        anyhow::bail!("no manifests (*.yaml, *.yml) in {}", p.display());
                    }
                    found.sort();
                    files.extend(found);
                } else {
                    files.push(p.clone());
                }
            }
            match manifest::load_files(&files) {
                Ok(set) => {
                    outln!(
                        "ok: {} fleet(s){} in {} file(s)",
                        set.fleets.len(),
                        if set.controller.is_some() {
                            " and a controller"
                        } else {
                            ""
                        },
                        files.len()
                    );
                    for f in &set.fleets {
                        outln!(
                            "  fleet {} (step {}, {} provider, {}..{} instances{})",
                            f.name(),
                            f.step(),
                            f.spec.provider.kind(),
                            f.spec.min_instances,
                            f.spec.max_instances,
                            if f.spec.depends_on.is_empty() {
                                String::new()
                            } else {
                                format!(
                                    ", after {}",
                                    f.spec.upstream_steps().collect::<Vec<_>>().join(", ")
                                )
                            }
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}
