//! The generated references under `docs/` are what the code says today:
//!
//! * `docs/manifest-reference.md` from the manifest JSON schema (`anamo::manifest::schema()`),
//! * `docs/cli.md` from `--help` of every command of the built binary,
//! * `docs/metrics.md` from the metrics registry (`anamo::metrics::Metrics`),
//! * `docs/man/*.1` from the clap command tree (clap_mangen).
//!
//! Each test regenerates its file in memory and fails when the committed one differs. With
//! `ANAMO_UPDATE_DOCS=1` it writes the files instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::CommandFactory;
use serde_json::{json, Map, Value};

const UPDATE: &str = "run ANAMO_UPDATE_DOCS=1 cargo test --test docs_reference";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn updating() -> bool {
    std::env::var("ANAMO_UPDATE_DOCS").is_ok_and(|v| v == "1")
}

/// Compares `generated` with the committed file `path` (relative to the repository), or writes
/// it when updating.
fn check(path: &str, generated: &str) {
    let full = repo().join(path);
    if updating() {
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&full, generated).unwrap();
        eprintln!("wrote {path}");
        return;
    }
    let committed = std::fs::read_to_string(&full).unwrap_or_default();
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        panic!(
            "{path} is out of date (first difference on line {}):\n  committed: {:?}\n  generated: {:?}\n{UPDATE}",
            line + 1,
            committed.lines().nth(line).unwrap_or("<end of file>"),
            generated.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}

fn generated_note(source: &str) -> String {
    format!("<!-- Generated from {source} by tests/docs_reference.rs. Do not edit: {UPDATE}. -->\n")
}

/// One line of Markdown table cell text.
fn cell(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

// ---- manifest reference ------------------------------------------------------------------

struct Schema<'a> {
    defs: &'a Map<String, Value>,
}

/// One row of a reference table.
struct Row {
    field: String,
    ty: String,
    default: String,
    meaning: String,
}

