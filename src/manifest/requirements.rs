//! Instance types chosen by requirements (`spec.provider.ec2.instanceRequirements`) instead of
//! a list, and slots derived per instance type (`spec.vcpusPerTask`, `spec.memoryPerTaskGiB`).
//!
//! Requirements are resolved against the instance types EC2 lists (`DescribeInstanceTypes`,
//! see `provider::ec2::types`) by [`InstanceRequirements::resolve`], a pure function: the
//! types whose default vCPUs and memory fall in the ranges, of an allowed architecture,
//! matching `allowedTypes` and none of `excludedTypes`, smallest first. A fleet's slots per
//! instance, when derived, come from [`TaskSize::slots`] — the controller applies it to each
//! type's vCPUs and memory as EC2 lists them, the worker to the processors and memory of the
//! machine it runs on (see `anamo worker --vcpus-per-task`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::{FleetSpec, ProviderSpec, DEFAULT_SLOTS};

/// What a fleet asks of its instance types, instead of listing them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InstanceRequirements {
    /// Default vCPUs of the type, e.g. `{min: 4, max: 16}`.
    pub vcpus: Range,
    /// Memory of the type in GiB, e.g. `{min: 8}`.
    #[serde(rename = "memoryGiB", default, skip_serializing_if = "Option::is_none")]
    pub memory_gib: Option<Range>,
    /// Processor architectures the launch template's AMI runs on: `x86_64` (the default) or
    /// `arm64`.
    #[serde(default = "default_architectures")]
    #[schemars(extend("default" = ["x86_64"]))]
    pub architectures: Vec<String>,
    /// Only types matching one of these patterns, `*` matching any characters, e.g.
    /// `[c6i.*, m6i.*]`. Empty: every type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_types: Vec<String>,
    /// No type matching one of these patterns, e.g. `[t*, "*.metal*"]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_types: Vec<String>,
}

/// A whole-number range; `max` unset: no upper bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Range {
    /// Smallest value allowed (included).
    #[serde(default)]
    pub min: u32,
    /// Largest value allowed (included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

impl Range {
    fn contains(&self, v: f64) -> bool {
        v >= f64::from(self.min) && self.max.is_none_or(|m| v <= f64::from(m))
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.max {
            Some(max) => write!(f, "{}..{max}", self.min),
            None => write!(f, "≥{}", self.min),
        }
    }
}

/// The default `architectures`.
pub const DEFAULT_ARCHITECTURE: &str = "x86_64";

fn default_architectures() -> Vec<String> {
    vec![DEFAULT_ARCHITECTURE.to_string()]
}

/// An instance type as EC2 describes it, with what requirements and slots need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: String,
    /// Default vCPUs.
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Supported architectures (`x86_64`, `arm64`, ...).
    pub architectures: Vec<String>,
}

impl InstanceRequirements {
    /// Whether `t` meets the requirements.
    pub fn accepts(&self, t: &TypeInfo) -> bool {
        let gib = t.memory_mib as f64 / 1024.0;
        self.vcpus.contains(f64::from(t.vcpus))
            && self.memory_gib.is_none_or(|m| m.contains(gib))
            && t.architectures
                .iter()
                .any(|a| self.architectures.contains(a))
            && (self.allowed_types.is_empty()
                || self.allowed_types.iter().any(|p| glob(p, &t.name)))
            && !self.excluded_types.iter().any(|p| glob(p, &t.name))
    }

    /// The names of the types of `catalogue` that meet the requirements, smallest (vCPUs,
    /// then memory, then name) first.
    pub fn resolve(&self, catalogue: &[TypeInfo]) -> Vec<String> {
        let mut hits: Vec<&TypeInfo> = catalogue.iter().filter(|t| self.accepts(t)).collect();
        hits.sort_by(|a, b| {
            (a.vcpus, a.memory_mib, &a.name).cmp(&(b.vcpus, b.memory_mib, &b.name))
        });
        hits.into_iter().map(|t| t.name.clone()).collect()
    }

