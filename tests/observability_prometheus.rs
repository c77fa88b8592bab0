//! The dashboard and the alert rules against a real Prometheus scraping a real controller.
//!
//! A controller process (`anamo controller`, SQLite store, local fleets) works through a small
//! workload while a private Prometheus (Debian's 2.42, from `scripts/test-services`) scrapes it
//! every second with `alerts.yaml` loaded. Then every PromQL expression of
//! `dashboards/anamo.json` (Grafana variables substituted) and of the alert rules is run through
//! Prometheus' query API: each must parse and evaluate, and the core panels must return data.
//! `promtool` checks a live `/metrics` scrape, the rules, and runs the rules' unit tests.
//!
//! Without `ANAMO_TEST_PROMETHEUS_BIN`/`ANAMO_TEST_PROMTOOL_BIN` the tests fail (see
//! `tests/common/services.rs`).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{free_port, get_json, http_get, url_encode};
use common::observability::{
    alert_rules, dashboard, dashboard_exprs, repo_root, substitute, Workload,
};
use common::process::{run_with_timeout, ProcessGuard};
use common::services::tool;
use common::wait::wait_for;

/// Panels that must show data for any running controller with a workload, with how many of
/// their queries (the first ones) must return series (the others show errors, which a healthy
/// run has none of).
const CORE_PANELS: [(&str, usize); 10] = [
    ("Backlog per step", 1),
    ("Fleet desired vs actual instances", 2),
    ("Reconcile latency", 3),
    ("Leader", 1),
    ("Since last successful reconcile", 1),
    ("Unfinished tasks", 1),
    ("Progress per step", 1),
    ("Throughput per step", 2),
    ("Idle vs busy instances", 1),
    ("Store latency", 1),
];

fn promtool() -> Option<std::path::PathBuf> {
    tool("ANAMO_TEST_PROMTOOL_BIN", "promtool", None)
}

