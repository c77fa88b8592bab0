//! Tests of the `anamo status` text and `--watch` frames.

use super::*;
use crate::model::StepCounts;

const NOW: Millis = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn step(name: &str, [succeeded, failed, running, pending]: [u64; 4], done: u64) -> StepReport {
    let counts = StepCounts {
        step: name.into(),
        succeeded,
        failed,
        running,
        pending,
        ..Default::default()
    };
    let per_min = crate::controller::status::throughput_per_min(done);
    StepReport {
        eta_ms: crate::controller::status::eta_ms(counts.unfinished(), per_min),
        counts,
        oldest_pending_age_ms: None,
        finished_in_window: done,
        throughput_per_min: per_min,
        counted_at: NOW,
    }
}

fn fleet(name: &str, updated_at: Millis) -> StatusDoc {
    StatusDoc {
        name: format!("fleet/{name}"),
        updated_at,
        body: serde_json::json!({
            "desired": 2, "actual": 2, "conditions_summary": "Ready",
            "last_action": format!("launch 2: {name} backlog"), "last_action_at": updated_at - 5_000,
        }),
    }
}

fn controller(last_seen: Millis, manifest_error: Option<&str>) -> ControllerSeen {
    let doc = ControllerDoc {
        cluster: "anamo".into(),
        identity: "host-1".into(),
        interval_ms: 1_000,
        manifest_error: manifest_error.map(str::to_string),
        stopped: false,
    };
    ControllerSeen::new(doc, last_seen, NOW)
}

fn view(controller_seen: Millis) -> StatusView {
    StatusView {
        steps: vec![
            step("align", [91, 9, 0, 0], 40),
            step("call", [10, 0, 2, 18], 10),
        ],
        fleets: vec![fleet("align", controller_seen)],
        controllers: vec![controller(controller_seen, None)],
        failed_tasks: Default::default(),
        starved: Vec::new(),
        at: NOW,
        store: "sqlite://a.db".into(),
    }
}

#[test]
fn text_says_finished_with_failures_and_each_steps_own_rate() {
    let text = render_text(&view(NOW - 1_000));
    let cells = |step: &str| -> Vec<String> {
        let line = text.lines().find(|l| l.starts_with(step)).expect(&text);
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    };
    // Done in the window, per minute, ETA.
    assert_eq!(
        cells("align")[8..],
        ["40", "8.0", "finished, 9 failed"],
        "{text}"
    );
    // 20 unfinished at 2/min.
    assert_eq!(cells("call")[8..], ["10", "2.0", "10m"], "{text}");
    assert!(text.contains("DONE IN 5m"));
    assert!(
        text.contains("controller anamo (host-1) last seen 1s ago\n"),
        "{text}"
    );
    assert!(!text.contains("stale"), "{text}");
}

#[test]
fn a_controller_gone_for_longer_than_three_intervals_is_stale() {
    let text = render_text(&view(NOW - 240_000));
    assert!(
        text.contains(
            "warning: controller anamo (host-1) last seen 4m ago, more than 3 intervals of 1s: \
             it has stopped or its passes are stuck"
        ),
        "{text}"
    );
    let fleet = text.lines().find(|l| l.contains("stale")).expect(&text);
    assert!(fleet.starts_with("align "), "{text}");
    assert!(fleet.contains("stale (was: Ready)  -"), "{text}");
    assert!(fleet.contains("4m ago"), "{text}");
}

#[test]
fn a_controller_that_stopped_says_so() {
    let mut v = view(NOW - 2_000);
    let doc = ControllerDoc {
        cluster: "anamo".into(),
        identity: "host-1".into(),
        interval_ms: 1_000,
        manifest_error: None,
        stopped: true,
    };
    v.controllers = vec![ControllerSeen::new(doc, NOW - 2_000, NOW)];
    assert!(v.controllers[0].stale);
    let text = render_text(&v);
    assert!(text.contains("stale (was: Ready)"), "{text}");
    assert!(
        text.contains(
            "warning: controller anamo (host-1) stopped 2s ago; the fleets below are as it \
             last saw them\n"
        ),
        "{text}"
    );
}

#[test]
fn a_rejected_manifest_is_shown_with_every_line() {
    let mut v = view(NOW - 1_000);
    v.controllers = vec![controller(
        NOW - 1_000,
        Some("m/a.yaml:3: bad\nm/b.yaml:9: worse"),
    )];
    let text = render_text(&v);
    assert!(
        text.contains(
            "warning: a manifest change was rejected; the last good manifests stay in force \
             until the files are fixed:\n  m/a.yaml:3: bad\n  m/b.yaml:9: worse\n"
        ),
        "{text}"
    );
}

