//! The documents a manifest file holds, as they are written in YAML.
//!
//! Field names are camelCase in YAML, every struct denies unknown fields, and every field's doc
//! comment becomes its description in the JSON schema (`anamo manifest schema`).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::capacity::{CapacityType, SpotFallback};
pub use super::pipeline::{DependsOn, EdgeSpec, RetryDelaySpec, ScatterSpec};
pub use super::requirements::{InstanceRequirements, TaskSize};
use crate::model::DEFAULT_MAX_ATTEMPTS;

/// The only `apiVersion` this build understands.
pub const API_VERSION: &str = "anamo.dev/v1";
/// `kind` of a fleet document.
pub const KIND_FLEET: &str = "Fleet";
/// `kind` of the controller document.
pub const KIND_CONTROLLER: &str = "Controller";
/// Every `kind` this build understands.
pub const KINDS: [&str; 2] = [KIND_FLEET, KIND_CONTROLLER];

/// Manifest API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApiVersion {
    /// The first and current version.
    #[serde(rename = "anamo.dev/v1")]
    V1,
}

/// `kind: Fleet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FleetKind {
    /// A fleet of instances running the workers of one pipeline step.
    Fleet,
}

/// `kind: Controller`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ControllerKind {
    /// Settings of the controller process itself.
    Controller,
}

/// Name and labels of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Name of the fleet (unique among fleets), or of the cluster for the Controller document.
    /// Used in instance tags and metric labels: no whitespace, control characters or `#`.
    pub name: String,
    /// Free-form labels, copied to the instances' tags by providers that support tags.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A `kind: Fleet` document: the instances that run the workers of one pipeline step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Fleet")]
pub struct FleetDocument {
    /// Manifest API version; must be `anamo.dev/v1`.
    pub api_version: ApiVersion,
    /// Document kind; `Fleet` for this document.
    pub kind: FleetKind,
    /// The fleet's name and labels.
    pub metadata: Metadata,
    /// What the fleet runs, where, and how it scales.
    pub spec: FleetSpec,
}

/// A `kind: Controller` document: settings of the controller process (at most one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "Controller")]
pub struct ControllerDocument {
    /// Manifest API version; must be `anamo.dev/v1`.
    pub api_version: ApiVersion,
    /// Document kind; `Controller` for this document.
    pub kind: ControllerKind,
    /// `name` is the cluster name, used to tag the instances this controller owns.
    pub metadata: Metadata,
    /// Where the task store is and how often to reconcile.
    pub spec: ControllerSpec,
}

