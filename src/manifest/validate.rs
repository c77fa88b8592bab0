//! Checks that need more than one field or more than one document. Every problem is collected,
//! so one run of `anamo manifest validate` shows everything there is to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::budget::check_budget;
use super::cycles::find_cycles;
use super::keys::KeyIndex;
use super::types::{
    ControllerDocument, Ec2Provider, FleetDocument, FleetSpec, LaunchTemplateRef, ProviderSpec,
};
use super::{ControllerManifest, FleetManifest, ManifestError, ManifestSet, Problem};
use crate::model::{validate_name, TAG_CONTROLLER, TAG_FLEET, TAG_LAUNCH_BATCH, TAG_STEP};

/// A document that parsed, with what is needed to point at its lines.
#[derive(Debug)]
pub(crate) struct ParsedDoc {
    pub file: PathBuf,
    pub first_line: usize,
    pub index: KeyIndex,
    /// Fields left out because they could not be parsed (already reported); problems about
    /// them, or naming them (they hold stand-in values now), are not reported.
    pub blanked: Vec<String>,
    pub kind: ParsedKind,
}

#[derive(Debug)]
pub(crate) enum ParsedKind {
    Fleet(Box<FleetDocument>),
    Controller(ControllerDocument),
}

/// Collects problems about one document.
pub(super) struct Report<'a> {
    doc: &'a ParsedDoc,
    /// `fleet NAME` / `controller NAME`.
    subject: Option<String>,
    problems: &'a mut Vec<Problem>,
}

impl Report<'_> {
    pub(super) fn push(&mut self, field: &str, message: impl Into<String>) {
        let message: String = message.into();
        let blanked = self.doc.blanked.iter().any(|b| {
            let name = b.rsplit('.').next().unwrap_or(b);
            field == b
                || field.starts_with(&format!("{b}."))
                || b.starts_with(&format!("{field}."))
                || message.contains(name)
        });
        if blanked {
            return;
        }
        self.problems.push(Problem {
            file: self.doc.file.clone(),
            line: Some(self.doc.index.line_of(field).unwrap_or(self.doc.first_line)),
            column: None,
            subject: self.subject.clone(),
            field: Some(field.to_string()),
            message,
        });
    }
}

/// Checks `docs` alone and together. `unparsed_steps` are the steps of fleet documents that
/// did not parse (already reported): depending on them is not reported again.
pub(crate) fn validate(
    docs: Vec<ParsedDoc>,
    check_files: bool,
    unparsed_steps: &[String],
) -> Result<ManifestSet, ManifestError> {
    let mut problems = Vec::new();
    let steps = check_each(&docs, check_files, &mut problems);
    check_depends_on_exist(&docs, &steps, unparsed_steps, &mut problems);
    check_cycles(&docs, &steps, &mut problems);
    check_edges(&docs, &mut problems);
    if !problems.is_empty() {
        return Err(ManifestError::Invalid { problems });
    }
    Ok(into_set(docs))
}

/// Every step a fleet runs, with the first fleet that runs it and its file.
type Steps<'a> = BTreeMap<&'a str, (&'a str, &'a Path)>;

/// Checks each document alone, and that fleet names, steps and the Controller document are not
/// repeated. Returns every step a fleet runs, with the first fleet that runs it.
fn check_each<'a>(
    docs: &'a [ParsedDoc],
    check_files: bool,
    problems: &mut Vec<Problem>,
) -> Steps<'a> {
    let mut steps: Steps<'a> = BTreeMap::new();
    let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
    let mut controller: Option<&ParsedDoc> = None;
    for doc in docs {
        match &doc.kind {
            ParsedKind::Fleet(f) => {
                let mut r = Report {
                    doc,
                    subject: Some(format!("fleet {}", f.metadata.name)),
                    problems: &mut *problems,
                };
                check_fleet(&mut r, f, check_files);
                if let Some(first) = names.get(f.metadata.name.as_str()) {
                    r.push(
                        "metadata.name",
                        format!(
                            "another fleet is already named `{}` (in {}); fleet names must be unique",
                            f.metadata.name,
                            first.display()
                        ),
                    );
                } else {
                    names.insert(&f.metadata.name, &doc.file);
                }
                if let Some((other, file)) = steps.get(f.spec.step.as_str()) {
                    r.push(
                        "spec.step",
                        format!(
                            "step `{}` is already run by fleet `{other}` (in {}); each step needs \
                             exactly one fleet: rename the step or merge the two fleets",
                            f.spec.step,
                            file.display()
                        ),
                    );
                } else {
                    steps.insert(&f.spec.step, (&f.metadata.name, &doc.file));
                }
            }
            ParsedKind::Controller(c) => {
                let mut r = Report {
                    doc,
                    subject: Some(format!("controller {}", c.metadata.name)),
                    problems: &mut *problems,
                };
                check_controller(&mut r, c);
                if let Some(first) = controller {
                    r.push(
                        "kind",
                        format!(
                            "a second Controller document (the first is in {}:{}); keep only one",
                            first.file.display(),
                            first.first_line
                        ),
                    );
                } else {
                    controller = Some(doc);
                }
            }
        }
    }
    steps
}

