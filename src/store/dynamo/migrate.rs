//! `anamo table migrate`: a layout-1 table (index `gsi1`) brought to layout 2 online, while
//! workers and a controller run. The sequence (docs/dynamodb-table.md, "Upgrading the layout"):
//!
//! 1. add the index `gsi2` and wait until it is ACTIVE ([`super::migrate_index`]);
//! 2. write the version item, so that layout-2 binaries may start;
//! 3. pass over the table (Scan) until a pass rewrites nothing and finds no task held by a
//!    layout-1 worker: each item gets its layout-2 keys and loses its layout-1 ones in one
//!    conditional write ([`super::migrate_plan`]); a lost condition re-reads the item;
//! 4. recount every step, drop `gsi1`, and pass once more for layout-1 writes that raced the drop.
//!
//! Every step is idempotent: an interrupted migrate is run again and goes on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};
use futures::{StreamExt, TryStreamExt};

use super::expr::Expr;
use super::items::*;
use super::layout::{
    DEFAULT_SHARDS, INDEX_PK, INDEX_SK, META_PK, META_SHARDS, META_VERSION, SCHEMA_VERSION,
};
use super::migrate_index::IndexState;
use super::migrate_plan::{facts, plan, v1, Fix, ItemFacts, Plan};
use super::schema::layout_of;
use super::{reads, DynamoStore, SWEEP_CONCURRENCY};
use crate::clock::Clock;
use crate::store::{Result, StoreError};

/// Re-reads of an item whose conditional write lost to a concurrent change.
const ITEM_TRIES: u32 = 8;
/// The pause between passes while layout-1 workers still hold tasks.
const WAIT_BETWEEN_PASSES: Duration = Duration::from_secs(2);

/// What migrate tells its caller as it goes.
#[derive(Debug, Clone, PartialEq)]
pub enum MigrateEvent {
    /// The table already has layout 2: nothing to do.
    AlreadyCurrent {
        version: u32,
    },
    AddingIndex,
    IndexActive,
    VersionWritten {
        shards: u32,
    },
    /// Progress of a pass (after each page of the scan).
    Pass(PassStats),
    /// A pass found tasks still held by layout-1 workers, or layout-1 writes: migrate waits.
    Waiting {
        layout1_leases: u64,
        layout1_writes: u64,
    },
    Recounted {
        step: String,
    },
    DroppingIndex,
    Done,
}

/// What one pass over the table read and wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassStats {
    pub pass: u32,
    pub items: u64,
    pub rewritten: u64,
    /// Items a layout-1 client wrote since the previous pass (they had layout-1 keys again).
    pub layout1_writes: u64,
    /// Running tasks whose lease a layout-1 worker holds (after the pass).
    pub layout1_leases: u64,
    /// Steps given a shard count by this pass.
    pub steps_registered: u64,
}

impl PassStats {
    fn clean(&self) -> bool {
        self.rewritten == 0 && self.layout1_leases == 0 && self.steps_registered == 0
    }
}

/// What a dry run would do.
#[derive(Debug, Clone, PartialEq)]
pub struct MigratePreview {
    pub version: Option<u32>,
    pub has_old_index: bool,
    pub has_new_index: bool,
    pub stats: PassStats,
}

/// The table's layout as DescribeTable and the version item show it.
#[derive(Debug, Clone, Copy)]
struct Found {
    version: Option<u32>,
    shards: Option<u32>,
    old_index: bool,
    new_index: bool,
}

impl DynamoStore {
    /// Upgrades a layout-1 table to layout 2 (see the module doc).
    pub async fn migrate(
        &self,
        clock: &dyn Clock,
        on: &mut (dyn FnMut(MigrateEvent) + Send),
    ) -> Result<()> {
        let found = self.found().await?;
        if let Some(version) = found.version {
            if !found.old_index {
                on(MigrateEvent::AlreadyCurrent { version });
                return Ok(());
            }
        }
        if !found.new_index {
            on(MigrateEvent::AddingIndex);
            self.add_index().await?;
        }
        self.wait_for_indexes(|(_, new)| new == IndexState::Active, "building `gsi2`")
            .await?;
        on(MigrateEvent::IndexActive);
        let shards = found.shards.unwrap_or(DEFAULT_SHARDS);
        self.write_version(shards).await?;
        on(MigrateEvent::VersionWritten { shards });
        let mut pass = 0;
        loop {
            pass += 1;
            let stats = self.pass(pass, shards, Some(clock), on).await?;
            if stats.clean() {
                break;
            }
            if stats.layout1_leases > 0 || (stats.layout1_writes > 0 && pass > 1) {
                on(MigrateEvent::Waiting {
                    layout1_leases: stats.layout1_leases,
                    layout1_writes: stats.layout1_writes,
                });
                tokio::time::sleep(WAIT_BETWEEN_PASSES).await;
            }
        }
        self.recount_all(on).await?;
        on(MigrateEvent::DroppingIndex);
        self.drop_old_index().await?;
        // Layout-1 writes between the last pass and the drop: one more pass fixes them.
        if self
            .pass(pass + 1, shards, Some(clock), on)
            .await?
            .rewritten
            > 0
        {
            self.recount_all(on).await?;
        }
        on(MigrateEvent::Done);
        Ok(())
    }

