//! The IAM policies in `manifests/` grant exactly what the code calls:
//!
//! * `iam-policy.json` (controller and CLI): every AWS SDK operation called under
//!   `src/provider/` and `src/store/dynamo/`, mapped to its IAM action, is allowed, and no
//!   action is allowed that the code does not call (besides `iam:PassRole` for the instances'
//!   role);
//! * `iam-worker-policy.json`: the DynamoDB actions behind the task-store methods the worker
//!   (`src/worker/`) calls, and the S3 actions that store task logs (`src/logs/`), and nothing
//!   else;
//! * the S3 actions of task logs are granted on the log prefix only
//!   (`arn:aws:s3:::LOG_BUCKET/LOG_PREFIX/*`): writes to the worker, reads (`anamo task logs`)
//!   to the CLI's policy.
//!
//! The source is scanned for SDK calls (`.run_instances()`): a call of the fluent builder of
//! an operation missing from [`OPERATIONS`] on something named `*client` fails the test, so a
//! new operation cannot slip past the table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// SDK operation (fluent builder method) → the IAM actions it needs.
const OPERATIONS: &[(&str, &[&str])] = &[
    // EC2. Tagging at launch (TagSpecifications) needs ec2:CreateTags.
    ("run_instances", &["ec2:RunInstances", "ec2:CreateTags"]),
    ("describe_instances", &["ec2:DescribeInstances"]),
    ("terminate_instances", &["ec2:TerminateInstances"]),
    ("create_tags", &["ec2:CreateTags"]),
    ("stop_instances", &["ec2:StopInstances"]),
    ("describe_instance_status", &["ec2:DescribeInstanceStatus"]),
    (
        "describe_instance_attribute",
        &["ec2:DescribeInstanceAttribute"],
    ),
    ("describe_instance_types", &["ec2:DescribeInstanceTypes"]),
    (
        "describe_launch_templates",
        &["ec2:DescribeLaunchTemplates"],
    ),
    (
        "describe_launch_template_versions",
        &["ec2:DescribeLaunchTemplateVersions"],
    ),
    ("create_launch_template", &["ec2:CreateLaunchTemplate"]),
    ("describe_subnets", &["ec2:DescribeSubnets"]),
    ("describe_images", &["ec2:DescribeImages"]),
    (
        "describe_spot_price_history",
        &["ec2:DescribeSpotPriceHistory"],
    ),
    // An `instant` fleet launches with the caller's permissions: RunInstances, and
    // CreateTags (ec2:CreateAction = CreateFleet) for its TagSpecifications.
    (
        "create_fleet",
        &["ec2:CreateFleet", "ec2:RunInstances", "ec2:CreateTags"],
    ),
    // Auto Scaling
    (
        "describe_auto_scaling_groups",
        &["autoscaling:DescribeAutoScalingGroups"],
    ),
    (
        "describe_auto_scaling_instances",
        &["autoscaling:DescribeAutoScalingInstances"],
    ),
    ("set_desired_capacity", &["autoscaling:SetDesiredCapacity"]),
    (
        "terminate_instance_in_auto_scaling_group",
        &["autoscaling:TerminateInstanceInAutoScalingGroup"],
    ),
    (
        "set_instance_protection",
        &["autoscaling:SetInstanceProtection"],
    ),
    ("create_or_update_tags", &["autoscaling:CreateOrUpdateTags"]),
    (
        "update_auto_scaling_group",
        &["autoscaling:UpdateAutoScalingGroup"],
    ),
    (
        "create_auto_scaling_group",
        &["autoscaling:CreateAutoScalingGroup"],
    ),
    ("detach_instances", &["autoscaling:DetachInstances"]),
    (
        "complete_lifecycle_action",
        &["autoscaling:CompleteLifecycleAction"],
    ),
    (
        "describe_scaling_activities",
        &["autoscaling:DescribeScalingActivities"],
    ),
    // S3 (task logs). The multipart calls are authorized by s3:PutObject, except the abort.
    ("put_object", &["s3:PutObject"]),
    ("get_object", &["s3:GetObject"]),
    ("create_multipart_upload", &["s3:PutObject"]),
    ("upload_part", &["s3:PutObject"]),
    ("complete_multipart_upload", &["s3:PutObject"]),
    ("abort_multipart_upload", &["s3:AbortMultipartUpload"]),
    // DynamoDB
    ("get_item", &["dynamodb:GetItem"]),
    ("put_item", &["dynamodb:PutItem"]),
    ("update_item", &["dynamodb:UpdateItem"]),
    ("delete_item", &["dynamodb:DeleteItem"]),
    ("query", &["dynamodb:Query"]),
    ("scan", &["dynamodb:Scan"]),
    ("batch_get_item", &["dynamodb:BatchGetItem"]),
    ("batch_write_item", &["dynamodb:BatchWriteItem"]),
    // A transaction is authorized per item action, its condition checks by
    // dynamodb:ConditionCheckItem (there is no TransactWriteItems permission):
    // https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html
    (
        "transact_write_items",
        &[
            "dynamodb:ConditionCheckItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:DeleteItem",
        ],
    ),
    ("transact_get_items", &["dynamodb:TransactGetItems"]),
    ("describe_table", &["dynamodb:DescribeTable"]),
    ("create_table", &["dynamodb:CreateTable"]),
    ("delete_table", &["dynamodb:DeleteTable"]),
    ("update_table", &["dynamodb:UpdateTable"]),
    ("update_time_to_live", &["dynamodb:UpdateTimeToLive"]),
    ("describe_time_to_live", &["dynamodb:DescribeTimeToLive"]),
    ("list_tables", &["dynamodb:ListTables"]),
];

