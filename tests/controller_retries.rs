//! The SDK retries that ship, against a lost `RunInstances` response. The other AWS tests turn
//! the SDK's retries off (the providers' own backoff is what they count); here an
//! `anamo controller --once` process, with the production client configuration
//! (`controller::aws`: standard retries, two attempts), reaches moto through a TCP proxy in
//! this test. The proxy forwards the first `RunInstances` to moto (which launches) and then
//! closes the connection instead of answering, so the SDK retries the call.
//!
//! Found out here: moto ignores `ClientToken`, so a retry forwarded as is launches a second
//! time; the dedupe of a retried call is EC2's `ClientToken` idempotency, and anamo's part is
//! the request shape: the retry carries the same `ClientToken` (and launch-batch tag). The
//! proxy plays EC2's documented rule (a repeated token gets the first call's answer, nothing
//! is launched again), and a second pass shows anamo's ledger launches nothing more.
//!
//! Run through `scripts/test-services run -- cargo nextest run --test controller_retries`.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anamo::provider::TAG_LAUNCH_BATCH;
use common::controller_aws::{AwsWorld, FleetYaml};
use common::moto::parse_form;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy saw and did.
#[derive(Debug, Default)]
struct Seen {
    /// Form parameters of every `RunInstances` request, in order.
    run_instances: Vec<BTreeMap<String, String>>,
    /// `ClientToken` → moto's answer to the first request with it.
    answers: BTreeMap<String, Vec<u8>>,
    /// Answers dropped (connection closed instead).
    dropped: usize,
}

/// Reads one HTTP/1.1 message head and a `Content-Length` body; `None` at a clean EOF.
async fn read_request(s: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    buf.extend(body);
    Ok(Some(buf))
}

/// `bytes` with a `Connection: close` header after the first line (so neither side reuses
/// the connection).
fn close_after(bytes: &[u8]) -> Vec<u8> {
    let eol = bytes.windows(2).position(|w| w == b"\r\n").unwrap_or(0) + 2;
    let mut out = bytes[..eol].to_vec();
    out.extend_from_slice(b"Connection: close\r\n");
    out.extend_from_slice(&bytes[eol..]);
    out
}

/// Sends `request` to moto on a fresh connection and reads the whole answer.
async fn forward(moto: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(moto).await?;
    up.write_all(&close_after(request)).await?;
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await?;
    Ok(answer)
}

/// One client connection: forwards each request; the first `RunInstances` reaches moto but
/// its answer is dropped; a repeated `ClientToken` gets the first answer again (EC2's rule).
async fn serve(mut client: TcpStream, moto: String, seen: Arc<Mutex<Seen>>) -> std::io::Result<()> {
    let Some(request) = read_request(&mut client).await? else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(&request).into_owned();
    let form = parse_form(text.split_once("\r\n\r\n").map_or("", |x| x.1));
    if form.get("Action").map(String::as_str) != Some("RunInstances") {
        let answer = forward(&moto, &request).await?;
        return client.write_all(&close_after(&answer)).await;
    }
    let token = form.get("ClientToken").cloned().unwrap_or_default();
    let (first, replay) = {
        let mut seen = seen.lock().unwrap();
        seen.run_instances.push(form);
        (
            seen.run_instances.len() == 1,
            seen.answers.get(&token).cloned(),
        )
    };
    if let Some(answer) = replay.filter(|_| !token.is_empty()) {
        return client.write_all(&close_after(&answer)).await;
    }
    let answer = forward(&moto, &request).await?;
    {
        let mut seen = seen.lock().unwrap();
        seen.answers.insert(token, answer.clone());
        if first {
            seen.dropped += 1;
        }
    }
    if first {
        return Ok(()); // the connection closes unanswered
    }
    client.write_all(&close_after(&answer)).await
}

/// Starts the proxy in front of moto; returns its URL.
async fn start_proxy(moto_endpoint: &str, seen: Arc<Mutex<Seen>>) -> String {
    let moto = moto_endpoint
        .split_once("://")
        .map_or(moto_endpoint, |x| x.1)
        .trim_end_matches('/')
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the proxy");
    let url = format!("http://{}", listener.local_addr().expect("proxy address"));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (moto, seen) = (moto.clone(), seen.clone());
            tokio::spawn(async move {
                if let Err(e) = serve(client, moto, seen).await {
                    eprintln!("proxy: {e}");
                }
            });
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_run_instances_answer_is_retried_with_the_same_client_token() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    // One instance wanted: moto launches exactly what is asked (MinCount = MaxCount = 1).
    let yaml = FleetYaml::ec2(&w.template).set("maxInstances", "1").yaml();
    w.import("align", 2, "true").await;
    let manifests = w.write_manifests("manifests", &yaml);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let proxy = start_proxy(&w.moto_endpoint, seen.clone()).await;

    let once = |what: &str| {
        let mut cmd = w.anamo();
        cmd.args(["controller", "--once", "--manifests"])
            .arg(&manifests)
            .args(["--cluster", &w.cluster, "--metrics-addr", "127.0.0.1:0"])
            .env("AWS_ENDPOINT_URL_EC2", &proxy);
        let mut cmd = tokio::process::Command::from(cmd);
        let what = what.to_string();
        async move {
            let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .unwrap_or_else(|_| panic!("{what}: the controller hung"))
                .expect("run anamo controller --once");
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "{what} failed:\n{log}");
            log
        }
    };

    let log = once("the first pass").await;
    let requests = seen.lock().unwrap().run_instances.clone();
    assert_eq!(seen.lock().unwrap().dropped, 1, "{log}");
    assert_eq!(
        requests.len(),
        2,
        "the SDK retried the unanswered RunInstances once (two attempts): {requests:#?}\n{log}"
    );
    let token = requests[0].get("ClientToken").cloned().unwrap_or_default();
    assert!(!token.is_empty(), "RunInstances without a ClientToken");
    assert_eq!(
        requests[1].get("ClientToken"),
        Some(&token),
        "the retry repeats the ClientToken, so EC2 launches nothing twice"
    );
    let batch_tag = |r: &BTreeMap<String, String>| -> Option<String> {
        let key = r
            .iter()
            .find(|(k, v)| k.starts_with("TagSpecification.") && *v == TAG_LAUNCH_BATCH)?
            .0
            .replace(".Key", ".Value");
        r.get(&key).cloned()
    };
    let batch = batch_tag(&requests[0]).expect("a launch-batch tag on RunInstances");
    assert_eq!(batch_tag(&requests[1]), Some(batch.clone()));
    let live = w.live_instances("align").await;
    assert_eq!(live.len(), 1, "one instance for two requests: {live:?}");

    // The next pass finds the batch's instance: nothing more is launched.
    let log = once("the second pass").await;
    assert_eq!(
        seen.lock().unwrap().run_instances.len(),
        2,
        "no RunInstances in the second pass:\n{log}"
    );
    assert_eq!(w.live_instances("align").await, live);
    let tags = w.moto.instance_tags(&live[0]).await;
    assert_eq!(tags.get(TAG_LAUNCH_BATCH), Some(&batch));
}