    /// What [`DynamoStore::migrate`] would do, from one read-only pass.
    pub async fn migrate_preview(
        &self,
        on: &mut (dyn FnMut(MigrateEvent) + Send),
    ) -> Result<MigratePreview> {
        let found = self.found().await?;
        let shards = found.shards.unwrap_or(DEFAULT_SHARDS);
        let stats = self.pass(1, shards, None, on).await?;
        Ok(MigratePreview {
            version: found.version,
            has_old_index: found.old_index,
            has_new_index: found.new_index,
            stats,
        })
    }

    async fn found(&self) -> Result<Found> {
        const OP: &str = "migrate";
        let (old, new) = self.index_states().await?;
        let (old_index, new_index) = (old != IndexState::Missing, new != IndexState::Missing);
        let meta = self.get_item(OP, META_PK.to_string()).await?;
        // A newer layout is refused here as at every open.
        let (version, shards) = match &meta {
            Some(item) => (
                Some(SCHEMA_VERSION),
                Some(layout_of(&self.table, Some(item))?),
            ),
            None => (None, None),
        };
        if version.is_none() && !old_index {
            return Err(StoreError::backend(
                OP,
                format!(
                    "table `{}` has neither the index `{}` of layout 1 nor a `{META_PK}` \
                     item: it is not an anamo table (see docs/dynamodb-table.md)",
                    self.table,
                    v1::INDEX
                ),
            ));
        }
        Ok(Found {
            version,
            shards,
            old_index,
            new_index,
        })
    }

