//! Launches of an `ec2` fleet with a `capacityType`: which offerings to use comes from the
//! fleet's [`CapacityState`] (unavailable offerings skipped, spot → on-demand fallback), and
//! the launch is one `CreateFleet` of type `instant` over the chosen offerings, or one
//! `RunInstances` when the fleet has a single (type, subnet) combination.
//!
//! What this relies on (EC2 API reference, `CreateFleet`): an `instant` fleet launches
//! synchronously and answers with the instances it launched (`fleetInstanceSet`) and, per
//! override that could not launch, a `CreateFleetError` with the override, the lifecycle and
//! the error code; partial fulfilment is a normal answer, not an error. Tags of resource type
//! `instance` are applied at launch (volumes cannot be tagged through an `instant` fleet);
//! `ClientToken` (up to 64 ASCII characters) makes a repeated call idempotent. Spot uses
//! `price-capacity-optimized` (the pools least likely to be interrupted, then the cheapest,
//! what Karpenter uses), on-demand `lowest-price`.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    DefaultTargetCapacityType, FleetLaunchTemplateConfigRequest,
    FleetLaunchTemplateOverridesRequest, FleetLaunchTemplateSpecificationRequest,
    FleetOnDemandAllocationStrategy, FleetType, InstanceLifecycle, InstanceType,
    OnDemandOptionsRequest, ResourceType, SpotAllocationStrategy, SpotOptionsRequest,
    TargetCapacitySpecificationRequest,
};
use sha2::{Digest, Sha256};

use super::super::aws_error::{class_of, from_sdk, with_backoff, ErrorClass, NEXT_OVERRIDE_CODES};
use super::{tag_spec, Ec2Fleet, Override, DEFAULT_TEMPLATE_VERSION};
use crate::clock::ms;
use crate::manifest::CapacityType;
use crate::provider::offerings::{Choice, Lifecycle, Offering, UNAVAILABLE_TTL};
use crate::provider::{LaunchOutcome, LaunchRequest, ProviderError, ProviderResult};

/// What one launch call brought: the ids launched and, per offering that failed, why.
#[derive(Debug, Default)]
struct Answer {
    ids: Vec<String>,
    /// `None` offering: the error concerns every offering of the call.
    errors: Vec<(Option<Offering>, ProviderError)>,
}

impl Ec2Fleet {
    /// Launches the `remaining` instances of `req` under `capacity`; `existing` instances of
    /// the batch were found already. Tries at most two choices (e.g. spot, then on-demand
    /// when every spot offering turned out to be out of capacity).
    pub(super) async fn launch_with_capacity(
        &self,
        req: &LaunchRequest,
        capacity: CapacityType,
        existing: Vec<String>,
        types: &[String],
    ) -> ProviderResult<LaunchOutcome> {
        let found = u32::try_from(existing.len()).unwrap_or(u32::MAX);
        let remaining = req.count.saturating_sub(found);
        let tags = self.launch_tags(req);
        let fallback = self.cfg.spec.spot_fallback.clone().unwrap_or_default();
        let pool: Vec<(Option<String>, Option<String>)> = self
            .overrides(types)
            .iter()
            .map(|o| {
                (
                    o.instance_type.map(str::to_string),
                    o.subnet.map(str::to_string),
                )
            })
            .collect();
        let mut failures: Vec<String> = Vec::new();
        for _ in 0..2 {
            let now = self.cfg.clock.now();
            let choice = self.capacity().choose(capacity, &fallback, &pool, now);
            let (lifecycle, offerings) = match choice {
                Choice::Launch {
                    lifecycle,
                    offerings,
                    fallback,
                } => {
                    if let Some(why) = fallback {
                        tracing::info!(fleet = %self.cfg.fleet, "launching on-demand: {why}");
                    }
                    (lifecycle, offerings)
                }
                Choice::Exhausted { reason, .. } => {
                    failures.push(reason);
                    break;
                }
            };
            let token = fleet_client_token(&req.batch_token, found, &offerings);
            let answer = if pool.len() == 1 {
                self.run_one(remaining, &token, &offerings[0], &tags).await
            } else {
                self.create_fleet(remaining, &token, lifecycle, &offerings, &tags)
                    .await?
            };
            let launched = answer.ids.len();
            let config = self.note_errors(answer.errors, &offerings, &mut failures);
            if launched > 0 {
                tracing::info!(
                    fleet = %self.cfg.fleet, batch = %req.batch_token, lifecycle = lifecycle.as_str(),
                    requested = remaining, launched, ids = ?answer.ids, "launched instances"
                );
                let mut instances = existing;
                instances.extend(answer.ids);
                return Ok(LaunchOutcome { instances });
            }
            if let Some(e) = config {
                return Err(e);
            }
        }
        Err(ProviderError::InsufficientCapacity(failures.join("; ")))
    }

