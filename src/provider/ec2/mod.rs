//! `ec2` provider: instances launched with `RunInstances` from a launch template.
//!
//! * Ownership is by tags: every instance (and its volumes) carries `anamo:fleet`, `anamo:step`,
//!   `anamo:controller` and `anamo:launch-batch`; [`list`](Ec2Fleet::list) finds the fleet's
//!   instances by tag and state filters through the `DescribeInstances` paginator and converts
//!   them to [`Instance`] right there.
//! * Launches are idempotent per batch: instances already tagged with the request's batch
//!   token count toward it (not every EC2-compatible endpoint honours `ClientToken`), and the
//!   `ClientToken` of each `RunInstances` is derived from the batch token, the override tried
//!   and the instances found, so a retry of the same call is deduplicated by EC2 while a
//!   launch of the remainder of a partly launched batch is not mistaken for it.
//! * With several `instanceTypes` / `subnets`, a launch that fails for lack of capacity (or
//!   an unsupported type, or a per-type limit) tries the next combination: types in order,
//!   each in every subnet in order.
//! * With `capacityType` set, launches go through [`fleet`]: `CreateFleet` (`instant`) over
//!   every available (type, subnet) offering, or `RunInstances` with spot market options for
//!   a single one; offerings out of capacity are skipped for a while and `spot-with-fallback`
//!   fleets fall back to on-demand (`provider::offerings`). A listed spot instance that EC2
//!   reclaimed (state reason `Server.SpotInstanceTermination`) counts as an interruption.
//! * Throttled calls are retried with backoff; mutating calls take a token from a bucket.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use aws_sdk_ec2::types::{
    Filter, InstanceMarketOptionsRequest, InstanceType, LaunchTemplateSpecification, MarketType,
    ResourceType, ShutdownBehavior, Tag, TagSpecification,
};
use sha2::{Digest, Sha256};

use super::aws_error::{
    from_sdk, is_not_found, try_next_override, with_backoff, ThrottleConfig, TokenBucket,
};
use super::user_data::{self, WorkerValues};
use super::{
    FleetProvider, Instance, LaunchOutcome, LaunchRequest, ProviderError, ProviderResult,
    SpotPrice, TAG_CONTROLLER, TAG_FLEET, TAG_LAUNCH_BATCH, TAG_STEP,
};
use crate::clock::{self, SharedClock};
use crate::manifest::{Ec2Provider, FleetManifest, ProviderSpec, TaskSize};
use crate::provider::offerings::CapacityState;

mod fleet;
mod listing;
mod prices;
mod types;
pub use fleet::fleet_client_token;
pub use types::TYPES_REFRESH;

/// Launch template version used when the manifest gives none.
pub const DEFAULT_TEMPLATE_VERSION: &str = "$Default";

/// Instance states `list` reports (terminated instances are gone).
const LISTED_STATES: [&str; 5] = ["pending", "running", "shutting-down", "stopping", "stopped"];

/// Instance ids per `TerminateInstances` call.
const TERMINATE_CHUNK: usize = 200;

/// Everything an [`Ec2Fleet`] needs besides the client.
#[derive(Debug, Clone)]
pub struct Ec2FleetConfig {
    /// Fleet name (`anamo:fleet` tag).
    pub fleet: String,
    /// Pipeline step (`anamo:step` tag).
    pub step: String,
    /// Controller (cluster) name (`anamo:controller` tag): two clusters in one account never
    /// see each other's instances.
    pub cluster: String,
    /// The fleet's `spec.provider.ec2`.
    pub spec: Ec2Provider,
    /// Rendered user data (plain text; base64-encoded on the way). `None`: the launch
    /// template's user data is used.
    pub user_data: Option<String>,
    /// Tags for instances and volumes besides the `anamo:*` ones (the fleet's labels and
    /// `spec.provider.ec2.tags`).
    pub tags: BTreeMap<String, String>,
    /// Backoff on throttling and the rate of mutating calls.
    pub throttle: ThrottleConfig,
    /// A bucket shared with other providers (one account's API rate limit); `None`: this
    /// provider gets its own from `throttle`.
    pub bucket: Option<Arc<TokenBucket>>,
    /// `MaxResults` of each `DescribeInstances` page (5..=1000).
    pub page_size: i32,
    /// Stands in for a missing launch time.
    pub clock: SharedClock,
    /// The fleet's `vcpusPerTask` and `memoryPerTaskGiB`, when its slots are derived per
    /// instance type.
    pub task_size: Option<TaskSize>,
}

