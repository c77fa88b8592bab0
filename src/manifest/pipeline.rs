//! The pipeline fields of a Fleet (`key`, `scatter`, `dependsOn`, the task defaults) as they
//! are written in YAML, their checks, and the [`Graph`] the whole set declares.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::types::FleetSpec;
use super::ManifestSet;
use crate::pipeline::{
    Edge, Graph, OnFailure, RetryDelay, Scatter, StepNode, TaskDefaults, DEFAULT_SAMPLE_PART,
};

/// One entry of `dependsOn`: a step name, or a step with the rule for its failed tasks.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum DependsOn {
    /// Wait for the step's tasks that share this step's key parts; fail when one fails.
    Step(String),
    /// The same, with what a gather does when some upstream tasks failed.
    Edge(EdgeSpec),
}

impl DependsOn {
    /// The upstream step's name.
    pub fn step(&self) -> &str {
        match self {
            DependsOn::Step(s) => s,
            DependsOn::Edge(e) => &e.step,
        }
    }

    fn edge(&self) -> Edge {
        match self {
            DependsOn::Step(s) => Edge::to(s),
            DependsOn::Edge(e) => Edge {
                step: e.step.clone(),
                on_failure: e.on_failure,
                min_succeeded: e.min_succeeded,
            },
        }
    }
}

impl From<&str> for DependsOn {
    fn from(s: &str) -> Self {
        DependsOn::Step(s.to_string())
    }
}

impl PartialEq<&str> for DependsOn {
    fn eq(&self, other: &&str) -> bool {
        self.step() == *other
    }
}

impl<'de> Deserialize<'de> for DependsOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DependsOn;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a step name, or a map with `step` and optionally `onFailure`, `minSucceeded`",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<DependsOn, E> {
                Ok(DependsOn::Step(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<DependsOn, A::Error> {
                EdgeSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(DependsOn::Edge)
            }
        }
        d.deserialize_any(V)
    }
}

/// `dependsOn` entry in its long form.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EdgeSpec {
    /// The upstream step.
    pub step: String,
    /// For a gather (the upstream step has key parts this one lacks): `fail` (the default)
    /// fails this task when an upstream task failed; `continue` runs it over the ones that
    /// succeeded. Tasks of dropped samples are always left out.
    #[serde(default)]
    #[schemars(with = "String", extend("enum" = ["fail", "continue"]))]
    pub on_failure: OnFailure,
    /// With `onFailure: continue`: the least fraction (0–1) of the upstream tasks that must
    /// have succeeded, e.g. `0.9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_succeeded: Option<f64>,
}

/// `scatter`: one task per item of a list, the item being one of the step's key parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScatterSpec {
    /// The key part the items fill, e.g. `region`.
    pub part: String,
    /// The items, e.g. `[chr1, chr2]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
    /// A file with one item per line (`#` comments and blank lines skipped), relative to the
    /// manifest's directory. Its items follow `items`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `retryDelay`: how long a failed attempt waits before it is retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RetryDelaySpec {
    /// Delay after the first failed attempt, e.g. `30s`; doubled after each further one.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial: Duration,
    /// The delay never grows past this, e.g. `10m`.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max: Duration,
}

