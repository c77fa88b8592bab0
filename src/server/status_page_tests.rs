//! Tests of the status page's HTML: escaping, figures, banners.

use super::*;
use crate::model::StepCounts;
use crate::planner::{Condition, ConditionType, FleetStatus};

const NOW: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn step(name: &str, counts: [u64; 6], throughput: f64, eta: Option<Millis>) -> StepReport {
    let [waiting, pending, running, succeeded, failed, cancelled] = counts;
    StepReport {
        counts: StepCounts {
            step: name.into(),
            waiting,
            pending,
            running,
            succeeded,
            failed,
            cancelled,
            oldest_pending_at: None,
            ..Default::default()
        },
        oldest_pending_age_ms: Some(65_000),
        finished_in_window: (throughput * 5.0) as u64,
        throughput_per_min: throughput,
        eta_ms: eta,
        counted_at: NOW - 12_000,
    }
}

fn sample() -> ControllerStatus {
    let mut st = ControllerStatus::new("prod<1>", "host-1", "sqlite://a.db");
    st.role = Role::Leader;
    st.manifests_loaded = true;
    st.interval_ms = 1_000;
    st.last_reconcile_at = Some(NOW - 2_000);
    st.last_success_at = Some(NOW - 2_000);
    st.steps = vec![
        step("align", [0, 10, 4, 12, 2, 0], 3.5, Some(240_000)),
        step("<script>alert(1)</script>", [5, 0, 0, 0, 0, 0], 0.0, None),
    ];
    st.fleets = vec![FleetReport {
        fleet: "align-\"fleet\"".into(),
        step: "align".into(),
        provider: "local".into(),
        desired: 3,
        actual: 2,
        idle: 1,
        status: FleetStatus {
            observed: true,
            instances: 2,
            ready: 2,
            busy: 1,
            booting: 0,
            launching: 1,
            ..Default::default()
        },
        conditions: vec![
            Condition {
                type_: ConditionType::Ready,
                status: ConditionStatus::False,
                message: "1 of 3 ready".into(),
            },
            Condition {
                type_: ConditionType::ScalingUp,
                status: ConditionStatus::True,
                message: "launching 1 for 14 runnable tasks & <more>".into(),
            },
        ],
        conditions_summary: "ScalingUp".into(),
        last_action: Some("launch 1: backlog".into()),
        last_action_at: Some(NOW - 5_000),
        error: Some("listing instances: boom <b>".into()),
        observed_at: NOW - 2_000,
        cost: None,
        interruptions: Default::default(),
    }];
    st.record_action(ActionRecord {
        at: NOW - 5_000,
        fleet: "align-\"fleet\"".into(),
        action: "launch 1".into(),
        reason: "14 runnable tasks' backlog".into(),
        ok: false,
        error: Some("InsufficientInstanceCapacity <x>".into()),
    });
    st
}

#[test]
fn escapes_everything_users_name() {
    assert_eq!(
        escape(r#"<a href="x">&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
    );
    let html = render(&sample(), NOW);
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("data-step=\"&lt;script&gt;alert(1)&lt;/script&gt;\""));
    assert!(html.contains("data-fleet=\"align-&quot;fleet&quot;\""));
    assert!(html.contains("boom &lt;b&gt;"));
    assert!(html.contains("InsufficientInstanceCapacity &lt;x&gt;"));
    assert!(html.contains("14 runnable tasks&#39; backlog"));
    assert!(html.contains("<title>anamo · prod&lt;1&gt;</title>"));
    // Only the tags we write: every `<` starts a known element or a closing tag.
    for (i, _) in html.match_indices('<') {
        let rest = &html[i + 1..];
        let tag: String = rest
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '!')
            .collect();
        assert!(
            [
                "!doctype", "html", "head", "meta", "title", "style", "body", "header", "h1", "h2",
                "h3", "span", "dl", "div", "dt", "dd", "main", "p", "section", "ul", "li", "b",
                "table", "thead", "tbody", "tr", "th", "td", "br", "footer", "a", "form", "input",
                "button", "code"
            ]
            .contains(&tag.as_str()),
            "unexpected tag <{tag} at {i}"
        );
    }
}