impl<'a> Schema<'a> {
    fn resolve(&self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/$defs/");
                self.defs
                    .get(name)
                    .unwrap_or_else(|| panic!("schema: no definition {r}"))
            }
            None => v,
        }
    }

    /// `v` without a `null` alternative, and whether it had one.
    fn non_null(&self, v: &'a Value) -> (&'a Value, bool) {
        if let Some(any) = v.get("anyOf").and_then(Value::as_array) {
            let rest: Vec<&Value> = any
                .iter()
                .filter(|a| a.get("type") != Some(&json!("null")))
                .collect();
            if rest.len() == 1 && rest.len() < any.len() {
                return (self.resolve(rest[0]), true);
            }
        }
        let nullable = v
            .get("type")
            .and_then(Value::as_array)
            .is_some_and(|t| t.contains(&json!("null")));
        (self.resolve(v), nullable)
    }

    /// Constant values of an enum definition (`oneOf` of `const`s), if it is one.
    fn consts(v: &Value) -> Option<Vec<String>> {
        let one_of = v.get("oneOf")?.as_array()?;
        one_of
            .iter()
            .map(|o| o.get("const").and_then(Value::as_str).map(str::to_string))
            .collect()
    }

    /// The externally tagged variants (`oneOf` of single-property objects): name, description,
    /// the variant's schema.
    fn variants(&self, v: &'a Value) -> Option<Vec<(String, String, &'a Value)>> {
        let one_of = v.get("oneOf")?.as_array()?;
        one_of
            .iter()
            .map(|o| {
                let props = o.get("properties")?.as_object()?;
                let (name, schema) = props.iter().next().filter(|_| props.len() == 1)?;
                let desc = o
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Some((name.clone(), desc.to_string(), self.resolve(schema)))
            })
            .collect()
    }

    fn type_name(&self, v: &Value, duration: bool) -> String {
        if let Some(c) = Self::consts(v) {
            return c
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(" or ");
        }
        if let Some(vars) = self.variants(v) {
            let names: Vec<String> = vars.iter().map(|(n, _, _)| format!("`{n}`")).collect();
            return format!("one of {}", names.join(", "));
        }
        let types: Vec<&str> = match v.get("type") {
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .filter_map(Value::as_str)
                .filter(|t| *t != "null")
                .collect(),
            _ => vec![],
        };
        match types.first().copied() {
            Some("string") if duration => "duration".into(),
            Some("string") => "string".into(),
            Some("integer") => match v.get("minimum").and_then(Value::as_i64) {
                Some(min) if min > 0 => format!("integer ≥ {min}"),
                Some(0) => "integer ≥ 0".into(),
                _ => "integer".into(),
            },
            Some("number") => "number".into(),
            Some("boolean") => "boolean".into(),
            Some("array") => {
                let item = v.get("items").map(|i| self.resolve(i));
                format!(
                    "list of {}",
                    item.map(|i| self.type_name(i, false))
                        .unwrap_or_else(|| "values".into())
                )
            }
            Some("object") => match v.get("additionalProperties") {
                Some(ap) if ap.is_object() => {
                    format!(
                        "map of string to {}",
                        self.type_name(self.resolve(ap), false)
                    )
                }
                _ => "object".into(),
            },
            _ => "value".into(),
        }
    }

    /// Rows for every property of `object` (a resolved definition), recursively, required ones
    /// first. `probe` tells whether a field path holds a duration.
    fn rows(&self, prefix: &str, object: &'a Value, probe: &dyn Fn(&str) -> bool) -> Vec<Row> {
        let mut out = Vec::new();
        let Some(props) = object.get("properties").and_then(Value::as_object) else {
            return out;
        };
        let required: Vec<&str> = object
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // Required fields first, and in each group plain fields before those with fields of
        // their own (the schema keeps no declaration order).
        let nested = |n: &str| {
            let (schema, _) = self.non_null(&props[n]);
            schema.get("properties").is_some() || self.variants(schema).is_some()
        };
        let mut names: Vec<&String> = props.keys().collect();
        names.sort_by_key(|n| {
            (
                !required.contains(&n.as_str()),
                nested(n),
                n.to_ascii_lowercase(),
            )
        });
        for name in names {
            let prop = &props[name];
            let path = format!("{prefix}{name}");
            let (schema, nullable) = self.non_null(prop);
            let description = prop
                .get("description")
                .or_else(|| schema.get("description"))
                .and_then(Value::as_str)
                .unwrap_or_default();
            let is_required = required.contains(&name.as_str());
            let ty = self.type_name(schema, probe(&path));
            let default = if let Some(d) = prop.get("default") {
                match d {
                    Value::String(s) => format!("`{s}`"),
                    other => format!("`{other}`"),
                }
            } else if is_required {
                "required".into()
            } else if nullable {
                "unset".into()
            } else if ty.starts_with("list") {
                "`[]`".into()
            } else if ty.starts_with("map") {
                "`{}`".into()
            } else {
                String::new()
            };
            out.push(Row {
                field: path.clone(),
                ty,
                default,
                meaning: description.to_string(),
            });
            if let Some(vars) = self.variants(schema) {
                for (vname, vdesc, vschema) in vars {
                    let vpath = format!("{path}.{vname}");
                    let has_fields = vschema
                        .get("properties")
                        .and_then(Value::as_object)
                        .is_some_and(|p| !p.is_empty());
                    out.push(Row {
                        field: vpath.clone(),
                        ty: if has_fields {
                            "object".into()
                        } else {
                            "`{}`".into()
                        },
                        default: String::new(),
                        meaning: vdesc,
                    });
                    out.extend(self.rows(&format!("{vpath}."), vschema, probe));
                }
            } else if schema.get("properties").is_some() {
                out.extend(self.rows(&format!("{path}."), schema, probe));
            }
        }
        out
    }
}

/// Sets the dotted `path` (below the document root) of `doc` to `value`, creating objects on
/// the way.
fn set_path(doc: &mut Value, path: &str, value: Value) {
    let mut cur = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(p.to_string())
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut()
        .unwrap()
        .insert(parts[parts.len() - 1].to_string(), value);
}

