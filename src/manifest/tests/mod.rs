//! Tests of manifest loading and validation: the shipped examples load, broken inputs are
//! reported with file, line and field (`broken.rs`), and defaults round-trip.

use std::path::{Path, PathBuf};
use std::time::Duration;

use proptest::prelude::*;

use super::*;

mod broken;

fn crate_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

const FLEET: &str = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: align
spec:
  step: align
  provider:
    local: {}
  maxInstances: 3
";

#[test]
fn local_example_pipeline_loads() {
    let set = load_dir(crate_path("examples/manifests")).unwrap();
    let steps: Vec<&str> = set.steps().collect();
    assert_eq!(steps, ["align", "call", "joint", "merge"]);
    let call = set.fleet_for_step("call").unwrap();
    assert_eq!(call.spec.depends_on, ["align"]);
    assert_eq!(call.spec.max_instances, 3);
    assert_eq!(call.spec.slots_per_instance, 2);
    assert_eq!(call.spec.tasks_per_instance(), 2);
    assert_eq!(call.spec.scale_down_delay, Duration::from_secs(10));
    assert_eq!(call.spec.lease_ttl, Duration::from_secs(15));
    assert_eq!(call.spec.heartbeat_interval(), Duration::from_secs(5));
    assert_eq!(set.fleet("merge").unwrap().spec.max_instances, 1);
    let graph = set.graph();
    assert_eq!(graph.steps["call"].scatter.as_ref().unwrap().items.len(), 4);
    assert!(graph.steps["merge"].key.is_empty());
    assert!(call.source.ends_with("examples/manifests/pipeline.yaml"));
    let controller = set.controller.as_ref().unwrap();
    assert_eq!(controller.spec.store, "sqlite://anamo.db");
    assert_eq!(controller.spec.interval, Duration::from_secs(1));
    assert_eq!(controller.spec.metrics_addr, DEFAULT_METRICS_ADDR);
    let order: Vec<&str> = set.in_dependency_order().iter().map(|f| f.step()).collect();
    assert_eq!(order, ["align", "call", "joint", "merge"]);
}

#[test]
fn documentation_examples_validate() {
    let ec2 = load_file(crate_path("manifests/examples/genomics-ec2.yaml")).unwrap();
    assert_eq!(ec2.fleets.len(), 3);
    let align = ec2.fleet("align").unwrap();
    assert_eq!(align.spec.budget_instances(), Some(32));
    assert_eq!(align.spec.task_duration, Some(Duration::from_secs(40 * 60)));
    assert_eq!(
        align.user_data_path().unwrap(),
        crate_path("manifests/examples/../user-data.sh.tmpl")
    );
    match &align.spec.provider {
        ProviderSpec::Ec2(e) => {
            assert_eq!(e.instance_types[0], "c6i.4xlarge");
            assert_eq!(e.launch_template.version.as_deref(), Some("$Latest"));
        }
        other => panic!("expected ec2, got {other:?}"),
    }
    let asg = load_file(crate_path("manifests/examples/genomics-autoscaling.yaml")).unwrap();
    assert_eq!(asg.fleets.len(), 3);
    assert_eq!(
        asg.fleet("joint").unwrap().spec.provider.kind(),
        "autoscaling"
    );
    assert_eq!(asg.controller.unwrap().cluster(), "genomics-asg");
}

#[test]
fn defaults_apply() {
    let set = parse_str(FLEET, "f.yaml").unwrap();
    let s = &set.fleets[0].spec;
    assert_eq!(s.min_instances, 0);
    assert_eq!(s.slots_per_instance, 1);
    assert_eq!(s.tasks_per_instance(), 1);
    assert_eq!(s.scale_down_delay, DEFAULT_SCALE_DOWN_DELAY);
    assert_eq!(s.boot_timeout, DEFAULT_BOOT_TIMEOUT);
    assert_eq!(s.lease_ttl, Duration::from_secs(60));
    assert_eq!(s.heartbeat_interval(), Duration::from_secs(20));
    assert_eq!(s.max_attempts, 3);
    assert!(s.idle_exit.is_none());
    assert!(s.task_duration.is_none());
    assert!(set.controller.is_none());
    assert_eq!(set.fleets[0].line, 1);
}

#[test]
fn committed_schema_is_current() {
    let path = crate_path(SCHEMA_PATH);
    if std::env::var_os("ANAMO_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, schema_json()).unwrap();
    }
    let committed: serde_json::Value = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null);
    assert!(
        committed == schema(),
        "{SCHEMA_PATH} is missing or out of date with the manifest types; regenerate it with\n  \
         ANAMO_UPDATE_SCHEMA=1 cargo test --lib manifest::tests::committed_schema_is_current\n\
         (or `anamo manifest schema > {SCHEMA_PATH}`) and commit the result"
    );
}

