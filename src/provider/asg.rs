//! `autoscaling` provider: the fleet is an existing EC2 Auto Scaling group.
//!
//! * [`list`](AsgFleet::list): the group's instances from `DescribeAutoScalingGroups` (lifecycle
//!   state and scale-in protection), with launch times from EC2 `DescribeInstances`.
//! * [`launch`](AsgFleet::launch): `SetDesiredCapacity(desired + count)`, capped at the group's
//!   `MaxSize` ([`ProviderError::LimitExceeded`] when the group is already there). The batch
//!   token and the capacity it aims at are recorded as the group's `anamo:launch-batch` and
//!   `anamo:launch-target` tags *before* the capacity is raised, so the same batch launched
//!   again (a controller re-planning after a crash, or retrying after an error) raises the
//!   capacity to that target at most, never by the count twice.
//! * [`terminate`](AsgFleet::terminate): `TerminateInstanceInAutoScalingGroup` with
//!   `ShouldDecrementDesiredCapacity`, one call per instance; instances that are no longer in
//!   the group (or already terminating) are skipped.
//! * [`set_protection`](AsgFleet::set_protection): `SetInstanceProtection`, so the group's own
//!   scale-in never picks a busy worker.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_autoscaling::types::{AutoScalingGroup, LifecycleState, Tag};
use aws_sdk_ec2::types::Filter;

use super::aws_error::{from_sdk, with_backoff, ThrottleConfig, TokenBucket};
use super::{
    FleetProvider, Instance, InstanceState, LaunchOutcome, LaunchRequest, ProviderError,
    ProviderResult, TAG_LAUNCH_BATCH,
};
use crate::clock::{self, Millis, SharedClock};
use crate::manifest::{FleetManifest, ProviderSpec};

/// Tag of the group holding the desired capacity the last launch batch aimed at.
pub const TAG_LAUNCH_TARGET: &str = "anamo:launch-target";

/// Instance ids per `SetInstanceProtection` call (the API's limit).
const PROTECTION_CHUNK: usize = 50;
/// Values per `instance-id` filter of `DescribeInstances`.
const DESCRIBE_CHUNK: usize = 200;

#[derive(Debug, Clone)]
pub struct AsgFleetConfig {
    /// Fleet name (as reported in [`Instance::fleet`]).
    pub fleet: String,
    /// The Auto Scaling group.
    pub group_name: String,
    /// Backoff on throttling and the rate of mutating calls.
    pub throttle: ThrottleConfig,
    /// A bucket shared with other providers; `None`: this provider gets its own.
    pub bucket: Option<Arc<TokenBucket>>,
    /// Stands in for a launch time EC2 does not report (yet).
    pub clock: SharedClock,
}

impl AsgFleetConfig {
    pub fn new(fleet: &str, group_name: &str) -> AsgFleetConfig {
        AsgFleetConfig {
            fleet: fleet.to_string(),
            group_name: group_name.to_string(),
            throttle: ThrottleConfig::default(),
            bucket: None,
            clock: clock::system(),
        }
    }

    /// The configuration of a validated `autoscaling` fleet.
    pub fn from_manifest(fleet: &FleetManifest) -> ProviderResult<AsgFleetConfig> {
        match &fleet.spec.provider {
            ProviderSpec::Autoscaling(asg) => {
                Ok(AsgFleetConfig::new(fleet.name(), &asg.group_name))
            }
            other => Err(ProviderError::Config(format!(
                "fleet {} has provider `{}`, not `autoscaling`",
                fleet.name(),
                other.kind()
            ))),
        }
    }
}

/// The fleet of one step as the instances of an Auto Scaling group.
#[derive(Debug)]
pub struct AsgFleet {
    client: aws_sdk_autoscaling::Client,
    ec2_client: aws_sdk_ec2::Client,
    cfg: AsgFleetConfig,
    bucket: Arc<TokenBucket>,
}

