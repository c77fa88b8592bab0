//! The `ec2` provider against moto (EC2), with an SDK interceptor recording the requests and
//! injecting AWS errors. Run through `scripts/test-services run -- cargo nextest run`.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anamo::manifest::{Ec2Provider, LaunchTemplateRef};
use anamo::provider::aws_error::ThrottleConfig;
use anamo::provider::ec2::{client_token, Ec2Fleet, Ec2FleetConfig};
use anamo::provider::{
    FleetProvider, InstanceState, LaunchRequest, ProviderError, TAG_CONTROLLER, TAG_FLEET,
    TAG_LAUNCH_BATCH, TAG_STEP,
};
use common::moto::{unique, Fault, Moto};

/// Fast backoff so that throttling tests take milliseconds.
fn fast_throttle() -> ThrottleConfig {
    ThrottleConfig {
        max_attempts: 4,
        min_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        bucket_capacity: 100,
        refill_per_sec: 100.0,
    }
}

struct Setup {
    moto: Moto,
    template: String,
    template_id: String,
}

async fn setup() -> Option<Setup> {
    let moto = Moto::connect().await?;
    let template = unique("anamo-lt");
    let template_id = moto.launch_template(&template).await;
    Some(Setup {
        moto,
        template,
        template_id,
    })
}

impl Setup {
    fn spec(&self, types: &[&str], subnets: &[&str]) -> Ec2Provider {
        Ec2Provider {
            launch_template: LaunchTemplateRef {
                name: Some(self.template.clone()),
                id: None,
                version: None,
            },
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            instance_types: types.iter().map(|s| s.to_string()).collect(),
            instance_requirements: None,
            capacity_type: None,
            spot_fallback: None,
            user_data: None,
            tags: BTreeMap::from([("CostCenter".to_string(), "sequencing".to_string())]),
        }
    }

    fn config(&self, fleet: &str, cluster: &str, spec: Ec2Provider) -> Ec2FleetConfig {
        let mut cfg = Ec2FleetConfig::new(fleet, "align", cluster, spec);
        cfg.throttle = fast_throttle();
        cfg
    }