    async fn write_version(&self, shards: u32) -> Result<()> {
        const OP: &str = "migrate: write version";
        let mut e = Expr::new()
            .set(META_VERSION, n(SCHEMA_VERSION))
            .set(META_SHARDS, n(shards));
        let (version, current) = (e.name(META_VERSION), e.value(n(SCHEMA_VERSION)));
        e = e.cond(format!(
            "attribute_not_exists({version}) OR {version} <= {current}"
        ));
        match self.update(OP, META_PK.to_string(), e, false).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::backend(
                OP,
                format!(
                    "table `{}` was given a layout version above {SCHEMA_VERSION} meanwhile; \
                     upgrade anamo",
                    self.table
                ),
            )),
        }
    }

    /// One pass over the table, writing with `clock` (None: a dry run, which only reads).
    async fn pass(
        &self,
        pass: u32,
        default_shards: u32,
        clock: Option<&dyn Clock>,
        on: &mut (dyn FnMut(MigrateEvent) + Send),
    ) -> Result<PassStats> {
        let mut stats = PassStats {
            pass,
            ..PassStats::default()
        };
        let known = Known::default();
        let mut start = None;
        loop {
            let (items, next) = self.scan_page(start).await?;
            for item in &items {
                match step_shards(item)? {
                    StepShards::NotAStep => {}
                    StepShards::Has(step, n) => known.insert(step, n),
                    StepShards::Missing(step) if clock.is_none() => {
                        known.insert(step, default_shards);
                        stats.steps_registered += 1;
                    }
                    StepShards::Missing(step) => {
                        let n = self.register_step(&step, default_shards).await?;
                        known.insert(step, n);
                        stats.steps_registered += 1;
                    }
                }
            }
            let outcomes: Vec<(ItemFacts, ItemFacts, bool)> = futures::stream::iter(items)
                .map(|item| {
                    let known = &known;
                    async move {
                        let seen = facts(&item)?;
                        let (after, wrote) = match clock {
                            None => {
                                let planned = plan(&item, |s| known.get(s), 0)?;
                                (seen, !matches!(planned, Plan::Done))
                            }
                            Some(clock) => {
                                self.fix_item(item, known, default_shards, clock).await?
                            }
                        };
                        Ok::<_, StoreError>((seen, after, wrote))
                    }
                })
                .buffer_unordered(SWEEP_CONCURRENCY)
                .try_collect()
                .await?;
            for (seen, after, wrote) in outcomes {
                stats.items += 1;
                stats.rewritten += u64::from(wrote);
                stats.layout1_writes += u64::from(seen.layout1_keys && pass > 1);
                stats.layout1_leases += u64::from(after.layout1_lease);
            }
            on(MigrateEvent::Pass(stats));
            match next {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        Ok(stats)
    }

    async fn scan_page(&self, start: Option<Item>) -> Result<(Vec<Item>, Option<Item>)> {
        const OP: &str = "migrate";
        self.mix.add("migrate scan");
        let out = self
            .client
            .scan()
            .table_name(&self.table)
            .set_exclusive_start_key(start)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| self.err(OP, e))?;
        self.consumed(out.consumed_capacity(), false);
        Ok((
            out.items.unwrap_or_default(),
            out.last_evaluated_key.filter(|k| !k.is_empty()),
        ))
    }

    /// Brings one item to layout 2; re-reads it when a concurrent change wins. Returns the
    /// facts of the item as left, and whether it wrote.
    async fn fix_item(
        &self,
        mut item: Item,
        known: &Known,
        default_shards: u32,
        clock: &dyn Clock,
    ) -> Result<(ItemFacts, bool)> {
        const OP: &str = "migrate";
        for _ in 0..ITEM_TRIES {
            let fix = match plan(&item, |s| known.get(s), clock.now())? {
                Plan::Done => return Ok((facts(&item)?, false)),
                Plan::Fix(fix) => fix,
                Plan::NeedsStep(step) => {
                    let n = self.register_step(&step, default_shards).await?;
                    known.insert(step.clone(), n);
                    match plan(&item, |s| (s == step).then_some(n), clock.now())? {
                        Plan::Fix(fix) => fix,
                        _ => return Ok((facts(&item)?, false)),
                    }
                }
            };
            let (pk, left) = (fix.pk.clone(), fix.apply(&item));
            if self
                .update_as(OP, "migrate", pk.clone(), expr_of(fix), false)
                .await?
                .is_some()
            {
                return Ok((facts(&left)?, true));
            }
            match self.get_item(OP, pk).await? {
                Some(again) => item = again,
                None => return Ok((ItemFacts::default(), false)),
            }
        }
        Err(StoreError::unavailable(
            OP,
            format!(
                "item `{}` kept changing over {ITEM_TRIES} attempts; run migrate again",
                item.get(PK).and_then(|v| v.as_s().ok()).map_or("?", |s| s)
            ),
        ))
    }

    /// Gives `step` a shard count unless it has one; returns the count it has.
    async fn register_step(&self, step: &str, default_shards: u32) -> Result<u32> {
        const OP: &str = "migrate: register step";
        let mut e = Expr::new()
            .set(STEP, s(step))
            .set(INDEX_PK, s(STEPS_GSI))
            .set(INDEX_SK, s(step));
        let (attr, value) = (e.name(SHARDS), e.value(n(default_shards)));
        e = e.set_raw(format!("{attr} = if_not_exists({attr}, {value})"));
        let item = self
            .update(OP, step_pk(step), e, true)
            .await?
            .unwrap_or_default();
        Ok(Reader::new(OP, &item)
            .opt_n(SHARDS)?
            .unwrap_or(default_shards))
    }

    /// Overwrites every step's counters from the index.
    async fn recount_all(&self, on: &mut (dyn FnMut(MigrateEvent) + Send)) -> Result<()> {
        for step in reads::steps(self).await? {
            self.recount(&step).await?;
            on(MigrateEvent::Recounted { step });
        }
        Ok(())
    }
}

/// The shard count of each step a pass has seen (shared by its concurrent writes).
#[derive(Default)]
struct Known(Mutex<HashMap<String, u32>>);

impl Known {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A poisoned map is still a valid map (its writer panicked between whole inserts).
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, step: &str) -> Option<u32> {
        self.map().get(step).copied()
    }

    fn insert(&self, step: String, shards: u32) {
        self.map().insert(step, shards);
    }
}

/// What a scanned item says about a step's shard count.
enum StepShards {
    NotAStep,
    Has(String, u32),
    Missing(String),
}

fn step_shards(item: &Item) -> Result<StepShards> {
    let is_step = matches!(item.get(PK), Some(AttributeValue::S(pk)) if pk.starts_with("STEP#"));
    if !is_step {
        return Ok(StepShards::NotAStep);
    }
    let r = Reader::new("migrate", item);
    let step = r.s(STEP)?;
    Ok(match r.opt_n::<u32>(SHARDS)? {
        Some(n) => StepShards::Has(step, n),
        None => StepShards::Missing(step),
    })
}

/// The conditional update a [`Fix`] is.
fn expr_of(fix: Fix) -> Expr {
    let mut e = Expr::new();
    for (attr, v) in fix.set {
        e = e.set(attr, v);
    }
    for attr in fix.remove {
        e = e.remove(attr);
    }
    e = e.cond_exists();
    for (attr, seen) in fix.unchanged {
        let name = e.name(attr);
        e = match seen {
            Some(v) => {
                let value = e.value(v);
                e.cond(format!("{name} = {value}"))
            }
            None => e.cond(format!("attribute_not_exists({name})")),
        };
    }
    e
}