/// Methods of an SDK client that are not operations.
const CLIENT_METHODS: &[&str] = &["clone", "config", "from_conf", "new", "with_config"];

/// Operations of `src/logs/` that read logs (`anamo task logs`, with the CLI's policy); the
/// others store them (the worker's).
const LOG_READ_OPS: &[&str] = &["get_object"];

/// The only resource S3 actions are granted on.
const LOG_RESOURCE: &str = "arn:aws:s3:::LOG_BUCKET/LOG_PREFIX/*";

/// Actions granted for what the code does not call itself.
const CONTROLLER_EXTRA: &[&str] = &["iam:PassRole"];

/// Task-store methods → the DynamoDB actions `DynamoStore` uses for them (for the worker's
/// policy). Methods that do no I/O map to nothing.
const STORE_METHODS: &[(&str, &[&str])] = &[
    // An idle claimer reads its step's counter items first (`store::dynamo::polls`).
    (
        "claim",
        &[
            "dynamodb:BatchGetItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
        ],
    ),
    (
        "claim_batch",
        &[
            "dynamodb:BatchGetItem",
            "dynamodb:Query",
            "dynamodb:UpdateItem",
        ],
    ),
    ("heartbeat", &["dynamodb:UpdateItem"]),
    // Progress-counter deltas: kept in memory, then one UpdateItem (ADD) per counter item.
    ("batch_counts", &[]),
    ("flush", &["dynamodb:UpdateItem"]),
    ("complete", &["dynamodb:GetItem", "dynamodb:UpdateItem"]),
    ("release", &["dynamodb:GetItem", "dynamodb:UpdateItem"]),
    ("get", &["dynamodb:GetItem"]),
    ("put_worker", &["dynamodb:UpdateItem"]),
    ("remove_worker", &["dynamodb:DeleteItem"]),
    ("list_workers", &["dynamodb:Query"]),
    // The controller's drain mark, read on its own (its own item) or returned by the
    // registration refresh (`refresh_worker`, one UpdateItem).
    ("worker_drain_requested", &["dynamodb:GetItem"]),
    ("refresh_worker", &["dynamodb:UpdateItem"]),
    // The lease TTL the worker's registrations record: kept in the store client, no request.
    ("note_lease_ttl", &[]),
    ("counts", &["dynamodb:Query"]),
    // A gather's upstream ids (the pipeline graph itself is read through `store::graph`).
    ("step_ids", &["dynamodb:Query"]),
    // An idle worker moves its step's due `retrying` tasks back to pending.
    ("retry_due", &["dynamodb:Query", "dynamodb:UpdateItem"]),
    ("clone", &[]),
    ("as_ref", &[]),
    ("describe", &[]),
    // A counter kept in the store client: no request.
    ("claim_conflicts", &[]),
];

