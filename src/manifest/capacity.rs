//! The capacity part of an `ec2` fleet: which purchase option its instances use
//! (`capacityType`), when a spot fleet falls back to on-demand (`spotFallback`), and the checks
//! `anamo manifest validate` makes of them with the instance types and subnets.
//!
//! With `capacityType` set and more than one (instance type, subnet) combination, the `ec2`
//! provider launches through `CreateFleet` of type `instant` over all of them; unset, it keeps
//! the launch template's purchase option and tries the combinations in order with
//! `RunInstances` (see `provider::ec2`).

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::types::Ec2Provider;

/// Default `spotFallback.interruptions`.
pub const DEFAULT_FALLBACK_INTERRUPTIONS: u32 = 3;
/// Default `spotFallback.window`.
pub const DEFAULT_FALLBACK_WINDOW: Duration = Duration::from_secs(30 * 60);

/// The most (instance type, subnet) combinations one fleet may list. The EC2 API reference
/// allows 300 overrides across all launch templates for fleets of type `request` and
/// `maintain` (`FleetLaunchTemplateConfigRequest.Overrides`) and states no other bound for
/// `instant`; anamo holds every fleet to 300.
pub const MAX_OVERRIDES: usize = 300;

/// How a fleet's instances are bought.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityType {
    /// Spot instances only (`price-capacity-optimized` over the instance types and subnets).
    Spot,
    /// On-demand instances only (`lowest-price` over the instance types and subnets).
    OnDemand,
    /// Spot instances, and on-demand ones while no spot offering is available or after
    /// `spotFallback.interruptions` spot interruptions within `spotFallback.window`; back to
    /// spot once spot offerings are available again and the interruptions have aged out.
    SpotWithFallback,
}

impl CapacityType {
    /// `spot`, `on-demand` or `spot-with-fallback`, as written in a manifest.
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityType::Spot => "spot",
            CapacityType::OnDemand => "on-demand",
            CapacityType::SpotWithFallback => "spot-with-fallback",
        }
    }
}

/// When a `spot-with-fallback` fleet launches on-demand instances although spot offerings
/// are available: after this many spot interruptions within `window`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SpotFallback {
    /// Spot interruptions of the fleet's instances within `window` after which launches use
    /// on-demand instances. At least 1.
    #[serde(default = "default_interruptions")]
    #[schemars(range(min = 1))]
    pub interruptions: u32,
    /// How far back interruptions count, e.g. `30m`. Launches return to spot once fewer than
    /// `interruptions` remain within it.
    #[serde(default = "default_window", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "30m"))]
    pub window: Duration,
}

impl Default for SpotFallback {
    fn default() -> Self {
        SpotFallback {
            interruptions: DEFAULT_FALLBACK_INTERRUPTIONS,
            window: DEFAULT_FALLBACK_WINDOW,
        }
    }
}

fn default_interruptions() -> u32 {
    DEFAULT_FALLBACK_INTERRUPTIONS
}
fn default_window() -> Duration {
    DEFAULT_FALLBACK_WINDOW
}