/// dependsOn targets exist.
fn check_depends_on_exist(
    docs: &[ParsedDoc],
    steps: &Steps<'_>,
    unparsed_steps: &[String],
    problems: &mut Vec<Problem>,
) {
    for doc in docs {
        let ParsedKind::Fleet(f) = &doc.kind else {
            continue;
        };
        let mut r = Report {
            doc,
            subject: Some(format!("fleet {}", f.metadata.name)),
            problems: &mut *problems,
        };
        for dep in f.spec.upstream_steps() {
            if dep != f.spec.step
                && validate_name("dependsOn", dep).is_ok()
                && !steps.contains_key(dep)
                && !unparsed_steps.iter().any(|s| s == dep)
            {
                let known: Vec<&str> = steps.keys().copied().collect();
                r.push(
                    "spec.dependsOn",
                    format!(
                        "step `{dep}` is not run by any fleet (steps: {}); add a fleet for it or remove it from dependsOn",
                        known.join(", ")
                    ),
                );
            }
        }
    }
}

/// No dependency cycles: reports each cycle once, at the fleet of its smallest step.
fn check_cycles(docs: &[ParsedDoc], steps: &Steps<'_>, problems: &mut Vec<Problem>) {
    let graph: BTreeMap<&str, Vec<&str>> = docs
        .iter()
        .filter_map(|d| match &d.kind {
            ParsedKind::Fleet(f) => Some((
                f.spec.step.as_str(),
                f.spec
                    .upstream_steps()
                    .filter(|s| steps.contains_key(s) && *s != f.spec.step)
                    .collect(),
            )),
            ParsedKind::Controller(_) => None,
        })
        .collect();
    for cycle in find_cycles(&graph) {
        let start = cycle[0];
        let doc = docs
            .iter()
            .find(|d| matches!(&d.kind, ParsedKind::Fleet(f) if f.spec.step == start))
            .expect("cycle steps come from fleets");
        let ParsedKind::Fleet(f) = &doc.kind else {
            unreachable!()
        };
        let mut shown = cycle.clone();
        shown.push(start);
        let mut r = Report {
            doc,
            subject: Some(format!("fleet {}", f.metadata.name)),
            problems: &mut *problems,
        };
        r.push(
            "spec.dependsOn",
            format!(
                "dependency cycle {}; no task in it could ever run: remove one of these dependencies",
                shown.join(" → ")
            ),
        );
    }
}

/// The manifests of documents that passed every check.
fn into_set(docs: Vec<ParsedDoc>) -> ManifestSet {
    let mut set = ManifestSet::default();
    for doc in docs {
        match doc.kind {
            ParsedKind::Fleet(f) => {
                let f = *f;
                set.fleets.push(FleetManifest {
                    source: doc.file,
                    line: doc.first_line,
                    metadata: f.metadata,
                    spec: f.spec,
                })
            }
            ParsedKind::Controller(c) => {
                set.controller = Some(ControllerManifest {
                    source: doc.file,
                    line: doc.first_line,
                    metadata: c.metadata,
                    spec: c.spec,
                })
            }
        }
    }
    set
}

/// Checks that need both ends of a `dependsOn` edge (whether it is a gather).
fn check_edges(docs: &[ParsedDoc], problems: &mut Vec<Problem>) {
    let fleets: Vec<(&ParsedDoc, &FleetDocument)> = docs
        .iter()
        .filter_map(|d| match &d.kind {
            ParsedKind::Fleet(f) => Some((d, f.as_ref())),
            ParsedKind::Controller(_) => None,
        })
        .collect();
    for (doc, f) in &fleets {
        for dep in f.spec.upstream_steps() {
            let Some((_, up)) = fleets.iter().find(|(_, u)| u.spec.step == dep) else {
                continue;
            };
            if let Some((field, message)) = super::pipeline::check_edge(&f.spec, &up.spec) {
                let mut r = Report {
                    doc,
                    subject: Some(format!("fleet {}", f.metadata.name)),
                    problems,
                };
                r.push(&field, message);
            }
        }
    }
}

