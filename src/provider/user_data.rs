//! User data for EC2 workers: a shell template with `{{name}}` placeholders, filled in from the
//! fleet and controller manifests.
//!
//! Rendering is plain substitution: `{{ name }}` (spaces optional, `name` made of letters,
//! digits and `_`) is replaced by the value, inserted as is (the template quotes it). Any other
//! `{{` is left as it is. A placeholder without a value is an error that names every such
//! placeholder and the template.
//!
//! The standard values ([`WorkerValues::values`]) are:
//!
//! | placeholder    | value                                                                 |
//! |----------------|-----------------------------------------------------------------------|
//! | `cluster`      | controller (cluster) name, as in the `anamo:controller` tag            |
//! | `fleet`        | fleet name                                                            |
//! | `step`         | pipeline step the worker claims tasks of                              |
//! | `store`        | task store URL (`dynamodb://TABLE`), exported as `ANAMO_STORE`        |
//! | `region`       | AWS region, or empty (the instance's own region is then used)          |
//! | `slots`        | `slotsPerInstance`                                                    |
//! | `lease_ttl`    | `leaseTTL`, e.g. `120s`                                               |
//! | `heartbeat`    | `heartbeat` (default a third of `leaseTTL`), e.g. `40s`               |
//! | `idle_exit`    | `idleExit`, e.g. `900s`, or empty when unset                          |
//! | `worker_args`  | `workerArgs`, each argument shell-quoted, joined by spaces            |
//! | `anamo_url`    | where to get `anamo` (`https://...`, `s3://...`); empty: the AMI's    |
//! | `log_url`      | `logUrl` (where workers store task logs), or empty when unset         |
//!
//! plus any extra values the caller adds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::FleetManifest;

/// The template shipped as `manifests/user-data.sh.tmpl`.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../manifests/user-data.sh.tmpl");

/// EC2's limit on user data, before base64 encoding.
pub const MAX_USER_DATA_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserDataError {
    #[error("cannot read the user-data template {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error(
        "user-data template {template}: no value for placeholder{} {}",
        if names.len() == 1 { "" } else { "s" },
        names.iter().map(|n| format!("{{{{{n}}}}}")).collect::<Vec<_>>().join(", ")
    )]
    UnknownPlaceholders {
        template: String,
        names: Vec<String>,
    },
    #[error("user data from {template} is {size} bytes; EC2 allows at most {MAX_USER_DATA_BYTES}")]
    TooLarge { template: String, size: usize },
}

