//! DynamoDB store: one table, every task its own item (and partition), found by state through a
//! sharded index (`S#{step}#{state}#{shard}`, [`layout`]). The layout is a stable interface
//! documented in `docs/dynamodb-table.md`; the key formats and item codec are in [`items`].
//!
//! Every state transition is one conditional UpdateItem that rewrites `state` and the index
//! keys together, so the index always reflects the item (eventually: GSI reads are
//! eventually consistent, which is why a claim re-checks `state = pending` in its condition).
//!
//! A claim reads one small page of the step's pending index partition (highest priority, then
//! oldest first) and tries conditional writes on its candidates; it never reads the whole
//! backlog. The candidates a claim did not take are kept for the same claimer's next claims
//! (for [`claims::LEFTOVERS_FOR`], until one of them turns out taken, or until this store makes a task
//! pending), so a claim usually costs one request. Concurrent claimers (once one has lost a
//! race) each start at a random point of the page and go on along it, so they mostly take
//! different stretches of the queue. Counts read every page.
//!
//! The [`TaskStore`] implementation ([`task_store`]) only routes each call to the module of its concern:
//! [`claims`] (claiming and the kept candidates), [`leases`] (heartbeat, complete, release),
//! [`transitions`] (import, sweeps, user actions), [`reads`] (get, list, counts), [`table`]
//! (create and delete the table), [`workers`], [`status`] documents and the [`leader`] lease.

mod batch;
mod candidates;
mod capacity;
mod claims;
mod counters;
mod error;
mod expr;
mod fence;
mod graph;
mod hold;
mod items;
pub(crate) mod layout;
mod leader;
mod lease_expiry;
mod leases;
mod migrate;
mod migrate_index;
mod migrate_plan;
mod pace;
#[cfg(test)]
mod partition_load;
mod polls;
mod reads;
mod schema;
mod status;
mod table;
mod task_store;
mod transitions;
mod workers;

pub use layout::shard_of;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{ReturnConsumedCapacity, ReturnValue, Select};
use aws_sdk_dynamodb::Client;

use self::claims::{Claimer, Contention, Leftovers};
use self::error::{is_condition_failed, map_sdk_err, CountRequests, SdkErr};
use self::expr::Expr;
use self::items::*;
use super::{
    Capacity, Entered, Fence, Leadership, RequestCounter, RequestMix, RequestRecorder, Result,
    StatusDoc, StoreError, TaskStore,
};
use crate::clock::Millis;
use crate::model::{
    Backlog, Claim, ClaimRequest, Completion, ImportReport, LeaseRef, RequeueReport, StepCounts,
    Task, TaskFilter, TaskSpec, TaskState, WorkerInfo,
};

pub(crate) use self::counters::RECOUNT_EVERY;
pub(crate) use self::layout::SCHEMA_VERSION;
pub use self::migrate::{MigrateEvent, MigratePreview, PassStats};

/// Concurrent conditional writes in sweeps (requeue_expired, the graph's promotion) and queries in
/// list.
const SWEEP_CONCURRENCY: usize = 8;
/// Re-reads of a task when a user action races with another change.
const USER_ACTION_TRIES: u32 = 4;

/// The task store on DynamoDB. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    requests: Arc<RequestCounter>,
    mix: Arc<RequestMix>,
    capacity: Arc<Capacity>,
    /// Fenced writes are sent one at a time (see [`fence`]).
    fence_lock: Arc<tokio::sync::Mutex<()>>,
    contention: Arc<Contention>,
    leftovers: Arc<Mutex<HashMap<Claimer, Leftovers>>>,
    /// Bumped whenever the leftovers are forgotten, so that a claim whose query was read
    /// before does not keep what it found.
    leftovers_epoch: Arc<AtomicU64>,
    /// What each claimer took lately, for the size of its claim queries (see [`pace`]).
    paces: Arc<Mutex<HashMap<Claimer, pace::Pace>>>,
    /// The index layout: the table's default shard count and each step's (see [`schema`]).
    shards: Arc<schema::Shards>,
    /// Lease expiry's memory between passes (see [`lease_expiry`]).
    expiry: Arc<lease_expiry::Memory>,
    /// The lease TTL each claimer of this store asked for, recorded on its registration
    /// (see [`lease_expiry`]).
    lease_ttls: Arc<lease_expiry::LeaseTtls>,
    /// When each step's counters were last recounted (see [`counters`]).
    recounted: Arc<counters::Recounted>,
    /// Counter deltas kept to be written together (see [`counters`]).
    unwritten: Arc<counters::Unwritten>,
    /// Which pending and retrying shards claims and `retry_due` query (see [`polls`]).
    polls: Arc<polls::Polls>,
}

/// How a key condition constrains `g2sk`.
#[derive(Debug, Clone)]
enum Sk {
    Any,
    LessThan(String),
    GreaterThan(String),
    AtLeast(String),
    BeginsWith(String),
}