/// Whether `path` of a document is a duration: it takes `1s` but not `soon`. (The schema says
/// only "string", so the deserializer is asked.)
fn is_duration<T: serde::de::DeserializeOwned>(base: &Value, path: &str) -> bool {
    let accepts = |v: &str| {
        let mut doc = base.clone();
        set_path(&mut doc, path, json!(v));
        serde_json::from_value::<T>(doc).is_ok()
    };
    accepts("1s") && !accepts("soon")
}

fn table(rows: &[Row]) -> String {
    let mut s = String::from("| field | type | default | meaning |\n|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            r.field,
            cell(&r.ty),
            cell(&r.default),
            cell(&r.meaning)
        ));
    }
    s
}

fn manifest_reference() -> String {
    let schema = anamo::manifest::schema();
    let defs = schema["$defs"].as_object().expect("schema has $defs");
    let s = Schema { defs };
    let fleet_base = json!({
        "apiVersion": "anamo.dev/v1", "kind": "Fleet", "metadata": {"name": "x"},
        "spec": {"step": "x", "provider": {"local": {}}, "maxInstances": 1}
    });
    let controller_base = json!({
        "apiVersion": "anamo.dev/v1", "kind": "Controller", "metadata": {"name": "x"},
        "spec": {"store": "sqlite://x.db"}
    });
    let fleet_probe = |p: &str| is_duration::<anamo::manifest::FleetDocument>(&fleet_base, p);
    let controller_probe =
        |p: &str| is_duration::<anamo::manifest::ControllerDocument>(&controller_base, p);

    let mut out = String::from("# Manifest reference\n\n");
    out.push_str(&generated_note(
        "the manifest JSON schema (`anamo manifest schema`, `manifests/schema.json`)",
    ));
    out.push_str(
        "\nA manifest file holds one or more YAML documents separated by `---`; a directory of \
         manifests is every `*.yaml` and `*.yml` file in it. Each document is a `Fleet` (one per \
         pipeline step) or a `Controller` (at most one). Field names are camelCase and unknown \
         fields are errors. A **duration** is written like `90s`, `5m`, `2h` or `1h 30m`. \
         Check manifests with `anamo manifest validate DIR`; editors can validate against \
         `manifests/schema.json`.\n\n\
         Fields are listed with their full path, required ones first. `unset` means the field \
         may be left out and has no value; the meaning says what happens then.\n",
    );
    for (title, def, probe) in [
        (
            "Fleet",
            "FleetDocument",
            &fleet_probe as &dyn Fn(&str) -> bool,
        ),
        ("Controller", "ControllerDocument", &controller_probe),
    ] {
        let doc = &defs[def];
        out.push_str(&format!("\n## {title}\n\n"));
        out.push_str(&cell(doc["description"].as_str().unwrap_or_default()));
        out.push_str("\n\n");
        out.push_str(&table(&s.rows("", doc, probe)));
    }
    out
}

#[test]
fn manifest_reference_is_up_to_date() {
    let text = manifest_reference();
    // Every field the schema knows is in the reference, with a meaning.
    for needle in [
        "`spec.maxInstances`",
        "`spec.leaseTTL` | duration | `60s`",
        "`spec.heartbeat` | duration | unset",
        "`spec.provider.ec2.launchTemplate.name`",
        "`spec.budget.maxHourlyCost`",
        "`spec.interval` | duration | `10s`",
        "`spec.metricsAddr` | string | `127.0.0.1:9464`",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        assert!(!line.ends_with("|  |"), "field without a meaning: {line}");
    }
    check("docs/manifest-reference.md", &text);
}

// ---- CLI reference -----------------------------------------------------------------------

/// Every visible command path below `anamo`, depth first (`["task", "import"]`, ...).
fn command_paths(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(sub.get_name().to_string());
        out.push(path.clone());
        command_paths(sub, &path, out);
    }
}