fn check_fleet(r: &mut Report<'_>, f: &FleetDocument, check_files: bool) {
    let s = &f.spec;
    if let Err(e) = validate_name("name", &f.metadata.name) {
        r.push("metadata.name", e);
    }
    if let Err(e) = validate_name("step", &s.step) {
        r.push("spec.step", e);
    }
    check_sizes(r, s);
    check_timings(r, s);
    check_depends_on(r, s);
    let base = r.doc.file.parent().unwrap_or(Path::new(".")).to_path_buf();
    for (field, message) in super::pipeline::check(s, &base) {
        r.push(&field, message);
    }
    if let Some(b) = &s.budget {
        check_budget(r, b, s.min_instances);
    }
    if let Some(url) = &s.log_url {
        if let Err(e) = crate::logs::LogUrl::parse(url) {
            r.push("spec.logUrl", e.to_string());
        }
    }
    for (i, arg) in s.worker_args.iter().enumerate() {
        if arg.contains('\0') {
            r.push(
                "spec.workerArgs",
                format!("argument {} contains a NUL byte", i + 1),
            );
        }
    }
    match &s.provider {
        ProviderSpec::Local(_) => {}
        ProviderSpec::Ec2(ec2) => check_ec2(r, ec2, check_files),
        ProviderSpec::Autoscaling(asg) => {
            if asg.group_name.trim().is_empty() {
                r.push(
                    "spec.provider.autoscaling.groupName",
                    "is empty; give the Auto Scaling group's name",
                );
            }
        }
    }
}

/// Instance, slot, task and attempt counts.
fn check_sizes(r: &mut Report<'_>, s: &FleetSpec) {
    if s.max_instances < 1 {
        r.push(
            "spec.maxInstances",
            "must be at least 1 (use `minInstances: 0` to let the fleet scale to zero)",
        );
    }
    if s.min_instances > s.max_instances {
        r.push(
            "spec.minInstances",
            format!(
                "{} is greater than maxInstances {}; lower minInstances or raise maxInstances",
                s.min_instances, s.max_instances
            ),
        );
    }
    if s.slots_per_instance < 1 {
        r.push(
            "spec.slotsPerInstance",
            "must be at least 1 (each worker needs a slot to run a task)",
        );
    }
    if s.tasks_per_instance == Some(0) {
        r.push(
            "spec.tasksPerInstance",
            "must be at least 1 (omit it to use slotsPerInstance)",
        );
    }
    if s.max_attempts < 1 {
        r.push("spec.maxAttempts", "must be at least 1");
    }
    for (field, message) in super::requirements::task_size_problems(s) {
        r.push(field, message);
    }
}

/// Timeouts, lease and heartbeat.
fn check_timings(r: &mut Report<'_>, s: &FleetSpec) {
    positive(r, "spec.bootTimeout", s.boot_timeout);
    positive(r, "spec.leaseTTL", s.lease_ttl);
    if let Some(hb) = s.heartbeat {
        positive(r, "spec.heartbeat", hb);
        if hb >= s.lease_ttl && !s.lease_ttl.is_zero() {
            r.push(
                "spec.heartbeat",
                format!(
                    "{} is not shorter than leaseTTL {}; leases would expire between renewals: \
                     use at most a third of leaseTTL (or omit heartbeat)",
                    humantime::format_duration(hb),
                    humantime::format_duration(s.lease_ttl)
                ),
            );
        }
    }
    if let Some(idle) = s.idle_exit {
        positive(r, "spec.idleExit", idle);
    }
}

/// `dependsOn` on its own: names, self-dependency, duplicates.
fn check_depends_on(r: &mut Report<'_>, s: &FleetSpec) {
    let mut seen = BTreeSet::new();
    for dep in s.upstream_steps() {
        if let Err(e) = validate_name("dependsOn", dep) {
            r.push("spec.dependsOn", e);
        } else if dep == s.step {
            r.push(
                "spec.dependsOn",
                format!("step `{dep}` depends on itself; remove it from dependsOn"),
            );
        } else if !seen.insert(dep) {
            r.push(
                "spec.dependsOn",
                format!("step `{dep}` is listed twice; remove the duplicate"),
            );
        }
    }
}

fn check_ec2(r: &mut Report<'_>, ec2: &Ec2Provider, check_files: bool) {
    check_launch_template(r, &ec2.launch_template);
    non_empty_unique(r, "spec.provider.ec2.subnets", "subnet", &ec2.subnets);
    non_empty_unique(
        r,
        "spec.provider.ec2.instanceTypes",
        "instance type",
        &ec2.instance_types,
    );
    for (field, message) in super::capacity::problems(ec2) {
        r.push(field, message);
    }
    if let Some(req) = &ec2.instance_requirements {
        if !ec2.instance_types.is_empty() {
            r.push(
                "spec.provider.ec2.instanceRequirements",
                "cannot be combined with instanceTypes: list the types or give requirements, \
                 not both",
            );
        }
        for (field, message) in req.problems() {
            r.push(field, message);
        }
    }
    for key in ec2.tags.keys() {
        if [TAG_FLEET, TAG_STEP, TAG_CONTROLLER, TAG_LAUNCH_BATCH].contains(&key.as_str())
            || key.starts_with("aws:")
        {
            r.push(
                "spec.provider.ec2.tags",
                format!("tag `{key}` is reserved (set by anamo or AWS); use another key"),
            );
        }
    }
    if let Some(ud) = &ec2.user_data {
        check_user_data(r, ud, check_files);
    }
}