/// Problems with the capacity fields of an `ec2` provider, as (field, message).
pub(crate) fn problems(ec2: &Ec2Provider) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(f) = &ec2.spot_fallback {
        if ec2.capacity_type != Some(CapacityType::SpotWithFallback) {
            out.push((
                "spec.provider.ec2.spotFallback",
                "only applies with `capacityType: spot-with-fallback`; set that or remove \
                 spotFallback"
                    .to_string(),
            ));
        }
        if f.interruptions == 0 {
            out.push((
                "spec.provider.ec2.spotFallback.interruptions",
                "must be at least 1".to_string(),
            ));
        }
        if f.window.is_zero() {
            out.push((
                "spec.provider.ec2.spotFallback.window",
                "must be longer than 0, e.g. `30m`".to_string(),
            ));
        }
    }
    let combinations = ec2.instance_types.len().max(1) * ec2.subnets.len().max(1);
    // Requirements usually resolve to several types.
    let several = combinations > 1 || ec2.instance_requirements.is_some();
    if ec2.capacity_type.is_some() && several && ec2.user_data.is_some() {
        out.push((
            "spec.provider.ec2.userData",
            "cannot be combined with `capacityType` over several instance types or subnets: \
             EC2 Fleet takes the user data from the launch template. Put the worker's user \
             data into the template (deploy/worker-user-data.sh writes it) and remove userData"
                .to_string(),
        ));
    }
    if combinations > MAX_OVERRIDES {
        out.push((
            "spec.provider.ec2.instanceTypes",
            format!(
                "{} instance types × {} subnets make {combinations} combinations; EC2 Fleet \
                 takes at most {MAX_OVERRIDES}: list fewer types or subnets",
                ec2.instance_types.len(),
                ec2.subnets.len()
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::LaunchTemplateRef;

    fn ec2(yaml_extra: &str) -> Ec2Provider {
        let yaml = format!("launchTemplate: {{name: lt}}\n{yaml_extra}");
        serde_saphyr::from_str(&yaml).expect("parses")
    }

    fn fields(e: &Ec2Provider) -> Vec<&'static str> {
        problems(e).into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn capacity_types_are_written_in_kebab_case() {
        let e = ec2("capacityType: spot-with-fallback\nspotFallback: {interruptions: 2}\n");
        assert_eq!(e.capacity_type, Some(CapacityType::SpotWithFallback));
        let f = e.spot_fallback.clone().unwrap();
        assert_eq!((f.interruptions, f.window), (2, DEFAULT_FALLBACK_WINDOW));
        assert!(problems(&e).is_empty(), "{:?}", problems(&e));
        for t in [CapacityType::Spot, CapacityType::OnDemand] {
            let e = ec2(&format!("capacityType: {}\n", t.as_str()));
            assert_eq!(e.capacity_type, Some(t));
        }
        assert!(serde_saphyr::from_str::<Ec2Provider>(
            "launchTemplate: {name: lt}\ncapacityType: spotty\n"
        )
        .is_err());
    }

    #[test]
    fn spot_fallback_needs_spot_with_fallback_and_sane_values() {
        let e = ec2("capacityType: spot\nspotFallback: {interruptions: 0, window: 0s}\n");
        assert_eq!(
            fields(&e),
            [
                "spec.provider.ec2.spotFallback",
                "spec.provider.ec2.spotFallback.interruptions",
                "spec.provider.ec2.spotFallback.window"
            ]
        );
        let (_, msg) = &problems(&e)[0];
        assert!(msg.contains("capacityType: spot-with-fallback"), "{msg}");
    }

    #[test]
    fn user_data_and_fleet_launches_do_not_mix() {
        let several =
            "capacityType: spot\ninstanceTypes: [c6i.large, c5.large]\nuserData: u.tmpl\n";
        assert_eq!(fields(&ec2(several)), ["spec.provider.ec2.userData"]);
        // One type in one subnet launches through RunInstances, which takes user data.
        let one = "capacityType: spot\ninstanceTypes: [c6i.large]\nuserData: u.tmpl\n";
        assert!(fields(&ec2(one)).is_empty());
        // Without capacityType nothing changes.
        let legacy = "instanceTypes: [c6i.large, c5.large]\nuserData: u.tmpl\n";
        assert!(fields(&ec2(legacy)).is_empty());
    }

    #[test]
    fn at_most_300_combinations() {
        let mut e = ec2("capacityType: on-demand\n");
        e.launch_template = LaunchTemplateRef {
            name: Some("lt".into()),
            id: None,
            version: None,
        };
        e.instance_types = (0..31).map(|i| format!("t{i}.large")).collect();
        e.subnets = (0..10).map(|i| format!("subnet-{i}")).collect();
        let p = problems(&e);
        assert_eq!(p.len(), 1);
        assert!(p[0].1.contains("310 combinations"), "{}", p[0].1);
        e.instance_types.truncate(30);
        assert!(problems(&e).is_empty());
    }
}
