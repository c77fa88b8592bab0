//! Task logs reachable from where tasks are shown: the status server's
//! `/api/tasks/{step}/{id}/log?attempt=N&tail=N` (the same reader as `anamo task logs`) on a
//! real SQLite store with logs in a directory (`file://`) and in moto's S3, and `anamo sample
//! show` naming each task's log and the command that prints it. Attempts are recorded through
//! the store as a worker records them, their logs stored through the worker's own sink.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use anamo::controller::status::ControllerStatus;
use anamo::logs::{LogSink, LogUrl};
use anamo::metrics::Metrics;
use anamo::model::{ClaimRequest, Completion, Outcome, TaskResult, TaskSpec};
use anamo::server::task_log::LOG_MAX_BYTES;
use anamo::server::{log_href, serve, AppState, TaskLogs};
use anamo::store::SharedStore;
use common::cli::{anamo, ok};
use common::http::{free_port, http_get, HttpResponse};
use common::moto::{moto_endpoint, s3_bucket};
use common::worker::{import, now, FaultyStore};
use common::Harness;

/// Starts the status server on `store`, with `log_urls` as the fleets' `logUrl`s; it stops
/// with the test's runtime.
async fn server(store: SharedStore, log_urls: &[(&str, &LogUrl)]) -> SocketAddr {
    let state = AppState {
        status: Arc::new(RwLock::new(ControllerStatus::new("test", "me", "sqlite"))),
        metrics: Arc::new(Metrics::new()),
        logs: TaskLogs::with_urls(
            store,
            log_urls
                .iter()
                .map(|(step, url)| (step.to_string(), (*url).clone()))
                .collect::<BTreeMap<_, _>>(),
        ),
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let (bound, _task) = serve(addr, state, std::future::pending())
        .await
        .expect("start the status server");
    bound
}

/// `GET path` off the runtime's threads (the client blocks).
async fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let path = path.to_string();
    tokio::task::spawn_blocking(move || http_get(addr, &path))
        .await
        .expect("the GET thread")
        .unwrap_or_else(|e| panic!("GET http://{addr}: {e}"))
}

/// The value of header `name` (lower case) in `r`.
fn header(r: &HttpResponse, name: &str) -> Option<String> {
    r.headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim().eq_ignore_ascii_case(name)).then(|| v.trim().to_string())
    })
}

/// Claims the one pending task of `step` and, as a worker with `sink` does, stores `log` as
/// the attempt's log; then ends the attempt with `outcome` (`None`: it keeps running).
/// Returns the attempt.
async fn attempt(
    store: &SharedStore,
    step: &str,
    sink: Option<&LogSink>,
    log: &[u8],
    outcome: Option<Outcome>,
) -> u32 {
    let req = ClaimRequest {
        step: step.into(),
        owner: "w1".into(),
        ttl_ms: 600_000,
    };
    let claim = store
        .claim(&req, now())
        .await
        .unwrap()
        .expect("a pending task");
    let (id, n) = (claim.task.id().to_string(), claim.task.attempts);
    let mut log_url = None;
    if let Some(sink) = sink {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("task.log");
        std::fs::write(&local, log).unwrap();
        sink.put_file(step, &id, n, &local)
            .await
            .expect("store the log");
        log_url = Some(sink.url().attempt_url(step, &id, n));
    }
    let Some(outcome) = outcome else { return n };
    let tail = &log[log.len().saturating_sub(4096)..];
    let done = Completion {
        outcome,
        retry_delay: None,
        result: TaskResult {
            exit_code: Some(if outcome == Outcome::Succeeded { 0 } else { 1 }),
            log_tail: String::from_utf8_lossy(tail).into_owned(),
            worker_id: "w1".into(),
            log_url,
            ..Default::default()
        },
    };
    store.complete(&claim.lease(), &done, now()).await.unwrap();
    n
}

/// A directory of logs and its sink.
async fn file_sink(dir: &Path) -> LogSink {
    let url = LogUrl::parse(&format!("file://{}", dir.join("logs").display())).unwrap();
    LogSink::connect(url).await
}

