//! Worker registrations: one item per worker, listed through the `WORKERS` index partition.

use super::fence::Write;
use super::items::*;
use super::layout::LEASE_TTL_MS;
use super::{DynamoStore, Sk};
use crate::clock::Millis;
use crate::model::WorkerInfo;
use crate::store::{Fence, Result};

pub(super) async fn put_worker(
    store: &DynamoStore,
    worker: &WorkerInfo,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "put worker";
    let mut item = worker_item(worker);
    if let Some(ttl) = store.lease_ttls.of(&worker.worker_id) {
        item.insert(LEASE_TTL_MS.to_string(), n(ttl));
    }
    let write = Write::Put(item);
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
    let registrations = list_registrations(store, step).await?;
    Ok(registrations.into_iter().map(|(w, _)| w).collect())
}

/// The registrations with the lease TTL each records (`None` when it records none), sorted by
/// worker id.
pub(super) async fn list_registrations(
    store: &DynamoStore,
    step: Option<&str>,
) -> Result<Vec<(WorkerInfo, Option<Millis>)>> {
    const OP: &str = "list workers";
    let sk = match step {
        Some(step) => Sk::BeginsWith(format!("{step}#")),
        None => Sk::Any,
    };
    let items = store.query_all(OP, WORKERS_GSI, sk, None).await?;
    let mut workers = items
        .iter()
        .map(|i| {
            let r = Reader::new(OP, i);
            Ok((r.worker()?, r.opt_n(LEASE_TTL_MS)?))
        })
        .collect::<Result<Vec<_>>>()?;
    workers.sort_by(|a, b| a.0.worker_id.cmp(&b.0.worker_id));
    Ok(workers)
}