/// `anamo ARGS --help` as a user sees it in a 100-column terminal, with no `ANAMO_*`
/// variables set (their values would show up in the help).
fn help(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args(args)
        .arg("--help")
        .env_clear()
        .env("COLUMNS", "100")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "anamo {} --help failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn cli_reference() -> String {
    let mut paths = Vec::new();
    command_paths(&anamo::cli::Cli::command(), &[], &mut paths);
    let mut out = String::from("# CLI reference\n\n");
    out.push_str(&generated_note("`anamo ... --help`"));
    out.push_str(
        "\nEvery command with its `--help`. Global options (`--store`, `--log-format`, `-v`) \
         work with every command; options marked `[env: NAME=]` can also be set through that \
         environment variable. Durations are written like `30s`, `5m`, `1h 30m`.\n\n",
    );
    let anchor = |p: &[String]| format!("anamo-{}", p.join("-"));
    out.push_str("- [`anamo`](#anamo)\n");
    for p in &paths {
        out.push_str(&format!(
            "{}- [`anamo {}`](#{})\n",
            "  ".repeat(p.len()),
            p.join(" "),
            anchor(p)
        ));
    }
    for p in std::iter::once(Vec::new()).chain(paths.iter().cloned()) {
        let title = if p.is_empty() {
            "anamo".to_string()
        } else {
            format!("anamo {}", p.join(" "))
        };
        out.push_str(&format!("\n## {title}\n\n```text\n"));
        out.push_str(help(&p).trim_end());
        out.push_str("\n```\n");
    }
    out
}

#[test]
fn cli_reference_is_up_to_date() {
    let text = cli_reference();
    for needle in [
        "## anamo task import",
        "## anamo worker",
        "## anamo completions",
    ] {
        assert!(text.contains(needle), "{needle} missing");
    }
    check("docs/cli.md", &text);
}

// ---- metrics reference -------------------------------------------------------------------

