//! Worker registrations: one item per worker, listed through the `WORKERS` index partition.
//! The controller's drain mark on a worker is an item of its own (`WD#{worker}`, in the same
//! index partition, sort key `{step}#{worker}#drain`), so the worker's heartbeat put never
//! overwrites it; listing merges it into the worker's `drain_requested`.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;

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
    let drain = Write::Delete {
        pk: drain_pk(worker_id),
        index: Some(WORKERS_GSI.to_string()),
    };
    store.write_fenced(OP, OP, fence, drain).await?;
    Ok(())
}

fn drain_pk(worker_id: &str) -> String {
    format!("WD#{worker_id}")
}

pub(super) async fn set_worker_drain(
    store: &DynamoStore,
    step: &str,
    worker_id: &str,
    drain: bool,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "set worker drain";
    let write = if drain {
        Write::Put(Item::from([
            (PK.to_string(), s(drain_pk(worker_id))),
            (INDEX_PK.to_string(), s(WORKERS_GSI)),
            (INDEX_SK.to_string(), s(format!("{step}#{worker_id}#drain"))),
            ("worker_id".to_string(), s(worker_id)),
        ]))
    } else {
        Write::Delete {
            pk: drain_pk(worker_id),
            index: Some(WORKERS_GSI.to_string()),
        }
    };
    store.write_fenced(OP, OP, fence, write).await?;
    Ok(())
}

pub(super) async fn worker_drain_requested(store: &DynamoStore, worker_id: &str) -> Result<bool> {
    const OP: &str = "worker drain requested";
    Ok(store.get_item(OP, drain_pk(worker_id)).await?.is_some())
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
    let is_drain =
        |i: &&Item| matches!(i.get(PK), Some(AttributeValue::S(pk)) if pk.starts_with("WD#"));
    let drains: HashSet<String> = items
        .iter()
        .filter(is_drain)
        .map(|i| Reader::new(OP, i).s("worker_id"))
        .collect::<Result<_>>()?;
    let mut workers = items
        .iter()
        .filter(|i| !is_drain(i))
        .map(|i| {
            let r = Reader::new(OP, i);
            Ok((r.worker()?, r.opt_n(LEASE_TTL_MS)?))
        })
        .collect::<Result<Vec<_>>>()?;
    for (w, _) in &mut workers {
        w.drain_requested = drains.contains(&w.worker_id);
    }
    workers.sort_by(|a, b| a.0.worker_id.cmp(&b.0.worker_id));
    Ok(workers)
}