    fn fleet(&self, fleet: &str, cluster: &str) -> Ec2Fleet {
        Ec2Fleet::new(
            self.moto.ec2.clone(),
            self.config(fleet, cluster, self.spec(&[], &[])),
        )
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

#[tokio::test]
async fn launch_tags_user_data_and_list() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let cluster = unique("prod");
    let mut cfg = s.config(&fleet, &cluster, s.spec(&[], &[]));
    cfg.user_data = Some("#!/bin/bash\necho 'hello from anamo'\n".to_string());
    cfg.tags.insert("team".into(), "genomics".into());
    let provider = Ec2Fleet::new(s.moto.ec2.clone(), cfg);
    let batch = unique("batch");

    let before = anamo::clock::system().now();
    let out = provider.launch(&request(&fleet, 1, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 1, "{out:?}");
    let id = &out.instances[0];

    let tags = s.moto.instance_tags(id).await;
    assert_eq!(tags[TAG_FLEET], fleet);
    assert_eq!(tags[TAG_STEP], "align");
    assert_eq!(tags[TAG_CONTROLLER], cluster);
    assert_eq!(tags[TAG_LAUNCH_BATCH], batch);
    assert_eq!(tags["team"], "genomics");
    assert_eq!(tags["CostCenter"], "sequencing");
    assert_eq!(
        s.moto.user_data(id).await.as_deref(),
        Some("#!/bin/bash\necho 'hello from anamo'\n")
    );

    // The request: launch template by name at $Default, MinCount 1, a ClientToken from the
    // batch, shutdown behaviour terminate, tags for the instance and its volumes.
    let runs = s.moto.faults.requests_of("RunInstances");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert_eq!(
        run.param("LaunchTemplate.LaunchTemplateName"),
        Some(s.template.as_str())
    );
    assert_eq!(run.param("LaunchTemplate.Version"), Some("$Default"));
    assert_eq!(run.param("MinCount"), Some("1"));
    assert_eq!(run.param("MaxCount"), Some("1"));
    assert_eq!(
        run.param("ClientToken"),
        Some(client_token(&batch, 0, 0).as_str())
    );
    assert_eq!(
        run.param("InstanceInitiatedShutdownBehavior"),
        Some("terminate")
    );
    let behaviour = s
        .moto
        .ec2
        .describe_instance_attribute()
        .instance_id(id)
        .attribute(aws_sdk_ec2::types::InstanceAttributeName::InstanceInitiatedShutdownBehavior)
        .send()
        .await
        .unwrap();
    assert_eq!(
        behaviour
            .instance_initiated_shutdown_behavior()
            .and_then(|v| v.value()),
        Some("terminate")
    );
    let resource_types: Vec<&str> = run
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("TagSpecification.") && k.ends_with(".ResourceType"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(resource_types, ["instance", "volume"]);

    let listed = provider.list().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let i = &listed[0];
    assert_eq!(&i.id, id);
    assert_eq!(i.fleet, fleet);
    assert!(matches!(
        i.state,
        InstanceState::Pending | InstanceState::Running
    ));
    assert_eq!(i.instance_type.as_deref(), Some("t3.micro"));
    assert_eq!(i.launch_batch.as_deref(), Some(batch.as_str()));
    assert!(
        (i.launched_at - before).abs() < 120_000,
        "launch time {} vs now {before}",
        i.launched_at
    );
}

#[tokio::test]
async fn list_sees_only_its_fleet_of_its_controller() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let cluster = unique("prod");
    let mine = s.fleet(&fleet, &cluster);
    let other_fleet = s.fleet(&unique("call"), &cluster);
    let other_cluster = s.fleet(&fleet, &unique("staging"));

    let a = mine
        .launch(&request(&fleet, 1, &unique("b")))
        .await
        .unwrap();
    let b = mine
        .launch(&request(&fleet, 1, &unique("b")))
        .await
        .unwrap();
    other_fleet
        .launch(&request(&other_fleet.config().fleet, 1, &unique("b")))
        .await
        .unwrap();
    other_cluster
        .launch(&request(&fleet, 1, &unique("b")))
        .await
        .unwrap();

    let mut ids: Vec<String> = mine
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    let mut expected = [a.instances, b.instances].concat();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(other_fleet.list().await.unwrap().len(), 1);
    assert_eq!(other_cluster.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn list_reads_every_page() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let cluster = unique("prod");
    let mut cfg = s.config(&fleet, &cluster, s.spec(&[], &[]));
    cfg.page_size = 5;
    let provider = Ec2Fleet::new(s.moto.ec2.clone(), cfg);
    for _ in 0..7 {
        provider
            .launch(&request(&fleet, 1, &unique("b")))
            .await
            .unwrap();
    }
    s.moto.faults.clear();
    assert_eq!(provider.list().await.unwrap().len(), 7);
    let pages = s.moto.faults.requests_of("DescribeInstances");
    assert_eq!(pages.len(), 2, "7 instances in pages of 5: {pages:?}");
    assert_eq!(pages[0].param("MaxResults"), Some("5"));
    assert!(pages[1].param("NextToken").is_some());
}

#[tokio::test]
async fn relaunching_a_batch_launches_only_what_is_missing() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let provider = s.fleet(&fleet, &unique("prod"));

    // A whole batch: launching it again (a controller that crashed after RunInstances and
    // re-planned it) finds it by its tag and launches nothing.
    let batch = unique("batch");
    let req = request(&fleet, 1, &batch);
    let first = provider.launch(&req).await.unwrap();
    let faults = &s.moto.faults;
    let again = faults
        .relaunch_finds_the_batch(&provider, &req, "RunInstances", 1)
        .await;
    assert_eq!(again.instances, first.instances);

    // A partly launched batch (moto launches MinCount = 1 of 3): the next try launches the
    // remainder, under another ClientToken than the first (EC2 would otherwise answer the
    // first call's reservation, or IdempotentParameterMismatch).
    let batch = unique("batch");
    s.moto.faults.clear();
    let first = provider.launch(&request(&fleet, 3, &batch)).await.unwrap();
    assert_eq!(
        first.instances.len(),
        1,
        "moto launches MinCount: {first:?}"
    );
    let second = provider.launch(&request(&fleet, 3, &batch)).await.unwrap();
    assert_eq!(second.instances.len(), 2);
    assert!(second.instances.contains(&first.instances[0]));
    let runs = s.moto.faults.requests_of("RunInstances");
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].param("MaxCount"), Some("3"));
    assert_eq!(runs[1].param("MaxCount"), Some("2"));
    assert_eq!(
        runs[0].param("ClientToken"),
        Some(client_token(&batch, 0, 0).as_str())
    );
    assert_eq!(
        runs[1].param("ClientToken"),
        Some(client_token(&batch, 0, 1).as_str())
    );
}

