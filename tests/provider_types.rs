//! The `ec2` provider's instance types chosen by requirements (`instanceRequirements`) and
//! slots derived per type (`vcpusPerTask`), against the catalogue moto serves through
//! `DescribeInstanceTypes` (AWS's own figures). Run through
//! `scripts/test-services run -- cargo nextest run --test provider_types`.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anamo::clock::ManualClock;
use anamo::manifest::{Ec2Provider, InstanceRequirements, LaunchTemplateRef, TaskSize};
use anamo::provider::ec2::{Ec2Fleet, Ec2FleetConfig, TYPES_REFRESH};
use anamo::provider::{FleetProvider, LaunchRequest, ProviderError};
use common::moto::{unique, Moto};

struct Setup {
    moto: Moto,
    template: String,
    clock: Arc<ManualClock>,
}

async fn setup() -> Option<Setup> {
    let moto = Moto::connect().await?;
    let template = unique("anamo-lt");
    moto.launch_template(&template).await;
    Some(Setup {
        moto,
        template,
        clock: ManualClock::new(1_000_000),
    })
}

impl Setup {
    fn fleet(&self, fleet: &str, requirements: &str, task_size: Option<TaskSize>) -> Ec2Fleet {
        let req: InstanceRequirements = serde_saphyr::from_str(requirements).expect("parses");
        let spec = Ec2Provider {
            launch_template: LaunchTemplateRef {
                name: Some(self.template.clone()),
                id: None,
                version: None,
            },
            subnets: Vec::new(),
            instance_types: Vec::new(),
            instance_requirements: Some(Box::new(req)),
            capacity_type: None,
            spot_fallback: None,
            user_data: None,
            tags: BTreeMap::new(),
        };
        let mut cfg = Ec2FleetConfig::new(fleet, "align", &unique("prod"), spec);
        cfg.clock = self.clock.clone();
        cfg.task_size = task_size;
        Ec2Fleet::new(self.moto.ec2.clone(), cfg)
    }

    fn describe_calls(&self) -> usize {
        // Each page is one request.
        self.moto.faults.requests_of("DescribeInstanceTypes").len()
    }
}

fn request(fleet: &str, batch: &str) -> LaunchRequest {
    LaunchRequest {
        fleet: fleet.to_string(),
        step: "align".to_string(),
        count: 1,
        batch_token: batch.to_string(),
        tags: BTreeMap::new(),
    }
}

/// `c5.*` with 2 to 8 vCPUs is c5.large (2 vCPUs, 4 GiB), c5.xlarge (4, 8) and c5.2xlarge
/// (8, 16) in AWS's catalogue; the smallest is launched first.
#[tokio::test]
async fn requirements_resolve_to_the_types_ec2_lists() {
    let Some(s) = setup().await else { return };
    let name = unique("align");
    let fleet = s.fleet(
        &name,
        "vcpus: {min: 2, max: 8}\nallowedTypes: [c5.*]\n",
        None,
    );
    let out = fleet
        .launch(&request(&name, &unique("batch")))
        .await
        .unwrap();
    assert_eq!(out.instances.len(), 1);
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed[0].instance_type.as_deref(), Some("c5.large"));
    // moto answers with every type in one page (no NextToken), so only the request's shape
    // shows the paging.
    let calls = s.moto.faults.requests_of("DescribeInstanceTypes");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].param("MaxResults"), Some("100"));

    // Memory narrows them: the first type with at least 8 GiB is c5.xlarge.
    let name = unique("align");
    let fleet = s.fleet(
        &name,
        "vcpus: {min: 2, max: 8}\nmemoryGiB: {min: 8}\nallowedTypes: [c5.*]\n",
        None,
    );
    fleet
        .launch(&request(&name, &unique("batch")))
        .await
        .unwrap();
    let listed = fleet.list().await.unwrap();
    assert_eq!(listed[0].instance_type.as_deref(), Some("c5.xlarge"));
}

#[tokio::test]
async fn requirements_nothing_meets_are_a_clear_error() {
    let Some(s) = setup().await else { return };
    let name = unique("align");
    let fleet = s.fleet(
        &name,
        "vcpus: {min: 4, max: 2000}\nallowedTypes: [c5.large]\n",
        None,
    );
    let err = fleet
        .launch(&request(&name, &unique("batch")))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Config(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("instanceRequirements (vcpus 4..2000, x86_64, allowedTypes c5.large)"),
        "{msg}"
    );
}

/// Slots per type come from each type's vCPUs and memory; the fleet plans with its smallest
/// type's. The catalogue is read once, then again after `TYPES_REFRESH`.
#[tokio::test]
async fn slots_are_derived_per_type_and_the_catalogue_is_cached() {
    let Some(s) = setup().await else { return };
    let name = unique("align");
    let size = TaskSize {
        vcpus: 2,
        memory_gib: Some(4.0),
    };
    let fleet = s.fleet(
        &name,
        "vcpus: {min: 4, max: 8}\nallowedTypes: [c5.*]\n",
        Some(size),
    );
    assert_eq!(fleet.slots_per_instance(), None, "nothing read yet");
    fleet.list().await.unwrap();
    let after_first = s.describe_calls();
    assert!(after_first > 0);
    // c5.xlarge: 4 vCPUs / 2 = 2, 8 GiB / 4 = 2; c5.2xlarge: 8 / 2 = 4, 16 / 4 = 4.
    assert_eq!(fleet.slots_of("c5.xlarge"), Some(2));
    assert_eq!(fleet.slots_of("c5.2xlarge"), Some(4));
    assert_eq!(fleet.slots_per_instance(), Some(2));

    fleet.list().await.unwrap();
    fleet
        .launch(&request(&name, &unique("batch")))
        .await
        .unwrap();
    assert_eq!(s.describe_calls(), after_first, "read once");
    s.clock.advance(TYPES_REFRESH + Duration::from_secs(1));
    fleet.list().await.unwrap();
    assert!(
        s.describe_calls() > after_first,
        "read again after the refresh"
    );
}
