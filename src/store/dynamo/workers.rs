//! Worker registrations: one item per worker, listed through the `WORKERS` index partition.
//!
//! The controller's drain mark on a worker is written twice: as an item of its own (`WD#{worker}`,
//! in the same index partition, sort key `{step}#{worker}#drain`), which listings merge into the
//! worker's `drain_requested`, and as the attribute `drain_requested` on the worker's item,
//! which the worker's registration refresh returns (an UpdateItem with `ReturnValues`): the
//! worker learns of it without a read of its own. The refresh sets only the registration's
//! attributes, so it never overwrites the mark.

use std::collections::HashSet;

use aws_sdk_dynamodb::types::AttributeValue;

use super::expr::Expr;
use super::fence::Write;
use super::items::*;
use super::layout::LEASE_TTL_MS;
use super::{DynamoStore, Sk};
use crate::clock::Millis;
use crate::model::WorkerInfo;
use crate::store::{Fence, Result};

/// The drain mark's attribute on the worker's own item (not projected into the index).
const DRAIN_REQUESTED: &str = "drain_requested";
/// A registration's optional attributes, removed when the registration has none.
const OPTIONAL: [&str; 3] = ["instance_id", "stop_reason", LEASE_TTL_MS];

/// A registration's write: the worker's attributes set, its absent optional ones removed,
/// every other attribute (the drain mark) kept. Creates the item when there is none.
fn registration_update(store: &DynamoStore, worker: &WorkerInfo) -> (String, Expr) {
    let mut item = worker_item(worker);
    if let Some(ttl) = store.lease_ttls.of(&worker.worker_id) {
        item.insert(LEASE_TTL_MS.to_string(), n(ttl));
    }
    let pk = worker_pk(&worker.worker_id);
    item.remove(PK);
    let mut e = Expr::new();
    for attr in OPTIONAL {
        if !item.contains_key(attr) {
            e = e.remove(attr);
        }
    }
    let mut attrs: Vec<(String, AttributeValue)> = item.into_iter().collect();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    for (attr, value) in attrs {
        e = e.set(&attr, value);
    }
    (pk, e)
}

pub(super) async fn put_worker(
    store: &DynamoStore,
    worker: &WorkerInfo,
    fence: Fence<'_>,
) -> Result<()> {
    const OP: &str = "put worker";
    let (pk, expr) = registration_update(store, worker);
    let write = Write::Update {
        pk,
        expr: Box::new(expr),
    };
    store.write_fenced(OP, OP, fence, write).await?;
    store.wrote([WORKERS_GSI]);
    Ok(())
}

/// A worker's own registration refresh, returning the controller's drain mark on it: one
/// UpdateItem (`ReturnValues` ALL_NEW), no read.
pub(super) async fn refresh_worker(store: &DynamoStore, worker: &WorkerInfo) -> Result<bool> {
    const OP: &str = "put worker";
    let (pk, expr) = registration_update(store, worker);
    let item = store.update(OP, pk, expr, true).await?.unwrap_or_default();
    store.wrote([WORKERS_GSI]);
    Ok(matches!(
        item.get(DRAIN_REQUESTED),
        Some(AttributeValue::Bool(true))
    ))
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
    // First on the worker's item (what the worker reads), only while it is registered; then
    // the listed mark, so a mark the controller lists is always one the worker can see.
    let on_item = if drain {
        Expr::new().set(DRAIN_REQUESTED, AttributeValue::Bool(true))
    } else {
        Expr::new().remove(DRAIN_REQUESTED)
    };
    let on_item = Write::Update {
        pk: worker_pk(worker_id),
        expr: Box::new(on_item.cond_exists()),
    };
    store.write_fenced(OP, OP, fence, on_item).await?;
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