#[tokio::test]
async fn the_endpoint_serves_each_attempt_of_a_scatter_task_by_its_encoded_id() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = file_sink(dir.path()).await;
    import(&h.store, &[TaskSpec::new("call", "NA12878/chr1", "true")]).await;
    attempt(
        &h.store,
        "call",
        Some(&sink),
        b"first\n",
        Some(Outcome::Failed),
    )
    .await;
    let second = b"one\ntwo\nthree\n";
    let n = attempt(&h.store, "call", Some(&sink), second, Some(Outcome::Failed)).await;
    assert_eq!(n, 2);
    let addr = server(h.store.clone(), &[]).await;

    let href = log_href("call", "NA12878/chr1", 2);
    assert_eq!(href, "/api/tasks/call/NA12878%2Fchr1/log?attempt=2");
    let r = get(addr, &href).await;
    assert_eq!((r.status, r.body.as_str()), (200, "one\ntwo\nthree\n"));
    assert!(header(&r, "content-type").is_some_and(|t| t.starts_with("text/plain")));
    assert_eq!(header(&r, "x-anamo-log-attempt").as_deref(), Some("2"));
    let url = sink.url().attempt_url("call", "NA12878/chr1", 2);
    assert_eq!(header(&r, "x-anamo-log-url"), Some(url));

    let first = get(addr, &log_href("call", "NA12878/chr1", 1)).await;
    assert_eq!((first.status, first.body.as_str()), (200, "first\n"));
    let latest = get(addr, "/api/tasks/call/NA12878%2Fchr1/log?tail=2").await;
    assert_eq!((latest.status, latest.body.as_str()), (200, "two\nthree\n"));

    for (path, status, says) in [
        (
            log_href("call", "NA12878/chr2", 1),
            404,
            "task call/NA12878/chr2 not found",
        ),
        (
            log_href("call", "NA12878/chr1", 3),
            404,
            "has no attempt 3: it ran 2 time(s)",
        ),
        (log_href("nope", "NA12878/chr1", 1), 404, "not found"),
    ] {
        let r = get(addr, &path).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
        assert!(r.body.contains(says), "{path}: {}", r.body);
    }
    // Unencoded, the `/` of the id makes another path: no such endpoint.
    let raw = get(addr, "/api/tasks/call/NA12878/chr1/log?attempt=1").await;
    assert_eq!(raw.status, 404);
}

#[tokio::test]
async fn a_long_log_is_cut_to_its_last_lines_within_the_bound() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = file_sink(dir.path()).await;
    import(&h.store, &[TaskSpec::new("align", "S1", "true")]).await;
    let lines = 2 * LOG_MAX_BYTES as usize / 20;
    let log: String = (0..lines).map(|i| format!("line {i:013}\n")).collect();
    assert!(
        log.len() as u64 > LOG_MAX_BYTES,
        "the log outgrows the bound"
    );
    attempt(
        &h.store,
        "align",
        Some(&sink),
        log.as_bytes(),
        Some(Outcome::Succeeded),
    )
    .await;
    let addr = server(h.store.clone(), &[]).await;

    let r = get(addr, &log_href("align", "S1", 1)).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.len() as u64 <= LOG_MAX_BYTES,
        "{} bytes",
        r.body.len()
    );
    assert!(log.ends_with(&r.body), "the body is the log's end");
    assert!(r.body.starts_with("line "), "from a whole line");
    let note = header(&r, "x-anamo-log-note").unwrap_or_default();
    assert!(
        note.contains(&format!("the log has {} bytes", log.len())),
        "{note}"
    );
    assert!(
        note.contains("anamo task logs align S1 --attempt 1"),
        "{note}"
    );
}

#[tokio::test]
async fn without_a_stored_log_the_results_tail_is_served_and_says_so() {
    let h = Harness::sqlite().await;
    import(&h.store, &[TaskSpec::new("qc", "S1", "true")]).await;
    attempt(&h.store, "qc", None, b"the end\n", Some(Outcome::Succeeded)).await;
    let addr = server(h.store.clone(), &[]).await;
    let r = get(addr, &log_href("qc", "S1", 1)).await;
    assert_eq!((r.status, r.body.as_str()), (200, "the end\n"));
    assert_eq!(header(&r, "x-anamo-log-url"), None);
    let note = header(&r, "x-anamo-log-note").unwrap_or_default();
    assert!(
        note.contains("only the end of the output is kept"),
        "{note}"
    );
}