fn check_launch_template(r: &mut Report<'_>, lt: &LaunchTemplateRef) {
    match (&lt.name, &lt.id) {
        (Some(_), Some(_)) => r.push(
            "spec.provider.ec2.launchTemplate",
            "sets both name and id; keep one of them",
        ),
        (None, None) => r.push(
            "spec.provider.ec2.launchTemplate",
            "needs the template's `name` or `id`",
        ),
        (Some(n), None) if n.trim().is_empty() => {
            r.push("spec.provider.ec2.launchTemplate.name", "is empty")
        }
        (None, Some(id)) if !id.starts_with("lt-") => r.push(
            "spec.provider.ec2.launchTemplate.id",
            format!("`{id}` is not a launch template id (they look like `lt-0abc...`); use `name` for a template name"),
        ),
        _ => {}
    }
    if lt.version.as_deref().is_some_and(|v| {
        !(v == "$Latest" || v == "$Default" || v.parse::<u64>().is_ok_and(|n| n >= 1))
    }) {
        r.push(
            "spec.provider.ec2.launchTemplate.version",
            "must be a version number, `$Latest` or `$Default`",
        );
    }
}

fn check_user_data(r: &mut Report<'_>, ud: &str, check_files: bool) {
    if ud.trim().is_empty() {
        r.push(
            "spec.provider.ec2.userData",
            "is empty; remove it or give a file path",
        );
    } else if check_files {
        let path = resolve_relative(&r.doc.file, ud);
        if !path.is_file() {
            r.push(
                "spec.provider.ec2.userData",
                format!(
                    "file {} not found (paths are relative to the manifest's directory)",
                    path.display()
                ),
            );
        }
    }
}

fn check_controller(r: &mut Report<'_>, c: &ControllerDocument) {
    if let Err(e) = validate_name("name", &c.metadata.name) {
        r.push("metadata.name", e);
    }
    let store = c.spec.store.as_str();
    let ok = ["sqlite://", "dynamodb://"].iter().any(|scheme| {
        store
            .strip_prefix(scheme)
            .is_some_and(|rest| !rest.trim().is_empty())
    });
    if !ok {
        r.push(
            "spec.store",
            format!("`{store}` is not a store URL; use `sqlite://PATH` or `dynamodb://TABLE`"),
        );
    }
    positive(r, "spec.interval", c.spec.interval);
    if c.spec.metrics_addr.parse::<SocketAddr>().is_err() {
        r.push(
            "spec.metricsAddr",
            format!(
                "`{}` is not a HOST:PORT address; use e.g. `127.0.0.1:9464` or `0.0.0.0:9464`",
                c.spec.metrics_addr
            ),
        );
    }
    if c.spec
        .region
        .as_deref()
        .is_some_and(|r| r.trim().is_empty())
    {
        r.push(
            "spec.region",
            "is empty; remove it or give a region such as `eu-west-1`",
        );
    }
    for (t, price) in &c.spec.on_demand_prices {
        if !price.is_finite() || *price < 0.0 {
            r.push(
                &format!("spec.onDemandPrices.{t}"),
                format!("{price} is not a price; give dollars per hour, 0 or more, e.g. 0.17"),
            );
        }
    }
}

fn positive(r: &mut Report<'_>, field: &str, d: Duration) {
    if d.is_zero() {
        r.push(field, "must be longer than 0, e.g. `30s`");
    }
}

fn non_empty_unique(r: &mut Report<'_>, field: &str, what: &str, items: &[String]) {
    let mut seen = BTreeSet::new();
    for item in items {
        if item.trim().is_empty() {
            r.push(field, format!("has an empty {what}"));
        } else if !seen.insert(item) {
            r.push(field, format!("lists {what} `{item}` twice"));
        }
    }
}

/// `rel` resolved against the directory of `manifest` (absolute paths stay as they are).
pub(crate) fn resolve_relative(manifest: &Path, rel: &str) -> PathBuf {
    let rel = Path::new(rel);
    if rel.is_absolute() {
        return rel.to_path_buf();
    }
    manifest
        .parent()
        .map(|d| d.join(rel))
        .unwrap_or_else(|| rel.to_path_buf())
}