/// The items of a scatter: `items`, then the lines of `file` (relative to `base`).
pub(crate) fn scatter_items(s: &ScatterSpec, base: &Path) -> Result<Vec<String>, String> {
    let mut items = s.items.clone();
    if let Some(file) = &s.file {
        let path = base.join(file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read scatter file {}: {e}", path.display()))?;
        items.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    Ok(items)
}

/// Problems with a scatter's items: none, or items that could not be part of an id.
fn check_scatter_items(s: &ScatterSpec, base: &Path, push: &mut impl FnMut(&str, String)) {
    match scatter_items(s, base) {
        Err(e) => push("spec.scatter.file", e),
        Ok(items) if items.is_empty() => push(
            "spec.scatter",
            "scatters over an empty list; give `items` or a `file` with at least one line".into(),
        ),
        Ok(items) => {
            let mut seen = BTreeSet::new();
            for item in &items {
                if item.contains('/') || item.contains(char::is_whitespace) || item.contains('#') {
                    push(
                        "spec.scatter.items",
                        format!("item `{item}` may not contain `/`, `#` or whitespace"),
                    );
                } else if !seen.insert(item) {
                    push(
                        "spec.scatter.items",
                        format!("item `{item}` is listed twice"),
                    );
                }
            }
        }
    }
}

/// Problems with a fleet's pipeline fields on their own, as `(field, message)`.
pub(crate) fn check(spec: &FleetSpec, base: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut push = |field: &str, msg: String| out.push((field.to_string(), msg));
    let key = spec.key();
    let mut seen = BTreeSet::new();
    for part in &key {
        if part.is_empty()
            || !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            push(
                "spec.key",
                format!("key part `{part}` must be letters, digits, `_` or `-`"),
            );
        } else if !seen.insert(part) {
            push("spec.key", format!("key part `{part}` is listed twice"));
        }
    }
    if let Some(s) = &spec.scatter {
        if !key.contains(&s.part) {
            push(
                "spec.scatter.part",
                format!(
                    "`{}` is not a part of this step's key [{}]; add it to `key`",
                    s.part,
                    key.join(", ")
                ),
            );
        }
        check_scatter_items(s, base, &mut push);
    }
    for dep in &spec.depends_on {
        if let DependsOn::Edge(e) = dep {
            if let Some(m) = e.min_succeeded {
                if !(0.0..=1.0).contains(&m) {
                    push(
                        "spec.dependsOn.minSucceeded",
                        format!("{m} is not a fraction; give a number from 0 to 1"),
                    );
                } else if e.on_failure != OnFailure::Continue {
                    push(
                        "spec.dependsOn.minSucceeded",
                        "only applies with `onFailure: continue`; set it or remove minSucceeded"
                            .into(),
                    );
                }
            }
        }
    }
    if let Some(d) = &spec.retry_delay {
        if d.initial.is_zero() || d.max < d.initial {
            push(
                "spec.retryDelay",
                "needs 0 < initial ≤ max, e.g. `{initial: 30s, max: 10m}`".into(),
            );
        }
    }
    out
}

/// Problems with an edge given both ends' keys: `onFailure` on an edge that is not a gather.
pub(crate) fn check_edge(own: &FleetSpec, upstream: &FleetSpec) -> Option<(String, String)> {
    let (own_key, up_key) = (own.key(), upstream.key());
    let gather = up_key.is_empty() || up_key.iter().any(|p| !own_key.contains(p));
    let dep = own.depends_on.iter().find(|d| d.step() == upstream.step)?;
    match dep {
        DependsOn::Edge(e) if !gather && e.on_failure == OnFailure::Continue => Some((
            "spec.dependsOn.onFailure".to_string(),
            format!(
                "`{}` is not a gather (its key [{}] is part of this step's key [{}]), so each task \
                 waits for one upstream task; remove onFailure",
                upstream.step,
                up_key.join(", "),
                own_key.join(", ")
            ),
        )),
        _ => None,
    }
}

impl FleetSpec {
    /// The step's key parts (`[sample]` unless `key` is given).
    pub fn key(&self) -> Vec<String> {
        self.key
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_SAMPLE_PART.to_string()])
    }

    /// The steps this one depends on.
    pub fn upstream_steps(&self) -> impl Iterator<Item = &str> {
        self.depends_on.iter().map(DependsOn::step)
    }
}