#[tokio::test]
async fn a_throttled_launch_is_retried_with_the_same_client_token() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let provider = s.fleet(&fleet, &unique("prod"));
    let batch = unique("batch");
    s.moto.faults.inject(
        Fault::new("RunInstances", "RequestLimitExceeded", 2)
            .when("ClientToken", &client_token(&batch, 0, 0)),
    );

    let out = provider.launch(&request(&fleet, 1, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 1);
    let runs: Vec<_> = s
        .moto
        .faults
        .requests_of("RunInstances")
        .into_iter()
        .filter(|r| r.param("ClientToken") == Some(client_token(&batch, 0, 0).as_str()))
        .collect();
    assert_eq!(
        runs.len(),
        3,
        "two throttled attempts, then one that launched"
    );
    assert_eq!(runs[0].injected.as_deref(), Some("RequestLimitExceeded"));
    assert_eq!(runs[1].injected.as_deref(), Some("RequestLimitExceeded"));
    assert_eq!(runs[2].injected, None);
    // Byte for byte the same request each time.
    assert_eq!(runs[0].params, runs[2].params);
    assert_eq!(provider.list().await.unwrap().len(), 1);
}

#[tokio::test]
async fn throttling_gives_up_after_the_configured_attempts() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let provider = s.fleet(&fleet, &unique("prod"));
    let batch = unique("batch");
    let token = client_token(&batch, 0, 0);
    s.moto.faults.inject(
        Fault::new("RunInstances", "RequestLimitExceeded", 100).when("ClientToken", &token),
    );
    let err = provider
        .launch(&request(&fleet, 1, &batch))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Throttled(_)), "{err}");
    let tries = s
        .moto
        .faults
        .requests_of("RunInstances")
        .iter()
        .filter(|r| r.param("ClientToken") == Some(token.as_str()))
        .count();
    assert_eq!(tries, fast_throttle().max_attempts);
    assert!(provider.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_lost_run_instances_answer_does_not_launch_twice() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let provider = s.fleet(&fleet, &unique("prod"));
    let batch = unique("batch");
    // moto launches, but the answer is lost (HTTP 500).
    s.moto.faults.inject(
        Fault::new("RunInstances", "InternalError", 1)
            .when("ClientToken", &client_token(&batch, 0, 0))
            .after_execution(500),
    );
    let err = provider
        .launch(&request(&fleet, 1, &batch))
        .await
        .unwrap_err();
    assert!(matches!(err, ProviderError::Unavailable(_)), "{err}");
    assert_eq!(provider.list().await.unwrap().len(), 1, "moto did launch");

    // The next pass re-plans the same batch: found by its tag, nothing more is launched.
    let req = request(&fleet, 1, &batch);
    let faults = &s.moto.faults;
    faults
        .relaunch_finds_the_batch(&provider, &req, "RunInstances", 1)
        .await;
}

