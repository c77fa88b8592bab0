//! The layout version item (`META#schema`: `version`, `shards`) and the shard counts derived
//! from it: the table's default, recorded by `table create`, and each step's, recorded on its
//! registry item (`STEP#{step}`) when the step is first written and kept from then on.
//!
//! Every store reads the version item once (at open for commands on an existing table,
//! otherwise at its first use of a step, together with the step's registry item in one
//! BatchGetItem) and refuses a table of another layout version.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};

use super::error::is_condition_failed;
use super::items::*;
use super::layout::{
    check_shards, DEFAULT_SHARDS, META_PK, META_SHARDS, META_VERSION, SCHEMA_VERSION,
};
use super::DynamoStore;
use crate::store::{Result, StoreError};

/// The shard counts a store knows (each read once).
#[derive(Debug, Default)]
pub(super) struct Shards {
    /// What `create_schema` records as the table's default (else [`DEFAULT_SHARDS`]).
    create_default: Mutex<Option<u32>>,
    /// The table's default, from its version item.
    table_default: Mutex<Option<u32>>,
    /// Each step's, from its registry item (or the table's default for a step not yet
    /// registered, which its first import records).
    steps: Mutex<HashMap<String, u32>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shards {
    pub(super) fn set_create_default(&self, shards: u32) {
        *locked(&self.create_default) = Some(shards);
    }
}

/// What the version item says, or why the table cannot be used.
pub(super) fn layout_of(table: &str, item: Option<&Item>) -> Result<u32> {
    let Some(item) = item else {
        return Err(StoreError::Layout(format!(
            "table `{table}` has no layout version item (`{META_PK}`): it was made by an older \
             anamo (layout 1, index `gsi1`); upgrade it in place with `anamo table migrate` \
             (see docs/dynamodb-table.md)"
        )));
    };
    let r = Reader::new("open", item);
    let version: u32 = r.n(META_VERSION)?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Layout(format!(
            "table `{table}` has layout version {version}; this anamo understands up to \
             {SCHEMA_VERSION}; upgrade anamo"
        )));
    }
    if version < SCHEMA_VERSION {
        return Err(StoreError::Layout(format!(
            "table `{table}` has layout version {version}; this anamo reads and writes version \
             {SCHEMA_VERSION}; upgrade the table with `anamo table migrate`"
        )));
    }
    let shards: u32 = r.n(META_SHARDS)?;
    check_shards(shards).map_err(|e| r.error(META_SHARDS, e))
}

impl DynamoStore {
    /// Reads the version item: `Err` for a table of another layout version (or none).
    pub async fn check_layout(&self) -> Result<()> {
        self.table_shards().await.map(|_| ())
    }

    /// The table's default shard count (the version item, read once).
    pub(super) async fn table_shards(&self) -> Result<u32> {
        if let Some(s) = *locked(&self.shards.table_default) {
            return Ok(s);
        }
        let item = self.get_item("open", META_PK.to_string()).await?;
        self.remember_layout(item.as_ref())
    }

    /// What the version item `meta` says (see [`layout_of`]), the table's shard count kept.
    fn remember_layout(&self, meta: Option<&Item>) -> Result<u32> {
        let shards = layout_of(&self.table, meta)?;
        *locked(&self.shards.table_default) = Some(shards);
        Ok(shards)
    }

    /// The shard count of `step`'s index partitions: its registry item's, else the table's.
    pub(super) async fn step_shards(&self, step: &str) -> Result<u32> {
        if let Some(&s) = locked(&self.shards.steps).get(step) {
            return Ok(s);
        }
        let known = *locked(&self.shards.table_default);
        let (default, item) = match known {
            Some(default) => (default, self.get_item("step shards", step_pk(step)).await?),
            None => self.layout_with_step(step).await?,
        };
        let shards = match &item {
            Some(item) => {
                let r = Reader::new("step shards", item);
                match r.opt_n::<u32>(SHARDS)? {
                    Some(s) => check_shards(s).map_err(|e| r.error(SHARDS, e))?,
                    None => default,
                }
            }
            None => default,
        };
        // A step not registered yet is not remembered: its first import records its count.
        if item.is_some() {
            locked(&self.shards.steps).insert(step.to_string(), shards);
        }
        Ok(shards)
    }

    /// The version item and `step`'s registry item in one BatchGetItem (a store's first look
    /// at a step, e.g. a worker's first claim: one request instead of two), the table's
    /// shard count kept as [`table_shards`](Self::table_shards) keeps it.
    async fn layout_with_step(&self, step: &str) -> Result<(u32, Option<Item>)> {
        let keys = vec![key(META_PK.to_string()), key(step_pk(step))];
        let mut items = self.batch_get("open", keys, None).await?;
        let is_meta =
            |item: &Item| matches!(item.get(PK), Some(AttributeValue::S(pk)) if pk == META_PK);
        let meta = items.iter().position(is_meta).map(|i| items.swap_remove(i));
        Ok((self.remember_layout(meta.as_ref())?, items.pop()))
    }

    /// Writes the version item unless the table has one (a table made by `table create`).
    pub(super) async fn put_layout_version(&self) -> Result<()> {
        const OP: &str = "create table";
        let shards = locked(&self.shards.create_default).unwrap_or(DEFAULT_SHARDS);
        let item = Item::from([
            (PK.to_string(), s(META_PK)),
            (META_VERSION.to_string(), n(SCHEMA_VERSION)),
            (META_SHARDS.to_string(), n(shards)),
        ]);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match put {
            Ok(out) => {
                self.consumed(out.consumed_capacity(), true);
                Ok(())
            }
            Err(e) if is_condition_failed(&e) => Ok(()),
            Err(e) => Err(self.err(OP, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(version: u32, shards: u32) -> Item {
        Item::from([
            (PK.to_string(), s(META_PK)),
            (META_VERSION.to_string(), n(version)),
            (META_SHARDS.to_string(), n(shards)),
        ])
    }

    #[test]
    fn versions_other_than_ours_are_refused_with_what_to_do() {
        assert_eq!(layout_of("t", Some(&meta(2, 4))).unwrap(), 4);
        let newer = layout_of("t", Some(&meta(3, 4))).unwrap_err().to_string();
        assert!(
            newer.contains("layout version 3") && newer.contains("upgrade anamo"),
            "{newer}"
        );
        let v1 = layout_of("t", None).unwrap_err();
        assert_eq!(v1.kind(), "layout");
        assert!(v1.to_string().contains("anamo table migrate"), "{v1}");
        let bad = layout_of("t", Some(&meta(2, 0))).unwrap_err().to_string();
        assert!(
            bad.contains("META#schema") && bad.contains("shards"),
            "{bad}"
        );
    }
}
