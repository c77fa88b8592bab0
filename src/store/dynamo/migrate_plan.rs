//! What `anamo table migrate` writes to one item of a layout-1 table (pure; the I/O is in
//! [`super::migrate`]). See docs/dynamodb-table.md, "Upgrading the layout".
//!
//! Each item gets its layout-2 index keys and loses its layout-1 ones (`gsi1pk`, `gsi1sk`) in one
//! UpdateItem conditional on every attribute the keys were computed from, as read: a task that
//! changed meanwhile (claimed, completed, heartbeat by a layout-1 worker) fails the condition and
//! is re-read, never overwritten. A layout-1 binary writes `gsi1pk`/`gsi1sk` on every change it
//! makes, a layout-2 binary never does: an item that has them again was written by a layout-1
//! client since migrate last fixed it. A task running under a lease a layout-1 worker took is
//! marked with that lease's token ([`LAYOUT1_LEASE`]) so that migrate waits for it to end before
//! it drops `gsi1`.

use aws_sdk_dynamodb::types::AttributeValue;

use super::items::*;
use super::layout::{task_index_keys, TaskKeys, INDEX_PK, INDEX_SK};
use super::lease_expiry::{expiry_of, Expiry};
use crate::clock::Millis;
use crate::model::TaskState;
use crate::store::Result;

/// Layout 1's index and the keys of a task running under a layout-1 lease (what migrate
/// reads and removes; docs/dynamodb-table.md before version 2).
pub(crate) mod v1 {
    use crate::clock::Millis;

    pub(crate) const INDEX: &str = "gsi1";
    pub(crate) const PK: &str = "gsi1pk";
    pub(crate) const SK: &str = "gsi1sk";

    /// `(gsi1pk, gsi1sk)` of a running task: `S#{step}#running`, `{lease_expires_at:013}#{id}`.
    pub(crate) fn running_keys(step: &str, id: &str, lease_expires_at: Millis) -> (String, String) {
        (
            format!("S#{step}#running"),
            format!("{:013}#{id}", lease_expires_at.max(0)),
        )
    }
}

/// Set on a running task whose lease a layout-1 worker holds: that lease's token. Meaningful
/// only while it equals `lease_token`; migrate removes it otherwise.
pub(crate) const LAYOUT1_LEASE: &str = "layout1_lease";

/// An attribute's value as migrate read it (`None`: the attribute was missing).
pub(crate) type Seen = (&'static str, Option<AttributeValue>);

/// One conditional UpdateItem bringing an item to layout 2.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fix {
    pub pk: String,
    pub set: Vec<(&'static str, AttributeValue)>,
    pub remove: Vec<&'static str>,
    /// The write holds only if each of these still has the value read.
    pub unchanged: Vec<Seen>,
}

impl Fix {
    /// The item as the write leaves it.
    pub(crate) fn apply(&self, item: &Item) -> Item {
        let mut out = item.clone();
        for (k, v) in &self.set {
            out.insert(k.to_string(), v.clone());
        }
        for k in &self.remove {
            out.remove(*k);
        }
        out
    }
}

/// What one scanned item needs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plan {
    /// Nothing: it is a layout-2 item already (or not an indexed item at all).
    Done,
    /// Its step has no shard count yet: register the step first.
    NeedsStep(String),
    Fix(Fix),
}

/// What a pass over the table found, for progress and for deciding whether it is finished.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ItemFacts {
    /// The item carried layout-1 index keys (a layout-1 client wrote it since the last pass).
    pub layout1_keys: bool,
    /// A running task whose lease a layout-1 worker holds.
    pub layout1_lease: bool,
}

fn opt(item: &Item, attr: &str) -> Option<AttributeValue> {
    match item.get(attr) {
        None | Some(AttributeValue::Null(_)) => None,
        Some(v) => Some(v.clone()),
    }
}

fn as_s(item: &Item, attr: &str) -> Option<String> {
    match item.get(attr) {
        Some(AttributeValue::S(v)) => Some(v.clone()),
        _ => None,
    }
}

/// The facts about `item` that decide whether migrate must wait for layout-1 clients.
pub(crate) fn facts(item: &Item) -> Result<ItemFacts> {
    let layout1_keys = opt(item, v1::PK).is_some() || opt(item, v1::SK).is_some();
    if !is_task(item) {
        return Ok(ItemFacts {
            layout1_keys,
            layout1_lease: false,
        });
    }
    Ok(ItemFacts {
        layout1_keys,
        layout1_lease: layout1_lease_token(item)?.is_some(),
    })
}

fn is_task(item: &Item) -> bool {
    as_s(item, PK).is_some_and(|pk| pk.starts_with("T#"))
}

/// The token of the lease a layout-1 worker holds on this running task, if one does: marked
/// by an earlier pass, or seen now as a layout-1 worker leaves a running task (index keys
/// `S#{step}#running` and `{lease_expires_at:013}#{id}`, which claims and heartbeats of layout 1
/// write and layout 2 never does).
fn layout1_lease_token(item: &Item) -> Result<Option<String>> {
    let r = Reader::new("migrate", item);
    if r.state()? != TaskState::Running {
        return Ok(None);
    }
    let Some(token) = r.opt_s(LEASE_TOKEN)? else {
        return Ok(None);
    };
    if r.opt_s(LAYOUT1_LEASE)?.as_deref() == Some(token.as_str()) {
        return Ok(Some(token));
    }
    let (step, id) = (r.s(STEP)?, r.s(ID)?);
    let Some(expires) = r.opt_n::<Millis>(LEASE_EXPIRES_AT)? else {
        return Ok(None);
    };
    let (pk, sk) = v1::running_keys(&step, &id, expires);
    let held = as_s(item, v1::PK) == Some(pk) && as_s(item, v1::SK) == Some(sk);
    Ok(held.then_some(token))
}

