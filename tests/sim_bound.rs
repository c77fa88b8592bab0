//! The floors of `sim::bound::floor_hours` and the bound of `sim::bound::deadline_bound_hours`
//! are lower bounds: on random traces (clustered
//! arrivals with gaps, durations from seconds to hours, one step or two dependent ones, 1–4
//! slots, 1–6 instances), no simulated policy — anamo, the static baseline, the KEDA-like
//! scaler, the clairvoyant reference — ever spends less than the floor for any policy or the
//! bound for finishing within its own makespan, and
//! none that reran no task spends less than the floor for its own longest wait (each task
//! finished within that wait, plus a tick for its submission and one for its completion, of the
//! earliest it could).

use anamo::clock::Millis;
use anamo::sim::bound::{deadline_bound_hours, floor_hours, steps_of};
use anamo::sim::{self, FleetDefaults, PolicyKind, SimSettings, Trace, TraceTask};
use proptest::prelude::*;

/// Tasks as `(cluster, offset s, duration s)`: clusters 0–5 sit 0–3 hours apart.
fn arb_tasks() -> impl Strategy<Value = (Vec<Millis>, Vec<(usize, Millis, Millis)>)> {
    (
        proptest::collection::vec(0i64..3 * 3600, 6),
        proptest::collection::vec((0usize..6, 0i64..600, 5i64..7200), 1..30),
    )
}

fn trace(gaps: &[Millis], tasks: &[(usize, Millis, Millis)], steps: usize) -> Trace {
    let starts: Vec<Millis> = gaps
        .iter()
        .scan(0, |at, g| {
            *at += g;
            Some(*at)
        })
        .collect();
    let names: Vec<String> = (0..steps).map(|s| format!("s{s}")).collect();
    let mut out = Vec::new();
    for (k, (cluster, offset, duration)) in tasks.iter().enumerate() {
        for (s, name) in names.iter().enumerate() {
            out.push(TraceTask {
                step: name.clone(),
                id: format!("t{k}"),
                submit_ms: (starts[*cluster] + offset) * 1000,
                // The second step's tasks are shorter, so that its fleet sees other gaps.
                duration_ms: duration * 1000 / (s as Millis + 1),
            });
        }
    }
    Trace {
        name: "random".into(),
        steps: names,
        tasks: out,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn no_policy_spends_less_than_the_floors(
        (gaps, tasks) in arb_tasks(),
        steps in 1usize..3,
        slots in 1u32..5,
        max_instances in 1u32..7,
        seed in any::<u64>(),
    ) {
        let trace = trace(&gaps, &tasks, steps);
        let defaults = FleetDefaults {
            slots_per_instance: slots,
            max_instances,
            ..FleetDefaults::default()
        };
        let fleets = sim::fleets_for(&trace, None, &defaults, false).unwrap();
        let settings = SimSettings { seed, ..SimSettings::default() };
        let report = sim::simulate(&trace, &fleets, &settings, &PolicyKind::ALL)
            .unwrap()
            .report;
        let work = steps_of(&trace, &fleets);
        let boot = settings.boot_delay;
        let any = floor_hours(&work, boot, None);
        // The report rounds instance-hours to 4 decimals.
        let slack = 1e-3;
        let start = trace.tasks.iter().map(|t| t.submit_ms).min().unwrap_or(0);
        for p in &report.policies {
            prop_assert_eq!(p.unfinished, 0, "{:?}", p);
            // The makespan is rounded to a tenth of a second.
            let deadline = start + (p.makespan_s * 1000.0).ceil() as Millis + 100;
            if let Some(own) = deadline_bound_hours(&work, boot, start, deadline) {
                prop_assert!(
                    p.instance_hours + slack >= own,
                    "{:?} spent {} instance-hours, below the bound {} for its makespan {} s",
                    p.policy, p.instance_hours, own, p.makespan_s
                );
            }
            prop_assert!(
                p.instance_hours + slack >= any,
                "{:?} spent {} instance-hours, below the floor {}", p.policy, p.instance_hours, any
            );
            if p.requeued_lease + p.requeued_spot > 0 {
                continue;
            }
            let delay = (p.max_wait_s * 1000.0).ceil() as Millis + 2 * settings.tick + 100;
            let own = floor_hours(&work, boot, Some(delay));
            prop_assert!(
                p.instance_hours + slack >= own,
                "{:?} spent {} instance-hours, below the floor {} for its longest wait {} s",
                p.policy, p.instance_hours, own, p.max_wait_s
            );
        }
    }
}