/// A `ProjectionExpression` of these attributes (with name placeholders) and its names.
fn projection(attrs: &[&str]) -> (String, HashMap<String, String>) {
    let mut names = HashMap::new();
    let mut parts = Vec::new();
    for (i, attr) in attrs.iter().enumerate() {
        let placeholder = format!("#p{i}");
        names.insert(placeholder.clone(), attr.to_string());
        parts.push(placeholder);
    }
    (parts.join(", "), names)
}

impl DynamoStore {
    /// A store on `table` using `client` (whose configuration is kept; a request-counting
    /// interceptor is added).
    pub fn new(client: Client, table: &str) -> Self {
        let requests = Arc::new(RequestCounter::default());
        let config = client
            .config()
            .to_builder()
            .interceptor(CountRequests(requests.clone()))
            .build();
        DynamoStore {
            requests,
            ..DynamoStore::fresh(Client::from_conf(config), table)
        }
    }

    /// A store on `table` through `client` as is, with fresh state and request counts.
    fn fresh(client: Client, table: &str) -> Self {
        DynamoStore {
            client,
            table: table.to_string(),
            requests: Arc::default(),
            mix: Arc::default(),
            capacity: Arc::default(),
            fence_lock: Arc::default(),
            contention: Arc::new(Contention::new()),
            leftovers: Arc::default(),
            leftovers_epoch: Arc::default(),
            paces: Arc::default(),
            shards: Arc::default(),
            expiry: Arc::default(),
            lease_ttls: Arc::default(),
            recounted: Arc::default(),
            unwritten: Arc::default(),
            polls: Arc::default(),
        }
    }

    /// A store on the same table and client whose requests count into this one's recorder,
    /// sharing nothing else: what another process's store would be (its own claim
    /// candidates and lanes, counter deltas, contention memory, fence lock). For benchmarks
    /// that run several workers in one process.
    pub fn sibling(&self) -> Self {
        DynamoStore {
            requests: self.requests.clone(),
            mix: self.mix.clone(),
            capacity: self.capacity.clone(),
            ..DynamoStore::fresh(self.client.clone(), &self.table)
        }
    }

    /// The shard count `create_schema` records as the table's default (when it creates the
    /// version item); [`layout::DEFAULT_SHARDS`] unless set.
    pub fn with_shards(self, shards: u32) -> Self {
        self.shards.set_create_default(shards);
        self
    }

    /// A store on `table` with the default AWS configuration (credential chain, `AWS_REGION`,
    /// `AWS_PROFILE`, `AWS_ENDPOINT_URL`; standard retry mode).
    pub async fn from_env(table: &str) -> Self {
        Self::from_env_in(table, None).await
    }

    /// Like [`DynamoStore::from_env`], in `region` when given (else the usual configuration:
    /// `AWS_REGION`, the profile, IMDS).
    pub async fn from_env_in(table: &str, region: Option<&str>) -> Self {
        // Bounded attempts: a hung connection must not stall a heartbeat past its lease.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .operation_attempt_timeout(Duration::from_secs(20))
            .operation_timeout(Duration::from_secs(60))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
        if let Some(r) = region {
            loader = loader.region(aws_config::Region::new(r.to_string()));
        }
        let config = loader.load().await;
        Self::new(Client::new(&config), table)
    }

