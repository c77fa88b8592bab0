//! Worker registrations: one item per worker, listed through the `WORKERS` index partition.

use super::items::*;
use super::{DynamoStore, Sk};
use crate::model::WorkerInfo;
use crate::store::Result;

pub(super) async fn put_worker(store: &DynamoStore, worker: &WorkerInfo) -> Result<()> {
    const OP: &str = "put worker";
    store.mix.add(OP);
    store
        .client
        .put_item()
        .table_name(&store.table)
        .set_item(Some(worker_item(worker)))
        .send()
        .await
        .map_err(|e| store.err(OP, e))?;
    Ok(())
}

pub(super) async fn remove_worker(store: &DynamoStore, worker_id: &str) -> Result<()> {
    const OP: &str = "remove worker";
    store
        .client
        .delete_item()
        .table_name(&store.table)
        .set_key(Some(key(worker_pk(worker_id))))
        .send()
        .await
        .map_err(|e| store.err(OP, e))?;
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
