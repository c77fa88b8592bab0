//! The observability tests' part of the harness: a controller process running a small local
//! workload (SQLite store, local fleets), and the PromQL expressions of the dashboard and the
//! alert rules.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::http::{free_port, get_json, http_get};
use super::process::{run_with_timeout, ProcessGuard};

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
