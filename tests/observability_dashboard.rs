//! Static checks of `dashboards/anamo.json` and `manifests/prometheus/alerts.yaml` (no
//! Prometheus needed): the dashboard imports into Grafana as is (datasource input, variables,
//! unique ids, a grid position on each panel) and every expression of it and of the alert rules
//! names only metrics and labels the controller exports. `observability_prometheus` runs the
//! same expressions against a real Prometheus.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::observability::{
    alert_rules, dashboard, dashboard_exprs, panels, repo_root, selectors, substitute,
};

const DS: &str = "${DS_PROMETHEUS}";

/// Metric name -> label names, from the controller's registry (plus Prometheus' `up`).
fn known_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let metrics = anamo::metrics::Metrics::new();
    let mut known = BTreeMap::new();
    for (name, labels) in metrics.definitions() {
        let mut l: BTreeSet<String> = labels.iter().cloned().collect();
        l.insert("job".into());
        l.insert("instance".into());
        known.insert(name.clone(), l.clone());
        // Histograms: the series Prometheus stores.
        if name.ends_with("_duration_seconds") {
            let mut b = l.clone();
            b.insert("le".into());
            known.insert(format!("{name}_bucket"), b);
            known.insert(format!("{name}_sum"), l.clone());
            known.insert(format!("{name}_count"), l);
        }
    }
    known.insert(
        "up".into(),
        ["job", "instance"].iter().map(|s| s.to_string()).collect(),
    );
    known
}

fn check_expr(where_: &str, expr: &str, known: &BTreeMap<String, BTreeSet<String>>) {
    assert!(!expr.trim().is_empty(), "{where_}: empty expression");
    let mut depth = Vec::new();
    let mut in_str = false;
    for c in expr.chars() {
        match c {
            '"' => in_str = !in_str,
            '(' | '[' | '{' if !in_str => depth.push(c),
            ')' | ']' | '}' if !in_str => {
                let open = depth.pop();
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                assert_eq!(open, Some(want), "{where_}: unbalanced `{c}` in {expr}");
            }
            _ => {}
        }
    }
    assert!(depth.is_empty() && !in_str, "{where_}: unbalanced {expr}");
    let sel = selectors(expr);
    assert!(!sel.is_empty(), "{where_}: selects no anamo metric: {expr}");
    for (name, labels) in sel {
        let Some(allowed) = known.get(&name) else {
            panic!("{where_}: unknown metric `{name}` in {expr}");
        };
        for l in labels {
            assert!(
                allowed.contains(&l),
                "{where_}: metric `{name}` has no label `{l}` (it has {allowed:?}) in {expr}"
            );
        }
    }
}

#[test]
fn dashboard_is_import_ready() {
    let dash = dashboard();
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    assert_eq!(dash["uid"], "anamo-overview");
    assert!(dash["title"].is_string());
    assert!(dash["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    // Import sets the id: it must be null in the file.
    assert!(dash["id"].is_null());

    // Variables step and fleet, from label_values() on the datasource.
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    for (name, metric) in [
        ("step", "anamo_tasks"),
        ("fleet", "anamo_fleet_desired_instances"),
    ] {
        let v = vars
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no variable {name}"));
        assert_eq!(v["type"], "query");
        assert_eq!(v["datasource"]["uid"], DS, "variable {name}");
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap();
        assert_eq!(q, format!("label_values({metric}, {name})"));
        assert_eq!(v["multi"], true);
        assert_eq!(v["includeAll"], true);
    }

    let all = panels(&dash);
    let mut ids = BTreeSet::new();
    let mut rects = Vec::new();
    for p in &all {
        let title = p["title"].as_str().expect("every panel has a title");
        let id = p["id"].as_u64().unwrap_or_else(|| panic!("{title}: no id"));
        assert!(ids.insert(id), "panel id {id} is used twice ({title})");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_u64()
                .unwrap_or_else(|| panic!("{title}: gridPos.{k}"))
        });
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: gridPos {g}");
        for (other, (ox, oy, ow, oh)) in &rects {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "{title} overlaps {other}");
        }
        rects.push((title.to_string(), (x, y, w, h)));
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], DS, "{title}: panel datasource");
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], DS, "{title}: target datasource");
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "{title}: target without expr");
            assert!(refs.insert(t["refId"].as_str().unwrap_or_default().to_string()));
        }
    }

    // The panels operators asked for.
    let titles: BTreeSet<&str> = all.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Backlog per step",
        "Throughput per step",
        "Completion ETA per step",
        "Fleet desired vs actual instances",
        "Idle vs busy instances",
        "Launches and terminations",
        "Task failures and requeues",
        "Reconcile latency",
        "Provider API errors and throttling",
        "Leader",
        "Store latency",
    ] {
        assert!(titles.contains(want), "no panel {want:?} in {titles:?}");
    }
}

