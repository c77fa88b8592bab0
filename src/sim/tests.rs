//! The simulator's own checks: dependent steps, billing of idle time, refused inputs, plots.

use std::time::Duration;

use super::report::round;
use super::*;

fn trace(csv: &str) -> Trace {
    Trace::parse_csv("t.csv", csv).unwrap()
}

fn one_fleet(scale_down: u64) -> FleetDefaults {
    FleetDefaults {
        max_instances: 4,
        slots_per_instance: 1,
        scale_down_delay: Duration::from_secs(scale_down),
        ..FleetDefaults::default()
    }
}

#[test]
fn dependent_steps_run_in_order() {
    let t = trace("step,submit_time_s,duration_s,id\na,0,100,S1\nb,0,50,S1\n");
    let fleets = fleets_for(&t, None, &one_fleet(0), false).unwrap();
    assert_eq!(fleets[1].depends_on, ["a"]);
    let settings = SimSettings {
        boot_delay: 0,
        ..SimSettings::default()
    };
    let r = simulate(&t, &fleets, &settings, &[PolicyKind::Anamo])
        .unwrap()
        .report;
    let a = &r.policies[0];
    // 100 s, then b waits for the next pass (10 s) and a fresh instance.
    assert!(a.makespan_s >= 150.0, "{a:?}");
    assert!(a.makespan_s <= 150.0 + 3.0 * 10.0, "{a:?}");
    assert_eq!(a.unfinished, 0);

    let independent = fleets_for(&t, None, &one_fleet(0), true).unwrap();
    let r = simulate(&t, &independent, &settings, &[PolicyKind::Anamo])
        .unwrap()
        .report;
    assert!(r.policies[0].makespan_s <= 100.0 + 2.0 * 10.0, "{r:?}");
}

#[test]
fn idle_instances_are_billed_for_the_scale_down_delay() {
    let t = trace("step,submit_time_s,duration_s\na,0,600\n");
    let fleets = fleets_for(&t, None, &one_fleet(300), false).unwrap();
    let settings = SimSettings {
        boot_delay: 60_000,
        ..SimSettings::default()
    };
    let r = simulate(&t, &fleets, &settings, &[PolicyKind::Anamo])
        .unwrap()
        .report;
    let a = &r.policies[0];
    assert_eq!(a.launches, 1);
    assert!((a.boot_hours - 60.0 / 3600.0).abs() < 1e-3, "{a:?}");
    // Idle from the end of the task until a pass sees 300 s of idleness.
    let idle_s = a.idle_hours * 3600.0;
    assert!((299.0..=300.0 + 10.0 + 20.0).contains(&idle_s), "{a:?}");
    assert_eq!(a.lower_bound_hours, round(600.0 / 3600.0, 4));
}

/// Two tasks at 0 s (600 s and 1,200 s) on a static fleet of two one-slot instances at
/// 3.6 $/h (a tenth of a cent a second), booting 60 s: each instance's worker exits when its
/// task ends and nothing is left to claim. By hand: instance A runs 0–660 s, B 0–1,260 s:
/// 1,920 s = $1.92, of it 2 × 60 s booting = $0.12 and 1,800 s busy = $1.80, nothing idle;
/// $0.96 per task.
#[test]
fn cost_figures_match_the_hand_computation() {
    let t = trace("step,submit_time_s,duration_s\na,0,600\na,0,1200\n");
    let defaults = FleetDefaults {
        max_instances: 2,
        slots_per_instance: 1,
        price_per_instance_hour: Some(3.6),
        ..FleetDefaults::default()
    };
    let fleets = fleets_for(&t, None, &defaults, false).unwrap();
    let settings = SimSettings {
        boot_delay: 60_000,
        static_instances: Some(2),
        ..SimSettings::default()
    };
    let r = simulate(&t, &fleets, &settings, &[PolicyKind::Static])
        .unwrap()
        .report;
    let s = &r.policies[0];
    let c = &s.cost;
    let near = |a: f64, b: f64| (a - b).abs() < 1e-9;
    assert!(near(c.totals.dollars, 1.92), "{c:?}");
    assert!(near(c.totals.boot_dollars, 0.12), "{c:?}");
    assert!(near(c.totals.busy_dollars, 1.80), "{c:?}");
    assert!(near(c.totals.idle_dollars, 0.0), "{c:?}");
    assert!(near(c.per_task.unwrap(), 0.96), "{c:?}");
    assert!(
        near(c.idle_share, 0.0) && near(c.boot_share, 0.12 / 1.92),
        "{c:?}"
    );
    assert_eq!((c.totals.instances, c.totals.instance_ms), (2, 1_920_000));
    assert_eq!(c.totals.unpriced_ms, 0);
    assert_eq!(s.instance_hours, round(1920.0 / 3600.0, 4));
    assert_eq!(s.step_costs.len(), 1);
    assert_eq!(s.step_costs[0].cost, *c);

    // Without a price the same time is reported unpriced, at no cost.
    let unpriced = fleets_for(
        &t,
        None,
        &FleetDefaults {
            price_per_instance_hour: None,
            ..defaults
        },
        false,
    )
    .unwrap();
    let r = simulate(&t, &unpriced, &settings, &[PolicyKind::Static])
        .unwrap()
        .report;
    let c = &r.policies[0].cost;
    assert_eq!((c.totals.dollars, c.totals.unpriced_ms), (0.0, 1_920_000));
}