/// What a fleet runs, where, and how it scales.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FleetSpec {
    /// Pipeline step whose tasks this fleet's workers claim, e.g. `align`. One fleet per step.
    pub step: String,
    /// Where the instances come from: `local: {}`, `ec2: {...}` or `autoscaling: {...}`.
    pub provider: ProviderSpec,
    /// Instances kept running even when there is no work.
    #[serde(default)]
    pub min_instances: u32,
    /// Upper bound on instances (booting ones included). At least 1.
    #[schemars(range(min = 1))]
    pub max_instances: u32,
    /// Tasks one worker runs at the same time.
    #[serde(default = "default_slots")]
    #[schemars(range(min = 1))]
    pub slots_per_instance: u32,
    /// Instead of `slotsPerInstance`: vCPUs one task needs. Each instance then runs as many
    /// tasks as its vCPUs (and memory, with `memoryPerTaskGiB`) fit, at least one: the worker
    /// counts the processors and memory of its own machine (`anamo worker
    /// --vcpus-per-task`), so every type of a fleet gets its own slot count. `ec2` fleets only.
    /// The controller counts a running instance at the slots its worker registered, a booting
    /// one (and `tasksPerInstance`, unless set) at the smallest slot count among the fleet's
    /// types. With `capacityType` over several types the worker's user data comes from the
    /// launch template: pass `--vcpus-per-task` there too (`deploy/worker-user-data.sh ... --
    /// --vcpus-per-task N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub vcpus_per_task: Option<u32>,
    /// With `vcpusPerTask`: GiB of memory one task needs, e.g. `7.5`.
    #[serde(
        rename = "memoryPerTaskGiB",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_per_task_gib: Option<f64>,
    /// Backlog of runnable tasks that justifies one instance. Defaults to `slotsPerInstance`;
    /// set it higher to run fewer instances that each work through a queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub tasks_per_instance: Option<u32>,
    /// How long an instance's worker must have been idle before the instance is removed when
    /// the fleet is larger than needed, e.g. `5m`. The default is about what an EC2 instance
    /// takes to boot and register its worker: keeping an idle instance longer than a
    /// replacement takes to boot can cost more instance time than it saves, and waiting that
    /// long costs at most twice what the best choice in hindsight would (ski rental). Set it
    /// higher when instances boot more slowly or when new work tends to arrive a few minutes
    /// after the backlog drains.
    #[serde(default = "default_scale_down_delay", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "90s"))]
    pub scale_down_delay: Duration,
    /// How long a new instance may take to register its worker before it is terminated as
    /// broken, e.g. `10m`.
    #[serde(default = "default_boot_timeout", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "10m"))]
    pub boot_timeout: Duration,
    /// Lease duration of a claimed task: a task whose worker stops renewing is requeued this
    /// long after the last renewal, e.g. `60s`.
    #[serde(
        rename = "leaseTTL",
        default = "default_lease_ttl",
        with = "humantime_serde"
    )]
    #[schemars(with = "String", extend("default" = "60s"))]
    pub lease_ttl: Duration,
    /// How often workers renew their leases and report liveness. Defaults to a third of
    /// `leaseTTL`; must be shorter than `leaseTTL`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub heartbeat: Option<Duration>,
    /// Attempts (claims) of a task before it is marked failed.
    #[serde(default = "default_max_attempts")]
    #[schemars(range(min = 1))]
    pub max_attempts: u32,
    /// The names of the parts of this step's task ids, joined by `/` in the ids (default
    /// `[sample]`). Dependencies join tasks on the parts their steps share: `call` keyed
    /// `[sample, region]` waits for `align/NA12878` (keyed `[sample]`) per task
    /// `NA12878/chr1`; `joint` keyed `[region]` gathers every sample's `call/*/chr1`; an empty
    /// key `[]` gathers the whole upstream step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Vec<String>>,
    /// Expand each imported task over a list: a task given without the `part` becomes one
    /// task per item (`NA12878` → `NA12878/chr1`, …), the item in `ANAMO_KEY_<PART>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scatter: Option<ScatterSpec>,
    /// Steps whose tasks must succeed before a task of this step may run: a step name, or
    /// `{step, onFailure, minSucceeded}` for a gather that may go on without failed tasks.
    /// Applies to every task of the step however it was added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependsOn>,
    /// Default per-attempt time limit of this step's tasks, e.g. `2h` (a task's own
    /// `timeout_secs` wins).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// Default exit codes that mean "try again" for this step's tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_exit_codes: Vec<i32>,
    /// Default exit codes that mean "fail now, do not retry" for this step's tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fail_exit_codes: Vec<i32>,
    /// Wait before a failed attempt is retried: `{initial: 30s, max: 10m}`, doubled per
    /// attempt and jittered. Unset: retried at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_delay: Option<RetryDelaySpec>,
    /// What one of the step's tasks typically runs, e.g. `20m`: the planner's task duration
    /// until it has seen a few of the step's tasks finish (then the upper quartile of the
    /// most recent ones), so that it plans on time from the start. Unset: it plans on counts
    /// until then.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub task_duration: Option<Duration>,
    /// Workers exit after being idle this long (the instance is then terminated), e.g. `10m`.
    /// Unset: workers stay until the controller scales the fleet down.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub idle_exit: Option<Duration>,
    /// Spending limits; the strictest of `maxInstances` here and the cost limits applies, and
    /// `BudgetLimited` says which one binds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// Where workers store each attempt's full output, as `PREFIX/STEP/ID/ATTEMPT.log`:
    /// `s3://BUCKET/PREFIX` or `file:///DIR` (passed as `anamo worker --log-url`). Running
    /// tasks' logs are uploaded as they grow; `anamo task logs` reads them. Unset: only the
    /// instance's log directory and the last 4 KB in each result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_url: Option<String>,
    /// Extra arguments appended to the `anamo worker` command line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_args: Vec<String>,
}

impl FleetSpec {
    /// `tasksPerInstance`, defaulting to `slotsPerInstance`.
    pub fn tasks_per_instance(&self) -> u32 {
        self.tasks_per_instance.unwrap_or(self.slots_per_instance)
    }

    /// What one task needs, when slots are derived per instance type (`vcpusPerTask`).
    pub fn task_size(&self) -> Option<TaskSize> {
        self.vcpus_per_task.map(|vcpus| TaskSize {
            vcpus,
            memory_gib: self.memory_per_task_gib,
        })
    }

