//! The shipped traces (`examples/traces/*.csv`) through the simulator with the shipped
//! manifests and default simulation settings (boot delay 90 s, controller interval 10 s,
//! seed 42): anamo's planner stays within 1.10× the instance-time lower bound where that bound
//! is meaningful, never terminates a busy instance, and its figures stay close to the recorded
//! ones.
//!
//! Recorded figures are exact for this planner (the simulation is deterministic); the guard
//! allows `TOLERANCE` so that a deliberate planner change that moves them a little does not
//! fail here, while a regression that moves them more does. To re-record, run
//! `anamo simulate --trace examples/traces/NAME.csv --manifests examples/traces/manifests --json`
//! and update the table.

use std::path::Path;

use anamo::sim::{self, FleetDefaults, PolicyKind, PolicyReport, SimReport, SimSettings, Trace};

/// Relative tolerance of the regression guard (instance-hours and makespan).
const TOLERANCE: f64 = 0.03;

/// Recorded figures: (trace, policy, instance-hours, makespan seconds).
const RECORDED: &[(&str, PolicyKind, f64, f64)] = &[
    ("burst", PolicyKind::Anamo, 177.7639, 34401.0),
    ("burst", PolicyKind::Static, 176.3408, 34401.0),
    ("burst", PolicyKind::Keda, 180.4917, 42026.0),
    ("pipeline", PolicyKind::Anamo, 253.7861, 29685.0),
    ("pipeline", PolicyKind::Static, 376.4589, 29676.0),
    ("pipeline", PolicyKind::Keda, 287.9583, 37775.0),
    ("poisson", PolicyKind::Anamo, 108.5778, 63917.0),
    ("poisson", PolicyKind::Static, 339.8675, 63084.0),
    ("poisson", PolicyKind::Keda, 138.4417, 66362.0),
    ("waves", PolicyKind::Anamo, 115.6306, 52377.0),
    ("waves", PolicyKind::Static, 277.8531, 52287.0),
    ("waves", PolicyKind::Keda, 122.325, 57546.0),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(name: &str, settings: &SimSettings) -> SimReport {
    let trace = Trace::load(&root().join(format!("examples/traces/{name}.csv"))).unwrap();
    let manifests = anamo::manifest::load(root().join("examples/traces/manifests")).unwrap();
    let fleets =
        sim::fleets_for(&trace, Some(&manifests), &FleetDefaults::default(), false).unwrap();
    sim::simulate(&trace, &fleets, settings, &PolicyKind::ALL)
        .unwrap()
        .report
}

fn anamo(r: &SimReport) -> &PolicyReport {
    r.policy(PolicyKind::Anamo).unwrap()
}

fn within(actual: f64, recorded: f64) -> bool {
    (actual - recorded).abs() <= recorded * TOLERANCE
}

#[test]
fn shipped_traces_stay_near_the_lower_bound_and_the_recorded_figures() {
    let mut failures = Vec::new();
    for name in ["burst", "pipeline", "poisson", "waves"] {
        let r = run(name, &SimSettings::default());
        for p in &r.policies {
            assert_eq!(
                p.unfinished, 0,
                "{name}/{:?} left tasks unfinished",
                p.policy
            );
        }
        let a = anamo(&r);
        assert_eq!(
            a.busy_terminated, 0,
            "{name}: the planner terminated a busy instance"
        );
        assert_eq!(a.requeued_lease, 0, "{name}: tasks were killed");
        // waves.csv is the case where the bound is not meaningful with default settings:
        // three bursts of 200 tasks, each needing 20 fresh instances that boot (90 s) and
        // idle out (scaleDownDelay 5 m), with only ~5 tasks per slot per wave; see
        // `waves_overhead_is_boot_scale_down_and_fragmentation`.
        let bound = if name == "waves" { 1.13 } else { 1.10 };
        if a.ratio > bound {
            failures.push(format!(
                "{name}: anamo used {:.3}× the lower bound (limit {bound})",
                a.ratio
            ));
        }
        for (trace, kind, hours, makespan) in RECORDED.iter().filter(|r| r.0 == name) {
            let p = r.policy(*kind).unwrap();
            if !within(p.instance_hours, *hours) || !within(p.makespan_s, *makespan) {
                failures.push(format!(
                    "{trace}/{kind:?}: {} instance-hours, makespan {} s; recorded {hours}, {makespan} (±{}%)",
                    p.instance_hours,
                    p.makespan_s,
                    TOLERANCE * 100.0
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn anamo_beats_the_baselines_on_elastic_traces() {
    for name in ["pipeline", "poisson"] {
        let r = run(name, &SimSettings::default());
        let a = anamo(&r);
        for other in [PolicyKind::Static, PolicyKind::Keda] {
            let o = r.policy(other).unwrap();
            assert!(
                a.instance_hours < o.instance_hours,
                "{name}: anamo {} instance-hours, {other:?} {}",
                a.instance_hours,
                o.instance_hours
            );
        }
        // The KEDA-like scaler removes instances regardless of what they run.
        assert!(r.policy(PolicyKind::Keda).unwrap().busy_terminated > 0);
    }
}

/// Where waves.csv's overhead over the bound comes from: with no boot delay and no
/// scale-down delay what is left is slot fragmentation at the end of each wave (an instance
/// with 2 slots stays while one slot still works), which no scaling policy removes.
#[test]
fn waves_overhead_is_boot_scale_down_and_fragmentation() {
    let default = anamo(&run("waves", &SimSettings::default())).clone();
    let no_delays = {
        let trace = Trace::load(&root().join("examples/traces/waves.csv")).unwrap();
        let defaults = FleetDefaults {
            max_instances: 20,
            slots_per_instance: 2,
            scale_down_delay: std::time::Duration::ZERO,
            ..FleetDefaults::default()
        };
        let fleets = sim::fleets_for(&trace, None, &defaults, false).unwrap();
        let settings = SimSettings {
            boot_delay: 0,
            ..SimSettings::default()
        };
        sim::simulate(&trace, &fleets, &settings, &[PolicyKind::Anamo])
            .unwrap()
            .report
            .policies[0]
            .clone()
    };
    assert!(default.ratio > 1.10, "{}", default.ratio);
    assert!(no_delays.ratio < 1.08, "{}", no_delays.ratio);
    // 20 instances × 3 waves idle for scaleDownDelay (5 m) each: about 5 instance-hours.
    assert!(
        (4.5..=5.5).contains(&default.idle_hours),
        "{}",
        default.idle_hours
    );
    // ... and booting 90 s each: 1.5 instance-hours.
    assert!(
        (1.4..=1.6).contains(&default.boot_hours),
        "{}",
        default.boot_hours
    );
}

#[test]
fn spot_interruptions_and_capacity_errors_never_make_the_planner_kill_busy_instances() {
    let settings = SimSettings {
        spot_rate_per_hour: 0.05,
        capacity_error_prob: 0.3,
        ..SimSettings::default()
    };
    let r = run("pipeline", &settings);
    let a = anamo(&r);
    assert_eq!(a.unfinished, 0);
    assert_eq!(a.busy_terminated, 0);
    assert!(a.spot_interruptions > 0 && a.requeued_spot > 0, "{a:?}");
    assert!(a.capacity_errors > 0, "{a:?}");
    // Recorded: 254.2056 instance-hours, makespan 30155 s.
    assert!(within(a.instance_hours, 254.2056), "{a:?}");
    assert!(within(a.makespan_s, 30155.0), "{a:?}");
}
