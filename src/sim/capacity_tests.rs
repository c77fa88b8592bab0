//! Capacity types in the simulator: spot-with-fallback measured against spot outages and
//! interruptions (see `world::capacity`).

use std::time::Duration;

use super::*;
use crate::manifest::{CapacityType, SpotFallback};

/// One 10-minute task a minute for `hours` hours.
fn steady(hours: u64) -> Trace {
    let mut csv = String::from("step,submit_time_s,duration_s\n");
    for m in 0..hours * 60 {
        csv.push_str(&format!("a,{},600\n", m * 60));
    }
    Trace::parse_csv("steady.csv", &csv).unwrap()
}

/// 20 ten-minute tasks every half hour for `hours` hours: the fleet scales down between
/// bursts, so every burst launches anew.
fn bursts(hours: u64) -> Trace {
    let mut csv = String::from("step,submit_time_s,duration_s\n");
    for b in 0..hours * 2 {
        for _ in 0..20 {
            csv.push_str(&format!("a,{},600\n", b * 1800));
        }
    }
    Trace::parse_csv("bursts.csv", &csv).unwrap()
}

/// On-demand at $1/h, spot at $0.40/h.
fn run(trace: &Trace, capacity: SimCapacity) -> PolicyReport {
    let defaults = FleetDefaults {
        max_instances: 30,
        price_per_instance_hour: Some(1.0),
        scale_down_delay: Duration::from_secs(90),
        ..FleetDefaults::default()
    };
    let fleets = fleets_for(trace, None, &defaults, false).unwrap();
    let settings = SimSettings {
        capacity: Some(capacity),
        ..SimSettings::default()
    };
    let r = simulate(trace, &fleets, &settings, &[PolicyKind::Anamo]).unwrap();
    let p = r.report.policies[0].clone();
    assert_eq!(p.unfinished, 0, "{p:?}");
    p
}

fn capacity(t: CapacityType, rate: f64, spot_unavailable: Vec<(Millis, Millis)>) -> SimCapacity {
    SimCapacity {
        capacity_type: t,
        fallback: SpotFallback::default(),
        spot_usd_per_hour: 0.40,
        spot_interruptions_per_hour: rate,
        spot_unavailable,
        on_demand_unavailable: Vec::new(),
    }
}

fn by_type<'a>(p: &'a PolicyReport, t: &str) -> Option<&'a CapacityUse> {
    p.capacity.iter().find(|c| c.capacity_type == t)
}

const H: Millis = 3_600_000;

/// While spot has no capacity (1 h to 3 h) the fleet launches on-demand, and spot again
/// afterwards: more spot launches than when the outage lasts to the end.
#[test]
fn spot_with_fallback_goes_on_demand_during_an_outage_and_back() {
    let trace = bursts(5);
    let outage = run(
        &trace,
        capacity(CapacityType::SpotWithFallback, 0.0, vec![(H, 3 * H)]),
    );
    let for_good = run(
        &trace,
        capacity(CapacityType::SpotWithFallback, 0.0, vec![(H, 100 * H)]),
    );
    for p in [&outage, &for_good] {
        let od = by_type(p, "on-demand").expect("on-demand launched");
        assert!(
            od.launches > 0 && od.fallback_launches == od.launches,
            "{p:?}"
        );
        assert!(
            by_type(p, "spot").unwrap().insufficient_capacity > 0,
            "{p:?}"
        );
    }
    let spot = |p: &PolicyReport| by_type(p, "spot").unwrap().launches;
    assert!(spot(&outage) > spot(&for_good), "{outage:?}\n{for_good:?}");
    eprintln!(
        "outage 1h..3h: {:?}\noutage from 1h on: {:?}",
        outage.capacity, for_good.capacity
    );
}

/// Spot at 40% of the on-demand price costs less than on-demand when interruptions are rare,
/// more when they are frequent (the lost work and boots outweigh the discount).
#[test]
fn spot_costs_less_than_on_demand_only_when_interruptions_are_rare() {
    let trace = steady(2);
    let on_demand = run(&trace, capacity(CapacityType::OnDemand, 0.0, Vec::new()));
    assert!(by_type(&on_demand, "spot").is_none());
    let rare = run(&trace, capacity(CapacityType::Spot, 0.05, Vec::new()));
    let frequent = run(&trace, capacity(CapacityType::Spot, 12.0, Vec::new()));
    let cost = |p: &PolicyReport| p.cost.totals.dollars;
    eprintln!(
        "on-demand ${:.2}, spot rare ${:.2} ({} interrupted), spot frequent ${:.2} ({} interrupted)",
        cost(&on_demand),
        cost(&rare),
        rare.spot_interruptions,
        cost(&frequent),
        frequent.spot_interruptions
    );
    assert!(cost(&rare) < cost(&on_demand), "{rare:?}");
    assert!(cost(&frequent) > cost(&on_demand), "{frequent:?}");
    // Spot instances are priced at the spot price through the cost ledger.
    let spot = by_type(&rare, "spot").unwrap();
    assert!((spot.dollars - cost(&rare)).abs() < 1e-9, "{rare:?}");
    assert!(
        (spot.dollars / spot.instance_hours - 0.40).abs() < 0.01,
        "{spot:?}"
    );
}