#[test]
fn schema_covers_both_kinds() {
    let s = schema();
    let defs = s["$defs"].as_object().unwrap();
    assert!(defs.contains_key("FleetDocument") && defs.contains_key("ControllerDocument"));
    assert_eq!(s["anyOf"].as_array().unwrap().len(), 2);
    let spec = &defs["FleetSpec"];
    assert_eq!(spec["additionalProperties"], false);
    assert!(spec["properties"]["leaseTTL"]["description"]
        .as_str()
        .unwrap()
        .contains("Lease duration"));
    assert_eq!(spec["properties"]["scaleDownDelay"]["default"], "90s");
}

#[test]
fn every_problem_is_reported() {
    let yaml = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: a
spec:
  step: a
  provider: {local: {}}
  minInstances: 4
  maxInstances: 3
  slotsPerInstance: 0
  tasksPerInstance: 0
  leaseTTL: 30s
  heartbeat: 30s
  dependsOn: [ghost]
";
    let err = parse_str(yaml, "m.yaml").unwrap_err();
    assert_eq!(err.kind(), "invalid");
    let fields: Vec<&str> = err
        .problems()
        .iter()
        .filter_map(|p| p.field.as_deref())
        .collect();
    for f in [
        "spec.minInstances",
        "spec.slotsPerInstance",
        "spec.tasksPerInstance",
        "spec.heartbeat",
        "spec.dependsOn",
    ] {
        assert!(fields.contains(&f), "{f} missing from {fields:?}");
    }
    let msg = err.to_string();
    assert!(msg.starts_with("invalid manifests (5 problems):"), "{msg}");
    assert!(
        msg.contains("m.yaml:8: fleet a: spec.minInstances: 4 is greater"),
        "{msg}"
    );
}

#[test]
fn every_problem_of_every_file_is_reported() {
    let one = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: a
spec:
  step: a
  provider: {local: {}}
  maxInstance: 3
  minInstances: 2
  maxInstances: -1
  slotsPerInstance: 0
  leaseTtl: 30s
  scaleDownDelay: soon
";
    let two = "\
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: b
spec:
  step: b
  provider: {local: {}}
  maxInstances: 2
  minInstances: 3
  dependsOn: [a]
";
    let sources = vec![
        (PathBuf::from("one.yaml"), one.to_string()),
        (PathBuf::from("two.yaml"), two.to_string()),
    ];
    let msg = parse_sources(&sources).unwrap_err().to_string();
    for expected in [
        "one.yaml:8:3: fleet a: spec.maxInstance: unknown field `maxInstance`",
        "did you mean `maxInstances`?",
        "one.yaml:10:17: fleet a: spec.maxInstances: expected a whole number, 1 or more",
        "one.yaml:12:3: fleet a: spec.leaseTtl: unknown field",
        "did you mean `leaseTTL`?",
        "one.yaml:13:3: fleet a: spec.scaleDownDelay: invalid value",
        // Checked although maxInstances could not be read...
        "one.yaml:11: fleet a: spec.slotsPerInstance: must be at least 1",
        "two.yaml:9: fleet b: spec.minInstances: 3 is greater than maxInstances 2",
    ] {
        assert!(msg.contains(expected), "`{expected}` missing from\n{msg}");
    }
    // ...but nothing is said from the value standing in for it (minInstances 2 > 1), and
    // `dependsOn: [a]` is not dangling.
    assert!(
        msg.starts_with("cannot parse the manifests (6 problems):"),
        "{msg}"
    );
    assert!(!msg.contains("not run by any fleet"), "{msg}");
}

#[test]
fn parse_errors_from_several_files_are_collected() {
    let sources = vec![
        (
            PathBuf::from("one.yaml"),
            "apiVersion: anamo.dev/v1\nkind: Nope\n".to_string(),
        ),
        (
            PathBuf::from("two.yaml"),
            format!(
                "{FLEET}---\n{}",
                FLEET.replace("maxInstances: 3", "maxInstances: x")
            ),
        ),
    ];
    let err = parse_sources(&sources).unwrap_err();
    assert_eq!(err.kind(), "parse");
    let msg = err.to_string();
    assert!(
        msg.contains("one.yaml:2: kind: unknown kind `Nope`"),
        "{msg}"
    );
    // The second document starts at line 10 of two.yaml; its maxInstances is line 19.
    assert!(
        msg.contains("two.yaml:19:17: fleet align: spec.maxInstances:"),
        "{msg}"
    );
}