impl Ec2FleetConfig {
    /// A configuration without user data, with the spec's tags.
    pub fn new(fleet: &str, step: &str, cluster: &str, spec: Ec2Provider) -> Ec2FleetConfig {
        Ec2FleetConfig {
            fleet: fleet.to_string(),
            step: step.to_string(),
            cluster: cluster.to_string(),
            tags: spec.tags.clone(),
            spec,
            user_data: None,
            throttle: ThrottleConfig::default(),
            bucket: None,
            page_size: 500,
            clock: clock::system(),
            task_size: None,
        }
    }

    /// The configuration of a validated `ec2` fleet: its `userData` template (if any) rendered
    /// with `values`, its labels and `spec.provider.ec2.tags` as tags (the latter win).
    /// `values.cluster` is the controller name.
    pub fn from_manifest(
        fleet: &FleetManifest,
        values: &WorkerValues,
    ) -> ProviderResult<Ec2FleetConfig> {
        let ProviderSpec::Ec2(spec) = &fleet.spec.provider else {
            return Err(ProviderError::Config(format!(
                "fleet {} has provider `{}`, not `ec2`",
                fleet.name(),
                fleet.spec.provider.kind()
            )));
        };
        let user_data = user_data::for_fleet(fleet, values)
            .map_err(|e| ProviderError::Config(format!("fleet {}: {e}", fleet.name())))?;
        let mut cfg =
            Ec2FleetConfig::new(fleet.name(), fleet.step(), &values.cluster, spec.clone());
        cfg.tags = fleet.metadata.labels.clone();
        cfg.tags.extend(spec.tags.clone());
        cfg.user_data = user_data;
        cfg.task_size = fleet.spec.task_size();
        Ok(cfg)
    }
}

/// The fleet of one step as EC2 instances from a launch template.
#[derive(Debug)]
pub struct Ec2Fleet {
    client: aws_sdk_ec2::Client,
    cfg: Ec2FleetConfig,
    bucket: Arc<TokenBucket>,
    user_data_b64: Option<String>,
    /// Unavailable offerings and spot interruptions (fleets with a `capacityType`).
    capacity: Mutex<CapacityState>,
    /// EC2's instance types, when requirements or slots per type need them.
    types: Mutex<Option<types::Catalogue>>,
}

/// One (instance type, subnet) combination of a launch.
#[derive(Debug, Clone, Copy)]
struct Override<'a> {
    instance_type: Option<&'a str>,
    subnet: Option<&'a str>,
}

impl std::fmt::Display for Override<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.instance_type.unwrap_or("template type");
        match self.subnet {
            Some(s) => write!(f, "{t} in {s}"),
            None => f.write_str(t),
        }
    }
}

impl Ec2Fleet {
    pub fn new(client: aws_sdk_ec2::Client, cfg: Ec2FleetConfig) -> Ec2Fleet {
        let bucket = cfg
            .bucket
            .clone()
            .unwrap_or_else(|| Arc::new(cfg.throttle.bucket()));
        let user_data_b64 = cfg
            .user_data
            .as_deref()
            .map(aws_smithy_types::base64::encode);
        Ec2Fleet {
            client,
            cfg,
            bucket,
            user_data_b64,
            capacity: Mutex::new(CapacityState::default()),
            types: Mutex::new(None),
        }
    }