/// A fleet's `maxTotalCost` binds in the simulation as in the controller: the policy hands
/// the planner what the cost ledger has accrued, and once that reaches the limit no instance
/// is launched any more. Two waves of 20 tasks of 600 s, 3,000 s apart, on up to 20 one-slot
/// instances at 3.6 $/h ($0.60 per task's run): the first wave costs about $14, so a $10
/// limit leaves the second wave without instances.
#[test]
fn a_total_cost_limit_stops_launches() {
    let wave = |at: u32| -> String { (0..20).map(|_| format!("a,{at},600\n")).collect() };
    let t = trace(&format!(
        "step,submit_time_s,duration_s\n{}{}",
        wave(0),
        wave(3000)
    ));
    let defaults = FleetDefaults {
        max_instances: 20,
        slots_per_instance: 1,
        price_per_instance_hour: Some(3.6),
        ..FleetDefaults::default()
    };
    let settings = SimSettings {
        max_time: 3_600_000,
        ..SimSettings::default()
    };
    let free = fleets_for(&t, None, &defaults, false).unwrap();
    let run = |fleets: &[SimFleet]| {
        simulate(&t, fleets, &settings, &[PolicyKind::Anamo])
            .unwrap()
            .report
            .policies[0]
            .clone()
    };
    let unlimited = run(&free);
    assert_eq!(unlimited.unfinished, 0, "{unlimited:?}");
    assert!(unlimited.cost.totals.dollars > 24.0, "{unlimited:?}");
    let mut capped = free.clone();
    capped[0].policy.budget = Some(crate::manifest::BudgetSpec {
        max_instances: None,
        max_hourly_cost: None,
        price_per_instance_hour: Some(3.6),
        max_total_cost: Some(10.0),
    });
    let limited = run(&capped);
    assert_eq!(limited.unfinished, 20, "{limited:?}");
    assert!(
        (10.0..20.0).contains(&limited.cost.totals.dollars),
        "{limited:?}"
    );
    assert_eq!(limited.busy_terminated, 0);
}

#[test]
fn steps_without_a_fleet_are_refused() {
    let t = trace("step,submit_time_s,duration_s\na,0,600\nb,0,10\n");
    let fleets = vec![one_fleet(0).fleet("a", Vec::new())];
    let e = simulate(&t, &fleets, &SimSettings::default(), &[PolicyKind::Anamo])
        .unwrap_err()
        .to_string();
    assert!(e.contains("step b"), "{e}");
}

#[test]
fn plots_an_svg() {
    let t = trace("step,submit_time_s,duration_s\na,0,600\na,0,900\na,300,600\n");
    let fleets = fleets_for(&t, None, &one_fleet(60), false).unwrap();
    let out = simulate(&t, &fleets, &SimSettings::default(), &PolicyKind::ALL).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.svg");
    plot_svg(&path, &out.report, &out.timelines).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("pending tasks"),
        "{svg:.200}"
    );
}

/// A 1,000-instance scale-up against EC2's API quotas: from buckets just used up it takes at
/// least what the `RunInstances` resource bucket implies (1,000 instances at 2/s), throttled
/// calls are counted, and no instance is launched twice (the batch token of a throttled
/// launch issued again); with a quiet account's full buckets it is not paced at all. Twice
/// as many tasks as instances, so that the planner wants all 1,000 while it is paced.
#[test]
fn a_thousand_instance_scale_up_is_paced_by_the_ec2_quotas() {
    let csv: String = std::iter::once("step,submit_time_s,duration_s,id\n".to_string())
        .chain((0..2_000).map(|i| format!("a,0,600,t{i}\n")))
        .collect();
    let t = trace(&csv);
    let defaults = FleetDefaults {
        max_instances: 1_000,
        slots_per_instance: 1,
        ..FleetDefaults::default()
    };
    let fleets = fleets_for(&t, None, &defaults, false).unwrap();
    let run = |quotas: Option<Ec2Quotas>| {
        let settings = SimSettings {
            ec2_quotas: quotas,
            ..SimSettings::default()
        };
        simulate(&t, &fleets, &settings, &[PolicyKind::Anamo])
            .unwrap()
            .report
            .policies[0]
            .clone()
    };
    let used_up = Ec2Quotas {
        start_fill: 0.0,
        ..Ec2Quotas::default()
    };
    let implied_s = 1_000.0 / used_up.run_instances.refill_per_sec;
    let paced = run(Some(used_up));
    assert_eq!(paced.peak_instances, 1_000, "{paced:?}");
    assert!(paced.time_to_peak_s >= implied_s, "{paced:?}");
    assert!(paced.throttled_calls > 0, "{paced:?}");
    // Each instance runs two tasks back to back: none ends, none is launched twice.
    assert_eq!(
        paced.launches, 1_000,
        "no instance launched twice: {paced:?}"
    );
    assert_eq!(paced.unfinished, 0);

    let quiet = run(Some(Ec2Quotas::default()));
    assert_eq!((quiet.peak_instances, quiet.launches), (1_000, 1_000));
    assert_eq!(quiet.throttled_calls, 0, "{quiet:?}");
    assert!(quiet.time_to_peak_s < implied_s, "{quiet:?}");
}
