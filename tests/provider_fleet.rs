//! The `ec2` provider with a `capacityType` against moto (EC2 Fleet `instant`), with EC2's
//! capacity modelled per offering by [`common::fleet_capacity`] (moto itself never runs out)
//! and the requests recorded by [`common::moto::SdkFaults`]. Run through
//! `scripts/test-services run -- cargo nextest run --test provider_fleet`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anamo::clock::{Clock, ManualClock};
use anamo::manifest::{CapacityType, Ec2Provider, LaunchTemplateRef};
use anamo::provider::aws_error::ThrottleConfig;
use anamo::provider::ec2::{Ec2Fleet, Ec2FleetConfig};
use anamo::provider::offerings::{Lifecycle, UNAVAILABLE_TTL};
use anamo::provider::{FleetProvider, LaunchRequest, ProviderError, TAG_LAUNCH_BATCH};
use common::fleet_capacity::FleetCapacity;
use common::moto::{moto_endpoint, unique, Fault, Moto, Recorded};

const TYPES: [&str; 2] = ["c6i.large", "c5.large"];

struct Setup {
    moto: Moto,
    capacity: FleetCapacity,
    template: String,
    subnets: Vec<String>,
    clock: Arc<ManualClock>,
}

async fn setup() -> Option<Setup> {
    let endpoint = moto_endpoint()?;
    let capacity = FleetCapacity::default();
    let c = capacity.clone();
    let moto = Moto::clients(&endpoint, move |b| b.interceptor(c)).await;
    let template = unique("anamo-lt");
    moto.launch_template(&template).await;
    let subnets = moto.default_subnets(2).await;
    Some(Setup {
        moto,
        capacity,
        template,
        subnets,
        clock: ManualClock::new(1_000_000),
    })
}

impl Setup {
    fn provider(&self, fleet: &str, capacity: CapacityType, types: &[&str]) -> Ec2Fleet {
        let spec = Ec2Provider {
            launch_template: LaunchTemplateRef {
                name: Some(self.template.clone()),
                id: None,
                version: None,
            },
            subnets: self.subnets.clone(),
            instance_types: types.iter().map(|s| s.to_string()).collect(),
            instance_requirements: None,
            capacity_type: Some(capacity),
            spot_fallback: None,
            user_data: None,
            tags: BTreeMap::from([("team".to_string(), "genomics".to_string())]),
        };
        let mut cfg = Ec2FleetConfig::new(fleet, "align", &unique("prod"), spec);
        cfg.throttle = ThrottleConfig {
            max_attempts: 2,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(10),
            bucket_capacity: 100,
            refill_per_sec: 100.0,
        };
        cfg.clock = self.clock.clone();
        Ec2Fleet::new(self.moto.ec2.clone(), cfg)
    }

    /// The CreateFleet requests of `batch` (by the instance tag it carries).
    fn fleets_of(&self, batch: &str) -> Vec<Recorded> {
        self.moto
            .faults
            .requests_of("CreateFleet")
            .into_iter()
            .filter(|r| r.params.values().any(|v| v == batch))
            .collect()
    }

    /// Every spot (or on-demand) offering out of capacity.
    fn exhaust_all(&self, lifecycle: &str) {
        for t in TYPES {
            for s in &self.subnets {
                self.capacity.exhaust(t, Some(s), lifecycle);
            }
        }
    }
}

fn request(fleet: &str, count: u32, batch: &str) -> LaunchRequest {
    LaunchRequest {
        fleet: fleet.to_string(),
        step: "align".to_string(),
        count,
        batch_token: batch.to_string(),
        tags: BTreeMap::new(),
    }
}

/// The (type, subnet) overrides of a recorded CreateFleet, in order.
fn overrides(r: &Recorded) -> Vec<(String, String)> {
    (1..)
        .map_while(|n| {
            let p = format!("LaunchTemplateConfigs.1.Overrides.{n}.");
            Some((
                r.param(&format!("{p}InstanceType"))?.to_string(),
                r.param(&format!("{p}SubnetId"))?.to_string(),
            ))
        })
        .collect()
}

fn all_pairs(s: &Setup) -> Vec<(String, String)> {
    TYPES
        .iter()
        .flat_map(|t| s.subnets.iter().map(move |n| (t.to_string(), n.clone())))
        .collect()
}