    /// The catalogue of instance types as last read.
    fn types_cache(&self) -> MutexGuard<'_, Option<types::Catalogue>> {
        self.types.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fleet's offerings state (a panic elsewhere while it was held leaves it usable).
    fn capacity(&self) -> MutexGuard<'_, CapacityState> {
        self.capacity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of the fleet's offerings state, for tests and status.
    pub fn capacity_state(&self) -> CapacityState {
        self.capacity().clone()
    }

    /// The provider of a validated `ec2` fleet ([`Ec2FleetConfig::from_manifest`]).
    pub fn from_manifest(
        client: aws_sdk_ec2::Client,
        fleet: &FleetManifest,
        values: &WorkerValues,
    ) -> ProviderResult<Ec2Fleet> {
        Ok(Ec2Fleet::new(
            client,
            Ec2FleetConfig::from_manifest(fleet, values)?,
        ))
    }

    pub fn config(&self) -> &Ec2FleetConfig {
        &self.cfg
    }

    fn template(&self) -> LaunchTemplateSpecification {
        let lt = &self.cfg.spec.launch_template;
        LaunchTemplateSpecification::builder()
            .set_launch_template_name(lt.name.clone())
            .set_launch_template_id(lt.id.clone())
            .version(lt.version.as_deref().unwrap_or(DEFAULT_TEMPLATE_VERSION))
            .build()
    }

    /// `types` (the fleet's, see [`Ec2Fleet::instance_types`]) in order, each in every subnet
    /// in order; one combination of `None`s when the template decides both.
    fn overrides<'a>(&'a self, types: &'a [String]) -> Vec<Override<'a>> {
        let types: Vec<Option<&str>> = if types.is_empty() {
            vec![None]
        } else {
            types.iter().map(|t| Some(t.as_str())).collect()
        };
        let subnets: Vec<Option<&str>> = if self.cfg.spec.subnets.is_empty() {
            vec![None]
        } else {
            self.cfg
                .spec
                .subnets
                .iter()
                .map(|s| Some(s.as_str()))
                .collect()
        };
        types
            .iter()
            .flat_map(|&t| {
                subnets.iter().map(move |&s| Override {
                    instance_type: t,
                    subnet: s,
                })
            })
            .collect()
    }

    /// The tags of the instances of a launch: user tags, then the request's, then the
    /// `anamo:*` ones (which always win). Keys AWS reserves (`aws:`) are dropped.
    fn launch_tags(&self, req: &LaunchRequest) -> BTreeMap<String, String> {
        let mut tags = self.cfg.tags.clone();
        tags.extend(req.tags.clone());
        tags.retain(|k, _| !k.starts_with("aws:"));
        tags.insert(TAG_FLEET.into(), self.cfg.fleet.clone());
        tags.insert(TAG_STEP.into(), self.cfg.step.clone());
        tags.insert(TAG_CONTROLLER.into(), self.cfg.cluster.clone());
        tags.insert(TAG_LAUNCH_BATCH.into(), req.batch_token.clone());
        tags
    }

    fn owner_filters(&self) -> Vec<Filter> {
        vec![
            tag_filter(TAG_FLEET, &self.cfg.fleet),
            tag_filter(TAG_CONTROLLER, &self.cfg.cluster),
            Filter::builder()
                .name("instance-state-name")
                .set_values(Some(LISTED_STATES.iter().map(|s| s.to_string()).collect()))
                .build(),
        ]
    }

    /// The fleet's instances matching the owner filters plus `extra`, all pages.
    async fn describe(&self, extra: Option<Filter>) -> ProviderResult<Vec<Instance>> {
        let mut filters = self.owner_filters();
        filters.extend(extra);
        with_backoff(&self.cfg.throttle, "DescribeInstances", || async {
            let mut pages = self
                .client
                .describe_instances()
                .set_filters(Some(filters.clone()))
                .max_results(self.cfg.page_size.clamp(5, 1000))
                .into_paginator()
                .send();
            let mut out = Vec::new();
            while let Some(page) = pages.next().await {
                let page = page.map_err(|e| from_sdk("DescribeInstances", e))?;
                for reservation in page.reservations() {
                    out.extend(
                        reservation
                            .instances()
                            .iter()
                            .filter_map(|i| self.convert(i)),
                    );
                }
            }
            Ok(out)
        })
        .await
    }