#[test]
fn carries_the_figures_in_data_attributes() {
    let html = render(&sample(), NOW);
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert!(html.contains("data-role=\"leader\""));
    assert!(html.contains(&format!("data-last-reconcile-at=\"{}\"", NOW - 2_000)));
    assert!(html.contains("<dd id=\"last-reconcile\">2s ago (2025-12-31T23:59:58Z)</dd>"));
    assert!(html.contains(
        "data-step=\"align\" data-waiting=\"0\" data-pending=\"10\" data-running=\"4\" \
         data-succeeded=\"12\" data-failed=\"2\" data-cancelled=\"0\" data-total=\"28\" \
         data-throughput-per-min=\"3.5\" data-eta-ms=\"240000\""
    ));
    assert!(html.contains("<b class=\"eta\">4m</b>"));
    assert!(html.contains("<b class=\"throughput\">3.5/min</b>"));
    assert!(html.contains("14 / 28 finished (50%)"));
    // No throughput yet: the ETA says so instead of inventing one.
    assert!(html.contains("unknown (nothing finished in the last 5m)"));
    assert!(html.contains("(17 done in the last 5m)"));
    assert!(html.contains(
        "data-desired=\"3\" data-actual=\"2\" data-idle=\"1\" data-busy=\"1\" \
         data-booting=\"1\" data-lost=\"0\" data-conditions=\"ScalingUp\" data-error=\"true\""
    ));
    // True conditions are highlighted with their message; False ones are not.
    assert!(html.contains(
        "class=\"condition cond-true cond-scalingup\" data-condition=\"ScalingUp\" \
         data-status=\"True\""
    ));
    assert!(html.contains(
        "<span class=\"cond-message\">launching 1 for 14 runnable tasks &amp; &lt;more&gt;</span>"
    ));
    assert!(!html.contains("<span class=\"cond-message\">1 of 3 ready"));
    assert!(html.contains("launch 1: backlog<br><span class=\"muted\">5s ago"));
    assert!(html.contains("class=\"action ok-false\""));
    assert!(html.contains("failed: InsufficientInstanceCapacity"));
}

#[test]
fn fleets_show_their_cost() {
    let html = render(&sample(), NOW);
    assert!(
        html.contains("<td class=\"num cost\" data-cost=\"\">"),
        "{html}"
    );
    let mut st = sample();
    let totals = crate::cost::ledger::CostTotals {
        dollars: 12.3456,
        idle_dollars: 0.771_6,
        ..Default::default()
    };
    st.fleets[0].cost = Some(crate::controller::status::FleetCost::new(
        totals,
        Default::default(),
        0.72,
        Some(1_000),
    ));
    let html = render(&st, NOW);
    assert!(
        html.contains(
            "data-cost=\"12.3456\" data-usd-per-hour=\"0.72\">$12.35<br>\
             <span class=\"muted\">$0.72/h · idle 6% · $0.0123/task</span>"
        ),
        "{html}"
    );
}

#[test]
fn fleets_show_their_interruptions_by_kind_type_and_zone() {
    use crate::controller::interruptions::{InterruptionTotals, OfferingInterruptions};
    let html = render(&sample(), NOW);
    assert!(
        html.contains(
            "<td class=\"num interrupted\" data-interruption=\"0\" data-rebalance=\"0\">\
             <span class=\"muted\">-</span></td>"
        ),
        "{html}"
    );
    let offering = |kind: &str, ty: &str, zone: &str, count| OfferingInterruptions {
        kind: kind.into(),
        instance_type: ty.into(),
        zone: zone.into(),
        count,
    };
    let mut st = sample();
    st.fleets[0].interruptions = InterruptionTotals {
        interruption: 3,
        rebalance: 1,
        by_offering: vec![
            offering("interruption", "c6i.4xlarge", "eu-west-1a", 2),
            offering("interruption", "<m6i>", "eu-west-1b", 1),
            offering("rebalance", "c6i.4xlarge", "eu-west-1a", 1),
        ],
    };
    let html = render(&st, NOW);
    for line in [
        "data-interruption=\"3\" data-rebalance=\"1\">3 +1 rebalanced<ul",
        "<li class=\"muted\" data-kind=\"interruption\" data-instance-type=\"c6i.4xlarge\" \
         data-zone=\"eu-west-1a\" data-count=\"2\">2 interruption · c6i.4xlarge · eu-west-1a</li>",
        "data-instance-type=\"&lt;m6i&gt;\" data-zone=\"eu-west-1b\" data-count=\"1\">\
         1 interruption · &lt;m6i&gt; · eu-west-1b</li>",
        "data-kind=\"rebalance\" data-instance-type=\"c6i.4xlarge\" data-zone=\"eu-west-1a\" \
         data-count=\"1\">1 rebalance",
    ] {
        assert!(html.contains(line), "{line} not in {html}");
    }
}

