//! The indexes during `anamo table migrate`: which exist, adding `gsi2` to a live table and
//! dropping `gsi1` (both `UpdateTable`, online: the table serves reads and writes meanwhile).

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, CreateGlobalSecondaryIndexAction, DeleteGlobalSecondaryIndexAction,
    GlobalSecondaryIndexUpdate, IndexStatus, ScalarAttributeType,
};

use super::error::{has_code, IN_USE};
use super::layout::{INDEX, INDEX_PK, INDEX_SK};
use super::migrate_plan::v1;
use super::table::index_shape;
use super::DynamoStore;
use crate::store::{Result, StoreError};

/// How long migrate waits for an index to be built or dropped. Building backfills the index
/// from every item of the table: long on a large table, hence generous.
const INDEX_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
const POLL: Duration = Duration::from_millis(500);

/// An index's state as DescribeTable shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IndexState {
    Missing,
    Building,
    Active,
}

impl DynamoStore {
    /// The states of `gsi1` (layout 1) and `gsi2` (layout 2).
    pub(super) async fn index_states(&self) -> Result<(IndexState, IndexState)> {
        const OP: &str = "migrate: describe table";
        let out = self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(|e| self.err(OP, e))?;
        let table = out
            .table
            .ok_or_else(|| StoreError::backend(OP, "DescribeTable returned no table"))?;
        let state = |name: &str| match table
            .global_secondary_indexes()
            .iter()
            .find(|i| i.index_name() == Some(name))
        {
            None => IndexState::Missing,
            Some(i) if i.index_status() == Some(&IndexStatus::Active) => IndexState::Active,
            Some(_) => IndexState::Building,
        };
        Ok((state(v1::INDEX), state(INDEX)))
    }

    /// Adds `gsi2` (its keys and INCLUDE projection as layout 2 defines them).
    pub(super) async fn add_index(&self) -> Result<()> {
        const OP: &str = "migrate: add index";
        let built = |e: aws_sdk_dynamodb::error::BuildError| StoreError::backend(OP, e);
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(built)
        };
        let (keys, projection) = index_shape(OP)?;
        let create = CreateGlobalSecondaryIndexAction::builder()
            .index_name(INDEX)
            .set_key_schema(Some(keys))
            .projection(projection)
            .build()
            .map_err(built)?;
        let sent = self
            .client
            .update_table()
            .table_name(&self.table)
            .attribute_definitions(attr(INDEX_PK)?)
            .attribute_definitions(attr(INDEX_SK)?)
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().create(create).build(),
            )
            .send()
            .await;
        match sent {
            // Another migrate added it meanwhile (or the table is busy): wait below.
            Err(e) if has_code(&e, IN_USE) => Ok(()),
            Err(e) => Err(self.err(OP, e)),
            Ok(_) => Ok(()),
        }
    }

    /// Drops `gsi1` and waits until it is gone.
    pub(super) async fn drop_old_index(&self) -> Result<()> {
        const OP: &str = "migrate: drop index";
        let delete = DeleteGlobalSecondaryIndexAction::builder()
            .index_name(v1::INDEX)
            .build()
            .map_err(|e| StoreError::backend(OP, e))?;
        let sent = self
            .client
            .update_table()
            .table_name(&self.table)
            .global_secondary_index_updates(
                GlobalSecondaryIndexUpdate::builder().delete(delete).build(),
            )
            .send()
            .await;
        match sent {
            Err(e) if has_code(&e, IN_USE) => {}
            Err(e) => return Err(self.err(OP, e)),
            Ok(_) => {}
        }
        self.wait_for_indexes(|(old, _)| old == IndexState::Missing, "dropping `gsi1`")
            .await
    }

    /// Waits until the index states satisfy `done`.
    pub(super) async fn wait_for_indexes(
        &self,
        done: impl Fn((IndexState, IndexState)) -> bool,
        what: &str,
    ) -> Result<()> {
        let deadline = Instant::now() + INDEX_TIMEOUT;
        loop {
            if done(self.index_states().await?) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(StoreError::unavailable(
                    "migrate",
                    format!(
                        "table `{}`: {what} did not finish within {} h; run migrate again to go on",
                        self.table,
                        INDEX_TIMEOUT.as_secs() / 3600
                    ),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
