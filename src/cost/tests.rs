//! The price lookup and the ledger against figures computed by hand.

use std::collections::BTreeMap;

use super::ledger::{CostLedger, CostTotals, Listed};
use super::{PriceBook, PriceSource, Priced, Rate, SpotPrice};
use crate::model::{WorkerInfo, WorkerState};
use crate::provider::offerings::Lifecycle;
use crate::provider::{Instance, InstanceState, Market};

fn inst(id: &str, launched_s: i64, ty: &str) -> Instance {
    Instance {
        id: id.into(),
        fleet: "align".into(),
        state: InstanceState::Running,
        launched_at: launched_s * 1000,
        instance_type: Some(ty.into()),
        launch_batch: None,
        protected: false,
        market: Market::default(),
    }
}

fn worker(instance: &str, started_s: i64, slots: u32, busy: u32) -> WorkerInfo {
    WorkerInfo {
        worker_id: format!("w-{instance}"),
        step: "align".into(),
        instance_id: Some(instance.into()),
        slots,
        busy_slots: busy,
        started_at: started_s * 1000,
        last_seen: started_s * 1000,
        last_busy_at: started_s * 1000,
        state: WorkerState::Active,
        stop_reason: None,
        drain_requested: false,
    }
}

fn rate(p: f64) -> Option<Rate> {
    Some(Rate {
        usd_per_hour: p,
        source: PriceSource::Shipped,
    })
}

