//! DynamoDB store: one table, one GSI, every task its own item (and partition). The layout is a
//! stable interface documented in `docs/dynamodb-table.md`; the key formats and item codec are
//! in [`items`].
//!
//! Every state transition is one conditional UpdateItem that rewrites `state`, `gsi1pk` and
//! `gsi1sk` together, so the index always reflects the item (eventually: GSI reads are
//! eventually consistent, which is why a claim re-checks `state = pending` in its condition).
//!
//! A claim reads one small page of the step's pending index partition (highest priority, then
//! oldest first) and tries conditional writes on its candidates; it never reads the whole
//! backlog. The candidates a claim did not take are kept for the same claimer's next claims
//! (for [`LEFTOVERS_FOR`], until one of them turns out taken, or until this store makes a task
//! pending), so a claim usually costs one request. Concurrent claimers (once one has lost a
//! race) each start at a random point of the page and go on along it, so they mostly take
//! different stretches of the queue. Counts read every page.

mod batch;
mod error;
mod items;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, IndexStatus,
    KeySchemaElement, KeyType, Projection, ProjectionType, ReturnValue, ScalarAttributeType,
    Select, TableStatus,
};
use aws_sdk_dynamodb::Client;
use futures::{StreamExt, TryStreamExt};
use rand::Rng;

use self::error::{
    has_code, is_condition_failed, map_sdk_err, CountRequests, SdkErr, IN_USE, NOT_FOUND,
};
use self::items::*;
use super::{
    new_token, Leadership, RequestCounter, RequestMix, Result, StatusDoc, StoreError, TaskStore,
};
use crate::clock::Millis;
use crate::model::{
    Backlog, Claim, ClaimRequest, Completion, ImportReport, Outcome, PromoteReport, RequeueReport,
    StepCounts, Task, TaskFilter, TaskSpec, TaskState, WorkerInfo, DEFAULT_MAX_ATTEMPTS,
};

/// Pending candidates read per claim query.
const CLAIM_PAGE: i32 = 16;
/// Candidates read per claim while this store is losing races: a wider page spreads concurrent
/// claimers over more tasks, so fewer conditional writes fail (one read either way).
const CONTENDED_CLAIM_PAGE: i32 = 64;
/// Claim queries before giving up with a retryable error (each one after a page of lost
/// races; only reached under heavy contention).
const CLAIM_ROUNDS: u32 = 20;
/// Most tasks one `claim_batch` call takes (a worker asks for its free slots).
const MAX_CLAIM_BATCH: usize = 32;
/// Concurrent conditional writes in sweeps (requeue_expired, promote_waiting) and queries in
/// list.
const SWEEP_CONCURRENCY: usize = 8;
/// How long after a lost claim race this store keeps spreading its claims over the page.
const CONTENTION_MEMORY: Duration = Duration::from_secs(10);
/// How long a claimer may go on taking the candidates its last claim query found and left,
/// instead of querying again. It bounds how long a task that became pending meanwhile through
/// another client (however high its priority) can wait behind them.
const LEFTOVERS_FOR: Duration = Duration::from_millis(500);
/// How long create_schema / delete_schema wait for the table to settle.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(300);
/// Re-reads of a task when a user action races with another change.
const USER_ACTION_TRIES: u32 = 4;

/// The task store on DynamoDB. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    requests: Arc<RequestCounter>,
    mix: Arc<RequestMix>,
    contention: Arc<Contention>,
    leftovers: Arc<Mutex<HashMap<Claimer, Leftovers>>>,
    /// Bumped whenever the leftovers are forgotten, so that a claim whose query was read
    /// before does not keep what it found.
    leftovers_epoch: Arc<AtomicU64>,
}

/// Who claims: step and owner (a worker's id). Each claimer keeps its own leftovers, as it
/// would in a process of its own.
type Claimer = (String, String);

/// Candidates of a claimer's last claim query that it did not take, in the order it would
/// have taken them.
#[derive(Debug)]
struct Leftovers {
    read_at: Instant,
    ids: VecDeque<String>,
}

/// When this store last lost a claim race (ms since `since`, plus one; 0 = never), and how
/// many it lost.
#[derive(Debug)]
struct Contention {
    since: Instant,
    lost_at: AtomicU64,
    lost: AtomicU64,
}