    /// Records the errors of a launch call: offerings out of capacity (or not offered, or at
    /// a per-type limit) become unavailable. Returns the first error that no other offering
    /// can avoid (a configuration error), if any.
    fn note_errors(
        &self,
        errors: Vec<(Option<Offering>, ProviderError)>,
        offerings: &[Offering],
        failures: &mut Vec<String>,
    ) -> Option<ProviderError> {
        let now = self.cfg.clock.now();
        let mut config = None;
        for (offering, e) in errors {
            let per_offering = super::super::aws_error::try_next_override(&e);
            let named = offering
                .as_ref()
                .map_or("every offering".to_string(), |o| o.to_string());
            tracing::warn!(fleet = %self.cfg.fleet, offering = %named, error = %e, "offering failed");
            failures.push(format!("{named}: {e}"));
            if per_offering {
                let mut state = self.capacity();
                match offering {
                    Some(o) => state.mark_unavailable(o, now, UNAVAILABLE_TTL),
                    None => offerings
                        .iter()
                        .for_each(|o| state.mark_unavailable(o.clone(), now, UNAVAILABLE_TTL)),
                }
            } else if config.is_none() {
                config = Some(e);
            }
        }
        config
    }

    /// One `RunInstances` for the single offering of the fleet.
    async fn run_one(
        &self,
        count: u32,
        token: &str,
        offering: &Offering,
        tags: &BTreeMap<String, String>,
    ) -> Answer {
        let with = Override {
            instance_type: offering.instance_type.as_deref(),
            subnet: offering.subnet.as_deref(),
        };
        let spot = offering.lifecycle == Lifecycle::Spot;
        match self.run_instances(count, token, with, tags, spot).await {
            Ok(ids) => Answer {
                ids,
                errors: Vec::new(),
            },
            Err(e) => Answer {
                ids: Vec::new(),
                errors: vec![(Some(offering.clone()), e)],
            },
        }
    }

