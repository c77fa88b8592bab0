//! `docs/dynamodb-table.md` is enough for another client: Python's boto3 (from the moto venv
//! that `scripts/test-services` installs) adds a task to a table made by `anamo table create`
//! on DynamoDB Local, using the item and the condition the page shows; `anamo worker` runs it;
//! `anamo task show` and the page's GSI count query both see it succeeded. The page's
//! `aws dynamodb create-table` command is checked against the table `anamo` created.
//!
//! Needs DynamoDB Local (`ANAMO_TEST_DYNAMODB_ENDPOINT`) and the venv
//! (`$ANAMO_SERVICES_DIR/venv` or `<repo>/.services/venv`): their absence fails the test
//! (see `tests/common/services.rs`).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{aws_env, dynamo_and_python, repo, stdout_ok};
use serde_json::{json, Value};

/// The text of `## heading` in the page, up to the next `## `.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("docs/dynamodb-table.md has no `{heading}`"));
    let rest = &doc[start + heading.len() + 2..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

fn first_sh_block(text: &str) -> &str {
    let start = text.find("```sh\n").expect("a sh block") + 6;
    let len = text[start..].find("```").expect("end of the sh block");
    &text[start..start + len]
}

/// The single-quoted shell argument after `flag ` in `cmd` (which may hold `'"$VAR"'`-style
/// splices: the argument ends at a `'` that ends a line or is followed by a space).
fn quoted_arg<'a>(cmd: &'a str, flag: &str, nth: usize) -> &'a str {
    let start = cmd
        .match_indices(&format!("{flag} '"))
        .nth(nth)
        .unwrap_or_else(|| panic!("no {flag} #{nth} in:\n{cmd}"))
        .0
        + flag.len()
        + 2;
    let rest = &cmd[start..];
    let end = rest
        .match_indices('\'')
        .map(|(i, _)| i)
        .find(|&i| matches!(rest.as_bytes().get(i + 1), None | Some(b'\n' | b' ')))
        .expect("closing quote");
    &rest[..end]
}

/// The words after `flag` up to the next `--flag`, with line continuations removed.
fn words_after(cmd: &str, flag: &str) -> Vec<String> {
    let flat = cmd.replace("\\\n", " ");
    let rest = &flat[flat.find(flag).unwrap_or_else(|| panic!("no {flag}")) + flag.len()..];
    rest.split_whitespace()
        .take_while(|w| !w.starts_with("--"))
        .map(str::to_string)
        .collect()
}

/// `AttributeName=pk,AttributeType=S` → `{"AttributeName": "pk", "AttributeType": "S"}`.
fn shorthand(s: &str) -> Value {
    let mut m = serde_json::Map::new();
    for kv in s.split(',') {
        let (k, v) = kv.split_once('=').unwrap();
        m.insert(k.to_string(), json!(v));
    }
    Value::Object(m)
}

fn sorted(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by_key(|x| x.to_string());
    v
}

const BOTO3: &str = r#"
import json, sys
import boto3
from botocore.exceptions import ClientError