#[tokio::test]
async fn a_running_first_attempt_is_read_under_its_fleets_log_url() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let sink = file_sink(dir.path()).await;
    import(&h.store, &[TaskSpec::new("align", "S1", "true")]).await;
    attempt(&h.store, "align", Some(&sink), b"so far\n", None).await;
    let path = log_href("align", "S1", 1);

    let without = server(h.store.clone(), &[]).await;
    let r = get(without, &path).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(
        r.body
            .contains("no log of task align/S1 attempt 1 is recorded"),
        "{}",
        r.body
    );

    let with = server(h.store.clone(), &[("align", sink.url())]).await;
    let r = get(with, &path).await;
    assert_eq!((r.status, r.body.as_str()), (200, "so far\n"));

    import(&h.store, &[TaskSpec::new("align", "S2", "true")]).await;
    attempt(&h.store, "align", None, b"", None).await;
    let r = get(with, &log_href("align", "S2", 1)).await;
    assert_eq!((r.status, r.body.as_str()), (200, ""));
    let note = header(&r, "x-anamo-log-note").unwrap_or_default();
    assert!(
        note.contains("is running and has stored no output yet"),
        "{note}"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_a_503_that_says_so() {
    let h = Harness::sqlite().await;
    import(&h.store, &[TaskSpec::new("align", "S1", "true")]).await;
    let faulty = FaultyStore::new(h.store.clone());
    let addr = server(faulty.clone(), &[]).await;
    faulty.set_down(true);
    let r = get(addr, &log_href("align", "S1", 1)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("cannot read task align/S1 from the store"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_unreachable_log_storage_is_a_503_that_says_so() {
    // Nothing listens on the port: S3 does not answer. (nextest runs each test in its own
    // process, so the variables reach no other test.)
    let port = free_port();
    for (k, v) in [
        ("AWS_ENDPOINT_URL_S3", format!("http://127.0.0.1:{port}")),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_MAX_ATTEMPTS", "1".into()),
    ] {
        std::env::set_var(k, v);
    }
    let h = Harness::sqlite().await;
    import(&h.store, &[TaskSpec::new("align", "S1", "true")]).await;
    let bucket = LogUrl::parse("s3://anamo-logs/run").unwrap();
    attempt(&h.store, "align", None, b"", None).await;
    let addr = server(h.store.clone(), &[("align", &bucket)]).await;
    let r = get(addr, &log_href("align", "S1", 1)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("log storage unavailable"), "{}", r.body);
    assert!(
        r.body.contains("s3://anamo-logs/run/align/S1/1.log"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn sample_show_names_each_log_and_the_command_that_prints_it() {
    let h = Harness::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sink = file_sink(d).await;
    let specs: Vec<_> = ["align", "qc", "call"]
        .iter()
        .map(|step| TaskSpec::new(*step, "NA12878", "true"))
        .collect();
    import(&h.store, &specs).await;
    attempt(
        &h.store,
        "align",
        Some(&sink),
        b"a1\n",
        Some(Outcome::Failed),
    )
    .await;
    attempt(
        &h.store,
        "align",
        Some(&sink),
        b"a2\n",
        Some(Outcome::Succeeded),
    )
    .await;
    attempt(&h.store, "qc", None, b"qc out\n", Some(Outcome::Succeeded)).await;
    attempt(&h.store, "call", None, b"", None).await;
    let align_url = sink.url().attempt_url("align", "NA12878", 2);

    let show = ok(&anamo(d, &h.url, &["sample", "show", "NA12878"]));
    for want in [
        format!("align/NA12878 attempt 2: {align_url}"),
        "anamo task logs align NA12878 --attempt 2".to_string(),
        "qc/NA12878 attempt 1: only the last 4 KB, kept in the result".to_string(),
        "anamo task logs qc NA12878 --attempt 1".to_string(),
        "call/NA12878 attempt 1: not recorded yet".to_string(),
        "anamo task logs call NA12878 --attempt 1 --log-url URL".to_string(),
    ] {
        assert!(show.contains(&want), "missing `{want}` in:\n{show}");
    }

    let json = ok(&anamo(d, &h.url, &["sample", "show", "NA12878", "--json"]));
    let tasks: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let by_step: BTreeMap<String, &serde_json::Value> = tasks
        .as_array()
        .expect("a list")
        .iter()
        .map(|t| (t["step"].as_str().unwrap().to_string(), t))
        .collect();
    let align = &by_step["align"]["log"];
    assert_eq!(align["attempt"], 2);
    assert_eq!(align["url"].as_str(), Some(align_url.as_str()));
    assert_eq!(
        align["command"],
        "anamo task logs align NA12878 --attempt 2"
    );
    assert_eq!(by_step["qc"]["log"]["in_result"], true);
    assert_eq!(by_step["call"]["log"]["url"], serde_json::Value::Null);
    assert_eq!(
        by_step["align"]["state"], "succeeded",
        "the task's own fields stay"
    );

    // The command shown prints that attempt's log.
    let printed = ok(&anamo(
        d,
        &h.url,
        &["task", "logs", "align", "NA12878", "--attempt", "2"],
    ));
    assert_eq!(printed, "a2\n");
}

#[tokio::test]
async fn the_endpoint_reads_a_log_stored_in_s3() {
    let Some(endpoint) = moto_endpoint() else {
        return;
    };
    // The server reads S3 as the controller does, from the environment (nextest runs each
    // test in its own process, so the variables reach no other test).
    for (k, v) in [
        ("AWS_ENDPOINT_URL_S3", endpoint.as_str()),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ] {
        std::env::set_var(k, v);
    }
    let (s3, bucket) = s3_bucket(&endpoint).await;
    let url = LogUrl::parse(&format!("s3://{bucket}/runs/1")).unwrap();
    let sink = LogSink::with_s3_client(url, s3).unwrap();
    let h = Harness::sqlite().await;
    import(&h.store, &[TaskSpec::new("call", "NA12878/chr1", "true")]).await;
    let log = b"aligned\ncalled\n";
    attempt(&h.store, "call", Some(&sink), log, Some(Outcome::Succeeded)).await;
    let addr = server(h.store.clone(), &[]).await;

    let r = get(addr, &log_href("call", "NA12878/chr1", 1)).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "aligned\ncalled\n"),
        "{}",
        r.body
    );
    let key = format!("s3://{bucket}/runs/1/call/NA12878%2Fchr1/1.log");
    assert_eq!(header(&r, "x-anamo-log-url"), Some(key));
    let tail = get(addr, "/api/tasks/call/NA12878%2Fchr1/log?attempt=1&tail=1").await;
    assert_eq!((tail.status, tail.body.as_str()), (200, "called\n"));
}
