//! The EC2 provider's pure parts: configuration, overrides and conversions.

use super::*;
use crate::manifest::LaunchTemplateRef;

fn spec(types: &[&str], subnets: &[&str]) -> Ec2Provider {
    Ec2Provider {
        launch_template: LaunchTemplateRef {
            name: Some("lt".into()),
            id: None,
            version: None,
        },
        subnets: subnets.iter().map(|s| s.to_string()).collect(),
        instance_types: types.iter().map(|s| s.to_string()).collect(),
        instance_requirements: None,
        capacity_type: None,
        spot_fallback: None,
        user_data: None,
        tags: BTreeMap::from([("team".to_string(), "x".to_string())]),
    }
}

fn fleet(spec: Ec2Provider) -> Ec2Fleet {
    let conf = aws_sdk_ec2::Config::builder()
        .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
        .region(aws_sdk_ec2::config::Region::new("us-east-1"))
        .build();
    Ec2Fleet::new(
        aws_sdk_ec2::Client::from_conf(conf),
        Ec2FleetConfig::new("align", "align", "prod", spec),
    )
}

#[test]
fn client_tokens_are_deterministic_and_distinct() {
    let t = client_token("batch-1", 0, 0);
    assert_eq!(t, client_token("batch-1", 0, 0));
    assert!(t.len() <= 64 && t.is_ascii(), "{t}");
    assert_ne!(t, client_token("batch-1", 1, 0));
    assert_ne!(t, client_token("batch-1", 0, 1));
    assert_ne!(t, client_token("batch-2", 0, 0));
}

#[test]
fn overrides_go_type_by_type_through_the_subnets() {
    let f = fleet(spec(&["a", "b"], &["s1", "s2"]));
    let types = f.cfg.spec.instance_types.clone();
    let o: Vec<String> = f.overrides(&types).iter().map(|o| o.to_string()).collect();
    assert_eq!(o, ["a in s1", "a in s2", "b in s1", "b in s2"]);
    let f = fleet(spec(&[], &[]));
    let o = f.overrides(&[]);
    assert_eq!(o.len(), 1);
    assert!(o[0].instance_type.is_none() && o[0].subnet.is_none());
}

#[test]
fn anamo_tags_win_over_user_tags() {
    let f = fleet(spec(&[], &[]));
    let req = LaunchRequest {
        fleet: "align".into(),
        step: "align".into(),
        count: 1,
        batch_token: "b1".into(),
        tags: BTreeMap::from([
            (TAG_FLEET.to_string(), "other".to_string()),
            ("aws:reserved".to_string(), "x".to_string()),
            ("run".to_string(), "7".to_string()),
        ]),
    };
    let tags = f.launch_tags(&req);
    assert_eq!(tags[TAG_FLEET], "align");
    assert_eq!(tags[TAG_STEP], "align");
    assert_eq!(tags[TAG_CONTROLLER], "prod");
    assert_eq!(tags[TAG_LAUNCH_BATCH], "b1");
    assert_eq!(tags["team"], "x");
    assert_eq!(tags["run"], "7");
    assert!(!tags.contains_key("aws:reserved"));
}

#[test]
fn gone_ids_are_read_from_the_message() {
    let ids = instance_ids_in(
        "TerminateInstances: InvalidInstanceID.NotFound: The instance IDs \
         'i-0abc123, i-0def456' do not exist",
    );
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        ["i-0abc123", "i-0def456"]
    );
    assert!(instance_ids_in("The instance ID 'i-' does not exist").is_empty());
}

#[test]
fn all_failed_prefers_capacity_then_limits() {
    let e = all_overrides_failed(vec![
        (
            "a".into(),
            ProviderError::Config("RunInstances: Unsupported: no".into()),
        ),
        (
            "b".into(),
            ProviderError::InsufficientCapacity("RunInstances: Insufficient...".into()),
        ),
    ]);
    assert!(matches!(e, ProviderError::InsufficientCapacity(ref m) if m.starts_with("a: ")));
    let e = all_overrides_failed(vec![(
        "a".into(),
        ProviderError::Config("RunInstances: Unsupported: no".into()),
    )]);
    assert!(matches!(e, ProviderError::Config(_)));
}