#[tokio::test]
async fn no_capacity_for_the_first_type_tries_the_next() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let spec = s.spec(&["c6i.large", "c5.large"], &[]);
    let provider = Ec2Fleet::new(s.moto.ec2.clone(), s.config(&fleet, &unique("prod"), spec));
    let batch = unique("batch");
    s.moto.faults.inject(
        Fault::new("RunInstances", "InsufficientInstanceCapacity", 1)
            .when("ClientToken", &client_token(&batch, 0, 0)),
    );

    let out = provider.launch(&request(&fleet, 1, &batch)).await.unwrap();
    assert_eq!(out.instances.len(), 1);
    let listed = provider.list().await.unwrap();
    assert_eq!(listed[0].instance_type.as_deref(), Some("c5.large"));
    let runs: Vec<_> = s
        .moto
        .faults
        .requests_of("RunInstances")
        .into_iter()
        .filter(|r| r.params.values().any(|v| v == &batch))
        .collect();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].param("InstanceType"), Some("c6i.large"));
    assert_eq!(
        runs[0].injected.as_deref(),
        Some("InsufficientInstanceCapacity")
    );
    assert_eq!(runs[1].param("InstanceType"), Some("c5.large"));
    assert_eq!(
        runs[1].param("ClientToken"),
        Some(client_token(&batch, 1, 0).as_str())
    );
}