    /// `heartbeat`, defaulting to [`default_heartbeat`] of `leaseTTL`.
    pub fn heartbeat_interval(&self) -> Duration {
        self.heartbeat
            .unwrap_or_else(|| default_heartbeat(self.lease_ttl))
    }

    /// The instance limit set by the budget, if any: the stricter of `budget.maxInstances` and
    /// `floor(maxHourlyCost / pricePerInstanceHour)`.
    pub fn budget_instances(&self) -> Option<u32> {
        self.budget.as_ref().and_then(BudgetSpec::instance_limit)
    }
}

/// Where a fleet's instances come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum ProviderSpec {
    /// Workers run as child processes of the controller, on this machine (for trying things
    /// out and for tests).
    Local(LocalProvider),
    /// EC2 instances launched from a launch template.
    Ec2(Ec2Provider),
    /// An existing EC2 Auto Scaling group whose desired capacity the controller sets.
    Autoscaling(AutoscalingProvider),
}

impl ProviderSpec {
    /// `local`, `ec2` or `autoscaling`.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderSpec::Local(_) => "local",
            ProviderSpec::Ec2(_) => "ec2",
            ProviderSpec::Autoscaling(_) => "autoscaling",
        }
    }
}

/// Local processes; no settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LocalProvider {}

/// EC2 instances launched from a launch template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ec2Provider {
    /// The launch template (AMI, instance profile, security groups, ...): exactly one of
    /// `name` or `id`, and optionally `version`.
    pub launch_template: LaunchTemplateRef,
    /// Subnet ids to launch into (overrides the template's network settings): one per zone
    /// spreads the fleet over zones. Without `capacityType`, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Instance types (overrides the template's). With `capacityType`, EC2 Fleet picks among
    /// every type in every subnet; without it, tried in order when one has no capacity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<String>,
    /// Instead of `instanceTypes`: the types EC2 lists (`DescribeInstanceTypes`) that meet
    /// these requirements, smallest first, e.g. `{vcpus: {min: 4, max: 16}, memoryGiB: {min:
    /// 8}, excludedTypes: [t*]}`. Resolved when the controller starts and again every hour (new
    /// types appear rarely; a few calls an hour), and used like a list of `instanceTypes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_requirements: Option<Box<InstanceRequirements>>,
    /// `spot`, `on-demand` or `spot-with-fallback`. Set: launches go through EC2 Fleet
    /// (`CreateFleet`, type `instant`) over `instanceTypes` × `subnets`, and an offering (type,
    /// zone, capacity type) without capacity is skipped for 3 minutes. Unset: the launch
    /// template's purchase option, `RunInstances`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_type: Option<CapacityType>,
    /// With `capacityType: spot-with-fallback`: how many spot interruptions within how long
    /// switch launches to on-demand (default 3 within 30m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot_fallback: Option<SpotFallback>,
    /// Path of a user-data template with `{{name}}` placeholders (such as
    /// `manifests/user-data.sh.tmpl`), relative to the manifest file's directory. Unset: the
    /// launch template's user data is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// Extra tags for the instances (the `anamo:*` tags are added by the controller).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// A launch template, by name or by id (exactly one of the two).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LaunchTemplateRef {
    /// Launch template name, e.g. `genomics-worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Launch template id, e.g. `lt-0abc1234def567890`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Template version: a number, `$Latest` or `$Default` (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// An existing Auto Scaling group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AutoscalingProvider {
    /// Name of the Auto Scaling group. Its min/max sizes must allow the fleet's range.
    pub group_name: String,
}

/// Spending limit of a fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Hard limit on instances, below `spec.maxInstances` (e.g. an account quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Hourly spending limit in dollars, for the fleet's instances together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hourly_cost: Option<f64>,
    /// What one instance costs per hour; required with `maxHourlyCost`. Once the fleet has
    /// instances with known prices (spot prices, `onDemandPrices`), `maxHourlyCost` counts
    /// those at their own price and only new ones at this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_per_instance_hour: Option<f64>,
    /// Spending limit for the whole run, in dollars: once the fleet's instances have cost this
    /// much (the cost `anamo status` shows), no more are launched and idle ones are stopped;
    /// running tasks finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_cost: Option<f64>,
}

