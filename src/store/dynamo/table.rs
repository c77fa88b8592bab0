//! The table and its index: created (and waited for until ACTIVE) and deleted.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, IndexStatus, KeySchemaElement, KeyType,
    Projection, ProjectionType, ScalarAttributeType, TableStatus,
};

use super::error::{has_code, IN_USE, NOT_FOUND};
use super::items::*;
use super::layout::PROJECTED;
use super::DynamoStore;
use crate::store::{Result, StoreError};

/// How long create_schema / delete_schema wait for the table to settle.
const SCHEMA_TIMEOUT: Duration = Duration::from_secs(300);

impl DynamoStore {
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
                        .find(|i| i.index_name() == Some(INDEX));
                    let has_v1_index = table
                        .global_secondary_indexes()
                        .iter()
                        .any(|i| i.index_name() == Some("gsi1"));
                    let table_active = table.table_status() == Some(&TableStatus::Active);
                    match gsi {
                        None if table_active && has_v1_index => {
                            return Err(StoreError::Layout(format!(
                                "table `{}` has the layout 1 index `gsi1` and not `{INDEX}`: \
                                 upgrade it in place with `anamo table migrate`",
                                self.table
                            )))
                        }
                        None if table_active => {
                            return Err(StoreError::backend(
                                OP,
                                format!(
                                    "table `{}` exists but has no index `{INDEX}`: it is not an \
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
                        "table `{}` or its index `{INDEX}` is not ACTIVE after {} s",
                        self.table,
                        SCHEMA_TIMEOUT.as_secs()
                    ),
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

pub(super) async fn create_schema(store: &DynamoStore) -> Result<()> {
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
    let (keys, projection) = index_shape(OP)?;
    let gsi = GlobalSecondaryIndex::builder()
        .index_name(INDEX)
        .set_key_schema(Some(keys))
        .projection(projection)
        .build()
        .map_err(build_err(OP))?;
    let created = store
        .client
        .create_table()
        .table_name(&store.table)
        .attribute_definitions(attr(PK)?)
        .attribute_definitions(attr(INDEX_PK)?)
        .attribute_definitions(attr(INDEX_SK)?)
        .key_schema(key_el(PK, KeyType::Hash)?)
        .global_secondary_indexes(gsi)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e) if has_code(&e, IN_USE) => {}
        Err(e) => return Err(store.err(OP, e)),
    }
    store
        .wait_for_table(Instant::now() + SCHEMA_TIMEOUT)
        .await?;
    store.put_layout_version().await
}

pub(super) async fn delete_schema(store: &DynamoStore) -> Result<()> {
    const OP: &str = "delete table";
    match store
        .client
        .delete_table()
        .table_name(&store.table)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if has_code(&e, NOT_FOUND) => return Ok(()),
        // Still being created or deleted: wait below, then retry once.
        Err(e) if has_code(&e, IN_USE) => {}
        Err(e) => return Err(store.err(OP, e)),
    }
    let deadline = Instant::now() + SCHEMA_TIMEOUT;
    loop {
        match store
            .client
            .describe_table()
            .table_name(&store.table)
            .send()
            .await
        {
            Err(e) if has_code(&e, NOT_FOUND) => return Ok(()),
            Err(e) => return Err(store.err(OP, e)),
            Ok(out) => {
                let status = out.table.and_then(|t| t.table_status);
                if status == Some(TableStatus::Active) {
                    // Our first DeleteTable hit a table still being created.
                    if let Err(e) = store
                        .client
                        .delete_table()
                        .table_name(&store.table)
                        .send()
                        .await
                    {
                        if has_code(&e, NOT_FOUND) {
                            return Ok(());
                        }
                        return Err(store.err(OP, e));
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(StoreError::unavailable(
                OP,
                format!(
                    "table `{}` still exists after {} s",
                    store.table,
                    SCHEMA_TIMEOUT.as_secs()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The layout-2 index's key schema and INCLUDE projection (for CreateTable, and for the
/// UpdateTable that adds the index to a layout-1 table in `table migrate`).
pub(super) fn index_shape(op: &str) -> Result<(Vec<KeySchemaElement>, Projection)> {
    let key_el = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .map_err(build_err(op))
    };
    let keys = vec![
        key_el(INDEX_PK, KeyType::Hash)?,
        key_el(INDEX_SK, KeyType::Range)?,
    ];
    let projection = Projection::builder()
        .projection_type(ProjectionType::Include)
        .set_non_key_attributes(Some(PROJECTED.iter().map(|a| a.to_string()).collect()))
        .build();
    Ok((keys, projection))
}

fn build_err(op: &str) -> impl Fn(aws_sdk_dynamodb::error::BuildError) -> StoreError + '_ {
    move |e| StoreError::backend(op, e)
}