#[tokio::test]
async fn every_type_and_subnet_out_of_capacity_is_a_capacity_error() {
    let Some(s) = setup().await else { return };
    let subnets = s.moto.default_subnets(2).await;
    let fleet = unique("align");
    let subnet_refs: Vec<&str> = subnets.iter().map(String::as_str).collect();
    let spec = s.spec(&["c6i.large", "c5.large"], &subnet_refs);
    let provider = Ec2Fleet::new(s.moto.ec2.clone(), s.config(&fleet, &unique("prod"), spec));
    let batch = unique("batch");
    for attempt in 0..4 {
        let code = if attempt == 1 {
            "Unsupported"
        } else {
            "InsufficientInstanceCapacity"
        };
        s.moto.faults.inject(
            Fault::new("RunInstances", code, 1)
                .when("ClientToken", &client_token(&batch, attempt, 0)),
        );
    }
    let err = provider
        .launch(&request(&fleet, 2, &batch))
        .await
        .unwrap_err();
    assert!(err.is_capacity(), "{err}");
    assert!(
        matches!(err, ProviderError::InsufficientCapacity(_)),
        "{err}"
    );
    let msg = err.to_string();
    for with in [
        format!("c6i.large in {}", subnets[0]),
        format!("c6i.large in {}", subnets[1]),
        format!("c5.large in {}", subnets[0]),
        format!("c5.large in {}", subnets[1]),
    ] {
        assert!(msg.contains(&with), "{msg} should name {with}");
    }
    let runs: Vec<_> = s
        .moto
        .faults
        .requests_of("RunInstances")
        .into_iter()
        .filter(|r| r.params.values().any(|v| v == &batch))
        .collect();
    let tried: Vec<(Option<&str>, Option<&str>)> = runs
        .iter()
        .map(|r| (r.param("InstanceType"), r.param("SubnetId")))
        .collect();
    assert_eq!(
        tried,
        [
            (Some("c6i.large"), Some(subnets[0].as_str())),
            (Some("c6i.large"), Some(subnets[1].as_str())),
            (Some("c5.large"), Some(subnets[0].as_str())),
            (Some("c5.large"), Some(subnets[1].as_str())),
        ]
    );
    assert!(provider.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unknown_launch_template_is_a_config_error_with_the_aws_message() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let mut spec = s.spec(&["c6i.large", "c5.large"], &[]);
    spec.launch_template.name = Some(unique("no-such-template"));
    let provider = Ec2Fleet::new(s.moto.ec2.clone(), s.config(&fleet, &unique("prod"), spec));
    let err = provider
        .launch(&request(&fleet, 1, &unique("batch")))
        .await
        .unwrap_err();
    match &err {
        ProviderError::Config(msg) => {
            assert!(
                msg.contains("RunInstances: InvalidLaunchTemplateName.NotFoundException: "),
                "{msg}"
            );
            assert!(msg.contains("does not exist"), "the AWS message: {msg}");
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    assert!(!err.is_capacity());
    // A configuration error is not retried with the next instance type.
    let tried = s
        .moto
        .faults
        .requests_of("RunInstances")
        .iter()
        .filter(|r| r.param("LaunchTemplate.LaunchTemplateName") == spec_name(&provider))
        .count();
    assert_eq!(tried, 1);
}

fn spec_name(p: &Ec2Fleet) -> Option<&str> {
    p.config().spec.launch_template.name.as_deref()
}

#[tokio::test]
async fn a_template_by_id_and_version() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let mut spec = s.spec(&[], &[]);
    spec.launch_template = LaunchTemplateRef {
        name: None,
        id: Some(s.template_id.clone()),
        version: Some("1".into()),
    };
    let provider = Ec2Fleet::new(s.moto.ec2.clone(), s.config(&fleet, &unique("prod"), spec));
    let batch = unique("batch");
    provider.launch(&request(&fleet, 1, &batch)).await.unwrap();
    let run = s
        .moto
        .faults
        .requests_of("RunInstances")
        .into_iter()
        .find(|r| r.params.values().any(|v| v == &batch))
        .unwrap();
    assert_eq!(
        run.param("LaunchTemplate.LaunchTemplateId"),
        Some(s.template_id.as_str())
    );
    assert_eq!(run.param("LaunchTemplate.LaunchTemplateName"), None);
    assert_eq!(run.param("LaunchTemplate.Version"), Some("1"));
}

#[tokio::test]
async fn terminate_removes_instances_and_gone_ones_are_fine() {
    let Some(s) = setup().await else { return };
    let fleet = unique("align");
    let provider = s.fleet(&fleet, &unique("prod"));
    let a = provider
        .launch(&request(&fleet, 1, &unique("b")))
        .await
        .unwrap()
        .instances;
    let b = provider
        .launch(&request(&fleet, 1, &unique("b")))
        .await
        .unwrap()
        .instances;
    let c = provider
        .launch(&request(&fleet, 1, &unique("b")))
        .await
        .unwrap()
        .instances;
    let two = [a.clone(), b.clone()].concat();

    s.moto.faults.clear();
    provider.terminate(&two).await.unwrap();
    let terminates = s.moto.faults.requests_of("TerminateInstances");
    assert_eq!(terminates.len(), 1);
    let mut named: Vec<&str> = terminates[0]
        .params
        .iter()
        .filter(|(k, _)| k.starts_with("InstanceId."))
        .map(|(_, v)| v.as_str())
        .collect();
    named.sort();
    let mut expected: Vec<&str> = two.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(named, expected, "exactly the given ids");

    // moto marks terminated instances `terminated` at once (EC2 shows `shutting-down` for a
    // while, which `list` reports as Stopping).
    let listed: Vec<String> = provider
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, c);
    for id in &two {
        assert_eq!(s.moto.instance_state(id).await, "terminated", "{id}");
    }

    // Again, together with an id EC2 has never heard of: the call naming it fails as a whole
    // with InvalidInstanceID.NotFound, so it is repeated without the unknown id.
    s.moto.faults.clear();
    let unknown = "i-0123456789abcdef0".to_string();
    provider
        .terminate(&[a[0].clone(), unknown.clone(), c[0].clone()])
        .await
        .unwrap();
    let calls: Vec<usize> = s
        .moto
        .faults
        .requests_of("TerminateInstances")
        .iter()
        .map(|r| {
            r.params
                .keys()
                .filter(|k| k.starts_with("InstanceId."))
                .count()
        })
        .collect();
    assert_eq!(calls, [3, 2]);
    assert!(provider.list().await.unwrap().is_empty());

    // Only unknown ids, and nothing at all.
    provider.terminate(&[unknown]).await.unwrap();
    provider.terminate(&[]).await.unwrap();
}