    /// The requirements as one line, for errors: `vcpus 4..16, memoryGiB ≥8, x86_64`.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("vcpus {}", self.vcpus)];
        if let Some(m) = &self.memory_gib {
            parts.push(format!("memoryGiB {m}"));
        }
        parts.push(self.architectures.join("/"));
        if !self.allowed_types.is_empty() {
            parts.push(format!("allowedTypes {}", self.allowed_types.join(" ")));
        }
        if !self.excluded_types.is_empty() {
            parts.push(format!("excludedTypes {}", self.excluded_types.join(" ")));
        }
        parts.join(", ")
    }

    /// Problems with the requirements as (field, message).
    pub(crate) fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let mut range = |field, r: &Range| {
            if r.max.is_some_and(|max| max < r.min) {
                out.push((
                    field,
                    format!("min ({}) is above max ({})", r.min, r.max.unwrap_or(0)),
                ));
            }
        };
        range("spec.provider.ec2.instanceRequirements.vcpus", &self.vcpus);
        if let Some(m) = &self.memory_gib {
            range("spec.provider.ec2.instanceRequirements.memoryGiB", m);
        }
        if self.vcpus.max == Some(0) {
            out.push((
                "spec.provider.ec2.instanceRequirements.vcpus",
                "max must be at least 1".to_string(),
            ));
        }
        if self.architectures.is_empty() {
            out.push((
                "spec.provider.ec2.instanceRequirements.architectures",
                format!("must name at least one architecture, e.g. `[{DEFAULT_ARCHITECTURE}]`"),
            ));
        }
        out
    }
}

/// `pattern` with `*` matching any run of characters (nothing else is special) matches all
/// of `name`.
pub fn glob(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut left) = name.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for part in middle {
        match left.find(part) {
            Some(i) => left = &left[i + part.len()..],
            None => return false,
        }
    }
    left.len() >= last.len() && left.ends_with(last)
}

/// What one task needs, from which an instance's slots are derived.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskSize {
    pub vcpus: u32,
    /// GiB of memory per task; `None`: memory does not limit the slots.
    pub memory_gib: Option<f64>,
}

impl TaskSize {
    /// The tasks an instance with `vcpus` and `memory_mib` runs at once: as many as both fit,
    /// at least 1.
    pub fn slots(&self, vcpus: u32, memory_mib: u64) -> u32 {
        let by_cpu = vcpus / self.vcpus.max(1);
        let by_memory = match self.memory_gib {
            Some(g) if g > 0.0 => ((memory_mib as f64 / 1024.0) / g).floor() as u32,
            _ => u32::MAX,
        };
        by_cpu.min(by_memory).max(1)
    }
}

