//! The example pipeline (align → call scattered over regions → joint gathered per region →
//! merge) on DynamoDB Local, its tasks written by another client: Python's boto3 (from the
//! moto venv `scripts/test-services` installs) puts every task item as
//! `docs/dynamodb-table.md` lays it out, one by one in a shuffled order (dependents before
//! their upstream tasks), with no `depends_on` of their own: the graph comes from the
//! manifests alone. `anamo up` on that table then runs them with local workers, and every
//! task succeeds once, each started after the upstream tasks it depends on had finished.
//!
//! Needs DynamoDB Local (`ANAMO_TEST_DYNAMODB_ENDPOINT`) and the venv
//! (`$ANAMO_SERVICES_DIR/venv` or `<repo>/.services/venv`): their absence fails the test
//! (see `tests/common/services.rs`).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anamo::store::dynamo::shard_of;
use common::cli::{aws_env, dynamo_and_python, repo, stdout_ok};
use serde_json::{json, Value};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// `(step, id, script)` of every task of the example, expanded as the manifests' scatter
/// would: `call` once per sample and region.
fn example_tasks() -> Vec<(String, String, String)> {
    let examples = repo().join("examples");
    let regions = lines(&examples.join("regions.txt"));
    let mut out = Vec::new();
    for line in lines(&examples.join("tasks.tsv")) {
        let f: Vec<&str> = line.split('\t').collect();
        let (id, step, script) = (f[0], f[1], f[2].to_string());
        if step == "call" {
            for r in &regions {
                out.push((step.to_string(), format!("{id}/{r}"), script.clone()));
            }
        } else {
            out.push((step.to_string(), id.to_string(), script));
        }
    }
    out
}

/// The index shards of each step: the table's default (`anamo table create`, its version item).
const SHARDS: u32 = 8;

/// The task item of `docs/dynamodb-table.md` ("Task items", "The index keys"): `pending`
/// for a step without upstream steps, `waiting` for the others (as the page asks).
fn task_item(step: &str, id: &str, script: &str, now: i64) -> Value {
    let (state, sk) = if step == "align" {
        ("pending", format!("2147483647#{now:013}#{id}"))
    } else {
        ("waiting", format!("{now:013}#{id}"))
    };
    json!({
        "pk": {"S": format!("T#{step}#{id}")},
        "step": {"S": step},
        "id": {"S": id},
        "state": {"S": state},
        "script": {"S": script},
        "priority": {"N": "0"},
        "attempts": {"N": "0"},
        "max_attempts": {"N": "3"},
        "created_at": {"N": now.to_string()},
        "updated_at": {"N": now.to_string()},
        "g2pk": {"S": format!("S#{step}#{state}#{}", shard_of(id, SHARDS))},
        "g2sk": {"S": sk},
    })
}

/// Shuffles the items with a seeded generator and puts each with the page's condition,
/// then registers the steps; prints the order it used.
const BOTO3: &str = r##"
import json, random, sys
import boto3

endpoint, table, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
request = json.load(sys.stdin)
ddb = boto3.client("dynamodb", endpoint_url=endpoint, region_name="us-east-1")
items = request["tasks"]
random.Random(seed).shuffle(items)
for item in items:
    ddb.put_item(TableName=table, Item=item, ConditionExpression="attribute_not_exists(pk)")
    # The task's count, in its shard's counter item (`S#{step}#{state}#{shard}`).
    _, step, state, shard = item["g2pk"]["S"].split("#")
    ddb.update_item(TableName=table, Key={"pk": {"S": "C#%s#%s" % (step, shard)}},
                    UpdateExpression="ADD #s :one", ExpressionAttributeNames={"#s": state},
                    ExpressionAttributeValues={":one": {"N": "1"}})
for step in request["steps"]:
    ddb.put_item(TableName=table, Item={
        "pk": {"S": "STEP#" + step}, "g2pk": {"S": "STEPS"}, "g2sk": {"S": step},
        "step": {"S": step}, "shards": {"N": "8"}})
print(json.dumps([i["step"]["S"] + "/" + i["id"]["S"] for i in items]))
"##;

fn anamo(endpoint: &str, table: &str, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anamo"));
    aws_env(&mut c, endpoint)
        .current_dir(dir)
        .args(["--store", &format!("dynamodb://{table}")]);
    c
}

/// Whether some task was put before a task it depends on.
fn dependent_first(order: &[String]) -> bool {
    let at = |prefix: &str| order.iter().position(|t| t.starts_with(prefix));
    order.iter().enumerate().any(|(i, t)| {
        let upstream = match t.split_once('/') {
            Some(("call", rest)) => rest.split('/').next().map(|s| format!("align/{s}")),
            Some(("joint", _)) => Some("call/".to_string()),
            Some(("merge", _)) => Some("joint/".to_string()),
            _ => None,
        };
        upstream.and_then(|u| at(&u)).is_some_and(|j| j > i)
    })
}