#[tokio::test]
async fn a_spot_fleet_launches_over_every_type_and_subnet_in_one_call() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let p = s.provider(&fleet, CapacityType::Spot, &TYPES);
    let batch = unique("batch");
    let out = p.launch(&request(&fleet, 3, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 3, "{out:?}");

    let calls = s.fleets_of(&batch);
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    assert_eq!(c.param("Type"), Some("instant"));
    assert_eq!(
        c.param("TargetCapacitySpecification.TotalTargetCapacity"),
        Some("3")
    );
    assert_eq!(
        c.param("TargetCapacitySpecification.DefaultTargetCapacityType"),
        Some("spot")
    );
    assert_eq!(
        c.param("SpotOptions.AllocationStrategy"),
        Some("price-capacity-optimized")
    );
    assert_eq!(
        c.param("OnDemandOptions.AllocationStrategy"),
        Some("lowest-price")
    );
    assert_eq!(
        c.param("LaunchTemplateConfigs.1.LaunchTemplateSpecification.LaunchTemplateName"),
        Some(s.template.as_str())
    );
    assert_eq!(overrides(c), all_pairs(&s), "types × subnets");
    assert!(c
        .param("ClientToken")
        .is_some_and(|t| t.len() <= 64 && t.starts_with("anamo-")));
    // Only instances can be tagged through an instant fleet.
    assert_eq!(c.param("TagSpecification.1.ResourceType"), Some("instance"));
    assert_eq!(c.param("TagSpecification.2.ResourceType"), None);

    // The instances carry the tags and are listed as the fleet's, with their batch.
    let listed = p.list().await.unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for i in &listed {
        assert_eq!(i.launch_batch.as_deref(), Some(batch.as_str()));
        let tags = s.moto.instance_tags(&i.id).await;
        assert_eq!(tags["team"], "genomics");
        assert_eq!(tags[TAG_LAUNCH_BATCH], batch);
    }
}

#[tokio::test]
async fn partial_fulfilment_takes_what_came_and_skips_the_exhausted_offering() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let p = s.provider(&fleet, CapacityType::Spot, &TYPES);
    let batch = unique("batch");
    s.capacity.cap(2);
    let out = p.launch(&request(&fleet, 5, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 2, "take what came: {out:?}");
    // moto launched into the first override, which then answered "no capacity" for the rest.
    let first = &all_pairs(&s)[0];
    let now = s.clock.now();
    let state = p.capacity_state();
    let unavailable: Vec<String> = state
        .unavailable(now)
        .iter()
        .map(|(o, _)| o.to_string())
        .collect();
    assert_eq!(
        unavailable,
        [format!("spot {} in {}", first.0, first.1)],
        "{unavailable:?}"
    );

    // The next pass launches the rest of the batch without the exhausted offering, under
    // another client token.
    s.capacity.restore();
    let out = p.launch(&request(&fleet, 5, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 5);
    let calls = s.fleets_of(&batch);
    assert_eq!(calls.len(), 2);
    assert_eq!(
        calls[1].param("TargetCapacitySpecification.TotalTargetCapacity"),
        Some("3")
    );
    assert_eq!(overrides(&calls[1]), all_pairs(&s)[1..].to_vec());
    assert_ne!(calls[0].param("ClientToken"), calls[1].param("ClientToken"));
    assert_eq!(p.list().await.unwrap().len(), 5);
}

#[tokio::test]
async fn a_fleet_is_out_of_capacity_only_when_every_offering_is_until_the_marks_expire() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let p = s.provider(&fleet, CapacityType::Spot, &TYPES);
    // One offering gone: the others launch.
    s.capacity.exhaust(TYPES[0], Some(&s.subnets[0]), "spot");
    let out = p
        .launch(&request(&fleet, 1, &unique("batch")))
        .await
        .unwrap();
    assert_eq!(out.instances.len(), 1);

    // All gone: a capacity error naming every offering, and every offering marked.
    s.exhaust_all("spot");
    let batch = unique("batch");
    let err = p.launch(&request(&fleet, 1, &batch)).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::InsufficientCapacity(_)),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("spot c5.large in {}", s.subnets[1])),
        "{msg}"
    );
    assert_eq!(p.capacity_state().unavailable(s.clock.now()).len(), 4);

    // Within the TTL no call is made at all.
    s.capacity.restore();
    let calls = s.moto.faults.requests_of("CreateFleet").len();
    s.clock
        .advance(Duration::from_millis(UNAVAILABLE_TTL as u64 - 1));
    let err = p.launch(&request(&fleet, 1, &batch)).await.unwrap_err();
    assert!(err.is_capacity(), "{err}");
    assert!(err.to_string().contains("out of capacity until"), "{err}");
    assert_eq!(s.moto.faults.requests_of("CreateFleet").len(), calls);

    // Once the marks expire the offerings are tried again.
    s.clock.advance(Duration::from_millis(1));
    let out = p.launch(&request(&fleet, 1, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 1);
    assert_eq!(overrides(&s.fleets_of(&batch)[1]), all_pairs(&s));
}