#[test]
fn bar_segments_add_up_to_the_whole() {
    let html = render(&sample(), NOW);
    let start = html.find("data-step=\"align\"").unwrap();
    let end = start + html[start..].find("</div>\n<ul").unwrap();
    let widths: f64 = html[start..end]
        .match_indices("width:")
        .map(|(i, _)| {
            let v = &html[start + i + 6..];
            v[..v.find('%').unwrap()].parse::<f64>().unwrap()
        })
        .sum();
    assert!((widths - 100.0).abs() < 0.01, "{widths}");
    // succeeded 12 of 28.
    assert!(html.contains("data-state=\"succeeded\" data-count=\"12\" style=\"width:42.857%"));
}

#[test]
fn a_step_without_tasks_has_no_eta() {
    let mut st = sample();
    st.steps = vec![step("joint", [0; 6], 0.0, Some(0))];
    let html = render(&st, NOW);
    assert!(
        html.contains("<span class=\"progress-text\">no tasks</span>"),
        "{html}"
    );
    assert!(html.contains("<b class=\"eta\">-</b>"));
    assert!(!html.contains("class=\"seg "));
}

#[test]
fn the_default_cluster_is_not_named_twice() {
    let mut st = sample();
    st.cluster = DEFAULT_CLUSTER.into();
    let html = render(&st, NOW);
    assert!(html.contains("<h1>anamo</h1>"), "{html}");
    assert!(html.contains("<title>anamo</title>"));
    assert!(render(&sample(), NOW)
        .contains("<h1>anamo <span class=\"cluster\">prod&lt;1&gt;</span></h1>"));
}

#[test]
fn a_finished_step_with_failures_says_so() {
    let mut st = sample();
    st.steps = vec![step("align", [0, 0, 0, 91, 9, 0], 20.0, Some(0))];
    let html = render(&st, NOW);
    assert!(
        html.contains("100 / 100 finished, 9 failed</span>"),
        "{html}"
    );
    assert!(html.contains("<b class=\"eta\">finished, 9 failed</b>"));
    assert!(!html.contains("(100%)"));
}

#[test]
fn stale_figures_and_rejected_manifests_are_shown() {
    let mut st = sample();
    // Three intervals (3 s) old: not stale yet.
    st.last_reconcile_at = Some(NOW - 3_000);
    assert!(!render(&st, NOW).contains("id=\"stale\""));
    st.last_reconcile_at = Some(NOW - 240_000);
    st.manifest_error = Some("m/a.yaml:3: maxInstances: <bad>".into());
    let html = render(&st, NOW);
    assert!(
        html.contains("<p id=\"stale\" class=\"banner\" data-age-ms=\"240000\">Stale: the last reconcile pass was 4m ago"),
        "{html}"
    );
    assert!(html.contains("more than 3 intervals of 1s"));
    assert!(html.contains("<span class=\"detail\">m/a.yaml:3: maxInstances: &lt;bad&gt;</span>"));
}

#[test]
fn renders_an_empty_controller() {
    let st = ControllerStatus::new("c", "i", "s");
    let html = render(&st, NOW);
    assert!(html.contains("data-role=\"starting\""));
    assert!(html.contains("No tasks yet."));
    assert!(html.contains("No fleets (yet)."));
    assert!(html.contains("No actions yet."));
    assert!(html.contains("<dd id=\"last-reconcile\">never</dd>"));
    assert!(html.ends_with("</body></html>\n"));
}
