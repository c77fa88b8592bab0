//! Broken manifests: each error names the file, the line and the field, and says what was
//! wrong.

use super::super::parse_str;

/// A broken input, and what its error must mention.
struct Case {
    name: &'static str,
    yaml: &'static str,
    /// `file:LINE` prefix expected (None: only the file).
    line: Option<usize>,
    /// Field path expected in the message.
    field: &'static str,
    /// Other text expected in the message.
    says: &'static str,
}

/// Every broken input, and what its error must say.
const CASES: &[Case] = &[
    Case {
        name: "broken YAML",
        // The unclosed flow sequence swallows the next line, where the parser gives up.
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: [a\n  maxInstances: 3\n",
        line: Some(7),
        field: "spec.maxInstances",
        says: "indicator",
    },
    Case {
        name: "unclosed quote",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: \"a\nspec:\n  step: a\n",
        line: Some(4),
        field: "metadata.name",
        says: "",
    },
    Case {
        name: "bad indentation",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n   maxInstances: 3\n",
        line: Some(7),
        field: "maxInstances",
        says: "not allowed",
    },
    Case {
        name: "wrong type",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: many\n",
        line: Some(8),
        field: "spec.maxInstances",
        says: "whole number",
    },
    Case {
        name: "negative number",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: -1\n",
        line: Some(8),
        field: "spec.maxInstances",
        says: "expected a whole number, 1 or more",
    },
    Case {
        name: "negative slots",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  slotsPerInstance: -2\n",
        line: Some(9),
        field: "spec.slotsPerInstance",
        says: "expected a whole number, 1 or more",
    },
    Case {
        name: "negative minimum",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  minInstances: -2\n",
        line: Some(9),
        field: "spec.minInstances",
        says: "expected a whole number, 0 or more",
    },
    Case {
        name: "unknown field",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  maxInstance: 4\n",
        line: Some(9),
        field: "spec.maxInstance",
        says: "did you mean `maxInstances`?",
    },
    Case {
        name: "unknown nested field",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    ec2:\n      launchTemplate: {name: lt}\n      subnet: [s-1]\n  maxInstances: 3\n",
        line: Some(10),
        field: "spec.provider.ec2.subnet",
        says: "expected one of",
    },
    Case {
        name: "unknown provider",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    gcp: {}\n  maxInstances: 3\n",
        line: Some(8),
        field: "spec.provider.gcp",
        says: "local, ec2, autoscaling",
    },
    Case {
        name: "missing field",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n",
        line: Some(7),
        field: "spec.maxInstances",
        says: "missing field",
    },
    Case {
        name: "bad duration",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  scaleDownDelay: 5 parsecs\n",
        line: Some(9),
        field: "spec.scaleDownDelay",
        says: "duration such as",
    },
    Case {
        name: "min > max",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  minInstances: 5\n  maxInstances: 3\n",
        line: Some(8),
        field: "spec.minInstances",
        says: "greater than maxInstances 3",
    },
    Case {
        name: "max zero",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 0\n",
        line: Some(8),
        field: "spec.maxInstances",
        says: "at least 1",
    },
    Case {
        name: "dangling dependsOn",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  dependsOn: [nope]\n",
        line: Some(9),
        field: "spec.dependsOn",
        says: "`nope` is not run by any fleet",
    },
    Case {
        name: "cycle",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  dependsOn: [b]\n---\napiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: b\nspec:\n  step: b\n  provider: {local: {}}\n  maxInstances: 3\n  dependsOn: [a]\n",
        line: Some(9),
        field: "spec.dependsOn",
        says: "cycle a → b → a",
    },
    Case {
        name: "duplicate step",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n---\napiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a2\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n",
        line: Some(15),
        field: "spec.step",
        says: "already run by fleet `a`",
    },
    Case {
        name: "unknown kind",
        yaml: "apiVersion: anamo.dev/v1\nkind: Flet\nmetadata:\n  name: a\n",
        line: Some(2),
        field: "kind",
        says: "expected one of Fleet, Controller",
    },
    Case {
        name: "wrong apiVersion",
        yaml: "# comment\napiVersion: anamo.dev/v2\nkind: Fleet\n",
        line: Some(2),
        field: "apiVersion",
        says: "use `apiVersion: anamo.dev/v1`",
    },
    Case {
        name: "budget without price",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  budget:\n    maxHourlyCost: 10\n",
        line: Some(10),
        field: "spec.budget.maxHourlyCost",
        says: "pricePerInstanceHour",
    },
    Case {
        name: "invalid step name",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: \"a b\"\n  provider: {local: {}}\n  maxInstances: 3\n",
        line: Some(6),
        field: "spec.step",
        says: "whitespace",
    },
    Case {
        name: "two controllers",
        yaml: "apiVersion: anamo.dev/v1\nkind: Controller\nmetadata:\n  name: c\nspec:\n  store: sqlite://a.db\n---\napiVersion: anamo.dev/v1\nkind: Controller\nmetadata:\n  name: c\nspec:\n  store: sqlite://a.db\n",
        line: Some(9),
        field: "kind",
        says: "second Controller",
    },
    Case {
        name: "bad store URL",
        yaml: "apiVersion: anamo.dev/v1\nkind: Controller\nmetadata:\n  name: c\nspec:\n  store: postgres://x\n",
        line: Some(6),
        field: "spec.store",
        says: "dynamodb://TABLE",
    },
    Case {
        name: "not a mapping",
        yaml: "- just\n- a list\n",
        line: Some(1),
        field: "",
        says: "expected a mapping",
    },
    Case {
        name: "launch template name and id",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    ec2:\n      launchTemplate:\n        name: x\n        id: lt-1\n  maxInstances: 3\n",
        line: Some(9),
        field: "spec.provider.ec2.launchTemplate",
        says: "keep one",
    },
    Case {
        name: "vCPU range upside down",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    ec2:\n      launchTemplate: {name: x}\n      instanceRequirements:\n        vcpus: {min: 16, max: 4}\n  maxInstances: 3\n",
        line: Some(11),
        field: "spec.provider.ec2.instanceRequirements.vcpus",
        says: "min (16) is above max (4)",
    },
    Case {
        name: "memory range upside down",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    ec2:\n      launchTemplate: {name: x}\n      instanceRequirements:\n        vcpus: {min: 4}\n        memoryGiB:\n          min: 8\n          max: 2\n  maxInstances: 3\n",
        line: Some(12),
        field: "spec.provider.ec2.instanceRequirements.memoryGiB",
        says: "min (8) is above max (2)",
    },
    Case {
        name: "types and requirements",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    ec2:\n      launchTemplate: {name: x}\n      instanceTypes: [c6i.large]\n      instanceRequirements: {vcpus: {min: 2}}\n  maxInstances: 3\n",
        line: Some(11),
        field: "spec.provider.ec2.instanceRequirements",
        says: "not both",
    },
    Case {
        name: "vcpusPerTask and slotsPerInstance",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    ec2:\n      launchTemplate: {name: x}\n  maxInstances: 3\n  slotsPerInstance: 4\n  vcpusPerTask: 2\n",
        line: Some(12),
        field: "spec.vcpusPerTask",
        says: "remove one of the two",
    },
    Case {
        name: "vcpusPerTask on local",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider: {local: {}}\n  maxInstances: 3\n  vcpusPerTask: 2\n",
        line: Some(9),
        field: "spec.vcpusPerTask",
        says: "needs provider `ec2`",
    },
    Case {
        name: "memoryPerTaskGiB alone",
        yaml: "apiVersion: anamo.dev/v1\nkind: Fleet\nmetadata:\n  name: a\nspec:\n  step: a\n  provider:\n    ec2:\n      launchTemplate: {name: x}\n  maxInstances: 3\n  memoryPerTaskGiB: 4\n",
        line: Some(11),
        field: "spec.memoryPerTaskGiB",
        says: "only applies with `vcpusPerTask`",
    },
];

#[test]
fn broken_inputs_name_file_line_and_field() {
    for case in CASES {
        check(case);
    }
}

/// `case.yaml` fails to load with its file, line, field and text in the message.
fn check(case: &Case) {
    let err = parse_str(case.yaml, "dir/broken.yaml")
        .expect_err(&format!("case `{}` should fail", case.name));
    let msg = err.to_string();
    let prefix = match case.line {
        Some(l) => format!("dir/broken.yaml:{l}"),
        None => "dir/broken.yaml".to_string(),
    };
    assert!(
        msg.contains(&format!("{prefix}:")),
        "case `{}`: expected `{prefix}:` in\n{msg}",
        case.name
    );
    assert!(
        msg.contains(&format!("{}: ", case.field)),
        "case `{}`: expected field `{}` in\n{msg}",
        case.name,
        case.field
    );
    assert!(
        msg.contains(case.says),
        "case `{}`: expected `{}` in\n{msg}",
        case.name,
        case.says
    );
}
