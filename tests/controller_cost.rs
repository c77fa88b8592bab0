//! Cost accounting of a controller on moto's EC2 and DynamoDB Local: an instance accrues its
//! hourly price from launch, split into boot and busy time by its worker's registration; one
//! that is gone is closed into the fleet's published totals; and a restarted controller goes on
//! from those totals; `maxTotalCost` stops the fleet's growth once it is spent. Run through `scripts/test-services run -- cargo nextest run --test
//! controller_cost`.

mod common;

use std::time::Duration;

use anamo::clock::{self, Clock, ManualClock};
use anamo::controller::status::FleetCost;
use anamo::controller::Controller;
use anamo::model::ClaimRequest;
use anamo::planner::{ConditionStatus, ConditionType};
use common::controller_aws::{pass, AwsWorld, FleetYaml};

const PRICE: f64 = 0.36;

fn cost(c: &Controller) -> serde_json::Value {
    let st = c.status().read().unwrap().clone();
    let f = st
        .fleets
        .iter()
        .find(|f| f.fleet == "align")
        .expect("fleet align");
    let cost: &Option<FleetCost> = &f.cost;
    serde_json::to_value(cost.as_ref().expect("cost figures")).unwrap()
}

fn near(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[tokio::test]
async fn instances_accrue_their_price_and_a_restarted_controller_goes_on_from_the_totals() {
    let Some(w) = AwsWorld::new().await else {
        return;
    };
    let yaml = FleetYaml::ec2(&w.template)
        .set(
            "budget",
            &format!("{{maxInstances: 3, pricePerInstanceHour: {PRICE}, maxTotalCost: 0.5}}"),
        )
        .yaml();
    w.import("align", 4, "true").await;
    let t0 = clock::system().now();
    let clock = ManualClock::new(t0);
    let factory = w.factory();
    let mut c = w.controller(&yaml, clock.clone(), &factory, |_| {});
    pass(&mut c).await;
    let ids = w.live_instances("align").await;
    assert_eq!(ids.len(), 2, "launched for 4 tasks at 2 slots");

    // Workers registered 30 s after launch, both slots busy (each has claimed two of the
    // tasks, leased for longer than the test), seen at 60 s and at 3,660 s.
    clock.advance(Duration::from_secs(60));
    for id in &ids {
        w.register_worker(id, 2, t0 + 30_000, clock.now()).await;
        let req = ClaimRequest {
            step: "align".into(),
            owner: format!("w-{id}"),
            ttl_ms: 10 * 3_600_000,
        };
        let claims = w.store().claim_batch(&req, 2, clock.now()).await.unwrap();
        assert_eq!(claims.len(), 2, "two tasks for {id}");
    }
    pass(&mut c).await;
    clock.advance(Duration::from_secs(3600));
    for id in &ids {
        w.register_worker(id, 2, t0 + 30_000, clock.now()).await;
    }
    pass(&mut c).await;
    let open = cost(&c);
    assert_eq!(open["usd_per_hour"], 2.0 * PRICE, "{open}");
    // Each: 3,660 s at 0.36 $/h, 30 s of it booting, give or take the seconds between the
    // test's clock and moto's launch time.
    let per_s = PRICE / 3600.0;
    let slack = 2.0 * 5.0 * per_s;
    let dollars = open["dollars"].as_f64().unwrap();
    assert!(near(dollars, 2.0 * 3660.0 * per_s, slack), "{open}");
    let busy = open["busy_dollars"].as_f64().unwrap();
    assert!(near(busy, 2.0 * 3630.0 * per_s, slack), "{open}");
    assert!(
        near(open["boot_share"].as_f64().unwrap(), 30.0 / 3660.0, 0.01),
        "{open}"
    );
    assert_eq!(open["idle_dollars"], 0.0, "{open}");
    assert_eq!(open["closed"]["instances"], 0, "{open}");
    // 0.73 spent of maxTotalCost 0.5: no instance more, the busy ones go on.
    let st = c.status().read().unwrap().clone();
    let f = &st.fleets[0];
    assert_eq!(f.desired, 0, "{f:?}");
    let budget = f
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::BudgetLimited)
        .unwrap();
    assert_eq!(budget.status, ConditionStatus::True, "{budget:?}");
    assert!(
        budget
            .message
            .contains("maxTotalCost 0.5 reached: 0.73 spent"),
        "{budget:?}"
    );
    assert_eq!(
        w.live_instances("align").await.len(),
        2,
        "busy instances stay"
    );

    w.moto
        .ec2
        .terminate_instances()
        .set_instance_ids(Some(ids.clone()))
        .send()
        .await
        .unwrap();
    clock.advance(Duration::from_secs(10));
    pass(&mut c).await;
    let closed = cost(&c);
    assert_eq!(closed["closed"]["instances"], 2, "{closed}");
    assert_eq!(closed["closed"]["dollars"], open["dollars"], "{closed}");

    // A new controller (after a restart, or a new leader) resumes from the published totals.
    clock.advance(Duration::from_secs(10));
    let mut again = w.controller(&yaml, clock.clone(), &factory, |_| {});
    pass(&mut again).await;
    let resumed = cost(&again);
    let fields = closed["closed"].as_object().unwrap();
    for (k, v) in fields {
        let (a, b) = (resumed["closed"][k].as_f64(), v.as_f64());
        assert!(
            a.zip(b).is_some_and(|(a, b)| near(a, b, 1e-12)),
            "closed.{k}: {resumed} after {closed}"
        );
    }
}
