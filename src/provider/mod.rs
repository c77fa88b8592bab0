//! Fleet providers: where a step's workers run. The controller only ever sees these types;
//! SDK types are converted at the edge of each implementation.

pub mod asg;
pub mod aws_error;
pub mod ec2;
pub mod fake;
pub mod fault;
pub mod instrumented;
pub mod local;
pub mod offerings;
pub mod user_data;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Millis;
pub use crate::model::{TAG_CONTROLLER, TAG_FLEET, TAG_LAUNCH_BATCH, TAG_STEP};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    /// Requested, not yet running (EC2 `pending`, a local process not yet started).
    Pending,
    Running,
    /// Being stopped or terminated: no longer counts toward capacity.
    Stopping,
}

/// One member of a fleet, as the provider sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub fleet: String,
    pub state: InstanceState,
    pub launched_at: Millis,
    /// Instance type or other capacity label, if the provider knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// The launch batch token the instance was created by, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_batch: Option<String>,
    /// Whether scale-in protection is on (Auto Scaling groups).
    #[serde(default)]
    pub protected: bool,
    /// How it was bought and where, when the provider knows (for its price).
    #[serde(default)]
    pub market: Market,
}

/// One spot price, as `DescribeSpotPriceHistory` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpotPrice {
    pub instance_type: String,
    pub zone: String,
    pub usd_per_hour: f64,
}

/// How an instance was bought and where it runs, when the provider knows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Market {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<offerings::Lifecycle>,
    /// Availability zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// A planned launch of `count` instances, identified by a deterministic token so that a retried
/// or re-planned launch after a crash does not launch twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchRequest {
    pub fleet: String,
    pub step: String,
    pub count: u32,
    pub batch_token: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchOutcome {
    /// Instances that now exist for this batch (launched now or found from an earlier try).
    pub instances: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No capacity of the requested kind right now (EC2 InsufficientInstanceCapacity, ...).
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    /// An account or group limit was hit (InstanceLimitExceeded, ASG max size, ...).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    #[error("throttled by the API: {0}")]
    Throttled(String),
    /// The configuration is wrong (unknown launch template, unsupported instance type, ...).
    #[error("configuration error: {0}")]
    Config(String),
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    #[error("{operation} failed: {message}")]
    Api {
        operation: &'static str,
        code: String,
        message: String,
    },
}

impl ProviderError {
    /// A fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::InsufficientCapacity(_) => "insufficient_capacity",
            ProviderError::LimitExceeded(_) => "limit_exceeded",
            ProviderError::Throttled(_) => "throttled",
            ProviderError::Config(_) => "config",
            ProviderError::Unavailable(_) => "unavailable",
            ProviderError::Api { .. } => "api",
        }
    }

    /// Errors after which the fleet is `Stalled` and the controller cools off before retrying.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            ProviderError::InsufficientCapacity(_) | ProviderError::LimitExceeded(_)
        )
    }
}

pub type ProviderResult<T> = Result<T, ProviderError>;

/// What every provider checks first: a request for another fleet is a bug in the caller, and a
/// launch of zero instances needs no API call. `None`: go ahead.
pub(crate) fn precheck_launch(
    req: &LaunchRequest,
    fleet: &str,
) -> Option<ProviderResult<LaunchOutcome>> {
    if req.fleet != fleet {
        return Some(Err(ProviderError::Config(format!(
            "launch request for fleet {} sent to the provider of fleet {fleet}",
            req.fleet
        ))));
    }
    if req.count == 0 {
        return Some(Ok(LaunchOutcome::default()));
    }
    None
}

/// A place to run a step's workers: local processes, EC2 instances from a launch template, or
/// an Auto Scaling group.
#[async_trait]
pub trait FleetProvider: Send + Sync + fmt::Debug {
    /// Instances of the fleet that are pending or running (gone ones are not listed).
    async fn list(&self) -> ProviderResult<Vec<Instance>>;
    /// Launches up to `req.count` instances. May launch fewer (the planner launches the rest
    /// on a later pass).
    async fn launch(&self, req: &LaunchRequest) -> ProviderResult<LaunchOutcome>;
    /// Terminates exactly these instances. Already-gone instances are not an error.
    async fn terminate(&self, ids: &[String]) -> ProviderResult<()>;
    /// Marks instances as busy (protected from scale-in) or idle, where the provider has such a
    /// notion (Auto Scaling groups). The default does nothing.
    async fn set_protection(&self, _ids: &[String], _protected: bool) -> ProviderResult<()> {
        Ok(())
    }
    /// Whether `list` shows a launched instance as soon as `launch` returns (local processes).
    /// Cloud APIs are eventually consistent, so the controller keeps counting a launch as
    /// pending until its instances are listed.
    fn lists_launches_immediately(&self) -> bool {
        false
    }
    /// Whether the provider removes instances on its own unless they are protected (an Auto
    /// Scaling group's scale-in): the controller then protects busy instances through
    /// [`FleetProvider::set_protection`].
    fn scale_in_protection(&self) -> bool {
        false
    }
    /// The current spot prices of these instance types in every zone, for cost figures.
    /// Providers that price nothing (local processes, groups whose purchase options decide)
    /// return none.
    async fn spot_prices(&self, _instance_types: &[String]) -> ProviderResult<Vec<SpotPrice>> {
        Ok(Vec::new())
    }
    /// With slots derived per instance type (`vcpusPerTask`): the slots of the fleet's
    /// smallest type, which the controller plans with for instances whose worker has not
    /// registered yet. `None`: `slotsPerInstance` applies.
    fn slots_per_instance(&self) -> Option<u32> {
        None
    }
    /// Short name for logs and metrics labels: `local`, `ec2`, `autoscaling`.
    fn kind(&self) -> &'static str;
}