#[test]
fn duplicate_steps_across_files() {
    let sources = vec![
        (PathBuf::from("a.yaml"), FLEET.to_string()),
        (
            PathBuf::from("b.yaml"),
            FLEET.replace("name: align", "name: align2"),
        ),
    ];
    let msg = parse_sources(&sources).unwrap_err().to_string();
    assert!(
        msg.contains("b.yaml:6: fleet align2: spec.step: step `align` is already run by fleet `align` (in a.yaml)"),
        "{msg}"
    );
}

#[test]
fn user_data_must_exist_when_loading_files() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = FLEET.replace(
        "    local: {}",
        "    ec2:\n      launchTemplate: {name: lt}\n      userData: boot.sh",
    );
    std::fs::write(dir.path().join("f.yaml"), &yaml).unwrap();
    let msg = load_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("spec.provider.ec2.userData: file"), "{msg}");
    std::fs::write(dir.path().join("boot.sh"), "#!/bin/sh\n").unwrap();
    let set = load_dir(dir.path()).unwrap();
    assert_eq!(
        set.fleets[0].user_data_path().unwrap(),
        dir.path().join("boot.sh")
    );
}

#[test]
fn directory_loading_reads_yaml_files_only() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load_dir(dir.path()).unwrap_err().kind(), "empty");
    std::fs::write(dir.path().join("b.yml"), FLEET.replace("align", "b")).unwrap();
    std::fs::write(dir.path().join("a.yaml"), FLEET).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not yaml: [").unwrap();
    let set = load(dir.path()).unwrap();
    let names: Vec<&str> = set.fleets.iter().map(|f| f.name()).collect();
    assert_eq!(names, ["align", "b"]);
    assert_eq!(
        load(dir.path().join("missing.yaml")).unwrap_err().kind(),
        "read"
    );
}

/// Mutations of a valid manifest: the loader must answer Ok or Err, never panic.
fn mutate(base: &str, ops: &[(u8, usize, String)]) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for (op, pos, text) in ops {
        let at = if s.is_empty() { 0 } else { pos % (s.len() + 1) };
        match op % 4 {
            0 => {
                let end = (at + text.len()).min(s.len());
                s.drain(at..end);
            }
            1 => {
                for (i, c) in text.chars().enumerate() {
                    s.insert(at + i, c);
                }
            }
            2 => {
                // Duplicate a line.
                let text: String = s.iter().collect();
                let lines: Vec<&str> = text.lines().collect();
                if !lines.is_empty() {
                    let i = pos % lines.len();
                    let mut out = lines.clone();
                    out.insert(i, lines[i]);
                    s = out.join("\n").chars().collect();
                }
            }
            _ => {
                if at < s.len() {
                    s[at] = text.chars().next().unwrap_or(' ');
                }
            }
        }
    }
    s.into_iter().collect()
}

const YAML_BITS: &str = r#"[ \-:\{\}\[\]#&*!|>'"%@`,?\n\t a-zA-Z0-9.]{0,12}"#;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(text in "(?s).{0,300}") {
        let _ = parse_str(&text, "fuzz.yaml");
    }

    #[test]
    fn yamlish_text_never_panics(parts in proptest::collection::vec(YAML_BITS, 0..30)) {
        let _ = parse_str(&parts.concat(), "fuzz.yaml");
    }

    #[test]
    fn mutated_manifests_never_panic(
        ops in proptest::collection::vec((any::<u8>(), any::<usize>(), YAML_BITS), 1..6),
    ) {
        let base = std::fs::read_to_string(crate_path("manifests/examples/genomics-ec2.yaml")).unwrap();
        let text = mutate(&base, &ops);
        if let Err(e) = parse_str(&text, "fuzz.yaml") {
            // Every problem renders and points into the file.
            for p in e.problems() {
                prop_assert!(p.to_string().starts_with("fuzz.yaml"));
                if let Some(line) = p.line {
                    prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
                }
            }
        }
    }
}

#[test]
fn command_line_defaults_say_the_manifest_defaults() {
    for (arg, value) in [
        (DEFAULT_SCALE_DOWN_DELAY_ARG, DEFAULT_SCALE_DOWN_DELAY),
        (DEFAULT_BOOT_TIMEOUT_ARG, DEFAULT_BOOT_TIMEOUT),
        (DEFAULT_LEASE_TTL_ARG, DEFAULT_LEASE_TTL),
    ] {
        assert_eq!(humantime::parse_duration(arg).unwrap(), value, "{arg}");
    }
    assert_eq!(
        default_heartbeat(DEFAULT_LEASE_TTL),
        Duration::from_secs(20)
    );
}
