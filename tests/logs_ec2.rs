//! Logs that outlive the instance, end to end on moto (EC2 and S3) and DynamoDB Local: a
//! controller launches an instance for a fleet with `logUrl: s3://...`, whose user data passes
//! the URL to the worker; a worker process stands in for the instance (as in
//! `controller_aws`); the tasks' logs land in S3 under the documented keys, the controller
//! scales the idle instance in, the worker and its local log directory go, and `anamo task
//! logs` still prints every task's output from S3. Run through `scripts/test-services run --
//! cargo nextest run --test logs_ec2`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anamo::clock::{self, SharedClock};
use anamo::model::{TaskSpec, TaskState};
use common::controller_aws::{AwsWorld, FleetYaml};
use common::moto::s3_bucket;
use common::process::run_with_timeout;
use common::worker::WorkerProcess;

/// A hang guard for the whole run (it takes about 10 s), not a timing.
const LIMIT: Duration = Duration::from_secs(180);

fn env(w: &AwsWorld) -> Vec<(String, String)> {
    let mut env = w.process_env();
    env.push(("AWS_ENDPOINT_URL_S3".into(), w.moto_endpoint.clone()));
    env
}

/// The `--log-url` value the instance's user data gives its worker.
fn log_url_in(user_data: &str) -> Option<String> {
    let at = user_data.find("logs=(--log-url '")? + "logs=(--log-url '".len();
    let rest = &user_data[at..];
    Some(rest[..rest.find('\'')?].to_string())
}

/// `anamo worker` for `instance` with the log URL its user data names.
fn start_worker(w: &AwsWorld, instance: &str, log_url: &str) -> WorkerProcess {
    let log = w.dir.path().join(format!("worker-{instance}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args(["--store", &w.harness.url, "worker", "--step", "align"])
        .args(["--instance-id", instance, "--imds-endpoint", "off"])
        .args(["--slots", "2", "--lease-ttl", "5s", "--heartbeat", "1s"])
        .args(["--poll-interval", "200ms", "--log-url", log_url])
        .arg("--log-dir")
        .arg(w.dir.path().join("instance-logs"))
        .envs(env(w))
        .env_remove("ANAMO_LOG_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start anamo worker");
    WorkerProcess { child, log }
}

async fn states(w: &AwsWorld) -> Vec<TaskState> {
    let mut out = Vec::new();
    for id in ["s0", "s1"] {
        let t = w.store().get("align", id).await.unwrap().expect("task");
        out.push(t.state);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_stored_in_s3_are_read_after_the_instance_is_gone() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let (s3, bucket) = s3_bucket(&w.moto_endpoint).await;
    let url = format!("s3://{bucket}/run-7");
    let yaml = FleetYaml::ec2_with_user_data(&w.template)
        .set("logUrl", &url)
        .set("scaleDownDelay", "1s")
        .yaml();
    let tasks: Vec<TaskSpec> = ["s0", "s1"]
        .iter()
        .map(|id| {
            TaskSpec::new(
                "align",
                *id,
                format!("echo aligned {id}; echo to stderr >&2"),
            )
        })
        .collect();
    w.store()
        .import(&tasks, clock::system().now())
        .await
        .unwrap();
    let system: SharedClock = clock::system();
    let factory = w.factory();
    let mut c = w.controller(&yaml, system, &factory, |_| {});
    let r = c.reconcile_once().await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let ids = w.live_instances("align").await;
    assert_eq!(ids.len(), 1, "{ids:?}");
    let ud = w.moto.user_data(&ids[0]).await.expect("user data");
    let log_url = log_url_in(&ud).unwrap_or_else(|| panic!("no --log-url in:\n{ud}"));
    assert_eq!(log_url, url);
    let mut worker = start_worker(&w, &ids[0], &log_url);

    // Passes until both tasks succeeded and the idle instance was scaled in.
    let started = Instant::now();
    while !(states(&w).await == [TaskState::Succeeded; 2]
        && w.live_instances("align").await.is_empty())
    {
        assert!(
            started.elapsed() < LIMIT,
            "{:?}\n{}",
            states(&w).await,
            worker.log_text()
        );
        let r = c.reconcile_once().await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The instance is gone: so are its worker and its local logs.
    worker.kill9();
    std::fs::remove_dir_all(w.dir.path().join("instance-logs")).unwrap();

    for id in ["s0", "s1"] {
        let key = format!("run-7/align/{id}/1.log");
        let obj = s3.get_object().bucket(&bucket).key(&key).send().await;
        let body = obj
            .unwrap_or_else(|e| panic!("{key}: {e:?}"))
            .body
            .collect()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&body.into_bytes()).into_owned();
        assert!(text.contains(&format!("aligned {id}")), "{key}: {text}");
        let t = w.store().get("align", id).await.unwrap().unwrap();
        let result = serde_json::to_value(t.result.as_ref().expect("result")).unwrap();
        assert_eq!(
            result["log_url"],
            format!("s3://{bucket}/{key}"),
            "{result}"
        );
        let mut cmd = w.anamo();
        cmd.args(["task", "logs", "align", id]).envs(env(&w));
        let (st, out, err) = tokio::task::block_in_place(|| {
            run_with_timeout("anamo task logs", &mut cmd, Duration::from_secs(60))
        });
        assert!(st.success(), "{err}");
        assert!(out.contains(&format!("aligned {id}")), "{out}{err}");
        assert!(out.contains("to stderr"), "{out}{err}");
    }
}