/// Problems with `vcpusPerTask` and `memoryPerTaskGiB` as (field, message).
pub(crate) fn task_size_problems(s: &FleetSpec) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(m) = s.memory_per_task_gib {
        if s.vcpus_per_task.is_none() {
            out.push((
                "spec.memoryPerTaskGiB",
                "only applies with `vcpusPerTask`; set that too or remove memoryPerTaskGiB"
                    .to_string(),
            ));
        }
        if !(m.is_finite() && m > 0.0) {
            out.push((
                "spec.memoryPerTaskGiB",
                "must be more than 0, e.g. `7.5`".to_string(),
            ));
        }
    }
    let Some(vcpus) = s.vcpus_per_task else {
        return out;
    };
    if vcpus < 1 {
        out.push(("spec.vcpusPerTask", "must be at least 1".to_string()));
    }
    if s.slots_per_instance != DEFAULT_SLOTS {
        out.push((
            "spec.vcpusPerTask",
            "cannot be combined with slotsPerInstance: the slots are derived from each \
             instance's vCPUs; remove one of the two"
                .to_string(),
        ));
    }
    if !matches!(s.provider, ProviderSpec::Ec2(_)) {
        out.push((
            "spec.vcpusPerTask",
            format!(
                "needs provider `ec2` (this fleet's is `{}`): only there does the controller \
                 know each instance's type; use slotsPerInstance",
                s.provider.kind()
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, vcpus: u32, gib: u64, arch: &str) -> TypeInfo {
        TypeInfo {
            name: name.into(),
            vcpus,
            memory_mib: gib * 1024,
            architectures: vec![arch.into()],
        }
    }

    fn reqs(yaml: &str) -> InstanceRequirements {
        serde_saphyr::from_str(yaml).expect("parses")
    }

    #[test]
    fn globs_match_whole_names() {
        for (p, n, want) in [
            ("c6i.*", "c6i.large", true),
            ("c6i.*", "c6id.large", false),
            ("*.metal*", "c6i.metal", true),
            ("*.metal*", "c6i.metal-24xl", true),
            ("t*", "t3.micro", true),
            ("t*", "c6i.large", false),
            ("m5.large", "m5.large", true),
            ("m5.large", "m5.large2", false),
            ("*", "anything", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob(p, n), want, "{p} vs {n}");
        }
    }

    #[test]
    fn resolves_ranges_architectures_and_patterns_smallest_first() {
        let catalogue = [
            t("c6i.xlarge", 4, 8, "x86_64"),
            t("c6i.large", 2, 4, "x86_64"),
            t("m6i.xlarge", 4, 16, "x86_64"),
            t("c6g.xlarge", 4, 8, "arm64"),
            t("c6i.4xlarge", 16, 32, "x86_64"),
            t("t3.xlarge", 4, 16, "x86_64"),
        ];
        let r = reqs("vcpus: {min: 4, max: 8}\nexcludedTypes: [t*]\n");
        assert_eq!(r.resolve(&catalogue), ["c6i.xlarge", "m6i.xlarge"]);
        let r = reqs("vcpus: {min: 4}\nmemoryGiB: {min: 9}\nexcludedTypes: [t*]\n");
        assert_eq!(r.resolve(&catalogue), ["m6i.xlarge", "c6i.4xlarge"]);
        let r = reqs("vcpus: {min: 1}\narchitectures: [arm64]\n");
        assert_eq!(r.resolve(&catalogue), ["c6g.xlarge"]);
        let r = reqs("vcpus: {min: 1}\nallowedTypes: [c6i.*]\nmemoryGiB: {max: 8}\n");
        assert_eq!(r.resolve(&catalogue), ["c6i.large", "c6i.xlarge"]);
        let r = reqs("vcpus: {min: 64}\n");
        assert!(r.resolve(&catalogue).is_empty());
        assert_eq!(r.describe(), "vcpus ≥64, x86_64");
    }

    #[test]
    fn bad_ranges_are_named_by_field() {
        let r = reqs("vcpus: {min: 8, max: 4}\nmemoryGiB: {min: 2, max: 1}\narchitectures: []\n");
        let fields: Vec<_> = r.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "spec.provider.ec2.instanceRequirements.vcpus",
                "spec.provider.ec2.instanceRequirements.memoryGiB",
                "spec.provider.ec2.instanceRequirements.architectures"
            ]
        );
        assert_eq!(r.problems()[0].1, "min (8) is above max (4)");
        assert!(reqs("vcpus: {min: 2, max: 2}\n").problems().is_empty());
    }

    #[test]
    fn slots_are_what_both_cpu_and_memory_fit() {
        let cpu = TaskSize {
            vcpus: 4,
            memory_gib: None,
        };
        assert_eq!(cpu.slots(16, 32 * 1024), 4);
        assert_eq!(cpu.slots(2, 4 * 1024), 1, "at least one");
        let both = TaskSize {
            vcpus: 2,
            memory_gib: Some(8.0),
        };
        assert_eq!(both.slots(16, 32 * 1024), 4, "memory binds");
        assert_eq!(both.slots(4, 64 * 1024), 2, "vCPUs bind");
    }
}