    /// One `CreateFleet` (`instant`) of `count` `lifecycle` instances over `offerings`.
    /// Errors of the whole call other than capacity ones are returned as errors.
    async fn create_fleet(
        &self,
        count: u32,
        token: &str,
        lifecycle: Lifecycle,
        offerings: &[Offering],
        tags: &BTreeMap<String, String>,
    ) -> ProviderResult<Answer> {
        let total = i32::try_from(count).unwrap_or(i32::MAX);
        let config = self.fleet_template_config(offerings);
        let out = with_backoff(&self.cfg.throttle, "CreateFleet", || async {
            self.bucket.acquire().await;
            self.client
                .create_fleet()
                .r#type(FleetType::Instant)
                .client_token(token)
                .target_capacity_specification(
                    TargetCapacitySpecificationRequest::builder()
                        .total_target_capacity(total)
                        .default_target_capacity_type(match lifecycle {
                            Lifecycle::Spot => DefaultTargetCapacityType::Spot,
                            Lifecycle::OnDemand => DefaultTargetCapacityType::OnDemand,
                        })
                        .build(),
                )
                .spot_options(
                    SpotOptionsRequest::builder()
                        .allocation_strategy(SpotAllocationStrategy::PriceCapacityOptimized)
                        .build(),
                )
                .on_demand_options(
                    OnDemandOptionsRequest::builder()
                        .allocation_strategy(FleetOnDemandAllocationStrategy::LowestPrice)
                        .build(),
                )
                .launch_template_configs(config.clone())
                .tag_specifications(tag_spec(ResourceType::Instance, tags))
                .send()
                .await
                .map_err(|e| from_sdk("CreateFleet", e))
        })
        .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.is_capacity() => {
                return Ok(Answer {
                    ids: Vec::new(),
                    errors: vec![(None, e)],
                })
            }
            Err(e) => return Err(e),
        };
        let ids = out
            .instances()
            .iter()
            .flat_map(|i| i.instance_ids().iter().cloned())
            .collect();
        let errors = out
            .errors()
            .iter()
            .map(|e| {
                let overrides = e
                    .launch_template_and_overrides()
                    .and_then(|l| l.overrides());
                let offering = overrides.map(|o| Offering {
                    instance_type: o.instance_type().map(|t| t.as_str().to_string()),
                    subnet: o.subnet_id().map(str::to_string),
                    lifecycle: match e.lifecycle() {
                        Some(InstanceLifecycle::OnDemand) => Lifecycle::OnDemand,
                        Some(InstanceLifecycle::Spot) => Lifecycle::Spot,
                        _ => lifecycle,
                    },
                });
                let error = fleet_error(e.error_code(), e.error_message());
                (offering, error)
            })
            .collect();
        Ok(Answer { ids, errors })
    }

    /// The launch template with one override per offering.
    fn fleet_template_config(&self, offerings: &[Offering]) -> FleetLaunchTemplateConfigRequest {
        let lt = &self.cfg.spec.launch_template;
        let spec = FleetLaunchTemplateSpecificationRequest::builder()
            .set_launch_template_name(lt.name.clone())
            .set_launch_template_id(lt.id.clone())
            .version(lt.version.as_deref().unwrap_or(DEFAULT_TEMPLATE_VERSION))
            .build();
        let overrides = offerings
            .iter()
            .map(|o| {
                FleetLaunchTemplateOverridesRequest::builder()
                    .set_instance_type(o.instance_type.as_deref().map(InstanceType::from))
                    .set_subnet_id(o.subnet.clone())
                    .build()
            })
            .collect();
        FleetLaunchTemplateConfigRequest::builder()
            .launch_template_specification(spec)
            .set_overrides(Some(overrides))
            .build()
    }
}

/// A `CreateFleetError` as a [`ProviderError`], classified by its code like any AWS error.
fn fleet_error(code: Option<&str>, message: Option<&str>) -> ProviderError {
    let code = code.unwrap_or("Unknown");
    let text = format!("CreateFleet: {code}: {}", message.unwrap_or("").trim());
    match class_of(code) {
        Some(ErrorClass::Capacity) => ProviderError::InsufficientCapacity(text),
        Some(ErrorClass::Limit) => ProviderError::LimitExceeded(text),
        Some(ErrorClass::Throttling) => ProviderError::Throttled(text),
        Some(ErrorClass::Config) => ProviderError::Config(text),
        _ if NEXT_OVERRIDE_CODES.contains(&code) => ProviderError::Config(text),
        _ => ProviderError::Api {
            operation: "CreateFleet",
            code: code.to_string(),
            message: text,
        },
    }
}

/// The `ClientToken` of a launch of `batch` when `found` of its instances existed, over
/// `offerings`: the same call after a lost answer repeats the token (EC2 answers the first
/// call), a call over other offerings or for the remainder gets another one.
pub fn fleet_client_token(batch: &str, found: u32, offerings: &[Offering]) -> String {
    let over: Vec<String> = offerings.iter().map(|o| o.to_string()).collect();
    let digest = Sha256::digest(format!("{batch}\n{found}\n{}", over.join("\n")).as_bytes());
    let mut token = format!("anamo-{}", hex::encode(digest));
    token.truncate(64);
    token
}

/// How long interruptions are remembered: the fallback window, at least the offering TTL.
pub(super) fn interruption_memory(window: std::time::Duration) -> i64 {
    ms(window).max(UNAVAILABLE_TTL)
}