endpoint, table, request = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
out = {}
if request["op"] == "add":
    d = ddb.describe_table(TableName=table)["Table"]
    out["table"] = {
        "KeySchema": d["KeySchema"],
        "AttributeDefinitions": d["AttributeDefinitions"],
        "BillingMode": d.get("BillingModeSummary", {}).get("BillingMode"),
        "GlobalSecondaryIndexes": [
            {k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
            for g in d.get("GlobalSecondaryIndexes", [])
        ],
    }
    ddb.put_item(TableName=table, Item=request["task"],
                 ConditionExpression=request["condition"])
    try:
        ddb.put_item(TableName=table, Item=request["task"],
                     ConditionExpression=request["condition"])
        out["second_put"] = "accepted"
    except ClientError as e:
        out["second_put"] = e.response["Error"]["Code"]
    ddb.put_item(TableName=table, Item=request["step"])
    c = request["count"]
    ddb.update_item(TableName=table, Key=c["key"], UpdateExpression=c["expression"],
                    ExpressionAttributeNames=c["names"],
                    ExpressionAttributeValues=c["values"])
else:
    count = ddb.query(TableName=table, IndexName="gsi2",
                      KeyConditionExpression=request["condition"],
                      ExpressionAttributeValues=request["values"], Select="COUNT")
    out["count"] = count["Count"]
    out["item"] = ddb.get_item(TableName=table, Key=request["key"])["Item"]
print(json.dumps(out))
"#;

fn boto3(python: &Path, endpoint: &str, table: &str, request: Value) -> Value {
    let out = aws_env(&mut Command::new(python), endpoint)
        .args(["-c", BOTO3, endpoint, table, &request.to_string()])
        .output()
        .unwrap();
    serde_json::from_str(&stdout_ok("boto3", out)).unwrap()
}

fn anamo(endpoint: &str, table: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    aws_env(&mut c, endpoint).args(["--store", &format!("dynamodb://{table}")]);
    c
}

#[test]
fn boto3_adds_a_task_that_anamo_runs() {
    let Some((endpoint, python)) = dynamo_and_python() else {
        return;
    };
    let doc = std::fs::read_to_string(repo().join("docs/dynamodb-table.md")).unwrap();
    let table = format!("anamo-docs-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();

    stdout_ok(
        "anamo table create",
        anamo(&endpoint, &table)
            .args(["table", "create"])
            .output()
            .unwrap(),
    );

    // The page's put-item commands, with its shell splices filled in like the shell would.
    let add = first_sh_block(section(&doc, "## Adding tasks"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let task_json = quoted_arg(add, "--item", 0)
        .replace(r#"'"$(printf %013d "$NOW")"'"#, &format!("{now:013}"))
        .replace(r#"'"$NOW"'"#, &now.to_string());
    assert!(!task_json.contains('$'), "unexpanded splice: {task_json}");
    let mut task: Value = serde_json::from_str(&task_json).unwrap();
    let condition = quoted_arg(add, "--condition-expression", 0);
    assert_eq!(condition, "attribute_not_exists(pk)");
    let step: Value = serde_json::from_str(quoted_arg(add, "--item", 1)).unwrap();
    let step_name = task["step"]["S"].as_str().unwrap().to_string();
    let step_name = step_name.as_str();
    let id = task["id"]["S"].as_str().unwrap().to_string();
    let id = id.as_str();
    assert_eq!(task["pk"]["S"], format!("T#{step_name}#{id}"));
    // Our own script instead of the page's `bwa mem ...`.
    let marker = dir.path().join("ran-by-anamo");
    task["script"] = json!({"S": format!("echo \"$ANAMO_TASK_ID\" > '{}'", marker.display())});

    // And the page's `ADD` to the task's shard counter (idle workers look only in shards
    // their counters show tasks in).
    let json_arg =
        |flag: &str| -> Value { serde_json::from_str(quoted_arg(add, flag, 0)).unwrap() };
    let count = json!({
        "key": json_arg("--key"),
        "expression": quoted_arg(add, "--update-expression", 0),
        "names": json_arg("--expression-attribute-names"),
        "values": json_arg("--expression-attribute-values"),
    });
    let added = boto3(
        &python,
        &endpoint,
        &table,
        json!({"op": "add", "task": task, "step": step, "condition": condition, "count": count}),
    );
    assert_eq!(
        added["second_put"], "ConditionalCheckFailedException",
        "the documented condition keeps an existing task from being overwritten"
    );

    // The table `anamo table create` made is the one the page's create-table command makes.
    let create = first_sh_block(section(&doc, "## Keys and index"));
    let t = &added["table"];
    let defs: Vec<Value> = words_after(create, "--attribute-definitions")
        .iter()
        .map(|w| shorthand(w))
        .collect();
    assert_eq!(
        sorted(defs),
        sorted(t["AttributeDefinitions"].as_array().unwrap().clone())
    );
    let keys: Vec<Value> = words_after(create, "--key-schema")
        .iter()
        .map(|w| shorthand(w))
        .collect();
    assert_eq!(json!(keys), t["KeySchema"]);
    assert_eq!(
        words_after(create, "--billing-mode"),
        [t["BillingMode"].as_str().unwrap()]
    );
    let gsis: Value = serde_json::from_str(
        &quoted_arg(create, "--global-secondary-indexes", 0).replace('\n', ""),
    )
    .unwrap();
    assert_eq!(gsis, t["GlobalSecondaryIndexes"]);

    // anamo runs the task.
    let mut worker = anamo(&endpoint, &table)
        .args([
            "worker",
            "--step",
            step_name,
            "--max-tasks",
            "1",
            "--idle-exit",
            "5s",
        ])
        .arg("--log-dir")
        .arg(dir.path().join("logs"))
        .args(["--imds-endpoint", "off", "--spot-poll", "0s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while worker.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = worker.kill();
            panic!("anamo worker did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stdout_ok("anamo worker", worker.wait_with_output().unwrap());
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), id);

    let shown: Value = serde_json::from_str(&stdout_ok(
        "anamo task show",
        anamo(&endpoint, &table)
            .args(["task", "show", "--step", step_name, "--id", id, "--json"])
            .output()
            .unwrap(),
    ))
    .unwrap();
    assert_eq!(shown["state"], "succeeded", "{shown}");
    assert_eq!(shown["attempts"], 1, "{shown}");

    // Progress as the page reads it: the GSI count query, and get-item.
    let progress = first_sh_block(section(&doc, "## Reading progress"));
    let key_condition = quoted_arg(progress, "--key-condition-expression", 0);
    let values = quoted_arg(progress, "--expression-attribute-values", 0).replace(
        &format!("S#{step_name}#failed"),
        &format!("S#{step_name}#succeeded"),
    );
    assert!(values.contains("#succeeded"), "{values}");
    let read = boto3(
        &python,
        &endpoint,
        &table,
        json!({
            "op": "read",
            "condition": key_condition,
            "values": serde_json::from_str::<Value>(&values).unwrap(),
            "key": {"pk": task["pk"]},
        }),
    );
    assert_eq!(read["count"], 1, "{read}");
    let item = &read["item"];
    assert_eq!(item["state"]["S"], "succeeded", "{item}");
    // In the same shard as it was added to.
    let added_to = task["g2pk"]["S"].as_str().unwrap();
    assert_eq!(
        item["g2pk"]["S"].as_str().unwrap(),
        added_to.replace("#pending#", "#succeeded#"),
        "{item}"
    );
    let result: Value = serde_json::from_str(item["result"]["S"].as_str().unwrap()).unwrap();
    assert_eq!(result["exit_code"], 0, "{result}");

    stdout_ok(
        "anamo table delete",
        anamo(&endpoint, &table)
            .args(["table", "delete", "--yes"])
            .output()
            .unwrap(),
    );
}