impl BudgetSpec {
    /// The stricter of `maxInstances` and `floor(maxHourlyCost / pricePerInstanceHour)`.
    /// Invalid combinations (cost without a positive price) give no cost limit; validation
    /// reports them.
    pub fn instance_limit(&self) -> Option<u32> {
        let by_cost = match (self.max_hourly_cost, self.price_per_instance_hour) {
            (Some(cost), Some(price)) if price > 0.0 && cost.is_finite() && price.is_finite() => {
                let n = (cost / price).floor();
                Some(if n <= 0.0 {
                    0
                } else if n >= u32::MAX as f64 {
                    u32::MAX
                } else {
                    n as u32
                })
            }
            _ => None,
        };
        match (self.max_instances, by_cost) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Settings of the controller process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ControllerSpec {
    /// Task store URL: `sqlite://PATH` (relative to the working directory) or
    /// `dynamodb://TABLE`.
    pub store: String,
    /// Time between reconciliation passes, e.g. `10s`.
    #[serde(default = "default_interval", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "10s"))]
    pub interval: Duration,
    /// How often the exact progress of every step (its tasks counted by state, its
    /// throughput), the failed-tasks table and the per-sample view are refreshed for the
    /// status page, `/api/status` and the `anamo_tasks*` metrics. The count runs beside the
    /// passes, which only count each backlog as far as its fleet can use it. Each count reads
    /// the steps' counters (on DynamoDB; SQLite counts its table) and what changed since the
    /// previous count for the failed tasks and the per-sample view; every 10 minutes, and when
    /// tasks were imported, deleted or requeued, a step's tasks are read whole (DynamoDB
    /// charges a read per item read).
    #[serde(default = "default_progress_interval", with = "humantime_serde")]
    #[schemars(with = "String", extend("default" = "30s"))]
    pub progress_interval: Duration,
    /// Address of the metrics and health HTTP server, `HOST:PORT`.
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
    /// AWS region for DynamoDB, EC2 and Auto Scaling. Unset: the usual AWS configuration
    /// chain (`AWS_REGION`, profile) decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// On-demand prices in dollars per instance-hour by instance type, e.g.
    /// `{c6i.4xlarge: 0.768}`, for cost figures and budgets in your region. Types not listed
    /// cost the fleet's `budget.pricePerInstanceHour`, else anamo's shipped us-east-1 list
    /// prices. Spot instances cost EC2's current spot price.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub on_demand_prices: BTreeMap<String, f64>,
}

/// Default `slotsPerInstance`.
pub const DEFAULT_SLOTS: u32 = 1;
/// Default `scaleDownDelay`.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(90);
/// Default `bootTimeout`.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// Default `leaseTTL` (defined with the lease, which the store needs too).
pub use crate::model::DEFAULT_LEASE_TTL;

/// The defaults above as command-line options write them (`anamo worker --lease-ttl`, `anamo
/// simulate`'s fleet options); a test holds each equal to its constant.
pub const DEFAULT_SCALE_DOWN_DELAY_ARG: &str = "90s";
pub const DEFAULT_BOOT_TIMEOUT_ARG: &str = "10m";
pub const DEFAULT_LEASE_TTL_ARG: &str = "60s";

/// Default `heartbeat` (the worker's `--heartbeat`) for a lease of `lease_ttl`: a third of it,
/// so that two lease extensions in a row can fail before the lease expires. The manifest, the
/// worker and the simulator all take it from here (`deploy/worker-user-data.sh` mirrors it,
/// and `tests/docs_deploy.rs` holds the two equal).
pub fn default_heartbeat(lease_ttl: Duration) -> Duration {
    lease_ttl / 3
}
/// Default controller `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default controller `progressInterval`.
pub const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(30);
/// Default controller `metricsAddr`.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

fn default_slots() -> u32 {
    DEFAULT_SLOTS
}
fn default_scale_down_delay() -> Duration {
    DEFAULT_SCALE_DOWN_DELAY
}
fn default_boot_timeout() -> Duration {
    DEFAULT_BOOT_TIMEOUT
}
fn default_lease_ttl() -> Duration {
    DEFAULT_LEASE_TTL
}
fn default_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn default_interval() -> Duration {
    DEFAULT_INTERVAL
}
fn default_progress_interval() -> Duration {
    DEFAULT_PROGRESS_INTERVAL
}
fn default_metrics_addr() -> String {
    DEFAULT_METRICS_ADDR.to_string()
}

/// One document of either kind; only used to generate the schema (loading dispatches on
/// `kind` first so that errors can name it).
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(title = "anamo manifest document")]
#[allow(dead_code, clippy::large_enum_variant)]
pub(crate) enum AnyDocument {
    Fleet(FleetDocument),
    Controller(ControllerDocument),
}