#[test]
fn bars_fill_their_width_in_proportion() {
    let c = |s, f, r, p| StepCounts {
        step: "a".into(),
        succeeded: s,
        failed: f,
        running: r,
        pending: p,
        ..Default::default()
    };
    assert_eq!(bar(&c(5, 0, 0, 5), 10), "=====-----");
    assert_eq!(bar(&c(91, 9, 0, 0), 20), "==================xx");
    // A state with a single task still shows.
    assert_eq!(bar(&c(998, 0, 1, 1), 10), "========>-");
    assert_eq!(bar(&c(0, 0, 0, 0), 4), "    ");
    for (s, f, r, p) in [(1, 2, 3, 4), (7, 0, 0, 1), (100, 1, 1, 1), (1, 1, 1, 1)] {
        assert_eq!(bar(&c(s, f, r, p), 3).chars().count(), 3);
        assert_eq!(bar(&c(s, f, r, p), 17).chars().count(), 17);
    }
}

#[test]
fn a_watch_frame_has_bars_fleets_and_last_actions() {
    let mut v = view(NOW - 1_000);
    v.fleets.push(fleet("call", NOW - 2_000));
    let frame = render_frame(&v, 100, "2s");
    assert!(frame.starts_with(
        "anamo status · sqlite://a.db · 2026-01-01T00:00:00Z · every 2s (Ctrl-C to stop)\n"
    ));
    assert!(
        frame.contains("align  [====================================xxxx]  100/100  8.0/min  ETA finished, 9 failed"),
        "{frame}"
    );
    assert!(frame.contains("succeeded 10  failed 0  running 2  pending 18  waiting 0"));
    assert!(frame.contains("= succeeded  x failed  > running"));
    assert!(frame.contains("FLEET"));
    // Last actions, newest first.
    let actions = &frame[frame.find("LAST ACTIONS").expect(&frame)..];
    let align = actions.find("align  launch 2: align backlog").unwrap();
    let call = actions.find("call  launch 2: call backlog").unwrap();
    assert!(align < call, "{actions}");
    assert!(actions.contains("6s ago  align"), "{actions}");
}

#[test]
fn a_frame_fits_the_terminal() {
    let frame = "12345678\nab\nc\nd\n";
    assert_eq!(fit(frame, 5, 10), ["1234…", "ab", "c", "d"]);
    assert_eq!(
        fit(frame, 50, 3),
        [
            "12345678",
            "ab",
            "… 2 more lines (a larger window shows them)"
        ]
    );
    let frame = render_frame(&view(NOW - 1_000), 60, "2s");
    for line in fit(&frame, 60, 8) {
        assert!(line.chars().count() <= 60, "{line}");
    }
    assert_eq!(fit(&frame, 60, 8).len(), 8);
}

#[test]
fn fleets_show_their_cost_rate_cost_per_task_and_idle_share() {
    let mut v = view(NOW - 1_000);
    let mut priced = fleet("call", NOW - 1_000);
    priced.body["cost"] = serde_json::json!({
        "dollars": 12.3456, "usd_per_hour": 0.72, "per_task": 0.01234, "idle_share": 0.0625,
    });
    v.fleets.push(priced);
    let text = render_text(&v);
    let fleets = &text[text.find("FLEET").expect(&text)..];
    let row = fleets
        .lines()
        .find(|l| l.starts_with("call "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(row.contains("$12.35 ($0.72/h)"), "{row}");
    assert!(row.contains("$0.0123"), "{row}");
    assert!(row.contains(" 6% "), "{row}");
    let unpriced = fleets
        .lines()
        .find(|l| l.starts_with("align "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(!unpriced.contains('$'), "{unpriced}");
}

#[test]
fn fleets_show_their_interrupted_instances() {
    let mut f = fleet("align", NOW);
    assert_eq!(interrupted_cell(&f), "-");
    f.body["interruptions"] = serde_json::json!({"interruption": 3, "rebalance": 0});
    assert_eq!(interrupted_cell(&f), "3");
    f.body["interruptions"] = serde_json::json!({"interruption": 3, "rebalance": 2});
    assert_eq!(interrupted_cell(&f), "3 +2 rebalanced");
    let table = fleets_table(&StatusView {
        fleets: vec![f],
        ..view(NOW)
    })
    .render();
    assert!(table.contains("INTERRUPTED"), "{table}");
    assert!(table.contains("3 +2 rebalanced"), "{table}");
}