/// Files under `src/worker/` that do not run on worker instances.
const WORKER_FILES_OFF_INSTANCE: &[&str] = &["bench.rs"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Identifiers and punctuation of Rust source, without comments, strings and whitespace.
fn tokens(src: &str) -> Vec<String> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push("\"\"".to_string());
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// SDK operations called in the files under `dirs`, with where.
fn sdk_calls(dirs: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let table: BTreeMap<&str, &[&str]> = OPERATIONS.iter().copied().collect();
    let mut files = Vec::new();
    for d in dirs {
        rust_files(&root().join(d), &mut files);
    }
    assert!(!files.is_empty(), "no source under {dirs:?}");
    let mut calls: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let t = tokens(&src);
        let name = f.strip_prefix(root()).unwrap().display().to_string();
        for w in t.windows(4) {
            // `.operation()`: the fluent builders take no arguments.
            if w[0] == "." && w[2] == "(" && w[3] == ")" && table.contains_key(w[1].as_str()) {
                calls.entry(w[1].clone()).or_default().insert(name.clone());
            }
            // `client.method(` with a method the table does not know.
            if w[0].ends_with("client")
                && w[1] == "."
                && w[3] == "("
                && !table.contains_key(w[2].as_str())
                && !CLIENT_METHODS.contains(&w[2].as_str())
            {
                unknown.push(format!("{name}: {}.{}(", w[0], w[2]));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "SDK calls missing from OPERATIONS in tests/provider_iam.rs (add them with their IAM \
         actions, and to the policy): {unknown:#?}"
    );
    calls
}

fn policy_actions(file: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).expect("the policy is JSON");
    assert_eq!(doc["Version"], "2012-10-17", "{file}");
    let mut actions = BTreeSet::new();
    for st in doc["Statement"].as_array().expect("Statement is a list") {
        assert_eq!(st["Effect"], "Allow", "{file}: {st}");
        match &st["Action"] {
            serde_json::Value::String(a) => {
                actions.insert(a.clone());
            }
            serde_json::Value::Array(list) => {
                actions.extend(list.iter().map(|a| a.as_str().unwrap().to_string()));
            }
            other => panic!("{file}: Action {other}"),
        }
        assert!(
            !st["Resource"].is_null(),
            "{file}: statement without Resource: {st}"
        );
    }
    for a in &actions {
        assert!(!a.contains('*'), "{file}: no wildcard actions ({a})");
    }
    actions
}

#[test]
fn tokenizer_skips_comments_and_strings() {
    let t = tokens("let x = \"a.query()\"; // .scan()\n/* .get_item() */ c.client.query()");
    assert!(!t.contains(&"scan".to_string()));
    assert!(!t.contains(&"get_item".to_string()));
    assert_eq!(t.iter().filter(|x| *x == "query").count(), 1);
}

#[test]
fn controller_policy_allows_exactly_what_the_code_calls() {
    let mut calls = sdk_calls(&["src/provider", "src/store/dynamo"]);
    calls.extend(log_calls(true));
    // The scan does find the calls it is there for.
    for op in [
        "run_instances",
        "describe_instances",
        "terminate_instances",
        "set_desired_capacity",
        "update_item",
        "query",
    ] {
        assert!(calls.contains_key(op), "{op} not found: {calls:?}");
    }
    let table: BTreeMap<&str, &[&str]> = OPERATIONS.iter().copied().collect();
    let needed: BTreeSet<String> = calls
        .keys()
        .flat_map(|op| table[op.as_str()].iter().map(|a| a.to_string()))
        .collect();
    let granted = policy_actions("manifests/iam-policy.json");

    let missing: Vec<String> = needed
        .iter()
        .filter(|a| !granted.contains(*a))
        .map(|a| {
            let ops: Vec<_> = calls
                .iter()
                .filter(|(op, _)| table[op.as_str()].contains(&a.as_str()))
                .map(|(op, files)| format!("{op} in {files:?}"))
                .collect();
            format!("{a} (for {})", ops.join(", "))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "manifests/iam-policy.json lacks: {missing:#?}"
    );

    let unused: Vec<&String> = granted
        .iter()
        .filter(|a| !needed.contains(*a) && !CONTROLLER_EXTRA.contains(&a.as_str()))
        .collect();
    assert!(
        unused.is_empty(),
        "manifests/iam-policy.json grants actions the code does not use: {unused:?}"
    );
}

#[test]
fn worker_policy_allows_exactly_what_the_worker_uses() {
    let table: BTreeMap<&str, &[&str]> = STORE_METHODS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&root().join("src/worker"), &mut files);
    // The dispatch benchmark (`anamo worker bench`) imports its tasks from a developer's
    // machine, not from an instance.
    files.retain(|f| !WORKER_FILES_OFF_INSTANCE.iter().any(|x| f.ends_with(x)));
    let mut needed = BTreeSet::new();
    let mut unknown = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        // Unit tests in the file do not run on instances.
        let t = tokens(text.split("#[cfg(test)]").next().unwrap_or_default());
        for w in t.windows(4) {
            // `store.method(` (`ctx.store.claim(`, `self.store.heartbeat(`, ...).
            if w[0] == "store" && w[1] == "." && w[3] == "(" {
                match table.get(w[2].as_str()) {
                    Some(actions) => needed.extend(actions.iter().map(|a| a.to_string())),
                    None => {
                        unknown.insert(w[2].clone());
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the worker calls store methods missing from STORE_METHODS in tests/provider_iam.rs: \
         {unknown:?}"
    );
    let ops: BTreeMap<&str, &[&str]> = OPERATIONS.iter().copied().collect();
    let log_actions: BTreeSet<String> = log_calls(false)
        .keys()
        .flat_map(|op| ops[op.as_str()].iter().map(|a| a.to_string()))
        .collect();
    assert!(
        log_actions.contains("s3:PutObject"),
        "the log uploads are found: {log_actions:?}"
    );
    needed.extend(log_actions);
    let granted = policy_actions("manifests/iam-worker-policy.json");
    assert_eq!(granted, needed, "manifests/iam-worker-policy.json");
    let granted: BTreeSet<String> = granted
        .into_iter()
        .filter(|a| a.starts_with("dynamodb:"))
        .collect();
    // Everything the worker needs is something the store code does call.
    let store_calls = sdk_calls(&["src/store/dynamo"]);
    let store_actions: BTreeSet<String> = store_calls
        .keys()
        .flat_map(|op| ops[op.as_str()].iter().map(|a| a.to_string()))
        .collect();
    assert!(
        granted.is_subset(&store_actions),
        "{granted:?} ⊄ {store_actions:?}"
    );
}

/// The S3 calls of `src/logs/` that read (`reads`) or store logs.
fn log_calls(reads: bool) -> BTreeMap<String, BTreeSet<String>> {
    let mut calls = sdk_calls(&["src/logs"]);
    calls.retain(|op, _| LOG_READ_OPS.contains(&op.as_str()) == reads);
    assert!(!calls.is_empty(), "no S3 calls found under src/logs");
    calls
}

#[test]
fn log_actions_are_granted_on_the_log_prefix_only() {
    for file in [
        "manifests/iam-policy.json",
        "manifests/iam-worker-policy.json",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        for st in doc["Statement"].as_array().unwrap() {
            let actions = match &st["Action"] {
                serde_json::Value::String(a) => vec![a.clone()],
                other => other
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect(),
            };
            let s3 = actions.iter().filter(|a| a.starts_with("s3:")).count();
            if s3 > 0 {
                assert_eq!(
                    s3,
                    actions.len(),
                    "{file}: S3 and other actions mixed: {st}"
                );
                assert_eq!(st["Resource"], LOG_RESOURCE, "{file}: {st}");
            }
        }
    }
}

#[test]
fn policies_name_the_same_table_placeholder() {
    for file in [
        "manifests/iam-policy.json",
        "manifests/iam-worker-policy.json",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        assert!(text.contains("table/TASK_TABLE\""), "{file}");
        assert!(
            text.contains("table/TASK_TABLE/index/*"),
            "{file}: queries use the indexes"
        );
    }
}