/// What the provider needs of the group, converted from the SDK's type.
#[derive(Debug, Clone)]
struct Group {
    desired: u32,
    max: u32,
    /// `anamo:launch-batch` and `anamo:launch-target` of the group: the last batch launched
    /// and the desired capacity it aimed at.
    last_batch: Option<String>,
    last_target: Option<u32>,
    /// Members by id: (state, protected, instance type).
    members: BTreeMap<String, Member>,
}

#[derive(Debug, Clone)]
struct Member {
    state: InstanceState,
    protected: bool,
    instance_type: Option<String>,
    zone: Option<String>,
}

fn non_negative(v: Option<i32>) -> u32 {
    v.map_or(0, |v| u32::try_from(v).unwrap_or(0))
}

impl Group {
    fn from_sdk(g: &AutoScalingGroup) -> Group {
        let tag = |key: &str| {
            g.tags()
                .iter()
                .find(|t| t.key() == Some(key))
                .and_then(|t| t.value())
        };
        let members = g
            .instances()
            .iter()
            .filter_map(|i| {
                let state = lifecycle(i.lifecycle_state()?)?;
                Some((
                    i.instance_id()?.to_string(),
                    Member {
                        state,
                        protected: i.protected_from_scale_in().unwrap_or(false),
                        instance_type: i.instance_type().map(str::to_string),
                        zone: i.availability_zone().map(str::to_string),
                    },
                ))
            })
            .collect();
        Group {
            desired: non_negative(g.desired_capacity()),
            max: non_negative(g.max_size()),
            last_batch: tag(TAG_LAUNCH_BATCH).map(str::to_string),
            last_target: tag(TAG_LAUNCH_TARGET).and_then(|v| v.parse().ok()),
            members,
        }
    }
}

/// Our state for an Auto Scaling lifecycle state; `None` for instances that are not (or no
/// longer, or not yet) members: detached, terminated, and warm-pool instances.
fn lifecycle(state: &LifecycleState) -> Option<InstanceState> {
    let s = state.as_str();
    if s.starts_with("Warmed") || matches!(s, "Detached" | "Terminated") {
        None
    } else if s.starts_with("Pending") {
        Some(InstanceState::Pending)
    } else if s == "InService" || s.starts_with("ReplacingRootVolume") || s == "RootVolumeReplaced"
    {
        Some(InstanceState::Running)
    } else {
        // Terminating*, Detaching, EnteringStandby, Standby, Quarantined, and future states.
        Some(InstanceState::Stopping)
    }
}

impl AsgFleet {
    /// `client` for the group, `ec2_client` for the instances' launch times.
    pub fn new(
        client: aws_sdk_autoscaling::Client,
        ec2_client: aws_sdk_ec2::Client,
        cfg: AsgFleetConfig,
    ) -> AsgFleet {
        let bucket = cfg
            .bucket
            .clone()
            .unwrap_or_else(|| Arc::new(cfg.throttle.bucket()));
        AsgFleet {
            client,
            ec2_client,
            cfg,
            bucket,
        }
    }

    /// The provider of a validated `autoscaling` fleet.
    pub fn from_manifest(
        client: aws_sdk_autoscaling::Client,
        ec2_client: aws_sdk_ec2::Client,
        fleet: &FleetManifest,
    ) -> ProviderResult<AsgFleet> {
        Ok(AsgFleet::new(
            client,
            ec2_client,
            AsgFleetConfig::from_manifest(fleet)?,
        ))
    }

    pub fn config(&self) -> &AsgFleetConfig {
        &self.cfg
    }

    async fn group(&self) -> ProviderResult<Group> {
        let name = &self.cfg.group_name;
        let out = with_backoff(&self.cfg.throttle, "DescribeAutoScalingGroups", || async {
            self.client
                .describe_auto_scaling_groups()
                .auto_scaling_group_names(name)
                .send()
                .await
                .map_err(|e| from_sdk("DescribeAutoScalingGroups", e))
        })
        .await?;
        out.auto_scaling_groups()
            .iter()
            .find(|g| g.auto_scaling_group_name() == Some(name.as_str()))
            .map(Group::from_sdk)
            .ok_or_else(|| {
                ProviderError::Config(format!(
                    "Auto Scaling group {name} (fleet {}) does not exist",
                    self.cfg.fleet
                ))
            })
    }

