//! The `autoscaling` provider against moto (Auto Scaling + EC2). Run through
//! `scripts/test-services run -- cargo nextest run`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anamo::provider::asg::{AsgFleet, AsgFleetConfig};
use anamo::provider::aws_error::ThrottleConfig;
use anamo::provider::{FleetProvider, InstanceState, LaunchRequest, ProviderError};
use common::moto::{unique, Fault, Moto};

struct Group {
    moto: Moto,
    name: String,
    fleet: String,
}

/// A launch template and an Auto Scaling group (MinSize 0, DesiredCapacity 0) in moto.
async fn group(max: i32) -> Option<Group> {
    let moto = Moto::connect().await?;
    let template = unique("anamo-asg-lt");
    moto.launch_template(&template).await;
    let name = unique("anamo-workers");
    moto.asg
        .create_auto_scaling_group()
        .auto_scaling_group_name(&name)
        .launch_template(
            aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                .launch_template_name(&template)
                .version("$Default")
                .build(),
        )
        .min_size(0)
        .max_size(max)
        .desired_capacity(0)
        .availability_zones("us-east-1a")
        .send()
        .await
        .expect("create the Auto Scaling group in moto");
    Some(Group {
        moto,
        name,
        fleet: unique("align"),
    })
}

impl Group {
    fn provider(&self) -> AsgFleet {
        let mut cfg = AsgFleetConfig::new(&self.fleet, &self.name);
        cfg.throttle = ThrottleConfig {
            max_attempts: 4,
            min_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            bucket_capacity: 100,
            refill_per_sec: 100.0,
        };
        AsgFleet::new(self.moto.asg.clone(), self.moto.ec2.clone(), cfg)
    }

    fn request(&self, count: u32, batch: &str) -> LaunchRequest {
        LaunchRequest {
            fleet: self.fleet.clone(),
            step: "align".into(),
            count,
            batch_token: batch.into(),
            tags: BTreeMap::new(),
        }
    }

    /// (desired capacity, instance id → protected from scale-in) as the API reports them.
    async fn describe(&self) -> (i32, BTreeMap<String, bool>) {
        self.moto.describe_group(&self.name).await
    }
}

#[tokio::test]
async fn launch_raises_desired_capacity_up_to_max_size() {
    let Some(g) = group(3).await else { return };
    let provider = g.provider();
    assert!(provider.list().await.unwrap().is_empty());

    let before = anamo::clock::system().now();
    let out = provider.launch(&g.request(2, "batch-1")).await.unwrap();
    assert!(out.instances.is_empty(), "the group picks the instances");
    assert_eq!(g.describe().await.0, 2);
    let listed = provider.list().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for i in &listed {
        assert_eq!(i.fleet, g.fleet);
        assert!(matches!(
            i.state,
            InstanceState::Pending | InstanceState::Running
        ));
        assert_eq!(i.instance_type.as_deref(), Some("t3.micro"));
        assert!(!i.protected);
        assert!(
            (i.launched_at - before).abs() < 120_000,
            "launch time from EC2"
        );
    }

    // The same batch again (a controller re-planning after a crash): nothing changes.
    provider.launch(&g.request(2, "batch-1")).await.unwrap();
    assert_eq!(g.describe().await.0, 2);

    // More than MaxSize allows: capped.
    provider.launch(&g.request(5, "batch-2")).await.unwrap();
    assert_eq!(g.describe().await.0, 3);
    assert_eq!(provider.list().await.unwrap().len(), 3);

    // At MaxSize: a limit error (moto itself would accept any desired capacity).
    let err = provider.launch(&g.request(1, "batch-3")).await.unwrap_err();
    assert!(matches!(err, ProviderError::LimitExceeded(_)), "{err}");
    assert!(err.is_capacity());
    assert!(err.to_string().contains("MaxSize (3)"), "{err}");
    assert_eq!(g.describe().await.0, 3);
}

#[tokio::test]
async fn set_protection_toggles_protected_from_scale_in() {
    let Some(g) = group(4).await else { return };
    let provider = g.provider();
    provider.launch(&g.request(2, "b")).await.unwrap();
    let (_, members) = g.describe().await;
    let ids: Vec<String> = members.keys().cloned().collect();

    provider
        .set_protection(&[ids[0].clone(), "i-0123456789abcdef0".into()], true)
        .await
        .unwrap();
    let (_, members) = g.describe().await;
    assert!(members[&ids[0]]);
    assert!(!members[&ids[1]]);
    let listed: BTreeMap<String, bool> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| (i.id, i.protected))
        .collect();
    assert_eq!(listed, members);

    provider.set_protection(&ids, false).await.unwrap();
    let (_, members) = g.describe().await;
    assert!(members.values().all(|p| !p));

    // Nothing to change: no call at all.
    g.moto.faults.clear();
    provider.set_protection(&ids, false).await.unwrap();
    assert!(g
        .moto
        .faults
        .requests_of("SetInstanceProtection")
        .is_empty());
}

