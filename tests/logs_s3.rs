//! Task logs that outlive the instance, against moto's S3: `anamo worker --log-url s3://...`
//! processes store every attempt's full output under `PREFIX/STEP/ID/ATTEMPT.log` (a large
//! log as a multipart upload), the result records where; `anamo task logs` prints them after
//! the worker's local log directory is gone, `--follow` shows a running task's output before
//! it ends, and an unreachable S3 loses no result (the result says why its log is missing).
//! On SQLite and DynamoDB Local.

#[macro_use]
mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anamo::model::{TaskSpec, TaskState};
use common::moto::{moto_endpoint, s3_bucket};
use common::process::run_with_timeout;
use common::worker::{get, import, store_env, wait_running, wait_until, WorkerProcess};
use common::Harness;

/// Hang guard for a worker to run a handful of short tasks and idle out.
const WORKER_EXIT: Duration = Duration::from_secs(90);

on_both_stores!(logs_land_under_the_documented_keys_and_task_logs_prints_them);

/// What `anamo` needs to reach the store of `h` and S3 at `s3_endpoint`.
fn env(h: &Harness, s3_endpoint: &str) -> Vec<(String, String)> {
    let mut env = store_env(&h.url);
    for (k, v) in [
        ("AWS_ENDPOINT_URL_S3", s3_endpoint),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        env.push((k.into(), v.into()));
    }
    env
}

/// `anamo worker` storing logs at `log_url`, exiting after 2 s idle.
fn start_worker(
    h: &Harness,
    s3_endpoint: &str,
    dir: &Path,
    step: &str,
    log_url: &str,
    extra: &[&str],
) -> WorkerProcess {
    let log = dir.join("worker.log");
    let child = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args(["--store", &h.url, "--log-format", "json", "worker"])
        .args([
            "--step",
            step,
            "--worker-id",
            "w1",
            "--imds-endpoint",
            "off",
        ])
        .args([
            "--lease-ttl",
            "3s",
            "--heartbeat",
            "1s",
            "--poll-interval",
            "100ms",
        ])
        .args(["--idle-exit", "2s", "--log-url", log_url])
        .args(["--log-upload-interval", "300ms"])
        .arg("--log-dir")
        .arg(dir.join("logs"))
        .args(extra)
        .envs(env(h, s3_endpoint))
        .env_remove("ANAMO_LOG_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("worker log"))
        .spawn()
        .expect("start anamo worker");
    WorkerProcess { child, log }
}

/// `anamo task logs ARGS...`: (success, stdout, stderr).
fn task_logs(h: &Harness, s3_endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anamo"));
    cmd.args(["--store", &h.url, "task", "logs"])
        .args(args)
        .envs(env(h, s3_endpoint))
        .env_remove("ANAMO_LOG_URL");
    let (status, out, err) = tokio::task::block_in_place(|| {
        run_with_timeout("anamo task logs", &mut cmd, Duration::from_secs(60))
    });
    (status.success(), out, err)
}

async fn object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    let out = s3
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("s3://{bucket}/{key}: {e:?}"));
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