struct Prometheus {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    _process: ProcessGuard,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, with the alert rules loaded.
    fn start(bin: &Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = repo_root().join("manifests/prometheus/alerts.yaml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: anamo\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules = rules.display()
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let process = ProcessGuard::spawn(
            "prometheus",
            Command::new(bin)
                .arg(format!("--config.file={}", config_path.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--log.level=warn")
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        let p = Prometheus {
            addr,
            _dir: dir,
            _process: process,
        };
        wait_for("Prometheus to be ready", Duration::from_secs(60), || {
            http_get(addr, "/-/ready")
                .ok()
                .filter(|r| r.status == 200)
                .map(|_| ())
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; returns the API's answer (status, error, result).
    fn query(&self, expr: &str) -> serde_json::Value {
        let r = http_get(
            self.addr,
            &format!("/api/v1/query?query={}", url_encode(expr)),
        )
        .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        serde_json::from_str(&r.body).unwrap_or_else(|e| {
            panic!("query {expr}: HTTP {} not JSON ({e}): {}", r.status, r.body)
        })
    }

    fn scalar(&self, expr: &str) -> Option<f64> {
        let v = self.query(expr);
        v["data"]["result"]
            .as_array()?
            .first()?
            .get("value")?
            .get(1)?
            .as_str()?
            .parse()
            .ok()
    }
}

#[test]
fn dashboard_and_alerts_work_on_a_real_prometheus() {
    let Some(prom_bin) = tool("ANAMO_TEST_PROMETHEUS_BIN", "prometheus", None) else {
        return;
    };
    let Some(promtool) = promtool() else {
        return;
    };
    let started = Instant::now();
    let workload = Workload::start(40, 1.0);
    let prom = Prometheus::start(&prom_bin, workload.addr);

    // Enough scrapes for rates over 20s windows, and some tasks done.
    wait_for(
        "12 scrapes of the controller",
        Duration::from_secs(90),
        || {
            prom.scalar(r#"sum(count_over_time(anamo_leader{job="anamo"}[1m]))"#)
                .filter(|n| *n >= 12.0)
        },
    );
    wait_for("finished align tasks", Duration::from_secs(90), || {
        workload
            .step_counts("align")
            .filter(|c| c["succeeded"] >= 4)
    });
    // Two more scrapes after the first completions, so rates see them: the latest sample of
    // `up` is a second (one scrape interval) or more past this moment.
    let completions_seen = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64();
    wait_for(
        "two scrapes after the completions",
        Duration::from_secs(30),
        || {
            prom.scalar(r#"timestamp(up{job="anamo"})"#)
                .filter(|t| *t >= completions_seen + 1.0)
        },
    );
    let up = prom.scalar(r#"up{job="anamo"}"#);
    assert_eq!(
        up,
        Some(1.0),
        "Prometheus cannot scrape the controller:\n{}",
        prom.log()
    );

    // Every dashboard expression parses and evaluates; the core panels have data.
    let dash = dashboard();
    let mut failures = Vec::new();
    let mut by_panel: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (title, expr) in dashboard_exprs(&dash) {
        let q = substitute(&expr);
        let v = prom.query(&q);
        if v["status"] != "success" {
            failures.push(format!("{title}: {q}\n  -> {}", v["error"]));
            continue;
        }
        let n = v["data"]["result"].as_array().map_or(0, Vec::len);
        println!("{n:>3} series  {title}: {q}");
        by_panel.entry(title).or_default().push(n);
    }
    assert!(
        failures.is_empty(),
        "queries failed:\n{}",
        failures.join("\n")
    );
    for (core, with_data) in CORE_PANELS {
        let counts = by_panel
            .get(core)
            .unwrap_or_else(|| panic!("no panel {core:?} in the dashboard"));
        assert!(
            counts.len() >= with_data && counts[..with_data].iter().all(|n| *n > 0),
            "core panel {core:?}: the first {with_data} queries should have data: {counts:?}"
        );
    }
    // The template variables' label_values() find the workload's steps and fleets.
    for (label, metric, want) in [
        ("step", "anamo_tasks", ["align", "call"]),
        ("fleet", "anamo_fleet_desired_instances", ["align", "call"]),
    ] {
        let v = get_json(
            prom.addr,
            &format!(
                "/api/v1/label/{label}/values?match[]={}",
                url_encode(metric)
            ),
        );
        let got: Vec<&str> = v["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert_eq!(got, want, "label_values({metric}, {label})");
    }

    // Every alert expression parses and evaluates.
    for rule in alert_rules() {
        let v = prom.query(&rule.expr);
        assert_eq!(
            v["status"], "success",
            "alert {:?}: {}\n  -> {}",
            rule.alert, rule.expr, v["error"]
        );
    }
    // The rules loaded into Prometheus evaluate without errors.
    let rules = get_json(prom.addr, "/api/v1/rules");
    let loaded: Vec<&serde_json::Value> = rules["data"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .collect();
    assert_eq!(loaded.len(), alert_rules().len(), "{rules}");
    wait_for("every rule evaluated", Duration::from_secs(10), || {
        let rules = get_json(prom.addr, "/api/v1/rules");
        let all: Vec<serde_json::Value> = rules["data"]["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.iter()
            .all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            })
            .then_some(())
    });
    let rules = get_json(prom.addr, "/api/v1/rules");
    for r in rules["data"]["groups"][0]["rules"].as_array().unwrap() {
        assert_eq!(
            r["health"], "ok",
            "rule {} failed: {}",
            r["name"], r["lastError"]
        );
        // (Every rule waits at least a minute before firing, and the run is healthy.)
        assert_ne!(
            r["state"], "firing",
            "alert {} fires on a healthy controller: {}",
            r["name"], r["alerts"]
        );
    }

    // promtool finds nothing to complain about in a live scrape.
    let scrape = http_get(workload.addr, "/metrics").expect("scrape /metrics");
    assert_eq!(scrape.status, 200);
    println!(
        "/metrics: {} bytes, {} samples",
        scrape.body.len(),
        scrape
            .body
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count()
    );
    let out = promtool_check_metrics(&promtool, &scrape.body);
    assert!(out.is_empty(), "promtool check metrics:\n{out}");
    println!("done in {:.1}s", started.elapsed().as_secs_f64());
}

fn promtool_check_metrics(promtool: &Path, text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("promtool check metrics");
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    if !out.status.success() && s.is_empty() {
        s = format!("exit status {}", out.status);
    }
    s
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = promtool() else {
        return;
    };
    let dir = repo_root().join("manifests/prometheus");
    for args in [
        vec!["check", "rules", "alerts.yaml"],
        vec!["test", "rules", "alerts_test.yaml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let (status, out, err) = run_with_timeout(
            "promtool",
            Command::new(&promtool).args(&args).current_dir(&dir),
            Duration::from_secs(60),
        );
        assert!(
            status.success(),
            "promtool {}: {status}\n{out}\n{err}",
            args.join(" ")
        );
        assert!(
            out.contains("SUCCESS"),
            "promtool {}:\n{out}",
            args.join(" ")
        );
    }
}

#[test]
fn promtool_finds_nothing_wrong_with_every_metric() {
    // Every metric with a series, as a fresh controller plus one of each labelled event would
    // export them (a live scrape only has the series that have happened).
    let Some(promtool) = promtool() else {
        return;
    };
    let m = anamo::metrics::Metrics::new();
    m.tasks.with_label_values(&["align", "pending"]).set(1);
    m.tasks_completed.with_label_values(&["align"]).inc();
    m.tasks_failed.with_label_values(&["align"]).inc();
    m.tasks_requeued
        .with_label_values(&["align", "lease_expired"])
        .inc();
    m.oldest_pending_age.with_label_values(&["align"]).set(3.0);
    m.throughput.with_label_values(&["align"]).set(2.4);
    m.task_duration
        .with_label_values(&["align", "succeeded"])
        .observe(2.0);
    m.claim_conflicts.with_label_values(&["align"]).inc();
    m.worker_spot_notices
        .with_label_values(&["align", "rebalance"])
        .inc();
    m.fleet_desired.with_label_values(&["align"]).set(2);
    m.fleet_instances
        .with_label_values(&["align", "busy"])
        .set(1);
    m.launches.with_label_values(&["align"]).inc();
    m.terminations
        .with_label_values(&["align", "scale_down"])
        .inc();
    m.fleet_interruptions
        .with_label_values(&["align", "c6i.4xlarge", "eu-west-1a", "rebalance"])
        .inc();
    m.provider_calls.with_label_values(&["ec2", "launch"]).inc();
    m.provider_errors
        .with_label_values(&["ec2", "launch", "throttled"])
        .inc();
    m.provider_throttles.with_label_values(&["ec2"]).inc();
    m.fleet_condition
        .with_label_values(&["align", "Ready"])
        .set(1);
    m.fleet_cost.with_label_values(&["align"]).inc_by(1.25);
    m.fleet_cost_rate.with_label_values(&["align"]).set(0.72);
    m.fleet_idle_cost_ratio
        .with_label_values(&["align"])
        .set(0.05);
    m.step_cost_per_task
        .with_label_values(&["align"])
        .set(0.012);
    m.reconcile_duration.observe(0.01);
    m.last_success.set(1.0);
    m.leader.set(1);
    m.manifest_reload_errors.inc();
    m.store_requests.with_label_values(&["claim"]).inc();
    m.store_errors
        .with_label_values(&["claim", "unavailable"])
        .inc();
    m.store_latency.with_label_values(&["claim"]).observe(0.002);
    let text = m.render();
    let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
    assert_eq!(
        families,
        m.definitions().len(),
        "every metric should have a series here:\n{text}"
    );
    let out = promtool_check_metrics(&promtool, &text);
    assert!(out.is_empty(), "promtool check metrics:\n{out}");
}