#[tokio::test]
async fn spot_with_fallback_goes_on_demand_and_back_to_spot() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let p = s.provider(&fleet, CapacityType::SpotWithFallback, &TYPES);
    let capacity_types = |batch: &str| -> Vec<String> {
        s.fleets_of(batch)
            .iter()
            .map(|r| {
                r.param("TargetCapacitySpecification.DefaultTargetCapacityType")
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };

    // No spot anywhere: the same launch goes on with on-demand.
    s.exhaust_all("spot");
    let b1 = unique("batch");
    let out = p.launch(&request(&fleet, 2, &b1)).await.unwrap();
    assert_eq!(out.instances.len(), 2);
    assert_eq!(capacity_types(&b1), ["spot", "on-demand"]);

    // While the spot marks last, launches go straight to on-demand.
    let b2 = unique("batch");
    p.launch(&request(&fleet, 1, &b2)).await.unwrap();
    assert_eq!(capacity_types(&b2), ["on-demand"]);

    // Spot is back once the marks expire.
    s.capacity.restore();
    s.clock
        .advance(Duration::from_millis(UNAVAILABLE_TTL as u64));
    let b3 = unique("batch");
    p.launch(&request(&fleet, 1, &b3)).await.unwrap();
    assert_eq!(capacity_types(&b3), ["spot"]);
    assert!(p
        .capacity_state()
        .unavailable(s.clock.now())
        .iter()
        .all(|(o, _)| o.lifecycle != Lifecycle::Spot));
}

#[tokio::test]
async fn a_lost_create_fleet_answer_does_not_launch_twice() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let p = s.provider(&fleet, CapacityType::Spot, &TYPES);
    let batch = unique("batch");
    // moto launches, but the answer is lost (HTTP 500): a controller crash mid-call looks
    // the same to the next pass.
    s.moto
        .faults
        .inject(Fault::new("CreateFleet", "InternalError", 1).after_execution(500));
    let err = p.launch(&request(&fleet, 2, &batch)).await.unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    assert_eq!(p.list().await.unwrap().len(), 2, "moto did launch");
    assert_eq!(s.fleets_of(&batch).len(), 1);

    // The batch is found by its tag: nothing more is launched.
    let req = request(&fleet, 2, &batch);
    let faults = &s.moto.faults;
    faults
        .relaunch_finds_the_batch(&p, &req, "CreateFleet", 2)
        .await;
}

#[tokio::test]
async fn a_single_offering_launches_spot_through_run_instances() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let mut spec_subnets = s.subnets.clone();
    spec_subnets.truncate(1);
    let p = {
        let p = s.provider(&fleet, CapacityType::Spot, &["c5.large"]);
        let mut cfg = p.config().clone();
        cfg.spec.subnets = spec_subnets.clone();
        Ec2Fleet::new(s.moto.ec2.clone(), cfg)
    };
    let batch = unique("batch");
    let out = p.launch(&request(&fleet, 1, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 1);
    assert!(s.fleets_of(&batch).is_empty());
    let run = s
        .moto
        .faults
        .requests_of("RunInstances")
        .into_iter()
        .find(|r| r.params.values().any(|v| v == &batch))
        .expect("a RunInstances of the batch");
    assert_eq!(run.param("InstanceMarketOptions.MarketType"), Some("spot"));
    assert_eq!(run.param("InstanceType"), Some("c5.large"));
    assert_eq!(run.param("SubnetId"), Some(spec_subnets[0].as_str()));
}

/// A spot fleet's instances are listed as spot with their zone, and their types' spot prices
/// are read with one `DescribeSpotPriceHistory` whose start and end time are both now (moto
/// ignores the times and answers a fixed price, so the request's shape is what is checked).
#[tokio::test]
async fn spot_instances_are_listed_with_their_zone_and_priced_by_type_and_zone() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let p = s.provider(&fleet, CapacityType::Spot, &TYPES);
    let out = p
        .launch(&request(&fleet, 2, &unique("batch")))
        .await
        .unwrap();
    assert_eq!(out.instances.len(), 2, "{out:?}");
    let listed = p.list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for i in &listed {
        assert_eq!(i.market.lifecycle, Some(Lifecycle::Spot), "{i:?}");
        assert!(
            i.market
                .zone
                .as_deref()
                .is_some_and(|z| z.starts_with("us-east-1")),
            "{i:?}"
        );
    }
    let types: Vec<String> = TYPES.iter().map(|t| t.to_string()).collect();
    let prices = p.spot_prices(&types).await.unwrap();
    for t in TYPES {
        let zones: Vec<&str> = prices
            .iter()
            .filter(|p| p.instance_type == t)
            .map(|p| p.zone.as_str())
            .collect();
        assert!(!zones.is_empty(), "no price for {t}: {prices:?}");
        let mut unique_zones = zones.clone();
        unique_zones.dedup();
        assert_eq!(zones, unique_zones, "one price per type and zone");
    }
    assert!(prices.iter().all(|p| p.usd_per_hour > 0.0), "{prices:?}");
    let calls = s.moto.faults.requests_of("DescribeSpotPriceHistory");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let c = &calls[0];
    let (start, end) = (c.param("StartTime"), c.param("EndTime"));
    assert!(start.is_some() && start == end, "{c:?}");
    assert_eq!(c.param("ProductDescription.1"), Some("Linux/UNIX"));
    assert_eq!(c.param("InstanceType.1"), Some(TYPES[0]));
    assert_eq!(c.param("InstanceType.2"), Some(TYPES[1]));
    assert_eq!(p.spot_prices(&[]).await.unwrap(), Vec::new());
    assert_eq!(
        s.moto.faults.requests_of("DescribeSpotPriceHistory").len(),
        1,
        "no call for no types"
    );
}