#[tokio::test]
async fn terminate_removes_the_instance_and_decrements_desired() {
    let Some(g) = group(4).await else { return };
    let provider = g.provider();
    provider.launch(&g.request(3, "b")).await.unwrap();
    let (desired, members) = g.describe().await;
    assert_eq!(desired, 3);
    let ids: Vec<String> = members.keys().cloned().collect();

    g.moto.faults.clear();
    provider.terminate(&ids[..2]).await.unwrap();
    let calls = g
        .moto
        .faults
        .requests_of("TerminateInstanceInAutoScalingGroup");
    assert_eq!(calls.len(), 2, "one call per instance");
    for c in &calls {
        assert_eq!(c.param("ShouldDecrementDesiredCapacity"), Some("true"));
    }
    let (desired, members) = g.describe().await;
    assert_eq!(desired, 1);
    assert_eq!(
        members.keys().cloned().collect::<Vec<_>>(),
        [ids[2].clone()]
    );
    let listed: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, [ids[2].clone()]);

    // Gone and unknown instances are skipped (moto answers HTTP 500 for them).
    g.moto.faults.clear();
    provider
        .terminate(&[ids[0].clone(), "i-0123456789abcdef0".into()])
        .await
        .unwrap();
    assert!(g
        .moto
        .faults
        .requests_of("TerminateInstanceInAutoScalingGroup")
        .is_empty());
    assert_eq!(g.describe().await.0, 1);
}

#[tokio::test]
async fn throttled_calls_are_retried() {
    let Some(g) = group(4).await else { return };
    let provider = g.provider();
    g.moto
        .faults
        .inject(Fault::new("SetDesiredCapacity", "Throttling", 2));
    g.moto
        .faults
        .inject(Fault::new("DescribeAutoScalingGroups", "Throttling", 1));
    provider.launch(&g.request(1, "b")).await.unwrap();
    let set: Vec<_> = g.moto.faults.requests_of("SetDesiredCapacity");
    assert_eq!(set.len(), 3);
    assert_eq!(set[2].injected, None);
    assert_eq!(set[2].param("DesiredCapacity"), Some("1"));
    assert_eq!(g.describe().await.0, 1);
}

#[tokio::test]
async fn an_unknown_group_is_a_config_error() {
    let Some(g) = group(1).await else { return };
    let provider = AsgFleet::new(
        g.moto.asg.clone(),
        g.moto.ec2.clone(),
        AsgFleetConfig::new("align", &unique("no-such-group")),
    );
    let err = provider.list().await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Config(ref m) if m.contains("does not exist")),
        "{err}"
    );
    let err = provider
        .launch(&LaunchRequest {
            fleet: "align".into(),
            step: "align".into(),
            count: 1,
            batch_token: "b".into(),
            tags: BTreeMap::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Config(_)), "{err}");
}

#[tokio::test]
async fn a_batch_retried_after_an_error_is_launched_once() {
    let Some(g) = group(10).await else { return };
    let provider = g.provider();
    provider.launch(&g.request(1, "first")).await.unwrap();
    assert_eq!(g.describe().await.0, 1);

    // Throttled beyond the attempts: the batch is recorded on the group, the capacity not
    // raised.
    g.moto
        .faults
        .inject(Fault::new("SetDesiredCapacity", "Throttling", 100));
    let err = provider.launch(&g.request(3, "second")).await.unwrap_err();
    assert!(matches!(err, ProviderError::Throttled(_)), "{err}");
    assert_eq!(g.describe().await.0, 1);

    // The controller retries the same batch: raised to the target once, however often.
    g.moto.faults.clear();
    provider.launch(&g.request(3, "second")).await.unwrap();
    assert_eq!(g.describe().await.0, 4);
    provider.launch(&g.request(3, "second")).await.unwrap();
    assert_eq!(g.describe().await.0, 4);
    let sets = g.moto.faults.requests_of("SetDesiredCapacity");
    assert_eq!(sets.len(), 1, "{sets:?}");
    assert_eq!(sets[0].param("DesiredCapacity"), Some("4"));
    assert!(g.moto.faults.requests_of("CreateOrUpdateTags").is_empty());
}
