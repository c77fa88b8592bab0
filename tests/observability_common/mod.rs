//! Shared harness of the observability tests: a controller process running a small local
//! workload, a minimal HTTP/1.0 client (no HTTP crate needed), a guard that ends every process
//! it owns (and the processes they started) even when a test panics, external tools resolved
//! from the environment `scripts/test-services` sets, and the PromQL expressions of the
//! dashboard and the alert rules.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests leave artefacts for people to look at (`target/artifacts`).
pub fn artifacts_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp
        .parent()
        .map(|t| t.join("artifacts"))
        .unwrap_or_else(|| tmp.join("artifacts"));
    std::fs::create_dir_all(&dir).expect("create target/artifacts");
    dir
}

/// An external binary named by `var` (set by `scripts/test-services`). In CI (`CI` set) a
/// missing one fails the test; locally the test prints why it is skipped and passes.
pub fn tool(var: &str, what: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) if !p.is_empty() && Path::new(&p).exists() => Some(PathBuf::from(p)),
        other => {
            let why = match other {
                Some(p) if !p.is_empty() => format!("{var}={} does not exist", p.to_string_lossy()),
                _ => format!("{var} is not set"),
            };
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{what} is required in CI but {why}: run the tests through \
                     `scripts/test-services run -- cargo nextest run`"
                );
            }
            eprintln!(
                "SKIPPED: {what} not available ({why}); run through \
                 `scripts/test-services run -- ...` to include this test"
            );
            None
        }
    }
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

// ---- HTTP ----------------------------------------------------------------------------------

pub struct HttpResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

/// `GET path` over HTTP/1.0 (the server closes the connection after the body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers in the response"))?;
    let headers = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status = headers
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {headers}")))?;
    if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&b[..eol])
                .split(';')
                .next()
                .unwrap_or("0")
                .trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 || eol + 2 + size > b.len() {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[(eol + 4 + size).min(b.len())..];
    }
    out
}

/// Percent-encodes a query parameter value.
pub fn url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// GETs `path` and parses the body as JSON; panics with the body when it is not 200 + JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = http_get(addr, path).unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.body);
    serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.body))
}

/// Polls `check` every 200 ms until it returns `Some`; panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- processes -----------------------------------------------------------------------------

/// Pids of the children of `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // `pid (comm) state ppid ...`; comm may contain spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// `pid` and all its descendants with their start times (to recognise them later).
fn process_tree(pid: u32) -> Vec<(u32, String)> {
    let mut all = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        if let Some(start) = start_time(p) {
            all.push((p, start));
        }
        todo.extend(children_of(p));
    }
    all
}

fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // Field 22 of stat (starttime) is the 20th after the comm.
    rest.split_whitespace().nth(19).map(str::to_string)
}

/// Owns a spawned process. Dropping it (also while a test panics) sends SIGTERM, waits up to
/// `grace`, then SIGKILLs it and every descendant still alive that it had when the drop began
/// (local workers run in their own process groups, so a group kill would not reach them).
pub struct ProcessGuard {
    pub name: String,
    child: Option<Child>,
    pub grace: Duration,
}

