//! Worker registrations: one item per worker, listed through the `WORKERS` index partition.

use super::fence::Write;
use super::items::*;
use super::{DynamoStore, Sk};
use crate::model::WorkerInfo;
use crate::store::{Fence, Result};

pub(super) async fn put_worker(
    store: &DynamoStore,
    worker: &WorkerInfo,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "put worker";
    let write = Write::Put(worker_item(worker));
    store.write_fenced(OP, OP, fence, write).await?;
    Ok(())
}

pub(super) async fn remove_worker(
    store: &DynamoStore,
    worker_id: &str,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "remove worker";
    let write = Write::Delete {
        pk: worker_pk(worker_id),
        index: Some(WORKERS_GSI.to_string()),
    };
    store.write_fenced(OP, OP, fence, write).await?;
    Ok(())
}

pub(super) async fn list_workers(
    store: &DynamoStore,
    step: Option<&str>,
) -> Result<Vec<WorkerInfo>> {
    const OP: &str = "list workers";
    let sk = match step {
        Some(step) => Sk::BeginsWith(format!("{step}#")),
        None => Sk::Any,
    };
    let items = store.query_all(OP, WORKERS_GSI, sk, None).await?;
    let mut workers = items
        .iter()
        .map(|i| Reader::new(OP, i).worker())
        .collect::<Result<Vec<_>>>()?;
    workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(workers)
}