    /// Launch times of `ids` in epoch milliseconds, from EC2.
    async fn launch_times(&self, ids: &[&String]) -> ProviderResult<BTreeMap<String, Millis>> {
        let mut times = BTreeMap::new();
        for chunk in ids.chunks(DESCRIBE_CHUNK) {
            // A filter, not InstanceIds: an id EC2 does not know yet is not an error.
            let filter = Filter::builder()
                .name("instance-id")
                .set_values(Some(chunk.iter().map(|s| s.to_string()).collect()))
                .build();
            let page_times = with_backoff(&self.cfg.throttle, "DescribeInstances", || async {
                let mut pages = self
                    .ec2_client
                    .describe_instances()
                    .filters(filter.clone())
                    .into_paginator()
                    .send();
                let mut out = Vec::new();
                while let Some(page) = pages.next().await {
                    let page = page.map_err(|e| from_sdk("DescribeInstances", e))?;
                    for i in page.reservations().iter().flat_map(|r| r.instances()) {
                        if let (Some(id), Some(t)) = (i.instance_id(), i.launch_time()) {
                            if let Ok(ms) = t.to_millis() {
                                out.push((id.to_string(), ms));
                            }
                        }
                    }
                }
                Ok(out)
            })
            .await?;
            times.extend(page_times);
        }
        Ok(times)
    }