fn metrics_reference() -> String {
    use prometheus::core::Collector;
    use prometheus::proto::MetricType;

    let m = anamo::metrics::Metrics::new();
    // Every metric, by field; checked against the registry's own list below.
    let collectors: Vec<&dyn Collector> = vec![
        &m.tasks,
        &m.tasks_completed,
        &m.tasks_failed,
        &m.tasks_requeued,
        &m.oldest_pending_age,
        &m.throughput,
        &m.task_duration,
        &m.claim_conflicts,
        &m.worker_spot_notices,
        &m.fleet_desired,
        &m.fleet_instances,
        &m.launches,
        &m.terminations,
        &m.fleet_interruptions,
        &m.provider_calls,
        &m.provider_errors,
        &m.provider_throttles,
        &m.fleet_condition,
        &m.fleet_cost,
        &m.fleet_cost_rate,
        &m.fleet_idle_cost_ratio,
        &m.step_cost_per_task,
        &m.reconcile_duration,
        &m.progress_count_duration,
        &m.reconcile_errors,
        &m.last_success,
        &m.leader,
        &m.fenced_writes,
        &m.manifest_reload_errors,
        &m.manifest_last_reload_ok,
        &m.store_requests,
        &m.store_errors,
        &m.store_latency,
    ];
    let mut rows: BTreeMap<String, (String, Vec<String>, String)> = BTreeMap::new();
    for c in &collectors {
        let desc = c.desc()[0];
        let family = &c.collect()[0];
        let ty = match family.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            MetricType::HISTOGRAM => "histogram",
            MetricType::SUMMARY => "summary",
            MetricType::UNTYPED => "untyped",
        };
        rows.insert(
            desc.fq_name.clone(),
            (
                ty.to_string(),
                desc.variable_labels.clone(),
                desc.help.clone(),
            ),
        );
    }
    let defined: Vec<(String, Vec<String>)> = m.definitions().to_vec();
    let listed: Vec<(String, Vec<String>)> = rows
        .iter()
        .map(|(n, (_, l, _))| (n.clone(), l.clone()))
        .collect();
    let mut defined_sorted = defined.clone();
    defined_sorted.sort();
    assert_eq!(
        listed, defined_sorted,
        "tests/docs_reference.rs lists other metrics than src/metrics.rs defines: add the new \
         field to `collectors`"
    );

    let mut out = String::from("# Metrics reference\n\n");
    out.push_str(&generated_note("the metrics registry (`src/metrics.rs`)"));
    out.push_str(&format!(
        "\nThe controller serves these at `http://<metricsAddr>/metrics` in the Prometheus text \
         format (`metricsAddr` defaults to `127.0.0.1:9464`), except the three that say they are \
         exported by workers run with `--metrics-addr`. The `anamo_tasks*` figures, \
         `anamo_oldest_pending_task_age_seconds` and `anamo_step_throughput_per_minute` come \
         from the progress count, refreshed every `progressInterval`; the throughput is the \
         one `anamo status` and the status page show (tasks finished in the last 5 minutes, \
         per minute). Label values are step and fleet \
         names or small fixed sets, never task or instance ids. Histograms also export \
         `_bucket`, `_sum` and `_count` series. `anamo_fleet_instances` has one series per \
         `status`: {}; `anamo_reconcile_errors_total` starts at 0 for every `kind`: {}.\n\n",
        anamo::metrics::INSTANCE_STATUSES
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", "),
        anamo::metrics::RECONCILE_ERROR_KINDS
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    out.push_str("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for (name, (ty, labels, help)) in &rows {
        let labels = if labels.is_empty() {
            "–".to_string()
        } else {
            labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push_str(&format!(
            "| `{name}` | {ty} | {labels} | {} |\n",
            cell(help)
        ));
    }
    out
}

#[test]
fn metrics_reference_is_up_to_date() {
    check("docs/metrics.md", &metrics_reference());
}

// ---- man pages ---------------------------------------------------------------------------

#[test]
fn man_pages_are_up_to_date() {
    let tmp = tempfile::tempdir().unwrap();
    clap_mangen::generate_to(anamo::cli::Cli::command(), tmp.path()).unwrap();
    let dir = repo().join("docs/man");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let generated = names(tmp.path());
    assert!(generated.contains(&"anamo.1".to_string()), "{generated:?}");
    if updating() {
        for stale in names(&dir).iter().filter(|n| !generated.contains(n)) {
            std::fs::remove_file(dir.join(stale)).unwrap();
        }
    } else {
        assert_eq!(
            names(&dir),
            generated,
            "docs/man holds other pages than the commands have; {UPDATE}"
        );
    }
    for name in &generated {
        let text = std::fs::read_to_string(tmp.path().join(name)).unwrap();
        check(&format!("docs/man/{name}"), &text);
    }
}

/// The README's short manifest tables agree with the generated reference (type and default).
#[test]
fn readme_manifest_tables_match_the_reference() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("\n## Manifest reference\n")
        .expect("README has a Manifest reference section");
    let section = &readme[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |i| i + 1)];
    let reference = manifest_reference();
    let kind_tables: Vec<&str> = reference.split("\n## ").skip(1).collect();
    let generated = |kind: &str, field: &str| -> Option<(String, String)> {
        let table = kind_tables.iter().find(|t| t.starts_with(kind))?;
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| `{field}` |")))?;
        let cells: Vec<&str> = line.split(" | ").collect();
        Some((cells[1].to_string(), cells[2].to_string()))
    };
    let mut kind = "";
    let mut checked = 0;
    for line in section.lines() {
        if line.starts_with("**Fleet**") {
            kind = "Fleet";
        } else if line.starts_with("**Controller**") {
            kind = "Controller";
        } else if line.starts_with("| `") {
            let cells: Vec<&str> = line.split(" | ").collect();
            let field = cells[0].trim_start_matches("| ").trim_matches('`');
            let (ty, default) = generated(kind, field)
                .unwrap_or_else(|| panic!("README names {kind} field {field}, which has none"));
            assert_eq!(
                (cells[1], cells[2]),
                (ty.as_str(), default.as_str()),
                "README's {kind} {field} differs from docs/manifest-reference.md"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked}");
}
