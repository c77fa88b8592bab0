//! Unavailable offerings, their expiry, and the spot → on-demand → spot fallback.

use std::time::Duration;

use super::*;

const MIN: Millis = 60_000;

fn pool() -> Vec<(Option<String>, Option<String>)> {
    let mut out = Vec::new();
    for t in ["c6i.large", "c5.large"] {
        for s in ["subnet-a", "subnet-b"] {
            out.push((Some(t.to_string()), Some(s.to_string())));
        }
    }
    out
}

fn offering(t: &str, s: &str, lifecycle: Lifecycle) -> Offering {
    Offering {
        instance_type: Some(t.into()),
        subnet: Some(s.into()),
        lifecycle,
    }
}

fn mark_all(c: &mut CapacityState, lifecycle: Lifecycle, now: Millis) {
    for (t, s) in pool() {
        let o = Offering {
            instance_type: t,
            subnet: s,
            lifecycle,
        };
        c.mark_unavailable(o, now, UNAVAILABLE_TTL);
    }
}

fn launch_of(choice: &Choice) -> (Lifecycle, usize, Option<&str>) {
    match choice {
        Choice::Launch {
            lifecycle,
            offerings,
            fallback,
        } => (*lifecycle, offerings.len(), fallback.as_deref()),
        Choice::Exhausted { reason, .. } => panic!("exhausted: {reason}"),
    }
}

#[test]
fn an_unavailable_offering_is_skipped_until_its_ttl_ends() {
    let mut c = CapacityState::default();
    let o = offering("c6i.large", "subnet-a", Lifecycle::Spot);
    c.mark_unavailable(o.clone(), 0, UNAVAILABLE_TTL);
    assert!(!c.is_available(&o, UNAVAILABLE_TTL - 1));
    assert!(c.is_available(&o, UNAVAILABLE_TTL));
    // The same type elsewhere, or as on-demand, is another offering.
    assert!(c.is_available(&offering("c6i.large", "subnet-b", Lifecycle::Spot), 0));
    assert!(c.is_available(&offering("c6i.large", "subnet-a", Lifecycle::OnDemand), 0));
    let f = SpotFallback::default();
    let (_, n, _) = launch_of(&c.choose(CapacityType::Spot, &f, &pool(), 1));
    assert_eq!(n, 3, "the three others");
    assert_eq!(c.unavailable(1).len(), 1);
    assert!(c.unavailable(UNAVAILABLE_TTL).is_empty());
}

#[test]
fn a_later_mark_extends_never_shortens() {
    let mut c = CapacityState::default();
    let o = offering("c5.large", "subnet-a", Lifecycle::Spot);
    c.mark_unavailable(o.clone(), 0, 10 * MIN);
    c.mark_unavailable(o.clone(), MIN, UNAVAILABLE_TTL);
    assert!(!c.is_available(&o, 9 * MIN));
}

#[test]
fn exhausted_only_when_every_offering_is_unavailable() {
    let mut c = CapacityState::default();
    let f = SpotFallback::default();
    mark_all(&mut c, Lifecycle::Spot, 0);
    let choice = c.choose(CapacityType::Spot, &f, &pool(), MIN);
    match choice {
        Choice::Exhausted { until, reason } => {
            assert_eq!(until, UNAVAILABLE_TTL);
            assert!(reason.contains("spot c5.large in subnet-b"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // On-demand fleets do not care about spot pools.
    let on_demand = c.choose(CapacityType::OnDemand, &f, &pool(), MIN);
    assert_eq!(launch_of(&on_demand), (Lifecycle::OnDemand, 4, None));
}

#[test]
fn spot_with_fallback_goes_on_demand_and_back() {
    let mut c = CapacityState::default();
    let f = SpotFallback::default();
    let cap = CapacityType::SpotWithFallback;
    assert_eq!(
        launch_of(&c.choose(cap, &f, &pool(), 0)),
        (Lifecycle::Spot, 4, None)
    );
    mark_all(&mut c, Lifecycle::Spot, 0);
    assert_eq!(
        launch_of(&c.choose(cap, &f, &pool(), MIN)),
        (
            Lifecycle::OnDemand,
            4,
            Some("no spot offering is available")
        )
    );
    // Spot pools are tried again once their marks expire.
    assert_eq!(
        launch_of(&c.choose(cap, &f, &pool(), UNAVAILABLE_TTL)).0,
        Lifecycle::Spot
    );
    // Both gone: exhausted.
    mark_all(&mut c, Lifecycle::Spot, UNAVAILABLE_TTL);
    mark_all(&mut c, Lifecycle::OnDemand, UNAVAILABLE_TTL);
    assert!(matches!(
        c.choose(cap, &f, &pool(), UNAVAILABLE_TTL + 1),
        Choice::Exhausted { .. }
    ));
}

#[test]
fn too_many_interruptions_in_the_window_fall_back_until_they_age_out() {
    let mut c = CapacityState::default();
    let f = SpotFallback {
        interruptions: 2,
        window: Duration::from_secs(30 * 60),
    };
    let cap = CapacityType::SpotWithFallback;
    let keep = 60 * MIN;
    assert!(c.record_interruption("i-1", 0, keep));
    assert!(!c.record_interruption("i-1", MIN, keep), "seen once");
    assert_eq!(
        launch_of(&c.choose(cap, &f, &pool(), MIN)).0,
        Lifecycle::Spot
    );
    assert!(c.record_interruption("i-2", 5 * MIN, keep));
    assert_eq!(
        launch_of(&c.choose(cap, &f, &pool(), 6 * MIN)),
        (
            Lifecycle::OnDemand,
            4,
            Some("2 spot interruptions within 30m")
        )
    );
    // i-1 ages out of the window: spot again.
    assert_eq!(
        launch_of(&c.choose(cap, &f, &pool(), 30 * MIN)).0,
        Lifecycle::Spot
    );
    // A plain spot fleet never falls back.
    c.record_interruption("i-3", 30 * MIN, keep);
    c.record_interruption("i-4", 30 * MIN, keep);
    assert_eq!(
        launch_of(&c.choose(CapacityType::Spot, &f, &pool(), 31 * MIN)).0,
        Lifecycle::Spot
    );
}

#[test]
fn spot_interruptions_are_recognised_by_their_state_reason() {
    assert!(is_spot_interruption("Server.SpotInstanceTermination"));
    assert!(!is_spot_interruption("Client.UserInitiatedShutdown"));
    assert!(!is_spot_interruption("Server.InternalError"));
}

#[test]
fn offerings_print_as_lifecycle_type_and_subnet() {
    assert_eq!(
        offering("c5.large", "subnet-a", Lifecycle::OnDemand).to_string(),
        "on-demand c5.large in subnet-a"
    );
    let templated = Offering {
        instance_type: None,
        subnet: None,
        lifecycle: Lifecycle::Spot,
    };
    assert_eq!(templated.to_string(), "spot template type");
}