    /// A mutating call: waits for a token of the bucket, retried when throttled.
    async fn mutate<T, F, Fut>(&self, operation: &'static str, call: F) -> ProviderResult<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = ProviderResult<T>>,
    {
        with_backoff(&self.cfg.throttle, operation, || async {
            self.bucket.acquire().await;
            call().await
        })
        .await
    }
}

#[async_trait]
impl FleetProvider for AsgFleet {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        let group = self.group().await?;
        let ids: Vec<&String> = group.members.keys().collect();
        let times = self.launch_times(&ids).await?;
        let now = self.cfg.clock.now();
        Ok(group
            .members
            .iter()
            .map(|(id, m)| Instance {
                id: id.clone(),
                fleet: self.cfg.fleet.clone(),
                state: m.state,
                launched_at: times.get(id).copied().unwrap_or(now),
                instance_type: m.instance_type.clone(),
                launch_batch: None,
                protected: m.protected,
                // The group's purchase options decide spot or on-demand; its instances do not
                // say, so they are priced on-demand (never below what they cost).
                market: crate::provider::Market {
                    lifecycle: None,
                    zone: m.zone.clone(),
                },
            })
            .collect())
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        if let Some(done) = super::precheck_launch(req, &self.cfg.fleet) {
            return done;
        }
        let group = self.group().await?;
        let name = &self.cfg.group_name;
        let desired = match (&group.last_batch, group.last_target) {
            // The same batch again (a re-plan after a crash, or a retry after an error):
            // aim at the same target, never add the count twice.
            (Some(batch), target) if batch == &req.batch_token => match target {
                Some(target) if group.desired < target.min(group.max) => target.min(group.max),
                _ => {
                    tracing::info!(
                        fleet = %self.cfg.fleet, group = %name, batch = %req.batch_token,
                        "batch already applied to the group"
                    );
                    return Ok(LaunchOutcome::default());
                }
            },
            _ => {
                if group.desired >= group.max {
                    return Err(ProviderError::LimitExceeded(format!(
                        "Auto Scaling group {name} is at its MaxSize ({}); raise it to launch \
                         more",
                        group.max
                    )));
                }
                let desired = group.desired.saturating_add(req.count).min(group.max);
                // Recorded before the capacity is raised: a crash in between means the batch
                // is re-aimed at the same target, not launched twice.
                let tag = |key: &str, value: String| {
                    Tag::builder()
                        .resource_id(name)
                        .resource_type("auto-scaling-group")
                        .key(key)
                        .value(value)
                        .propagate_at_launch(false)
                        .build()
                };
                let tags = [
                    tag(TAG_LAUNCH_BATCH, req.batch_token.clone()),
                    tag(TAG_LAUNCH_TARGET, desired.to_string()),
                ];
                self.mutate("CreateOrUpdateTags", || async {
                    self.client
                        .create_or_update_tags()
                        .set_tags(Some(tags.to_vec()))
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| from_sdk("CreateOrUpdateTags", e))
                })
                .await?;
                desired
            }
        };
        let desired_i32 = i32::try_from(desired).unwrap_or(i32::MAX);
        self.mutate("SetDesiredCapacity", || async {
            self.client
                .set_desired_capacity()
                .auto_scaling_group_name(name)
                .desired_capacity(desired_i32)
                .honor_cooldown(false)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| from_sdk("SetDesiredCapacity", e))
        })
        .await?;
        tracing::info!(
            fleet = %self.cfg.fleet, group = %name, batch = %req.batch_token,
            from = group.desired, to = desired, "raised desired capacity"
        );
        // The group launches the instances; their ids are not known yet.
        Ok(LaunchOutcome::default())
    }

    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let group = self.group().await?;
        let wanted: BTreeSet<&String> = ids.iter().collect();
        for id in wanted {
            match group.members.get(id) {
                Some(m) if m.state != InstanceState::Stopping => {}
                _ => {
                    tracing::debug!(
                        fleet = %self.cfg.fleet, instance = %id,
                        "not in the group or already leaving it"
                    );
                    continue;
                }
            }
            self.mutate("TerminateInstanceInAutoScalingGroup", || async {
                self.client
                    .terminate_instance_in_auto_scaling_group()
                    .instance_id(id)
                    .should_decrement_desired_capacity(true)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| from_sdk("TerminateInstanceInAutoScalingGroup", e))
            })
            .await?;
            tracing::info!(fleet = %self.cfg.fleet, instance = %id, "terminated instance");
        }
        Ok(())
    }

    async fn set_protection(&self, ids: &[String], protected: bool) -> ProviderResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let group = self.group().await?;
        // Only members whose flag changes: the API rejects ids not in the group.
        let todo: Vec<String> =
            ids.iter()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter(|id| {
                    group.members.get(*id).is_some_and(|m| {
                        m.protected != protected && m.state != InstanceState::Stopping
                    })
                })
                .cloned()
                .collect();
        let name = &self.cfg.group_name;
        for chunk in todo.chunks(PROTECTION_CHUNK) {
            self.mutate("SetInstanceProtection", || async {
                self.client
                    .set_instance_protection()
                    .auto_scaling_group_name(name)
                    .set_instance_ids(Some(chunk.to_vec()))
                    .protected_from_scale_in(protected)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| from_sdk("SetInstanceProtection", e))
            })
            .await?;
        }
        if !todo.is_empty() {
            tracing::debug!(
                fleet = %self.cfg.fleet, ids = ?todo, protected,
                "set scale-in protection"
            );
        }
        Ok(())
    }

    fn scale_in_protection(&self) -> bool {
        true
    }

    fn kind(&self) -> &'static str {
        "autoscaling"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_states() {
        let s = |x: &str| lifecycle(&LifecycleState::from(x));
        assert_eq!(s("Pending"), Some(InstanceState::Pending));
        assert_eq!(s("Pending:Wait"), Some(InstanceState::Pending));
        assert_eq!(s("InService"), Some(InstanceState::Running));
        assert_eq!(s("Terminating:Wait"), Some(InstanceState::Stopping));
        assert_eq!(s("Standby"), Some(InstanceState::Stopping));
        assert_eq!(s("Terminated"), None);
        assert_eq!(s("Warmed:Running"), None);
        assert_eq!(s("Detached"), None);
    }
}