/// What `item` needs to be a layout-2 item at `now`; `shards` is the shard count of a step
/// (None: the step has none yet). A task whose layout-1 lease expired is requeued as layout 1
/// would (pending, or failed on its last attempt): no layout-1 controller sees it any more.
pub(crate) fn plan(item: &Item, shards: impl Fn(&str) -> Option<u32>, now: Millis) -> Result<Plan> {
    let Some(pk) = as_s(item, PK) else {
        return Ok(Plan::Done);
    };
    if !is_task(item) {
        return Ok(plan_registry_item(pk, item));
    }
    let r = Reader::new("migrate", item);
    let (step, id, state) = (r.s(STEP)?, r.s(ID)?, r.state()?);
    let Some(step_shards) = shards(&step) else {
        return Ok(Plan::NeedsStep(step));
    };
    let layout1_token = layout1_lease_token(item)?;
    let expires: Option<Millis> = r.opt_n(LEASE_EXPIRES_AT)?;
    if layout1_token.is_some() && expires.is_some_and(|at| at < now) {
        return requeue_expired(pk, item, step_shards, now).map(Plan::Fix);
    }
    let created_at: Millis = r.opt_n(CREATED_AT)?.unwrap_or(0);
    let lease_owner = r.opt_s(LEASE_OWNER)?;
    let (g2pk, g2sk) = task_index_keys(&TaskKeys {
        step: &step,
        id: &id,
        state,
        priority: r.opt_n(PRIORITY)?.unwrap_or(0),
        updated_at: r.opt_n(UPDATED_AT)?.unwrap_or(created_at),
        retry_at: r.opt_n(RETRY_AT)?.unwrap_or(0),
        lease_owner: lease_owner.as_deref(),
        shards: step_shards,
    });
    let mut fix = Fix {
        pk,
        set: Vec::new(),
        remove: Vec::new(),
        unchanged: Vec::new(),
    };
    if as_s(item, INDEX_PK).as_deref() != Some(g2pk.as_str())
        || as_s(item, INDEX_SK).as_deref() != Some(g2sk.as_str())
    {
        fix.set.push((INDEX_PK, s(g2pk)));
        fix.set.push((INDEX_SK, s(g2sk)));
    }
    drop_layout1_keys(item, &mut fix);
    match (layout1_token, opt(item, LAYOUT1_LEASE)) {
        (Some(token), Some(AttributeValue::S(marked))) if marked == token => {}
        (Some(token), _) => fix.set.push((LAYOUT1_LEASE, s(token))),
        (None, Some(_)) => fix.remove.push(LAYOUT1_LEASE),
        (None, None) => {}
    }
    if fix.set.is_empty() && fix.remove.is_empty() {
        return Ok(Plan::Done);
    }
    for attr in [
        STATE,
        PRIORITY,
        UPDATED_AT,
        RETRY_AT,
        LEASE_OWNER,
        LEASE_TOKEN,
        LAYOUT1_LEASE,
        INDEX_PK,
        INDEX_SK,
    ] {
        fix.unchanged.push((attr, opt(item, attr)));
    }
    Ok(Plan::Fix(fix))
}

/// A running task whose layout-1 lease expired, requeued as layout 1's `requeue_expired` does,
/// with layout-2 keys; conditional on the lease as read (a heartbeat or completion wins).
fn requeue_expired(pk: String, item: &Item, shards: u32, now: Millis) -> Result<Fix> {
    let r = Reader::new("migrate", item);
    let (step, id) = (r.s(STEP)?, r.s(ID)?);
    let Expiry {
        target,
        priority,
        reason,
    } = expiry_of(&r)?;
    let (g2pk, g2sk) = task_index_keys(&TaskKeys {
        step: &step,
        id: &id,
        state: target,
        priority,
        updated_at: now,
        retry_at: 0,
        lease_owner: None,
        shards,
    });
    let mut fix = Fix {
        pk,
        set: vec![
            (STATE, s(target.as_str())),
            (UPDATED_AT, n(now)),
            (REASON, s(reason)),
            (INDEX_PK, s(g2pk)),
            (INDEX_SK, s(g2sk)),
        ],
        remove: vec![LEASE_OWNER, LEASE_TOKEN, LEASE_EXPIRES_AT, LAYOUT1_LEASE],
        unchanged: [STATE, LEASE_TOKEN, LEASE_EXPIRES_AT]
            .into_iter()
            .map(|a| (a, opt(item, a)))
            .collect(),
    };
    drop_layout1_keys(item, &mut fix);
    Ok(fix)
}

/// Removes the layout-1 keys (conditional on them as read: a layout-1 heartbeat rewrites
/// `gsi1sk` and means the lease is still a layout-1 one).
fn drop_layout1_keys(item: &Item, fix: &mut Fix) {
    for attr in [v1::PK, v1::SK] {
        fix.unchanged.push((attr, opt(item, attr)));
        if opt(item, attr).is_some() {
            fix.remove.push(attr);
        }
    }
}

/// The step registry, worker registrations and status documents keep their index keys' values
/// under the layout-2 names.
fn plan_registry_item(pk: String, item: &Item) -> Plan {
    let (Some(gpk), Some(gsk)) = (opt(item, v1::PK), opt(item, v1::SK)) else {
        return Plan::Done;
    };
    let mut fix = Fix {
        pk,
        set: vec![(INDEX_PK, gpk), (INDEX_SK, gsk)],
        remove: Vec::new(),
        unchanged: Vec::new(),
    };
    drop_layout1_keys(item, &mut fix);
    Plan::Fix(fix)
}

#[cfg(test)]
#[path = "migrate_plan_tests.rs"]
mod tests;