/// Puts the task items of `tasks` with boto3 in an order shuffled by a seed taken from the
/// clock; returns the seed and the order (`step/id`).
fn put_shuffled(
    python: &Path,
    endpoint: &str,
    table: &str,
    tasks: &[(String, String, String)],
) -> (i64, Vec<String>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let items: Vec<Value> = tasks
        .iter()
        .map(|(step, id, script)| task_item(step, id, script, now))
        .collect();
    let seed = now % 1_000_000;
    let mut boto = aws_env(&mut Command::new(python), endpoint)
        .args(["-c", BOTO3, endpoint, table, &seed.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let request = json!({"tasks": items, "steps": ["align", "call", "joint", "merge"]});
    boto.stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let order =
        serde_json::from_str(&stdout_ok("boto3", boto.wait_with_output().unwrap())).unwrap();
    (seed, order)
}

/// Every task of `listed` succeeded at its first attempt and started after every upstream
/// task it depends on had finished (the results' clock times, all from this machine).
fn assert_ran_once_in_order(listed: &[Value]) {
    let mut ran: HashMap<String, (i64, i64)> = HashMap::new();
    for t in listed {
        let name = format!(
            "{}/{}",
            t["step"].as_str().unwrap(),
            t["id"].as_str().unwrap()
        );
        assert_eq!(t["state"], "succeeded", "{t}");
        assert_eq!(
            t["attempts"], 1,
            "ran once, never failed for want of input: {t}"
        );
        let r = &t["result"];
        let times = (
            r["started_at"].as_i64().unwrap(),
            r["finished_at"].as_i64().unwrap(),
        );
        ran.insert(name, times);
    }
    let finished_by = |prefix: &str, suffix: &str| -> i64 {
        ran.iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.ends_with(suffix))
            .map(|(_, (_, f))| *f)
            .max()
            .unwrap_or_else(|| panic!("no {prefix}*{suffix}"))
    };
    for (name, (started, _)) in &ran {
        let parts: Vec<&str> = name.split('/').collect();
        let after = match parts[0] {
            "call" => finished_by(&format!("align/{}", parts[1]), ""),
            "joint" => finished_by("call/", &format!("/{}", parts[1])),
            "merge" => finished_by("joint/", ""),
            _ => continue,
        };
        assert!(
            *started >= after,
            "{name} started before its upstream tasks finished"
        );
    }
}

#[test]
fn boto3_adds_the_example_pipeline_in_random_order_and_anamo_runs_it_in_order() {
    let Some((endpoint, python)) = dynamo_and_python() else {
        return;
    };
    let table = format!("anamo-pipeline-{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::os::unix::fs::symlink(repo().join("examples"), d.join("examples")).unwrap();
    stdout_ok(
        "anamo table create",
        anamo(&endpoint, &table, d)
            .args(["table", "create"])
            .output()
            .unwrap(),
    );

    let tasks = example_tasks();
    let (seed, order) = put_shuffled(&python, &endpoint, &table, &tasks);
    assert_eq!(order.len(), tasks.len());
    assert!(
        dependent_first(&order),
        "seed {seed}: the shuffle put no dependent before its upstream task: {order:?}"
    );

    // The controller publishes the manifests' graph and runs every step's local workers.
    let out = anamo(&endpoint, &table, d)
        .args(["up", "--json", "--manifests", "examples/manifests"])
        .output()
        .unwrap();
    let summary: Value =
        serde_json::from_str(&stdout_ok(&format!("anamo up (seed {seed})"), out)).unwrap();
    for row in summary["steps"].as_array().unwrap() {
        let total = tasks.iter().filter(|(s, _, _)| row["step"] == *s).count();
        assert_eq!(row["succeeded"], total, "seed {seed}: {row}");
    }

    let listed = stdout_ok(
        "anamo task list",
        anamo(&endpoint, &table, d)
            .args(["task", "list", "--json"])
            .output()
            .unwrap(),
    );
    let listed: Vec<Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), tasks.len());
    assert_ran_once_in_order(&listed);
    let summary_txt = std::fs::read_to_string(d.join("anamo-out/summary.txt")).unwrap();
    let samples = tasks.iter().filter(|(s, _, _)| s == "align").count();
    let regions = tasks.iter().filter(|(s, _, _)| s == "joint").count();
    assert_eq!(
        summary_txt,
        format!(
            "regions\t{regions}\tsamples\t{samples}\tgenotypes\t{}\n",
            samples * regions
        )
    );

    stdout_ok(
        "anamo table delete",
        anamo(&endpoint, &table, d)
            .args(["table", "delete", "--yes"])
            .output()
            .unwrap(),
    );
}