fn close_to(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn prices_come_from_spot_then_manifest_then_fleet_then_the_shipped_table() {
    let mut book = PriceBook::new(BTreeMap::from([("m5.large".to_string(), 0.11)]));
    book.set_spot(&[
        SpotPrice {
            instance_type: "m5.large".into(),
            zone: "us-east-1a".into(),
            usd_per_hour: 0.035,
        },
        SpotPrice {
            instance_type: "m5.large".into(),
            zone: "us-east-1b".into(),
            usd_per_hour: 0.041,
        },
    ]);
    let spot = |zone| Priced {
        instance_type: Some("m5.large"),
        lifecycle: Some(Lifecycle::Spot),
        zone,
    };
    let r = book.rate(spot(Some("us-east-1a")), None).unwrap();
    assert_eq!((r.usd_per_hour, r.source), (0.035, PriceSource::Spot));
    // Zone unknown: the dearest zone of the type, never an underestimate.
    assert_eq!(book.rate(spot(None), None).unwrap().usd_per_hour, 0.041);
    let on_demand = |t| Priced {
        instance_type: Some(t),
        lifecycle: Some(Lifecycle::OnDemand),
        zone: None,
    };
    let r = book.rate(on_demand("m5.large"), Some(0.5)).unwrap();
    assert_eq!((r.usd_per_hour, r.source), (0.11, PriceSource::Manifest));
    let r = book.rate(on_demand("c6i.xlarge"), Some(0.5)).unwrap();
    assert_eq!((r.usd_per_hour, r.source), (0.5, PriceSource::Fleet));
    let r = book.rate(on_demand("c6i.xlarge"), None).unwrap();
    assert_eq!((r.usd_per_hour, r.source), (0.17, PriceSource::Shipped));
    // A spot type without a spot price costs its on-demand price.
    let r = book
        .rate(
            Priced {
                instance_type: Some("c6i.xlarge"),
                lifecycle: Some(Lifecycle::Spot),
                zone: Some("us-east-1a"),
            },
            None,
        )
        .unwrap();
    assert_eq!(r.source, PriceSource::Shipped);
    assert_eq!(book.rate(on_demand("x9.huge"), None), None);
    assert_eq!(book.rate(Priced::default(), None), None);
}

/// Instance a: on-demand at 0.17 $/h, launched at 0 s; no worker at the 60 s pass; a worker
/// (started at 90 s, 1 of 2 slots busy) at the 120 s pass; both slots busy at the 3,720 s pass;
/// gone at 3,780 s. Instance b: spot at 0.035 $/h, launched at 100 s, listed at 120 s without a
/// worker, gone at 3,720 s: it ran 20 s and is billed the 60 s minimum.
#[test]
fn a_fleet_account_matches_the_hand_computation() {
    let a = inst("i-a", 0, "c6i.xlarge");
    let b = inst("i-b", 100, "m5.large");
    let mut ledger = CostLedger::default();
    let listed = |i, w, r| Listed {
        instance: i,
        worker: w,
        rate: r,
    };
    ledger.observe(60_000, [listed(&a, None, rate(0.17))]);
    let w1 = worker("i-a", 90, 2, 1);
    ledger.observe(
        120_000,
        [
            listed(&a, Some(&w1), rate(0.17)),
            listed(&b, None, rate(0.035)),
        ],
    );
    assert!(close_to(ledger.usd_per_hour(), 0.205));
    let w2 = worker("i-a", 90, 2, 2);
    ledger.observe(3_720_000, [listed(&a, Some(&w2), rate(0.17))]);
    ledger.observe(3_780_000, []);
    let t = ledger.totals();
    let per_s_a = 0.17 / 3600.0;
    let per_s_b = 0.035 / 3600.0;
    // a: boot 90 s; 30 s half busy; 3,600 s fully busy. b: boot 20 s + 40 s minimum top-up.
    let boot = 90.0 * per_s_a + 60.0 * per_s_b;
    let busy = 15.0 * per_s_a + 3600.0 * per_s_a;
    let idle = 15.0 * per_s_a;
    assert!(close_to(t.boot_dollars, boot), "{t:?}");
    assert!(close_to(t.busy_dollars, busy), "{t:?}");
    assert!(close_to(t.idle_dollars, idle), "{t:?}");
    assert!(
        close_to(t.dollars, 3720.0 * per_s_a + 60.0 * per_s_b),
        "{t:?}"
    );
    assert!(close_to(t.dollars, 0.17625), "{t:?}");
    assert_eq!(t.instance_ms, 3_720_000 + 60_000);
    // The same split in time: a boots 90 s, b 20 s + its 40 s top-up (it never got a worker).
    assert_eq!(t.boot_ms, 150_000);
    assert_eq!(t.busy_ms, 15_000 + 3_600_000);
    assert_eq!(t.idle_ms, 15_000);
    assert_eq!(t.instances, 2);
    assert_eq!(ledger.usd_per_hour(), 0.0);
    assert!(close_to(t.per_task(10).unwrap(), 0.017625));
    assert!(close_to(t.busy_per_task(10).unwrap(), busy / 10.0));
    assert_eq!(t.per_task(0), None);
}

/// One instance at 3.6 $/h (a tenth of a cent a second), accrued one change at a time as the
/// simulator does: launched at 0 s, still booting at 20 s, its worker started at 30 s and runs
/// one task in one of its two slots from then until 40 s, when it goes: 40 s billed as 60 s.
#[test]
fn instances_accrued_one_at_a_time_match_the_hand_computation() {
    let a = inst("i-a", 0, "c6i.xlarge");
    let mut ledger = CostLedger::default();
    ledger.observe_one(
        20_000,
        Listed {
            instance: &a,
            worker: None,
            rate: rate(3.6),
        },
    );
    let w = worker("i-a", 30, 2, 1);
    ledger.observe_one(
        40_000,
        Listed {
            instance: &a,
            worker: Some(&w),
            rate: rate(3.6),
        },
    );
    assert!(close_to(ledger.usd_per_hour(), 3.6));
    ledger.close_one("i-a");
    ledger.close_one("i-never-seen");
    let t = ledger.totals();
    assert_eq!(ledger.closed(), &t);
    assert_eq!(
        (t.instance_ms, t.boot_ms, t.busy_ms, t.idle_ms),
        (60_000, 30_000, 5_000, 25_000)
    );
    assert!(close_to(t.dollars, 0.060), "{t:?}");
    assert!(close_to(t.boot_dollars, 0.030), "{t:?}");
    assert!(close_to(t.busy_dollars, 0.005), "{t:?}");
    assert!(close_to(t.idle_dollars, 0.025), "{t:?}");
    assert_eq!(t.instances, 1);
}

#[test]
fn a_resumed_ledger_adds_to_the_published_totals_and_unpriced_time_is_kept_apart() {
    let closed = CostTotals {
        dollars: 2.0,
        idle_dollars: 2.0,
        instance_ms: 7_200_000,
        instances: 3,
        ..CostTotals::default()
    };
    let mut ledger = CostLedger::resume(closed.clone());
    let x = inst("i-x", 0, "x9.huge");
    ledger.observe(
        30_000,
        [Listed {
            instance: &x,
            worker: None,
            rate: None,
        }],
    );
    ledger.observe(90_000, []);
    let t = ledger.totals();
    assert_eq!(t.dollars, 2.0);
    assert_eq!(t.unpriced_ms, 60_000);
    assert_eq!(t.instance_ms, 7_200_000 + 60_000);
    assert_eq!(t.instances, 4);
    assert_eq!(ledger.closed(), &t);
    assert!(close_to(t.idle_share(), 1.0));
}