async fn logs_land_under_the_documented_keys_and_task_logs_prints_them(h: Harness) {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let (s3, bucket) = s3_bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    // Over the 8 MiB multipart threshold: sent in two parts.
    let big_len = 9 * 1024 * 1024;
    let mut fail = TaskSpec::new("align", "S/2", "echo \"attempt $ANAMO_ATTEMPT\"; exit 3");
    fail.max_attempts = 2;
    import(
        &h.store,
        &[
            TaskSpec::new("align", "S1", "printf 'line %s\\n' 1 2 3; echo oops >&2"),
            TaskSpec::new(
                "align",
                "big",
                format!("head -c {big_len} /dev/zero | tr '\\0' x; echo; echo END"),
            ),
            fail,
        ],
    )
    .await;
    let url = format!("s3://{bucket}/runs/r1");
    let mut worker = start_worker(&h, &endpoint, dir.path(), "align", &url, &[]);
    let status = worker.wait_exit(WORKER_EXIT).await;
    assert!(status.success(), "worker: {}", worker.log_text());

    let s1 = get(&h.store, "align", "S1").await;
    assert_eq!(s1.state, TaskState::Succeeded);
    let r = s1.result.unwrap();
    assert_eq!(
        r.log_url.as_deref(),
        Some(format!("{url}/align/S1/1.log").as_str())
    );
    assert_eq!(r.log_error, None);
    let text = String::from_utf8(object(&s3, &bucket, "runs/r1/align/S1/1.log").await).unwrap();
    for line in ["line 1\n", "line 2\n", "line 3\n", "oops\n"] {
        assert!(text.contains(line), "{text:?}");
    }
    let big = object(&s3, &bucket, "runs/r1/align/big/1.log").await;
    assert_eq!(big.len(), big_len + "\nEND\n".len());
    assert!(big.ends_with(b"xxx\nEND\n"));
    // Both attempts of the failing task, its id encoded as one key segment.
    for n in [1, 2] {
        let key = format!("runs/r1/align/S%2F2/{n}.log");
        assert_eq!(
            object(&s3, &bucket, &key).await,
            format!("attempt {n}\n").as_bytes()
        );
    }
    assert_eq!(get(&h.store, "align", "S/2").await.state, TaskState::Failed);

    // The instance is gone: only S3 has the logs.
    std::fs::remove_dir_all(dir.path().join("logs")).unwrap();
    let (ok, out, err) = task_logs(&h, &endpoint, &["align", "S1"]);
    assert!(ok, "{err}");
    assert_eq!(out, text);
    let (ok, out, err) = task_logs(&h, &endpoint, &["align", "S/2", "--attempt", "1"]);
    assert!(ok, "{err}");
    assert_eq!(out, "attempt 1\n");
    let (ok, out, err) = task_logs(&h, &endpoint, &["align", "big", "--tail", "1"]);
    assert!(ok, "{err}");
    assert_eq!(out, "END\n");
    let (ok, _, err) = task_logs(&h, &endpoint, &["align", "S1", "--attempt", "2"]);
    assert!(!ok);
    assert!(
        err.contains("task align/S1 has no attempt 2: it ran 1 time(s)"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn follow_shows_a_running_tasks_output_before_it_ends() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    let h = Harness::sqlite().await;
    let (_s3, bucket) = s3_bucket(&endpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("go-on");
    let script = format!(
        "echo started; while [ ! -e {} ]; do sleep 0.1; done; echo finished",
        marker.display()
    );
    import(&h.store, &[TaskSpec::new("call", "S1", script)]).await;
    let url = format!("s3://{bucket}/live");
    let mut worker = start_worker(&h, &endpoint, dir.path(), "call", &url, &[]);
    wait_running(&h.store, "call", "S1", Duration::from_secs(30)).await;

    let mut follow = Command::new(env!("CARGO_BIN_EXE_anamo"))
        .args(["--store", &h.url, "task", "logs", "call", "S1", "--follow"])
        .args(["--log-url", &url, "--interval", "200ms"])
        .envs(env(&h, &endpoint))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start anamo task logs --follow");
    let stdout = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(30)))
        .expect("--follow printed the running task's output");
    assert_eq!(first, "started");
    // Shown while the task still runs: it waits for the marker.
    assert_eq!(get(&h.store, "call", "S1").await.state, TaskState::Running);
    std::fs::write(&marker, "").unwrap();

    let ended = tokio::task::block_in_place(|| rx.recv_timeout(Duration::from_secs(30)))
        .expect("--follow printed the end of the output");
    assert_eq!(ended, "finished");
    let mut exited = None;
    wait_until(
        "--follow exits when the task ends",
        Duration::from_secs(30),
        || {
            exited = follow.try_wait().unwrap();
            std::future::ready(exited.is_some())
        },
    )
    .await;
    assert!(exited.unwrap().success());
    reader.join().unwrap();
    assert_eq!(
        get(&h.store, "call", "S1").await.state,
        TaskState::Succeeded
    );
    assert!(worker.wait_exit(WORKER_EXIT).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_s3_loses_no_result_and_the_result_says_why() {
    let h = Harness::sqlite().await;
    // A port nothing listens on: every S3 call is refused.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dir = tempfile::tempdir().unwrap();
    import(&h.store, &[TaskSpec::new("align", "S1", "echo hello")]).await;
    let url = "s3://unreachable-bucket/runs";
    let mut worker = start_worker(
        &h,
        &closed,
        dir.path(),
        "align",
        url,
        &["--log-upload-timeout", "2s"],
    );
    assert!(worker.wait_exit(WORKER_EXIT).await.success());

    let task = get(&h.store, "align", "S1").await;
    assert_eq!(task.state, TaskState::Succeeded);
    let r = task.result.unwrap();
    assert_eq!(r.log_tail, "hello\n");
    assert_eq!(r.log_url, None);
    let why = r.log_error.expect("the result says why the log is missing");
    assert!(
        why.starts_with("log not stored (unavailable after "),
        "{why}"
    );
    assert!(why.contains("nothing was stored"), "{why}");
    assert!(
        worker.log_text().contains("cannot store the task's log"),
        "{}",
        worker.log_text()
    );

    // `task logs` falls back on the result's tail and passes on why.
    let (ok, out, err) = task_logs(&h, &closed, &["align", "S1"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello\n");
    assert!(err.contains("note: log not stored"), "{err}");
}