    /// One `RunInstances` of up to `count` instances with one override (as spot instances
    /// when `spot`); the ids launched.
    async fn run_instances(
        &self,
        count: u32,
        client_token: &str,
        with: Override<'_>,
        tags: &BTreeMap<String, String>,
        spot: bool,
    ) -> ProviderResult<Vec<String>> {
        let market = spot.then(|| {
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .build()
        });
        let max_count = i32::try_from(count).unwrap_or(i32::MAX);
        with_backoff(&self.cfg.throttle, "RunInstances", || async {
            self.bucket.acquire().await;
            let out = self
                .client
                .run_instances()
                .launch_template(self.template())
                .min_count(1)
                .max_count(max_count)
                .client_token(client_token)
                // `shutdown -h now` on idle exit must end the instance, not leave it stopped.
                .instance_initiated_shutdown_behavior(ShutdownBehavior::Terminate)
                .set_instance_type(with.instance_type.map(InstanceType::from))
                .set_subnet_id(with.subnet.map(str::to_string))
                .set_instance_market_options(market.clone())
                .set_user_data(self.user_data_b64.clone())
                .tag_specifications(tag_spec(ResourceType::Instance, tags))
                .tag_specifications(tag_spec(ResourceType::Volume, tags))
                .send()
                .await
                .map_err(|e| from_sdk("RunInstances", e))?;
            Ok(out
                .instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_string))
                .collect())
        })
        .await
    }

    /// `TerminateInstances` of `ids` (one call, retried when throttled).
    async fn terminate_call(&self, ids: &[String]) -> ProviderResult<()> {
        with_backoff(&self.cfg.throttle, "TerminateInstances", || async {
            self.bucket.acquire().await;
            self.client
                .terminate_instances()
                .set_instance_ids(Some(ids.to_vec()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| from_sdk("TerminateInstances", e))
        })
        .await
    }

    /// Terminates `ids`, skipping those EC2 says do not exist: a call naming a gone instance
    /// fails as a whole, so the ids named in the error are dropped and the call repeated;
    /// when the error names none, the ids are terminated one by one.
    async fn terminate_chunk(&self, mut ids: Vec<String>) -> ProviderResult<()> {
        while !ids.is_empty() {
            match self.terminate_call(&ids).await {
                Ok(()) => return Ok(()),
                Err(e) if is_not_found(&e) => {
                    let gone = instance_ids_in(&e.to_string());
                    let before = ids.len();
                    ids.retain(|id| !gone.contains(id));
                    tracing::debug!(fleet = %self.cfg.fleet, gone = ?gone, "already gone");
                    if ids.len() == before {
                        return self.terminate_one_by_one(&ids).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn terminate_one_by_one(&self, ids: &[String]) -> ProviderResult<()> {
        for id in ids {
            match self.terminate_call(std::slice::from_ref(id)).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[async_trait]
impl FleetProvider for Ec2Fleet {
    async fn list(&self) -> ProviderResult<Vec<Instance>> {
        // Before the pass plans with the slots per type (`slots_per_instance`).
        self.refresh_catalogue().await;
        self.describe(None).await
    }

    fn slots_per_instance(&self) -> Option<u32> {
        self.derived_slots()
    }

    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome> {
        if let Some(done) = super::precheck_launch(req, &self.cfg.fleet) {
            return done;
        }
        // A controller that crashed after RunInstances re-plans the same batch: what exists
        // counts toward it.
        let existing: Vec<String> = self
            .describe(Some(tag_filter(TAG_LAUNCH_BATCH, &req.batch_token)))
            .await?
            .into_iter()
            .map(|i| i.id)
            .collect();
        let found = u32::try_from(existing.len()).unwrap_or(u32::MAX);
        if found >= req.count {
            tracing::info!(
                fleet = %self.cfg.fleet, batch = %req.batch_token, found,
                "batch already launched"
            );
            return Ok(LaunchOutcome {
                instances: existing,
            });
        }
        let types = self.instance_types().await?;
        if let Some(capacity) = self.cfg.spec.capacity_type {
            return self
                .launch_with_capacity(req, capacity, existing, &types)
                .await;
        }
        let remaining = req.count - found;
        let tags = self.launch_tags(req);
        let mut failures: Vec<(String, ProviderError)> = Vec::new();
        for (attempt, with) in self.overrides(&types).into_iter().enumerate() {
            let token = client_token(&req.batch_token, attempt, found);
            match self
                .run_instances(remaining, &token, with, &tags, false)
                .await
            {
                Ok(ids) => {
                    tracing::info!(
                        fleet = %self.cfg.fleet, batch = %req.batch_token, with = %with,
                        requested = remaining, launched = ids.len(), ?ids, "launched instances"
                    );
                    let mut instances = existing;
                    instances.extend(ids);
                    return Ok(LaunchOutcome { instances });
                }
                Err(e) if try_next_override(&e) => {
                    tracing::warn!(
                        fleet = %self.cfg.fleet, with = %with, error = %e,
                        "no launch with this override; trying the next"
                    );
                    failures.push((with.to_string(), e));
                }
                Err(e) => return Err(e),
            }
        }
        Err(all_overrides_failed(failures))
    }

    async fn terminate(&self, ids: &[String]) -> ProviderResult<()> {
        let ids: Vec<String> = ids
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for chunk in ids.chunks(TERMINATE_CHUNK) {
            self.terminate_chunk(chunk.to_vec()).await?;
        }
        if !ids.is_empty() {
            tracing::info!(fleet = %self.cfg.fleet, ?ids, "terminated instances");
        }
        Ok(())
    }

    async fn spot_prices(&self, instance_types: &[String]) -> ProviderResult<Vec<SpotPrice>> {
        self.describe_spot_prices(instance_types).await
    }

    fn kind(&self) -> &'static str {
        "ec2"
    }
}

/// The `ClientToken` of the `attempt`-th override of a launch of `batch` when `found` of its
/// instances already existed: at most 64 ASCII characters, as EC2 requires.
pub fn client_token(batch: &str, attempt: usize, found: u32) -> String {
    let digest = Sha256::digest(format!("{batch}\n{attempt}\n{found}").as_bytes());
    let mut token = format!("anamo-{}", hex::encode(digest));
    token.truncate(64);
    token
}

/// The instance ids (`i-` and hex digits) mentioned in a message.
fn instance_ids_in(message: &str) -> BTreeSet<String> {
    message
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| {
            w.strip_prefix("i-")
                .is_some_and(|hex| !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .map(str::to_string)
        .collect()
}

/// The error of a launch for which every override failed: capacity if any override lacked
/// capacity, else a limit, else the configuration; the message lists every attempt.
fn all_overrides_failed(failures: Vec<(String, ProviderError)>) -> ProviderError {
    let message = failures
        .iter()
        .map(|(with, e)| format!("{with}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    let any = |f: fn(&ProviderError) -> bool| failures.iter().any(|(_, e)| f(e));
    if any(|e| matches!(e, ProviderError::InsufficientCapacity(_))) {
        ProviderError::InsufficientCapacity(message)
    } else if any(|e| matches!(e, ProviderError::LimitExceeded(_))) {
        ProviderError::LimitExceeded(message)
    } else {
        ProviderError::Config(message)
    }
}

fn tag_filter(key: &str, value: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{key}"))
        .values(value)
        .build()
}

fn tag_spec(resource: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(resource)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

#[cfg(test)]
mod tests;
