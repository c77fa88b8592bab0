//! Status documents the controller publishes: one item each, listed through the `STATUS`
//! index partition.

use super::fence::Write;
use super::items::*;
use super::{DynamoStore, Sk};
use crate::store::{Fence, Result, StatusDoc, StoreError};

pub(super) async fn put_status(
    store: &DynamoStore,
    doc: &StatusDoc,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "put status";
    let body = serde_json::to_string(&doc.body)
        .map_err(|e| StoreError::backend(OP, format!("cannot encode the status: {e}")))?;
    let write = Write::Put(status_item(doc, body));
    store.write_fenced(OP, OP, fence, write).await?;
    Ok(())
}

pub(super) async fn list_status(store: &DynamoStore) -> Result<Vec<StatusDoc>> {
    const OP: &str = "list status";
    let items = store.query_all(OP, STATUS_GSI, Sk::Any, None).await?;
    let mut docs = items
        .iter()
        .map(|i| Reader::new(OP, i).status())
        .collect::<Result<Vec<_>>>()?;
    docs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(docs)
}

/// One status document by its key (a GetItem, eventually consistent: half a read unit per
/// 4 KB; a write of the last second may not be seen yet).
pub(super) async fn get_status(store: &DynamoStore, name: &str) -> Result<Option<StatusDoc>> {
    const OP: &str = "get status";
    let item = store.get_item_eventually(OP, status_pk(name)).await?;
    item.map(|i| Reader::new(OP, &i).status()).transpose()
}