    /// The counts of the requests this store sends (every HTTP attempt, and what each of its
    /// own calls was for), for benchmarks.
    pub fn recorder(&self) -> RequestRecorder {
        RequestRecorder::new(
            self.requests.clone(),
            self.mix.clone(),
            self.capacity.clone(),
        )
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    fn err<E>(&self, op: &str, e: SdkErr<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        map_sdk_err(op, &self.table, e)
    }

    async fn get_item(&self, op: &str, pk: String) -> Result<Option<Item>> {
        self.get_item_read(op, pk, true).await
    }

    /// [`get_item`](Self::get_item) with an eventually consistent read (half the read units).
    async fn get_item_eventually(&self, op: &str, pk: String) -> Result<Option<Item>> {
        self.get_item_read(op, pk, false).await
    }

    async fn get_item_read(&self, op: &str, pk: String, consistent: bool) -> Result<Option<Item>> {
        self.mix.add(&format!("{op} read"));
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk)))
            .consistent_read(consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.err(op, e))?;
        self.consumed(out.consumed_capacity(), false);
        Ok(out.item)
    }

    /// The index partition keys of `step`'s tasks in `state`, one per shard.
    async fn state_pks(&self, step: &str, state: TaskState) -> Result<Vec<String>> {
        let shards = self.step_shards(step).await?;
        Ok((0..shards)
            .map(|shard| layout::state_shard_pk(step, state, shard))
            .collect())
    }

    async fn get_task_item(&self, op: &str, step: &str, id: &str) -> Result<Option<Item>> {
        self.get_item(op, task_pk(step, id)).await
    }

    /// A conditional UpdateItem. `Ok(None)` when the condition did not hold; otherwise the new
    /// item (when `return_new`) or an empty map.
    async fn update(
        &self,
        op: &str,
        pk: String,
        e: Expr,
        return_new: bool,
    ) -> Result<Option<Item>> {
        self.update_as(op, op, pk, e, return_new).await
    }

    /// [`DynamoStore::update`], counted in the request mix as `kind`.
    async fn update_as(
        &self,
        op: &str,
        kind: &str,
        pk: String,
        e: Expr,
        return_new: bool,
    ) -> Result<Option<Item>> {
        let keys = e.written_keys(&pk);
        let change = e.count_change();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .set_key(Some(key(pk)))
            .set_update_expression(e.update_expression())
            .set_condition_expression(e.condition_expression())
            .set_expression_attribute_names(e.names())
            .set_expression_attribute_values(e.values())
            .return_values(if return_new {
                ReturnValue::AllNew
            } else {
                ReturnValue::None
            })
            .send()
            .await;
        match result {
            Ok(out) => {
                self.mix.add(&format!("{kind} write"));
                self.consumed(out.consumed_capacity(), true);
                self.wrote(keys.iter().map(String::as_str));
                if let Some(change) = change {
                    self.bump(op, &change).await?;
                }
                Ok(Some(out.attributes.unwrap_or_default()))
            }
            Err(e) if is_condition_failed(&e) => {
                self.mix.add(&format!("{kind} write lost"));
                Ok(None)
            }
            Err(e) => {
                self.mix.add(&format!("{kind} write failed"));
                Err(self.err(op, e))
            }
        }
    }

    /// One page of a query of the index.
    #[allow(clippy::too_many_arguments)]
    async fn query_page(
        &self,
        op: &str,
        gsi_pk: &str,
        sk: &Sk,
        projection_attrs: Option<&[&str]>,
        count_only: bool,
        limit: Option<i32>,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, u64, Option<Item>)> {
        let mut names = HashMap::from([("#gpk".to_string(), INDEX_PK.to_string())]);
        let mut values = HashMap::from([(":gpk".to_string(), s(gsi_pk))]);
        let mut condition = "#gpk = :gpk".to_string();
        match sk {
            Sk::Any => {}
            Sk::LessThan(v) | Sk::GreaterThan(v) | Sk::AtLeast(v) | Sk::BeginsWith(v) => {
                names.insert("#gsk".to_string(), INDEX_SK.to_string());
                values.insert(":gsk".to_string(), s(v.as_str()));
                condition.push_str(match sk {
                    Sk::LessThan(_) => " AND #gsk < :gsk",
                    Sk::GreaterThan(_) => " AND #gsk > :gsk",
                    Sk::AtLeast(_) => " AND #gsk >= :gsk",
                    _ => " AND begins_with(#gsk, :gsk)",
                });
            }
        }
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(INDEX)
            .key_condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .set_limit(limit)
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        if count_only {
            request = request.select(Select::Count);
        } else if let Some(attrs) = projection_attrs {
            let (expr, more) = projection(attrs);
            names.extend(more);
            request = request
                .select(Select::SpecificAttributes)
                .projection_expression(expr);
        }
        self.mix.add(&format!("{op} query"));
        let out = request
            .set_expression_attribute_names(Some(names))
            .send()
            .await
            .map_err(|e| self.err(op, e))?;
        self.consumed(out.consumed_capacity(), false);
        Ok((
            out.items.unwrap_or_default(),
            out.count.max(0) as u64,
            out.last_evaluated_key.filter(|k| !k.is_empty()),
        ))
    }

    /// Every item of a query of the index (all pages).
    async fn query_all(
        &self,
        op: &str,
        gsi_pk: &str,
        sk: Sk,
        projection_attrs: Option<&[&str]>,
    ) -> Result<Vec<Item>> {
        let mut all = Vec::new();
        let mut start = None;
        loop {
            let (items, _, next) = self
                .query_page(op, gsi_pk, &sk, projection_attrs, false, None, start)
                .await?;
            all.extend(items);
            match next {
                Some(k) => start = Some(k),
                None => return Ok(all),
            }
        }
    }

    /// The items of an index partition within `sk`: all of them, or up to `limit`. A Query's
    /// `Limit` bounds the items it reads, so a limited count costs at most `limit` items
    /// however long the partition is.
    async fn count(&self, op: &str, gsi_pk: &str, sk: Sk, limit: Option<u64>) -> Result<u64> {
        let mut total = 0;
        let mut start = None;
        loop {
            let page_limit = match limit {
                Some(l) if total >= l => break,
                Some(l) => Some(i32::try_from(l - total).unwrap_or(i32::MAX)),
                None => None,
            };
            let (_, count, next) = self
                .query_page(op, gsi_pk, &sk, None, true, page_limit, start)
                .await?;
            total += count;
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(limit.map_or(total, |l| total.min(l)))
    }
}
