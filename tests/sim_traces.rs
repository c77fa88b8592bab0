//! The shipped traces (`examples/traces/*.csv`) through the simulator with the shipped
//! manifests and default simulation settings (boot delay 90 s, controller interval 10 s,
//! seed 42): anamo's planner stays within 1.10× the instance-time lower bound on every one of
//! them, never terminates a busy instance, and its figures stay close to the recorded ones.
//!
//! Recorded figures are exact for this planner (the simulation is deterministic); the guard
//! allows `TOLERANCE` so that a deliberate planner change that moves them a little does not
//! fail here, while a regression that moves them more does. To re-record, run
//! `anamo simulate --trace examples/traces/NAME.csv --manifests examples/traces/manifests --json`
//! and update the table.

use std::path::Path;
use std::time::Duration;

use anamo::sim::{self, FleetDefaults, PolicyKind, PolicyReport, SimReport, SimSettings, Trace};

/// Relative tolerance of the regression guard (instance-hours and makespan).
const TOLERANCE: f64 = 0.03;

/// Recorded figures: (trace, policy, instance-hours, makespan seconds).
const RECORDED: &[(&str, PolicyKind, f64, f64)] = &[
    ("burst", PolicyKind::Anamo, 176.0972, 34401.0),
    ("burst", PolicyKind::Static, 176.3408, 34401.0),
    ("burst", PolicyKind::Keda, 180.4917, 42026.0),
    ("pipeline", PolicyKind::Anamo, 250.3528, 30325.0),
    ("pipeline", PolicyKind::Static, 376.4589, 29676.0),
    ("pipeline", PolicyKind::Keda, 287.9583, 37775.0),
    ("poisson", PolicyKind::Anamo, 108.3556, 63487.0),
    ("poisson", PolicyKind::Static, 339.8675, 63084.0),
    ("poisson", PolicyKind::Keda, 138.4417, 66362.0),
    ("waves", PolicyKind::Anamo, 110.6361, 52377.0),
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
        // waves.csv has the least room (1.093): see
        // `waves_overhead_is_boot_scale_down_and_fragmentation`.
        let bound = 1.10;
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

/// Where waves.csv's overhead over the bound comes from. Each of its three waves of 200 tasks
/// needs 20 fresh instances that boot (90 s each: 1.5 instance-hours in all) and, once the wave
/// is done, used to idle for `scaleDownDelay` (plus up to one controller interval) before they
/// went; with the planner's arrival estimate they now go at once (the ski-rental break-even);
/// what is left is slot fragmentation at the end of each wave (an instance with 2 slots stays
/// while one slot still works), which no scaling policy removes: 1.064 with no boot and no
/// scale-down delay. With `scaleDownDelay` 5 m and no arrival estimate the idle time alone put
/// the trace over 1.10.
#[test]
fn waves_overhead_is_boot_scale_down_and_fragmentation() {
    let waves_with = |scale_down: Option<Duration>, boot_delay: Option<anamo::clock::Millis>| {
        let trace = Trace::load(&root().join("examples/traces/waves.csv")).unwrap();
        let manifests = anamo::manifest::load(root().join("examples/traces/manifests")).unwrap();
        let mut fleets =
            sim::fleets_for(&trace, Some(&manifests), &FleetDefaults::default(), false).unwrap();
        if let Some(d) = scale_down {
            for f in &mut fleets {
                f.policy.scale_down_delay = anamo::clock::ms(d);
            }
        }
        let settings = SimSettings {
            boot_delay: boot_delay.unwrap_or(SimSettings::default().boot_delay),
            ..SimSettings::default()
        };
        sim::simulate(&trace, &fleets, &settings, &[PolicyKind::Anamo])
            .unwrap()
            .report
            .policies[0]
            .clone()
    };
    let default = waves_with(None, None);
    assert!(default.ratio <= 1.10, "{}", default.ratio);
    // Idle time counts idle slots (the cost ledger's idle share, in instance time): about 6.5
    // instance-hours of it are the fragmentation at the end of each wave (an instance with one
    // of its two slots still busy). Once a wave is done, no task has arrived for far longer
    // than a boot: the planner expects no work within a boot time and stops the 20 idle
    // instances of each wave at once (the ski-rental break-even) instead of after
    // scaleDownDelay (which cost about 1.6 instance-hours here), so less than half an hour of
    // whole instances idling comes on top.
    assert!(default.idle_hours < 6.5 + 0.5, "{}", default.idle_hours);
    // ... and booting 90 s each: 1.5 instance-hours.
    assert!(
        (1.4..=1.6).contains(&default.boot_hours),
        "{}",
        default.boot_hours
    );

    let no_delays = waves_with(Some(Duration::ZERO), Some(0));
    assert!(no_delays.ratio < 1.08, "{}", no_delays.ratio);

    // scaleDownDelay now bounds only the idle time of instances that expected work would
    // reach: a longer one no longer keeps the waves' idle instances.
    let five_minutes = waves_with(Some(Duration::from_secs(300)), None);
    assert!(five_minutes.ratio <= 1.10, "{}", five_minutes.ratio);
    assert!(
        five_minutes.idle_hours < default.idle_hours + 0.5,
        "{} vs {}",
        five_minutes.idle_hours,
        default.idle_hours
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
    // Recorded: 255.6583 instance-hours, makespan 31604 s.
    assert!(within(a.instance_hours, 255.6583), "{a:?}");
    assert!(within(a.makespan_s, 31604.0), "{a:?}");
}