impl ManifestSet {
    /// The pipeline graph these manifests declare (scatter files read relative to each
    /// manifest). Validation has checked every field, so a scatter file that cannot be read
    /// now leaves the step unscattered.
    pub fn graph(&self) -> Graph {
        let mut graph = Graph {
            sample_part: DEFAULT_SAMPLE_PART.to_string(),
            steps: Default::default(),
        };
        for f in &self.fleets {
            let s = &f.spec;
            let base = f.source.parent().unwrap_or(Path::new("."));
            let scatter = s.scatter.as_ref().and_then(|sc| {
                scatter_items(sc, base).ok().map(|items| Scatter {
                    part: sc.part.clone(),
                    items,
                })
            });
            let node = StepNode {
                key: s.key(),
                depends_on: s.depends_on.iter().map(DependsOn::edge).collect(),
                scatter,
                defaults: TaskDefaults {
                    max_attempts: Some(s.max_attempts),
                    timeout_secs: s.timeout.map(|t| t.as_secs().max(1)),
                    retry_exit_codes: s.retry_exit_codes.clone(),
                    fail_exit_codes: s.fail_exit_codes.clone(),
                    retry_delay: s.retry_delay.as_ref().map(|d| RetryDelay {
                        initial_ms: d.initial.as_millis() as u64,
                        max_ms: d.max.as_millis() as u64,
                    }),
                },
            };
            graph.steps.insert(s.step.clone(), node);
        }
        graph
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::parse_str;
    use crate::pipeline::OnFailure;

    fn fleet(step: &str, extra: &str) -> String {
        format!(
            "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: {step}\nspec:\n  step: {step}\n  \
             provider:\n    local: {{}}\n  maxInstances: 1\n{extra}---\n"
        )
    }

    fn genome() -> String {
        [
            fleet("align", ""),
            fleet(
                "call",
                "  key: [sample, region]\n  scatter:\n    part: region\n    items: [chr1, chr2]\n  \
                 dependsOn: [align]\n  retryDelay: {initial: 30s, max: 10m}\n  timeout: 2h\n",
            ),
            fleet(
                "joint",
                "  key: [region]\n  dependsOn:\n    - step: call\n      onFailure: continue\n      \
                 minSucceeded: 0.9\n",
            ),
            fleet("merge", "  key: []\n  dependsOn: [joint]\n"),
        ]
        .concat()
    }

    #[test]
    fn a_genome_pipeline_builds_its_graph() {
        let set = parse_str(&genome(), "p.yaml").unwrap();
        let g = set.graph();
        assert_eq!(g.in_order(), ["align", "call", "joint", "merge"]);
        let call = &g.steps["call"];
        assert_eq!(call.key, ["sample", "region"]);
        assert_eq!(call.scatter.as_ref().unwrap().items, ["chr1", "chr2"]);
        assert_eq!(call.defaults.timeout_secs, Some(7200));
        assert_eq!(call.defaults.retry_delay.unwrap().initial_ms, 30_000);
        let joint = &g.steps["joint"].depends_on[0];
        assert_eq!(joint.on_failure, OnFailure::Continue);
        assert_eq!(joint.min_succeeded, Some(0.9));
        assert!(g.steps["merge"].key.is_empty());
        assert_eq!(g.steps["align"].key, ["sample"]);
    }

    fn problems(text: &str) -> String {
        parse_str(text, "p.yaml").unwrap_err().to_string()
    }

    #[test]
    fn bad_pipeline_fields_name_the_field() {
        let empty = fleet(
            "call",
            "  key: [sample, region]\n  scatter: {part: region, items: []}\n",
        );
        let e = problems(&empty);
        assert!(
            e.contains("spec.scatter") && e.contains("empty list"),
            "{e}"
        );

        let not_in_key = fleet("call", "  scatter: {part: region, items: [chr1]}\n");
        let e = problems(&not_in_key);
        assert!(
            e.contains("spec.scatter.part") && e.contains("add it to `key`"),
            "{e}"
        );

        let twice = fleet("call", "  key: [sample, sample]\n");
        assert!(problems(&twice).contains("listed twice"));

        let fraction = [
            fleet("call", ""),
            fleet(
                "joint",
                "  key: []\n  dependsOn: [{step: call, onFailure: continue, minSucceeded: 2}]\n",
            ),
        ]
        .concat();
        assert!(problems(&fraction).contains("not a fraction"));

        let not_gather = [
            fleet("align", ""),
            fleet(
                "call",
                "  dependsOn: [{step: align, onFailure: continue}]\n",
            ),
        ]
        .concat();
        let e = problems(&not_gather);
        assert!(
            e.contains("spec.dependsOn.onFailure") && e.contains("not a gather"),
            "{e}"
        );

        let unknown = fleet("call", "  dependsOn: [{step: align, onFailur: fail}]\n");
        let e = problems(&unknown);
        assert!(e.contains("onFailur"), "{e}");

        let delay = fleet("call", "  retryDelay: {initial: 10m, max: 1m}\n");
        assert!(problems(&delay).contains("spec.retryDelay"));
    }

    #[test]
    fn scatter_files_are_read_relative_to_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("regions.txt"), "# regions\nchr1\n\nchr2\n").unwrap();
        let text = fleet(
            "call",
            "  key: [sample, region]\n  scatter: {part: region, file: regions.txt}\n",
        );
        let path = dir.path().join("p.yaml");
        std::fs::write(&path, &text).unwrap();
        let set = crate::manifest::load_file(&path).unwrap();
        let g = set.graph();
        assert_eq!(
            g.steps["call"].scatter.as_ref().unwrap().items,
            ["chr1", "chr2"]
        );
        std::fs::remove_file(dir.path().join("regions.txt")).unwrap();
        let e = crate::manifest::load_file(&path).unwrap_err().to_string();
        assert!(
            e.contains("spec.scatter.file") && e.contains("regions.txt"),
            "{e}"
        );
    }
}