/// Replaces every `{{name}}` of `template` by its value. `origin` names the template in errors
/// (a path, or `built-in`).
pub fn render(
    origin: &str,
    template: &str,
    values: &BTreeMap<String, String>,
) -> Result<String, UserDataError> {
    let mut out = String::with_capacity(template.len());
    let mut unknown = BTreeSet::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match placeholder(after) {
            Some((name, len)) => {
                match values.get(name) {
                    Some(v) => out.push_str(v),
                    None => {
                        unknown.insert(name.to_string());
                    }
                }
                rest = &after[len..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    if !unknown.is_empty() {
        return Err(UserDataError::UnknownPlaceholders {
            template: origin.to_string(),
            names: unknown.into_iter().collect(),
        });
    }
    if out.len() > MAX_USER_DATA_BYTES {
        return Err(UserDataError::TooLarge {
            template: origin.to_string(),
            size: out.len(),
        });
    }
    Ok(out)
}

/// `s` follows a `{{`: when it is ` name }}`, the name and the length up to and including `}}`.
fn placeholder(s: &str) -> Option<(&str, usize)> {
    let end = s.find("}}")?;
    let name = s[..end].trim_matches(' ');
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some((name, end + 2))
}

/// A word quoted for a POSIX shell: left as is when it is made of safe characters, otherwise
/// in single quotes (a `'` inside becomes `'\''`).
pub fn shell_quote(word: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A duration as the worker's flags take it: whole seconds (`120s`), or milliseconds when
/// it is not a whole number of seconds (`1500ms`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// What a worker on an instance needs to know, from the fleet and controller manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerValues {
    pub cluster: String,
    pub fleet: String,
    pub step: String,
    pub store: String,
    pub region: Option<String>,
    pub slots: u32,
    pub lease_ttl: Duration,
    pub heartbeat: Duration,
    pub idle_exit: Option<Duration>,
    pub worker_args: Vec<String>,
    pub anamo_url: Option<String>,
    /// `logUrl`: where workers store task logs.
    pub log_url: Option<String>,
    /// Extra placeholders (override the standard ones of the same name).
    pub extra: BTreeMap<String, String>,
}

/// The worker flags that derive its slots from its machine (`vcpusPerTask`), before the
/// fleet's own `workerArgs`.
pub fn task_size_args(spec: &crate::manifest::FleetSpec) -> Vec<String> {
    let Some(size) = spec.task_size() else {
        return Vec::new();
    };
    let mut args = vec!["--vcpus-per-task".to_string(), size.vcpus.to_string()];
    if let Some(g) = size.memory_gib {
        args.extend(["--memory-per-task-gib".to_string(), g.to_string()]);
    }
    args
}

impl WorkerValues {
    /// The values for `fleet` run by the controller of `cluster` on the task store `store`.
    pub fn for_fleet(
        fleet: &FleetManifest,
        cluster: &str,
        store: &str,
        region: Option<&str>,
    ) -> WorkerValues {
        WorkerValues {
            cluster: cluster.to_string(),
            fleet: fleet.name().to_string(),
            step: fleet.step().to_string(),
            store: store.to_string(),
            region: region.map(str::to_string),
            slots: fleet.spec.slots_per_instance,
            lease_ttl: fleet.spec.lease_ttl,
            heartbeat: fleet.spec.heartbeat_interval(),
            idle_exit: fleet.spec.idle_exit,
            worker_args: task_size_args(&fleet.spec)
                .into_iter()
                .chain(fleet.spec.worker_args.iter().cloned())
                .collect(),
            anamo_url: None,
            log_url: fleet.spec.log_url.clone(),
            extra: BTreeMap::new(),
        }
    }

    /// The placeholder values (see the module documentation).
    pub fn values(&self) -> BTreeMap<String, String> {
        let mut v = BTreeMap::new();
        let mut put = |k: &str, val: String| {
            v.insert(k.to_string(), val);
        };
        put("cluster", self.cluster.clone());
        put("fleet", self.fleet.clone());
        put("step", self.step.clone());
        put("store", self.store.clone());
        put("region", self.region.clone().unwrap_or_default());
        put("slots", self.slots.to_string());
        put("lease_ttl", format_duration(self.lease_ttl));
        put("heartbeat", format_duration(self.heartbeat));
        put(
            "idle_exit",
            self.idle_exit.map(format_duration).unwrap_or_default(),
        );
        put(
            "worker_args",
            self.worker_args
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        );
        put("anamo_url", self.anamo_url.clone().unwrap_or_default());
        put("log_url", self.log_url.clone().unwrap_or_default());
        for (k, val) in &self.extra {
            v.insert(k.clone(), val.clone());
        }
        v
    }

    /// Renders the template at `path`.
    pub fn render_file(&self, path: &Path) -> Result<String, UserDataError> {
        let template = std::fs::read_to_string(path).map_err(|e| UserDataError::Read {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        render(&path.display().to_string(), &template, &self.values())
    }

    /// Renders the shipped template ([`DEFAULT_TEMPLATE`]).
    pub fn render_default(&self) -> Result<String, UserDataError> {
        render(
            "manifests/user-data.sh.tmpl",
            DEFAULT_TEMPLATE,
            &self.values(),
        )
    }
}

/// The user data of `fleet`: its `userData` template rendered, or `None` when it has none (the
/// launch template's user data is then used).
pub fn for_fleet(
    fleet: &FleetManifest,
    values: &WorkerValues,
) -> Result<Option<String>, UserDataError> {
    match fleet.user_data_path() {
        Some(path) => values.render_file(&path).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_placeholders() {
        let out = render(
            "t",
            "a={{a}} b={{ b }} again={{a}}",
            &vals(&[("a", "1"), ("b", "x y")]),
        )
        .unwrap();
        assert_eq!(out, "a=1 b=x y again=1");
    }

    #[test]
    fn leaves_other_braces_alone() {
        let t = "echo {{}} {{ not a name }} ${x} {a,b} {{ '{{' }}";
        let out = render("t", t, &BTreeMap::new()).unwrap();
        assert_eq!(out, t);
        assert_eq!(render("t", "tail {{", &BTreeMap::new()).unwrap(), "tail {{");
    }

    #[test]
    fn unknown_placeholders_are_named() {
        let err = render(
            "boot.sh",
            "{{a}} {{zeta}} {{beta}} {{zeta}}",
            &vals(&[("a", "")]),
        )
        .unwrap_err();
        assert_eq!(
            err,
            UserDataError::UnknownPlaceholders {
                template: "boot.sh".into(),
                names: vec!["beta".into(), "zeta".into()],
            }
        );
        assert_eq!(
            err.to_string(),
            "user-data template boot.sh: no value for placeholders {{beta}}, {{zeta}}"
        );
    }

    #[test]
    fn too_large_is_an_error() {
        let big = "x".repeat(MAX_USER_DATA_BYTES + 1);
        assert!(matches!(
            render("t", &big, &BTreeMap::new()),
            Err(UserDataError::TooLarge { .. })
        ));
    }

    #[test]
    fn quoting_and_durations() {
        assert_eq!(shell_quote("--foo=bar"), "--foo=bar");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(format_duration(Duration::from_secs(120)), "120s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
    }
}