#[test]
fn dashboard_expressions_name_real_metrics_and_use_the_variables() {
    let known = known_metrics();
    let dash = dashboard();
    let exprs = dashboard_exprs(&dash);
    assert!(exprs.len() >= 20, "{exprs:?}");
    for (title, expr) in &exprs {
        check_expr(title, expr, &known);
        substitute(expr);
        // Step- and fleet-labelled series follow the dashboard's variables.
        for (name, labels) in selectors(expr) {
            let has = |l: &str| known[&name].contains(l);
            if has("step") {
                assert!(
                    labels.iter().any(|l| l == "step") && expr.contains("step=~\"$step\""),
                    "{title}: {name} ignores $step in {expr}"
                );
            }
            if has("fleet") {
                assert!(
                    expr.contains("fleet=~\"$fleet\""),
                    "{title}: {name} ignores $fleet in {expr}"
                );
            }
        }
    }
}

#[test]
fn alert_rules_are_complete_and_name_real_metrics() {
    let known = known_metrics();
    let rules = alert_rules();
    let names: BTreeSet<String> = rules.iter().filter_map(|r| r.alert.clone()).collect();
    assert_eq!(names.len(), rules.len(), "duplicate or unnamed rules");
    for want in [
        "AnamoControllerDown",
        "AnamoControllerAbsent",
        "AnamoReconcileStalled",
        "AnamoFleetUnderProvisioned",
        "AnamoFleetStalled",
        "AnamoTasksFailing",
        "AnamoRequeueStorm",
        "AnamoProviderThrottled",
        "AnamoManifestRejected",
    ] {
        assert!(names.contains(want), "no alert {want}");
    }
    for r in &rules {
        let name = r.alert.as_deref().unwrap_or("?");
        check_expr(name, &r.expr, &known);
        assert!(
            matches!(
                r.labels.get("severity").map(String::as_str),
                Some("critical" | "warning")
            ),
            "{name}: severity"
        );
        for a in ["summary", "description"] {
            assert!(
                r.annotations.get(a).is_some_and(|s| !s.is_empty()),
                "{name}: {a}"
            );
        }
    }
    // Every alert has promtool unit tests that expect it to fire (and some that expect quiet).
    let text =
        std::fs::read_to_string(repo_root().join("manifests/prometheus/alerts_test.yaml")).unwrap();
    let tests: serde_json::Value = serde_saphyr::from_str(&text).expect("alerts_test.yaml");
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for a in t["alert_rule_test"].as_array().cloned().unwrap_or_default() {
            let n = a["alertname"].as_str().unwrap_or_default().to_string();
            if a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()) {
                firing.insert(n);
            } else {
                quiet.insert(n);
            }
        }
    }
    assert_eq!(firing, names, "alerts without a firing unit test");
    assert_eq!(quiet, names, "alerts without a not-firing unit test");
}

#[test]
fn selector_parsing() {
    let s = selectors(
        r#"sum by (step) (rate(anamo_tasks_completed_total{step=~"$step", x!="a,b=c"}[5m])) / up"#,
    );
    assert_eq!(
        s,
        vec![
            (
                "anamo_tasks_completed_total".to_string(),
                vec!["step".to_string(), "x".to_string()]
            ),
            ("up".to_string(), vec![]),
        ]
    );
}
