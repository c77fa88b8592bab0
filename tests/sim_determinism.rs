//! The simulator is deterministic: the same trace, settings and seed give the same report,
//! byte for byte; another seed changes the random parts (faults, claim order).

use anamo::sim::{self, FleetDefaults, GeneratorSpec, PolicyKind, SimSettings};

fn report_json(seed: u64) -> String {
    let trace =
        GeneratorSpec::parse("tasks=300,steps=3,duration=lognormal(6.5,0.6),arrival=poisson(0.05)")
            .unwrap()
            .generate(seed);
    let defaults = FleetDefaults {
        max_instances: 8,
        slots_per_instance: 2,
        scale_down_delay: std::time::Duration::from_secs(120),
        ..FleetDefaults::default()
    };
    let fleets = sim::fleets_for(&trace, None, &defaults, false).unwrap();
    let settings = SimSettings {
        seed,
        boot_jitter: 30_000,
        spot_rate_per_hour: 0.2,
        capacity_error_prob: 0.2,
        ..SimSettings::default()
    };
    let out = sim::simulate(&trace, &fleets, &settings, &PolicyKind::ALL).unwrap();
    for p in &out.report.policies {
        assert_eq!(p.unfinished, 0, "{p:?}");
    }
    assert_eq!(
        out.report
            .policy(PolicyKind::Anamo)
            .unwrap()
            .busy_terminated,
        0
    );
    serde_json::to_string(&out.report).unwrap()
}

#[test]
fn same_seed_same_report() {
    assert_eq!(report_json(7), report_json(7));
}

#[test]
fn another_seed_another_report() {
    assert_ne!(report_json(7), report_json(8));
}