impl ProcessGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ProcessGuard {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ProcessGuard {
            name: name.to_string(),
            child: Some(child),
            grace: Duration::from_secs(20),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Stops the process (and its descendants) now; returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let tree = process_tree(child.id());
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + self.grace;
        let mut status = None;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if status.is_none() {
            eprintln!(
                "{} did not stop within {:?}; killing it",
                self.name, self.grace
            );
            let _ = child.kill();
            status = child.wait().ok();
        }
        // Whatever it started and left behind (same pid *and* start time: not a recycled pid).
        for (pid, started) in tree.into_iter().skip(1) {
            if start_time(pid).as_deref() == Some(started.as_str()) {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
        }
        status
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` to completion with a time limit, stdout and stderr captured. The command runs in
/// its own process group, which is killed as a whole on timeout (or panic).
pub fn run_with_timeout(
    name: &str,
    cmd: &mut Command,
    timeout: Duration,
) -> (ExitStatus, String, String) {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    cmd.stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .process_group(0);
    struct Group(Option<Child>);
    impl Drop for Group {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = kill(Pid::from_raw(-(c.id() as i32)), Signal::SIGKILL);
                let _ = c.wait();
            }
        }
    }
    let mut g = Group(Some(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}")),
    ));
    let start = Instant::now();
    let status = loop {
        let c = g.0.as_mut().expect("child");
        if let Ok(Some(s)) = c.try_wait() {
            g.0 = None;
            break s;
        }
        if start.elapsed() > timeout {
            drop(g);
            panic!(
                "{name} did not finish within {timeout:?}; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status,
        std::fs::read_to_string(&out_path).unwrap_or_default(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

// ---- a controller with a workload ----------------------------------------------------------

const FLEETS: &str = r#"
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: align
spec:
  step: align
  provider:
    local: {}
  minInstances: 0
  maxInstances: 2
  slotsPerInstance: 2
  scaleDownDelay: 3s
  leaseTTL: 15s
---
apiVersion: anamo.dev/v1
kind: Fleet
metadata:
  name: call
spec:
  step: call
  dependsOn: [align]
  provider:
    local: {}
  minInstances: 0
  maxInstances: 1
  slotsPerInstance: 2
  scaleDownDelay: 3s
  leaseTTL: 15s
"#;

/// A controller process (`anamo controller`, SQLite store, local fleets) working through
/// `align` tasks (some of which fail) and `call` tasks that depend on them.
pub struct Workload {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub store_url: String,
    controller: ProcessGuard,
}

impl Workload {
    /// Imports `tasks` align tasks taking `secs` each (every 10th fails with exit 7) and as many
    /// `call` tasks, then starts the controller and waits until it is ready.
    pub fn start(tasks: usize, secs: f64) -> Workload {
        let exe = env!("CARGO_BIN_EXE_anamo");
        let dir = tempfile::tempdir().expect("tempdir");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        std::fs::write(manifests.join("fleets.yaml"), FLEETS).unwrap();
        let mut tsv = String::new();
        for i in 1..=tasks {
            let script = if i % 10 == 0 {
                format!("sleep {secs}; exit 7")
            } else {
                format!("sleep {secs}")
            };
            tsv.push_str(&format!("S{i:03}\talign\t{script}\n"));
            tsv.push_str(&format!("S{i:03}\tcall\tsleep {secs}\n"));
        }
        let tasks_file = dir.path().join("tasks.tsv");
        std::fs::write(&tasks_file, tsv).unwrap();
        let store_url = format!("sqlite://{}", dir.path().join("a.db").display());
        let (status, out, err) = run_with_timeout(
            "anamo task import",
            Command::new(exe)
                .current_dir(dir.path())
                .args([
                    "--store",
                    &store_url,
                    "task",
                    "import",
                    "--max-attempts",
                    "1",
                ])
                .arg("--manifests")
                .arg(&manifests)
                .arg(&tasks_file),
            Duration::from_secs(60),
        );
        assert!(status.success(), "task import failed: {out}\n{err}");

        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
        let mut cmd = Command::new(exe);
        cmd.current_dir(dir.path())
            .env_remove("ANAMO_LEADER_ELECTION")
            .env_remove("ANAMO_CLUSTER")
            .env("ANAMO_LOG_FORMAT", "human")
            .env("NO_COLOR", "1")
            .args(["--store", &store_url, "controller", "--manifests"])
            .arg(&manifests)
            .args(["--metrics-addr", &addr.to_string(), "--interval", "1s"])
            .args(["--progress-interval", "1s"])
            .arg("--log-dir")
            .arg(dir.path().join("logs"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let controller = ProcessGuard::spawn("anamo controller", &mut cmd);
        let mut w = Workload {
            dir,
            addr,
            store_url,
            controller,
        };
        let started = Instant::now();
        loop {
            if let Some(s) = w.controller.try_wait() {
                panic!("the controller exited ({s}):\n{}", w.log());
            }
            if http_get(addr, "/readyz").is_ok_and(|r| r.status == 200) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("the controller was not ready within 60s:\n{}", w.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        w
    }

    /// The controller's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        get_json(self.addr, "/api/status")
    }

    /// Counts of `step` in `/api/status` (`None` before the step shows up).
    pub fn step_counts(&self, step: &str) -> Option<BTreeMap<String, u64>> {
        let st = self.status();
        let s = st["steps"]
            .as_array()?
            .iter()
            .find(|s| s["step"] == step)?
            .clone();
        Some(
            [
                "waiting",
                "pending",
                "running",
                "succeeded",
                "failed",
                "cancelled",
            ]
            .iter()
            .map(|k| (k.to_string(), s[*k].as_u64().unwrap_or(0)))
            .collect(),
        )
    }

    /// Stops the controller (SIGTERM: it drains its local workers) and returns how it ended.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.controller.stop()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.controller.stop();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "---- controller log (last {} lines) ----\n{}",
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

// ---- dashboard and alert expressions ------------------------------------------------------

pub fn dashboard() -> serde_json::Value {
    let path = repo_root().join("dashboards/anamo.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()))
}

/// Every panel, rows' nested panels included.
pub fn panels(dash: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().cloned().unwrap_or_default() {
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
        out.push(p);
    }
    out
}

/// `(panel title, expr)` of every target of the dashboard.
pub fn dashboard_exprs(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    e.to_string(),
                ));
            }
        }
    }
    out
}

/// Replaces Grafana's variables by values Prometheus accepts: every step and fleet, and
/// intervals that suit a 1 s scrape interval.
pub fn substitute(expr: &str) -> String {
    let mut e = expr.to_string();
    for (var, value) in [
        ("${__rate_interval}", "20s"),
        ("$__rate_interval", "20s"),
        ("${__interval}", "5s"),
        ("$__interval", "5s"),
        ("${__range}", "1m"),
        ("$__range_s", "60"),
        ("$__range", "1m"),
        ("${step}", ".*"),
        ("$step", ".*"),
        ("${fleet}", ".*"),
        ("$fleet", ".*"),
    ] {
        e = e.replace(var, value);
    }
    assert!(!e.contains('$'), "unsubstituted variable in {e}");
    e
}

#[derive(Debug, serde::Deserialize)]
pub struct RuleFile {
    pub groups: Vec<RuleGroup>,
}

#[derive(Debug, serde::Deserialize)]
pub struct RuleGroup {
    pub name: String,
    pub rules: Vec<Rule>,
}

#[derive(Debug, serde::Deserialize)]
pub struct Rule {
    pub alert: Option<String>,
    pub record: Option<String>,
    pub expr: String,
    #[serde(rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

pub fn alert_rules() -> Vec<Rule> {
    let path = repo_root().join("manifests/prometheus/alerts.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file: RuleFile =
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    file.groups.into_iter().flat_map(|g| g.rules).collect()
}

/// Metric names an expression selects: identifiers that start with `anamo_` or are `up`,
/// each with the label names of the selector that follows it (if any).
pub fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        // Skip string literals.
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        if ident(b[i]) && (i == 0 || !ident(b[i - 1])) {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let name = &expr[start..i];
            if name.starts_with("anamo_") || name == "up" {
                let mut labels = Vec::new();
                let mut j = i;
                while j < b.len() && b[j] == b' ' {
                    j += 1;
                }
                if j < b.len() && b[j] == b'{' {
                    let end = expr[j..].find('}').map(|k| j + k).unwrap_or(b.len());
                    // Label names: identifiers right before a matcher operator, outside quotes.
                    let inner = &expr[j + 1..end];
                    let mut in_str = false;
                    let mut cur = String::new();
                    let mut prev = ' ';
                    for c in inner.chars() {
                        if in_str {
                            if c == '"' && prev != '\\' {
                                in_str = false;
                            }
                        } else if c == '"' {
                            in_str = true;
                        } else if c.is_ascii_alphanumeric() || c == '_' {
                            cur.push(c);
                        } else if matches!(c, '=' | '!') {
                            if !cur.is_empty() {
                                labels.push(std::mem::take(&mut cur));
                            }
                        } else if c == ',' || c == ' ' {
                            cur.clear();
                        }
                        prev = c;
                    }
                    i = end;
                }
                out.push((name.to_string(), labels));
            }
            continue;
        }
        i += 1;
    }
    out
}