impl Contention {
    fn new() -> Self {
        Contention {
            since: Instant::now(),
            lost_at: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.since.elapsed().as_millis().min(u64::MAX as u128 - 1) as u64 + 1
    }

    fn lost_race(&self) {
        self.lost_at.store(self.elapsed_ms(), Ordering::Relaxed);
        self.lost.fetch_add(1, Ordering::Relaxed);
    }

    fn recent(&self) -> bool {
        let lost_at = self.lost_at.load(Ordering::Relaxed);
        lost_at != 0
            && self.elapsed_ms().saturating_sub(lost_at) < CONTENTION_MEMORY.as_millis() as u64
    }
}

/// How a key condition constrains `gsi1sk`.
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
            client: Client::from_conf(config),
            table: table.to_string(),
            requests,
            mix: Arc::default(),
            contention: Arc::new(Contention::new()),
            leftovers: Arc::default(),
            leftovers_epoch: Arc::default(),
        }
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
        self.mix.add(&format!("{op} read"));
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(pk)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.err(op, e))?;
        Ok(out.item)
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
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

    /// One page of a gsi1 query.
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
        let mut names = HashMap::from([("#gpk".to_string(), GSI1PK.to_string())]);
        let mut values = HashMap::from([(":gpk".to_string(), s(gsi_pk))]);
        let mut condition = "#gpk = :gpk".to_string();
        match sk {
            Sk::Any => {}
            Sk::LessThan(v) | Sk::GreaterThan(v) | Sk::AtLeast(v) | Sk::BeginsWith(v) => {
                names.insert("#gsk".to_string(), GSI1SK.to_string());
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
            .index_name(GSI1)
            .key_condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .set_limit(limit)
            .set_exclusive_start_key(start);
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
        Ok((
            out.items.unwrap_or_default(),
            out.count.max(0) as u64,
            out.last_evaluated_key.filter(|k| !k.is_empty()),
        ))
    }

    /// Every item of a gsi1 query (all pages).
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

    /// The items of a gsi1 partition within `sk`: all of them, or up to `limit`. A Query's
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

    /// When the longest-waiting pending task became pending. The pending index is ordered by
    /// priority, then by that time, so each priority group's first entry is its oldest: one
    /// one-item Query per distinct priority instead of reading the whole backlog.
    async fn oldest_pending(&self, step: &str) -> Result<Option<Millis>> {
        const OP: &str = "oldest pending";
        const MAX_PRIORITY_GROUPS: usize = 64;
        let gsi_pk = state_pk(step, TaskState::Pending);
        let mut oldest = None::<Millis>;
        let mut after: Option<String> = None;
        for _ in 0..MAX_PRIORITY_GROUPS {
            let sk = match after.take() {
                Some(a) => Sk::GreaterThan(a),
                None => Sk::Any,
            };
            let (page, _, _) = self
                .query_page(
                    OP,
                    &gsi_pk,
                    &sk,
                    Some(&[PK, GSI1SK, UPDATED_AT]),
                    false,
                    Some(1),
                    None,
                )
                .await?;
            let Some(item) = page.first() else { break };
            let r = Reader::new(OP, item);
            if let Some(t) = r.opt_n::<Millis>(UPDATED_AT)? {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
            // Skip the rest of this priority group: `$` sorts right after the `#` separator.
            let group_key = r.s(GSI1SK)?;
            let group = group_key.split('#').next().unwrap_or_default();
            after = Some(format!("{group}$"));
        }
        Ok(oldest)
    }

    /// The tasks of one step in one state.
    async fn tasks_in(&self, op: &str, step: &str, state: TaskState) -> Result<Vec<Task>> {
        let items = self
            .query_all(op, &state_pk(step, state), Sk::Any, None)
            .await?;
        items.iter().map(|i| Reader::new(op, i).task()).collect()
    }

    /// One conditional claim write; `kept`: the candidate was kept from an earlier query.
    async fn try_claim(
        &self,
        req: &ClaimRequest,
        id: &str,
        kept: bool,
        now: Millis,
    ) -> Result<Option<Claim>> {
        const OP: &str = "claim";
        let expires_at = now + req.ttl_ms;
        let token = new_token();
        let mut e = Expr::new()
            .transition(&req.step, id, TaskState::Running, 0, expires_at, now)
            .set(LEASE_OWNER, s(req.owner.as_str()))
            .set(LEASE_TOKEN, s(token.as_str()))
            .set(LEASE_EXPIRES_AT, n(expires_at));
        let (attempts, zero, one) = (e.name(ATTEMPTS), e.value(n(0)), e.value(n(1)));
        e = e
            .set_raw(format!(
                "{attempts} = if_not_exists({attempts}, {zero}) + {one}"
            ))
            .cond_eq(STATE, s(TaskState::Pending.as_str()));
        let kind = if kept { "claim kept" } else { OP };
        match self
            .update_as(OP, kind, task_pk(&req.step, id), e, true)
            .await?
        {
            None => Ok(None),
            Some(item) => Ok(Some(Claim {
                task: Reader::new(OP, &item).task()?,
                token,
                expires_at,
            })),
        }
    }

    /// Sends one conditional claim write per id, together; the tasks won are added to
    /// `claims`. Returns how many were lost to another claimer, and the error of a write that
    /// failed otherwise (the others' claims stand).
    async fn claim_wave(
        &self,
        req: &ClaimRequest,
        ids: Vec<String>,
        kept: bool,
        now: Millis,
        claims: &mut Vec<Claim>,
    ) -> (usize, Option<StoreError>) {
        let tries = ids.iter().map(|id| self.try_claim(req, id, kept, now));
        let (mut lost, mut failure) = (0, None);
        for tried in futures::future::join_all(tries).await {
            match tried {
                Ok(Some(claim)) => claims.push(claim),
                Ok(None) => {
                    lost += 1;
                    self.contention.lost_race();
                }
                Err(e) => failure = Some(e),
            }
        }
        (lost, failure)
    }

    fn leftovers(&self) -> std::sync::MutexGuard<'_, HashMap<Claimer, Leftovers>> {
        self.leftovers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Up to `n` of the claimer's leftovers while they are fresh (the rest stay kept).
    fn take_leftovers(&self, claimer: &Claimer, n: usize) -> Vec<String> {
        let mut all = self.leftovers();
        let Some(kept) = all.get_mut(claimer) else {
            return Vec::new();
        };
        if kept.read_at.elapsed() >= LEFTOVERS_FOR {
            all.remove(claimer);
            return Vec::new();
        }
        let taken = kept.ids.drain(..n.min(kept.ids.len())).collect();
        if kept.ids.is_empty() {
            all.remove(claimer);
        }
        taken
    }

    /// Keeps what a claim query found and the claim did not take, for the claimer's next
    /// claims (replacing what it kept before), unless the leftovers were forgotten since
    /// `epoch` (read before the query).
    fn keep_leftovers(
        &self,
        claimer: Claimer,
        read_at: Instant,
        epoch: u64,
        ids: VecDeque<String>,
    ) {
        let mut all = self.leftovers();
        all.retain(|_, kept| kept.read_at.elapsed() < LEFTOVERS_FOR);
        if ids.is_empty() || self.leftovers_epoch.load(Ordering::SeqCst) != epoch {
            all.remove(&claimer);
        } else {
            all.insert(claimer, Leftovers { read_at, ids });
        }
    }

    /// Forgets every claimer's leftovers: a task became pending through this store, and the
    /// next claims must see it (it may come before them).
    fn forget_leftovers(&self) {
        let mut all = self.leftovers();
        self.leftovers_epoch.fetch_add(1, Ordering::SeqCst);
        all.clear();
    }

    /// Reads a running task and checks the caller's token; `LeaseLost` otherwise.
    async fn leased_item(&self, op: &str, step: &str, id: &str, token: &str) -> Result<Item> {
        let item = self
            .get_task_item(op, step, id)
            .await?
            .ok_or_else(|| StoreError::lease_lost(step, id))?;
        let r = Reader::new(op, &item);
        if r.state()? != TaskState::Running || r.opt_s(LEASE_TOKEN)?.as_deref() != Some(token) {
            return Err(StoreError::lease_lost(step, id));
        }
        Ok(item)
    }

    /// A user action (requeue, cancel): read the task, let `decide` pick the update (or finish
    /// early), write it conditionally on the task being unchanged since the read; retry a few
    /// times when something else changed it in between.
    async fn user_action<F>(&self, op: &str, step: &str, id: &str, decide: F) -> Result<()>
    where
        F: Fn(&Task) -> Result<Option<Expr>>,
    {
        for _ in 0..USER_ACTION_TRIES {
            let item = self
                .get_task_item(op, step, id)
                .await?
                .ok_or_else(|| StoreError::not_found(step, id))?;
            let task = Reader::new(op, &item).task()?;
            let Some(mut e) = decide(&task)? else {
                return Ok(());
            };
            e = e.cond_eq(STATE, s(task.state.as_str()));
            if item.contains_key(UPDATED_AT) {
                e = e.cond_eq(UPDATED_AT, n(task.updated_at));
            }
            e = match task.lease.as_ref().map(|l| l.token.as_str()) {
                Some(token) => e.cond_eq(LEASE_TOKEN, s(token)),
                None => {
                    let mut e = e;
                    let name = e.name(LEASE_TOKEN);
                    e.cond(format!("attribute_not_exists({name})"))
                }
            };
            if self
                .update(op, task_pk(step, id), e, false)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(StoreError::unavailable(
            op,
            format!("task {step}/{id} kept changing concurrently; try again"),
        ))
    }

    async fn wait_for_table(&self, deadline: Instant) -> Result<()> {
        const OP: &str = "create table";
        loop {
            let described = self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await;
            match described {
                Ok(out) => {
                    let table = out.table.ok_or_else(|| {
                        StoreError::backend(OP, "DescribeTable returned no table description")
                    })?;
                    let gsi = table
                        .global_secondary_indexes()
                        .iter()
                        .find(|i| i.index_name() == Some(GSI1));
                    let table_active = table.table_status() == Some(&TableStatus::Active);
                    match gsi {
                        None if table_active => {
                            return Err(StoreError::backend(
                                OP,
                                format!(
                                    "table `{}` exists but has no index `{GSI1}`: it is not an \
                                     anamo table (see docs/dynamodb-table.md)",
                                    self.table
                                ),
                            ))
                        }
                        Some(i)
                            if table_active && i.index_status() == Some(&IndexStatus::Active) =>
                        {
                            return Ok(())
                        }
                        _ => {}
                    }
                }
                // Right after CreateTable the table may not be visible yet.
                Err(e) if has_code(&e, NOT_FOUND) => {}
                Err(e) => return Err(self.err(OP, e)),
            }
            if Instant::now() >= deadline {
                return Err(StoreError::unavailable(
                    OP,
                    format!(
                        "table `{}` or its index `{GSI1}` is not ACTIVE after {} s",
                        self.table,
                        SCHEMA_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

fn build_err(op: &str) -> impl Fn(aws_sdk_dynamodb::error::BuildError) -> StoreError + '_ {
    move |e| StoreError::backend(op, e)
}

/// Orders a page of pending candidates (in index order: highest priority, then oldest, then
/// id) for claiming. Priority groups stay in order; within each group:
///
/// * uncontended, index order, so a lone claimer takes tasks in exactly the order SQLite
///   does (the conformance suite relies on it), also from its leftovers;
/// * once this store has recently lost a claim race, each group is rotated to start at a
///   random entry, so concurrent claimers spread over the page instead of all racing for the
///   head, and each goes on along a stretch of its own (its leftovers) until it runs into
///   tasks another one took.
fn order_candidates(page: &[Item], contended: bool) -> Vec<VecDeque<String>> {
    let mut groups: Vec<(&str, Vec<String>)> = Vec::new();
    for item in page {
        let Some(AttributeValue::S(sk)) = item.get(GSI1SK) else {
            continue; // not a well-formed index entry
        };
        // `id` is also the last part of a pending task's sort key (ids contain no `#`).
        let id = match item.get(ID) {
            Some(AttributeValue::S(id)) => id.as_str(),
            _ => match sk.rsplit('#').next() {
                Some(id) if sk.matches('#').count() == 2 => id,
                _ => continue,
            },
        };
        let group = sk.split('#').next().unwrap_or_default();
        match groups.last_mut() {
            Some((g, ids)) if *g == group => ids.push(id.to_string()),
            _ => groups.push((group, vec![id.to_string()])),
        }
    }
    let mut rng = rand::rng();
    groups
        .into_iter()
        .map(|(_, ids)| {
            let mut ids = VecDeque::from(ids);
            if contended {
                ids.rotate_left(rng.random_range(0..ids.len()));
            }
            ids
        })
        .collect()
}

/// After a claim write failed for another reason than a lost race: hands over what the call
/// took (its leases are held); the next call meets the error again if it lasts.
fn taken_or(claims: Vec<Claim>, e: StoreError) -> Result<Vec<Claim>> {
    if claims.is_empty() {
        Err(e)
    } else {
        Ok(claims)
    }
}

/// A page's candidates in claiming order, by priority group (see [`order_candidates`]).
struct Candidates(Vec<VecDeque<String>>);

impl Candidates {
    fn new(mut groups: Vec<VecDeque<String>>) -> Self {
        groups.retain(|g| !g.is_empty());
        groups.reverse(); // the best group last, where it is taken from
        Candidates(groups)
    }

    /// The next `n` candidates.
    fn take(&mut self, n: usize) -> Vec<String> {
        let mut taken = Vec::with_capacity(n);
        while taken.len() < n {
            let Some(group) = self.0.last_mut() else {
                break;
            };
            match group.pop_front() {
                Some(id) => taken.push(id),
                None => {
                    self.0.pop();
                }
            }
        }
        taken
    }

    /// Goes on from a random candidate of the current priority group (the stretch just tried
    /// is being taken by someone else).
    fn jump(&mut self) {
        if let Some(group) = self.0.last_mut() {
            if !group.is_empty() {
                let at = rand::rng().random_range(0..group.len());
                group.rotate_left(at);
            }
        }
    }

    /// What is left, in order.
    fn rest(self) -> VecDeque<String> {
        self.0.into_iter().rev().flatten().collect()
    }
}

#[async_trait]
impl TaskStore for DynamoStore {
    async fn create_schema(&self) -> Result<()> {
        const OP: &str = "create table";
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(build_err(OP))
        };
        let key_el = |name: &str, kind: KeyType| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
                .map_err(build_err(OP))
        };
        let gsi = GlobalSecondaryIndex::builder()
            .index_name(GSI1)
            .key_schema(key_el(GSI1PK, KeyType::Hash)?)
            .key_schema(key_el(GSI1SK, KeyType::Range)?)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            )
            .build()
            .map_err(build_err(OP))?;
        let created = self
            .client
            .create_table()
            .table_name(&self.table)
            .attribute_definitions(attr(PK)?)
            .attribute_definitions(attr(GSI1PK)?)
            .attribute_definitions(attr(GSI1SK)?)
            .key_schema(key_el(PK, KeyType::Hash)?)
            .global_secondary_indexes(gsi)
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if has_code(&e, IN_USE) => {}
            Err(e) => return Err(self.err(OP, e)),
        }
        self.wait_for_table(Instant::now() + SCHEMA_TIMEOUT).await
    }

    async fn delete_schema(&self) -> Result<()> {
        const OP: &str = "delete table";
        match self
            .client
            .delete_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(_) => {}
            Err(e) if has_code(&e, NOT_FOUND) => return Ok(()),
            // Still being created or deleted: wait below, then retry once.
            Err(e) if has_code(&e, IN_USE) => {}
            Err(e) => return Err(self.err(OP, e)),
        }
        let deadline = Instant::now() + SCHEMA_TIMEOUT;
        loop {
            match self
                .client
                .describe_table()
                .table_name(&self.table)
                .send()
                .await
            {
                Err(e) if has_code(&e, NOT_FOUND) => return Ok(()),
                Err(e) => return Err(self.err(OP, e)),
                Ok(out) => {
                    let status = out.table.and_then(|t| t.table_status);
                    if status == Some(TableStatus::Active) {
                        // Our first DeleteTable hit a table still being created.
                        if let Err(e) = self
                            .client
                            .delete_table()
                            .table_name(&self.table)
                            .send()
                            .await
                        {
                            if has_code(&e, NOT_FOUND) {
                                return Ok(());
                            }
                            return Err(self.err(OP, e));
                        }
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(StoreError::unavailable(
                    OP,
                    format!(
                        "table `{}` still exists after {} s",
                        self.table,
                        SCHEMA_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn import(&self, tasks: &[TaskSpec], now: Millis) -> Result<ImportReport> {
        const OP: &str = "import";
        // The first occurrence of each key in the input; later ones compare against it.
        let mut first: HashMap<String, usize> = HashMap::new();
        let mut keys = Vec::new();
        for (i, spec) in tasks.iter().enumerate() {
            let pk = task_pk(&spec.step, &spec.id);
            if !first.contains_key(&pk) {
                first.insert(pk.clone(), i);
                keys.push(key(pk));
            }
        }
        let existing: HashMap<String, Item> = self
            .batch_get(OP, keys, None)
            .await?
            .into_iter()
            .filter_map(|item| match item.get(PK) {
                Some(AttributeValue::S(pk)) => Some((pk.clone(), item)),
                _ => None,
            })
            .collect();

        let mut report = ImportReport::default();
        let mut new_items = Vec::new();
        let mut steps: Vec<&str> = Vec::new();
        for (i, spec) in tasks.iter().enumerate() {
            let pk = task_pk(&spec.step, &spec.id);
            if !steps.contains(&spec.step.as_str()) {
                steps.push(&spec.step);
            }
            // Compare with what is stored, or with the first occurrence earlier in this input.
            let same = match existing.get(&pk) {
                // An unreadable stored task counts as different.
                Some(item) => Some(Reader::new(OP, item).spec().is_ok_and(|old| &old == spec)),
                None => match first.get(&pk) {
                    Some(&j) if j != i => Some(tasks.get(j) == Some(spec)),
                    _ => None,
                },
            };
            match same {
                Some(true) => report.unchanged += 1,
                Some(false) => report
                    .conflicting
                    .push(format!("{}/{}", spec.step, spec.id)),
                None => {
                    new_items.push(new_task_item(spec, now));
                    report.inserted += 1;
                }
            }
        }
        // The step registry first, so a half-done import still lists its tasks.
        let step_items = steps.iter().map(|step| step_item(step)).collect();
        self.batch_put(OP, step_items).await?;
        // Plain puts: a task created by a concurrent import of the same key between our read
        // and this write is overwritten with an equivalent fresh item.
        self.batch_put(OP, new_items).await?;
        self.forget_leftovers();
        Ok(report)
    }

    async fn claim_batch(&self, req: &ClaimRequest, max: usize, now: Millis) -> Result<Vec<Claim>> {
        const OP: &str = "claim";
        let want = max.clamp(1, MAX_CLAIM_BATCH);
        let claimer: Claimer = (req.step.clone(), req.owner.clone());
        let mut claims = Vec::with_capacity(want);
        // First what this claimer's last query found and left, while fresh: no query at all,
        // unless another claimer took one of them meanwhile (then it is working along the
        // same stretch, so the rest is read afresh).
        let kept = self.take_leftovers(&claimer, want);
        if !kept.is_empty() {
            let (lost, failure) = self.claim_wave(req, kept, true, now, &mut claims).await;
            if lost > 0 {
                self.leftovers().remove(&claimer);
            }
            if let Some(e) = failure {
                return taken_or(claims, e);
            }
            if claims.len() >= want {
                return Ok(claims);
            }
        }
        let pending = state_pk(&req.step, TaskState::Pending);
        let mut start: Option<Item> = None;
        for round in 0..CLAIM_ROUNDS {
            let from_head = start.is_none();
            let contended = self.contention.recent();
            let page_size = if contended {
                CONTENDED_CLAIM_PAGE
            } else {
                CLAIM_PAGE
            };
            let read_at = Instant::now();
            let epoch = self.leftovers_epoch.load(Ordering::SeqCst);
            let (page, _, next) = self
                .query_page(
                    OP,
                    &pending,
                    &Sk::Any,
                    Some(&[PK, ID, GSI1SK]),
                    false,
                    // Room for the whole batch and for losing some races on the way.
                    Some(page_size.max(2 * want as i32)),
                    start.take(),
                )
                .await?;
            if page.is_empty() {
                if from_head {
                    return Ok(claims);
                }
                continue; // ran off the end after lost races: start over from the head
            }
            // The batch's conditional writes go out together; candidates lost to another
            // worker are replaced by the next ones of the page.
            let mut candidates = Candidates::new(order_candidates(&page, contended));
            let mut lost_here = 0;
            while claims.len() < want {
                let wave = candidates.take(want - claims.len());
                if wave.is_empty() {
                    break;
                }
                let (lost, failure) = self.claim_wave(req, wave, false, now, &mut claims).await;
                if let Some(e) = failure {
                    return taken_or(claims, e);
                }
                if lost > 0 {
                    lost_here += lost;
                    // Someone is taking the tasks right after the one lost: go on elsewhere.
                    candidates.jump();
                }
            }
            if !claims.is_empty() {
                // The rest of a page read from the head is the claimer's next candidates
                // (not after lost races: others are taking from it too).
                if from_head && lost_here == 0 {
                    self.keep_leftovers(claimer, read_at, epoch, candidates.rest());
                }
                return Ok(claims);
            }
            // Every candidate was taken (or the index was stale): look further down the queue,
            // wrapping to the head at its end; back off a little under sustained contention.
            start = next;
            if round >= 2 {
                batch::backoff(round.min(6) - 2).await;
            }
        }
        Err(StoreError::unavailable(
            OP,
            format!(
                "lost the race for every pending task of step `{}` in {CLAIM_ROUNDS} rounds",
                req.step
            ),
        ))
    }

    async fn heartbeat(
        &self,
        step: &str,
        id: &str,
        token: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Millis> {
        const OP: &str = "heartbeat";
        let expires_at = now + ttl_ms;
        let e = Expr::new()
            .set(LEASE_EXPIRES_AT, n(expires_at))
            .set(UPDATED_AT, n(now))
            .set(
                GSI1SK,
                s(task_sk(TaskState::Running, 0, now, expires_at, id)),
            )
            .cond_eq(STATE, s(TaskState::Running.as_str()))
            .cond_eq(LEASE_TOKEN, s(token));
        match self.update(OP, task_pk(step, id), e, false).await? {
            Some(_) => Ok(expires_at),
            None => Err(StoreError::lease_lost(step, id)),
        }
    }

    async fn complete(
        &self,
        step: &str,
        id: &str,
        token: &str,
        completion: &Completion,
        now: Millis,
    ) -> Result<TaskState> {
        const OP: &str = "complete";
        let result = serde_json::to_string(&completion.result)
            .map_err(|e| StoreError::backend(OP, format!("cannot encode the result: {e}")))?;
        let (target, priority, reason) = match completion.outcome {
            Outcome::Succeeded => (TaskState::Succeeded, 0, None),
            Outcome::FailedPermanently => (TaskState::Failed, 0, completion.result.error.clone()),
            Outcome::Failed => {
                // Whether the task is retried depends on its attempts: read them (the token
                // condition on the write below makes the read-then-write safe).
                let item = self.leased_item(OP, step, id, token).await?;
                let r = Reader::new(OP, &item);
                let attempts: u32 = r.opt_n(ATTEMPTS)?.unwrap_or(0);
                let max: u32 = r.opt_n(MAX_ATTEMPTS)?.unwrap_or(DEFAULT_MAX_ATTEMPTS);
                let priority: i32 = r.opt_n(PRIORITY)?.unwrap_or(0);
                let target = if attempts >= max {
                    TaskState::Failed
                } else {
                    TaskState::Pending
                };
                (target, priority, completion.result.error.clone())
            }
        };
        let e = Expr::new()
            .transition(step, id, target, priority, 0, now)
            .remove_lease()
            .set(RESULT, s(result))
            .set_opt(REASON, reason.map(s))
            .cond_eq(STATE, s(TaskState::Running.as_str()))
            .cond_eq(LEASE_TOKEN, s(token));
        match self.update(OP, task_pk(step, id), e, false).await? {
            Some(_) => {
                if target == TaskState::Pending {
                    self.forget_leftovers();
                }
                Ok(target)
            }
            None => Err(StoreError::lease_lost(step, id)),
        }
    }

    async fn release(&self, step: &str, id: &str, token: &str, now: Millis) -> Result<()> {
        const OP: &str = "release";
        let item = self.leased_item(OP, step, id, token).await?;
        let r = Reader::new(OP, &item);
        let attempts: u32 = r.opt_n(ATTEMPTS)?.unwrap_or(0);
        let priority: i32 = r.opt_n(PRIORITY)?.unwrap_or(0);
        let e = Expr::new()
            .transition(step, id, TaskState::Pending, priority, 0, now)
            .remove_lease()
            .set(ATTEMPTS, n(attempts.saturating_sub(1)))
            .set(REASON, s("handed back by a draining worker"))
            .cond_eq(STATE, s(TaskState::Running.as_str()))
            .cond_eq(LEASE_TOKEN, s(token));
        match self.update(OP, task_pk(step, id), e, false).await? {
            Some(_) => {
                self.forget_leftovers();
                Ok(())
            }
            None => Err(StoreError::lease_lost(step, id)),
        }
    }

    async fn requeue_expired(&self, step: &str, now: Millis) -> Result<RequeueReport> {
        const OP: &str = "requeue expired";
        let expired = self
            .query_all(
                OP,
                &state_pk(step, TaskState::Running),
                Sk::LessThan(ts13(now)),
                None,
            )
            .await?;
        let outcomes: Vec<Option<(String, TaskState)>> = futures::stream::iter(expired)
            .map(|item| async move {
                let r = Reader::new(OP, &item);
                let id = r.s(ID)?;
                let attempts: u32 = r.opt_n(ATTEMPTS)?.unwrap_or(0);
                let max: u32 = r.opt_n(MAX_ATTEMPTS)?.unwrap_or(DEFAULT_MAX_ATTEMPTS);
                let priority: i32 = r.opt_n(PRIORITY)?.unwrap_or(0);
                let (target, reason) = if attempts >= max {
                    (
                        TaskState::Failed,
                        format!("lease expired on attempt {attempts} of {max}"),
                    )
                } else {
                    (TaskState::Pending, "lease expired".to_string())
                };
                let mut e = Expr::new()
                    .transition(step, &id, target, priority, 0, now)
                    .remove_lease()
                    .set(REASON, s(reason))
                    .cond_eq(STATE, s(TaskState::Running.as_str()));
                let (token, expires, now_v) = (
                    e.name(LEASE_TOKEN),
                    e.name(LEASE_EXPIRES_AT),
                    e.value(n(now)),
                );
                e = match r.opt_s(LEASE_TOKEN)? {
                    Some(seen) => {
                        let seen = e.value(s(seen));
                        e.cond(format!("{token} = {seen}"))
                    }
                    None => e.cond(format!("attribute_not_exists({token})")),
                };
                e = e.cond(format!(
                    "attribute_not_exists({expires}) OR {expires} < {now_v}"
                ));
                // A lost race (renewed, completed or taken over meanwhile) is skipped.
                Ok(self
                    .update(OP, task_pk(step, &id), e, false)
                    .await?
                    .map(|_| (id, target)))
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .try_collect()
            .await?;
        let mut report = RequeueReport::default();
        for (id, state) in outcomes.into_iter().flatten() {
            if state == TaskState::Failed {
                report.failed.push(id);
            } else {
                report.requeued.push(id);
            }
        }
        report.requeued.sort();
        report.failed.sort();
        if !report.requeued.is_empty() {
            self.forget_leftovers();
        }
        Ok(report)
    }

    async fn promote_waiting(&self, step: &str, now: Millis) -> Result<PromoteReport> {
        const OP: &str = "promote waiting";
        let waiting = self
            .query_all(OP, &state_pk(step, TaskState::Waiting), Sk::Any, None)
            .await?;
        let tasks: Vec<Task> = waiting
            .iter()
            .map(|i| Reader::new(OP, i).task())
            .collect::<Result<_>>()?;
        let mut dep_keys = HashSet::new();
        for t in &tasks {
            for dep in &t.spec.depends_on {
                dep_keys.insert(task_pk(dep, t.id()));
            }
        }
        let dep_states: HashMap<String, String> = self
            .batch_get(
                OP,
                dep_keys.into_iter().map(key).collect(),
                Some(&[PK, STATE]),
            )
            .await?
            .iter()
            .filter_map(|item| {
                let r = Reader::new(OP, item);
                Some((r.opt_s(PK).ok()??, r.opt_s(STATE).ok()??))
            })
            .collect();

        let mut updates = Vec::new();
        for t in &tasks {
            let mut all_succeeded = true;
            let mut failed_dep = None;
            for dep in &t.spec.depends_on {
                let state = dep_states
                    .get(&task_pk(dep, t.id()))
                    .and_then(|s| s.parse::<TaskState>().ok());
                match state {
                    Some(TaskState::Succeeded) => {}
                    Some(TaskState::Failed | TaskState::Cancelled) => {
                        failed_dep = Some(dep);
                        break;
                    }
                    _ => all_succeeded = false,
                }
            }
            let (target, reason) = match failed_dep {
                Some(dep) => (
                    TaskState::Failed,
                    Some(s(format!("dependency failed: {dep}/{}", t.id()))),
                ),
                None if all_succeeded => (TaskState::Pending, None),
                None => continue,
            };
            let e = Expr::new()
                .transition(step, t.id(), target, t.spec.priority, 0, now)
                .set_opt(REASON, reason)
                .cond_eq(STATE, s(TaskState::Waiting.as_str()));
            updates.push((t.id().to_string(), target, e));
        }
        let done: Vec<Option<TaskState>> = futures::stream::iter(updates)
            .map(|(id, target, e)| async move {
                Ok(self
                    .update(OP, task_pk(step, &id), e, false)
                    .await?
                    .map(|_| target))
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .try_collect()
            .await?;
        let mut report = PromoteReport::default();
        for state in done.into_iter().flatten() {
            if state == TaskState::Failed {
                report.failed += 1;
            } else {
                report.promoted += 1;
            }
        }
        if report.promoted > 0 {
            self.forget_leftovers();
        }
        Ok(report)
    }

    async fn get(&self, step: &str, id: &str) -> Result<Option<Task>> {
        const OP: &str = "get";
        self.get_task_item(OP, step, id)
            .await?
            .map(|item| Reader::new(OP, &item).task())
            .transpose()
    }

    async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>> {
        const OP: &str = "list";
        let steps = match &filter.step {
            Some(step) => vec![step.clone()],
            None => self.steps().await?,
        };
        let mut tasks: Vec<Task> = if let Some(id) = &filter.id {
            let found: Vec<Option<Task>> = futures::stream::iter(steps)
                .map(|step| async move { self.get(&step, id).await })
                .buffer_unordered(SWEEP_CONCURRENCY)
                .try_collect()
                .await?;
            found
                .into_iter()
                .flatten()
                .filter(|t| filter.state.is_none_or(|s| t.state == s))
                .collect()
        } else {
            let states = match filter.state {
                Some(s) => vec![s],
                None => TaskState::ALL.to_vec(),
            };
            let pairs: Vec<(String, TaskState)> = steps
                .iter()
                .flat_map(|step| states.iter().map(move |s| (step.clone(), *s)))
                .collect();
            let pages: Vec<Vec<Task>> = futures::stream::iter(pairs)
                .map(|(step, state)| async move { self.tasks_in(OP, &step, state).await })
                .buffer_unordered(SWEEP_CONCURRENCY)
                .try_collect()
                .await?;
            pages.into_iter().flatten().collect()
        };
        tasks.sort_by(|a, b| (a.step(), a.id()).cmp(&(b.step(), b.id())));
        if let Some(limit) = filter.limit {
            tasks.truncate(limit);
        }
        Ok(tasks)
    }

    async fn counts(&self, step: &str) -> Result<StepCounts> {
        const OP: &str = "counts";
        let per_state: Vec<(TaskState, u64)> =
            futures::future::try_join_all(TaskState::ALL.iter().map(|&state| async move {
                let gsi_pk = state_pk(step, state);
                Ok::<_, StoreError>((state, self.count(OP, &gsi_pk, Sk::Any, None).await?))
            }))
            .await?;
        let mut counts = StepCounts {
            step: step.to_string(),
            ..Default::default()
        };
        for (state, count) in per_state {
            counts.set(state, count);
        }
        if counts.pending > 0 {
            counts.oldest_pending_at = self.oldest_pending(step).await?;
        }
        Ok(counts)
    }

    async fn backlog(&self, step: &str, pending_limit: u64) -> Result<Backlog> {
        const OP: &str = "backlog";
        let (pending_pk, running_pk) = (
            state_pk(step, TaskState::Pending),
            state_pk(step, TaskState::Running),
        );
        // One more than the limit tells whether there are more; the oldest is read only when
        // something is pending, after the count says so.
        let pending = async {
            let pending = self
                .count(
                    OP,
                    &pending_pk,
                    Sk::Any,
                    Some(pending_limit.saturating_add(1)),
                )
                .await?;
            let oldest = if pending > 0 {
                self.oldest_pending(step).await?
            } else {
                None
            };
            Ok::<_, StoreError>((pending, oldest))
        };
        let ((pending, oldest), running) =
            futures::try_join!(pending, self.count(OP, &running_pk, Sk::Any, None))?;
        Ok(Backlog {
            step: step.to_string(),
            pending: pending.min(pending_limit),
            more_pending: pending > pending_limit,
            running,
            oldest_pending_at: oldest,
        })
    }

    async fn count_finished_since(&self, step: &str, since: Millis) -> Result<u64> {
        const OP: &str = "count finished";
        // Final states are sorted by the time they were reached: a range Query, no reads of
        // older tasks.
        let (ok_pk, failed_pk) = (
            state_pk(step, TaskState::Succeeded),
            state_pk(step, TaskState::Failed),
        );
        let (ok, failed) = futures::try_join!(
            self.count(OP, &ok_pk, Sk::AtLeast(ts13(since)), None),
            self.count(OP, &failed_pk, Sk::AtLeast(ts13(since)), None),
        )?;
        Ok(ok + failed)
    }

    async fn steps(&self) -> Result<Vec<String>> {
        const OP: &str = "steps";
        let items = self
            .query_all(OP, STEPS_GSI, Sk::Any, Some(&[PK, STEP]))
            .await?;
        let mut steps = items
            .iter()
            .map(|i| Reader::new(OP, i).s(STEP))
            .collect::<Result<Vec<_>>>()?;
        steps.sort();
        steps.dedup();
        Ok(steps)
    }

    async fn requeue(&self, step: &str, id: &str, force: bool, now: Millis) -> Result<()> {
        self.user_action("requeue", step, id, |task| match task.state {
            TaskState::Pending | TaskState::Waiting => Ok(None),
            TaskState::Running if !force => Err(StoreError::InvalidState {
                step: step.to_string(),
                id: id.to_string(),
                state: task.state,
                what: "it is running; use --force to revoke its lease and requeue it".into(),
            }),
            _ => {
                let target = task.spec.initial_state();
                Ok(Some(
                    Expr::new()
                        .transition(step, id, target, task.spec.priority, 0, now)
                        .set(ATTEMPTS, n(0))
                        .remove_lease()
                        .remove(REASON),
                ))
            }
        })
        .await?;
        self.forget_leftovers();
        Ok(())
    }

    async fn cancel(&self, step: &str, id: &str, now: Millis) -> Result<()> {
        self.user_action("cancel", step, id, |task| {
            if task.state.is_final() {
                return Err(StoreError::InvalidState {
                    step: step.to_string(),
                    id: id.to_string(),
                    state: task.state,
                    what: "only waiting, pending or running tasks can be cancelled".into(),
                });
            }
            Ok(Some(
                Expr::new()
                    .transition(step, id, TaskState::Cancelled, 0, 0, now)
                    .remove_lease()
                    .set(REASON, s("cancelled by user")),
            ))
        })
        .await
    }

    async fn delete(&self, step: &str, id: &str) -> Result<()> {
        const OP: &str = "delete";
        let e = Expr::new().cond_exists();
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(task_pk(step, id))))
            .set_condition_expression(e.condition_expression())
            .set_expression_attribute_names(e.names())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failed(&e) => Err(StoreError::not_found(step, id)),
            Err(e) => Err(self.err(OP, e)),
        }
    }

    async fn put_worker(&self, worker: &WorkerInfo) -> Result<()> {
        const OP: &str = "put worker";
        self.mix.add(OP);
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(worker_item(worker)))
            .send()
            .await
            .map_err(|e| self.err(OP, e))?;
        Ok(())
    }

    async fn remove_worker(&self, worker_id: &str) -> Result<()> {
        const OP: &str = "remove worker";
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(worker_pk(worker_id))))
            .send()
            .await
            .map_err(|e| self.err(OP, e))?;
        Ok(())
    }

    async fn list_workers(&self, step: Option<&str>) -> Result<Vec<WorkerInfo>> {
        const OP: &str = "list workers";
        let sk = match step {
            Some(step) => Sk::BeginsWith(format!("{step}#")),
            None => Sk::Any,
        };
        let items = self.query_all(OP, WORKERS_GSI, sk, None).await?;
        let mut workers = items
            .iter()
            .map(|i| Reader::new(OP, i).worker())
            .collect::<Result<Vec<_>>>()?;
        workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(workers)
    }

    async fn put_status(&self, doc: &StatusDoc) -> Result<()> {
        const OP: &str = "put status";
        let body = serde_json::to_string(&doc.body)
            .map_err(|e| StoreError::backend(OP, format!("cannot encode the status: {e}")))?;
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(status_item(doc, body)))
            .send()
            .await
            .map_err(|e| self.err(OP, e))?;
        Ok(())
    }

    async fn list_status(&self) -> Result<Vec<StatusDoc>> {
        const OP: &str = "list status";
        let items = self.query_all(OP, STATUS_GSI, Sk::Any, None).await?;
        let mut docs = items
            .iter()
            .map(|i| Reader::new(OP, i).status())
            .collect::<Result<Vec<_>>>()?;
        docs.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(docs)
    }

    async fn acquire_leadership(
        &self,
        cluster: &str,
        owner: &str,
        ttl_ms: Millis,
        now: Millis,
    ) -> Result<Option<Leadership>> {
        const OP: &str = "acquire leadership";
        let pk = leader_pk(cluster);
        let expires_at = now + ttl_ms;
        // Fast path, the steady state: the holder renews (its fencing number stays).
        let renew = Expr::new()
            .set("expires_at", n(expires_at))
            .cond_eq("owner", s(owner));
        if let Some(item) = self.update(OP, pk.clone(), renew, true).await? {
            return Reader::new(OP, &item).leadership().map(Some);
        }
        for _ in 0..USER_ACTION_TRIES {
            let current = self.get_item(OP, pk.clone()).await?;
            let written = match current {
                None => {
                    let e = Expr::new().cond(format!("attribute_not_exists({PK})"));
                    let result = self
                        .client
                        .put_item()
                        .table_name(&self.table)
                        .set_item(Some(HashMap::from([
                            (PK.to_string(), s(pk.as_str())),
                            ("cluster".to_string(), s(cluster)),
                            ("owner".to_string(), s(owner)),
                            ("fencing".to_string(), n(1)),
                            ("expires_at".to_string(), n(expires_at)),
                        ])))
                        .set_condition_expression(e.condition_expression())
                        .send()
                        .await;
                    match result {
                        Ok(_) => Some(Leadership {
                            owner: owner.to_string(),
                            fencing: 1,
                            expires_at,
                        }),
                        Err(e) if is_condition_failed(&e) => None,
                        Err(e) => return Err(self.err(OP, e)),
                    }
                }
                Some(item) => {
                    let held = Reader::new(OP, &item).leadership()?;
                    if held.owner != owner && held.expires_at >= now {
                        return Ok(None);
                    }
                    let fencing = if held.owner == owner {
                        held.fencing
                    } else {
                        held.fencing + 1
                    };
                    let e = Expr::new()
                        .set("owner", s(owner))
                        .set("fencing", n(fencing))
                        .set("expires_at", n(expires_at))
                        .cond_eq("owner", s(held.owner.as_str()))
                        .cond_eq("fencing", n(held.fencing))
                        .cond_eq("expires_at", n(held.expires_at));
                    self.update(OP, pk.clone(), e, false)
                        .await?
                        .map(|_| Leadership {
                            owner: owner.to_string(),
                            fencing,
                            expires_at,
                        })
                }
            };
            if written.is_some() {
                return Ok(written);
            }
        }
        Err(StoreError::unavailable(
            OP,
            format!("leadership of `{cluster}` kept changing concurrently"),
        ))
    }

    async fn release_leadership(&self, cluster: &str, owner: &str) -> Result<()> {
        const OP: &str = "release leadership";
        // Keep the item (and its fencing number) but expire it, so the next holder's fencing
        // number is still higher. Not holding it is fine.
        let e = Expr::new()
            .set("expires_at", n(0))
            .cond_eq("owner", s(owner));
        self.update(OP, leader_pk(cluster), e, false).await?;
        Ok(())
    }

    async fn current_leader(&self, cluster: &str) -> Result<Option<Leadership>> {
        const OP: &str = "current leader";
        self.get_item(OP, leader_pk(cluster))
            .await?
            .map(|item| Reader::new(OP, &item).leadership())
            .transpose()
    }

    fn requests(&self) -> u64 {
        self.requests.get()
    }

    fn claim_conflicts(&self) -> u64 {
        self.contention.lost.load(Ordering::Relaxed)
    }

    fn request_mix(&self) -> std::collections::BTreeMap<String, u64> {
        self.mix.snapshot()
    }

    fn describe(&self) -> String {
        format!("dynamodb://{}", self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(priority: i32, at: Millis, id: &str, with_id: bool) -> Item {
        let mut item = Item::from([(
            GSI1SK.to_string(),
            s(task_sk(TaskState::Pending, priority, at, 0, id)),
        )]);
        if with_id {
            item.insert(ID.to_string(), s(id));
        }
        item
    }

    #[test]
    fn lost_races_are_counted() {
        let c = Contention::new();
        assert!(!c.recent());
        c.lost_race();
        c.lost_race();
        assert!(c.recent());
        assert_eq!(c.lost.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn candidates_keep_priority_groups_and_the_head() {
        let page = vec![
            entry(5, 1, "a", true),
            entry(5, 2, "b", false),
            entry(5, 3, "c", true),
            entry(5, 4, "f", true),
            entry(1, 0, "d", true),
            entry(1, 0, "e", true),
        ];
        let flat = |groups: Vec<VecDeque<String>>| -> Vec<String> {
            Candidates::new(groups).rest().into_iter().collect()
        };
        assert_eq!(
            flat(order_candidates(&page, false)),
            ["a", "b", "c", "f", "d", "e"],
            "uncontended: index order (the id read from the sort key when absent)"
        );
        let mut starts = HashSet::new();
        for _ in 0..200 {
            let busy = flat(order_candidates(&page, true));
            // Each priority group is a rotation of itself: a contiguous stretch from a random
            // start, wrapping; lower priority after.
            let top = ["a", "b", "c", "f"];
            let start = top.iter().position(|id| *id == busy[0]).unwrap();
            let rotated: Vec<&str> = (0..4).map(|i| top[(start + i) % 4]).collect();
            assert_eq!(busy[..4], rotated[..]);
            let mut rest: Vec<_> = busy[4..].to_vec();
            rest.sort();
            assert_eq!(rest, ["d", "e"], "lower priority after");
            starts.insert(busy[0].clone());
        }
        assert_eq!(starts.len(), 4, "every start is drawn");
    }

    #[test]
    fn candidates_are_taken_best_group_first() {
        let groups = vec![
            VecDeque::from(["a".to_string(), "b".to_string()]),
            VecDeque::new(),
            VecDeque::from(["c".to_string(), "d".to_string(), "e".to_string()]),
        ];
        let mut c = Candidates::new(groups.clone());
        assert_eq!(c.take(3), ["a", "b", "c"]);
        c.jump();
        let mut rest: Vec<String> = c.rest().into_iter().collect();
        rest.sort();
        assert_eq!(rest, ["d", "e"]);
        let mut c = Candidates::new(groups);
        c.jump();
        let first = c.take(2);
        assert!(
            first == ["a", "b"] || first == ["b", "a"],
            "a jump stays in the best group: {first:?}"
        );
        assert_eq!(c.take(5), ["c", "d", "e"]);
        assert!(c.take(1).is_empty());
    }
}
