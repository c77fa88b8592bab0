//! A fleet's running account of what its instances cost. Every pass the controller hands it
//! the instances its provider listed (each with its price and the worker registered on it);
//! each accrues its hourly price from launch to this pass, split into **boot** (before a worker
//! registered on it), **busy** (the share of its slots running tasks at the pass) and **idle**
//! (the rest). An instance that is no longer listed is closed: billed at least
//! [`BILLING_MINIMUM_MS`], the minimum's top-up counted as idle (or boot if no worker ever
//! came). Busy slots are sampled once per pass, so busy and idle are as exact as the interval.
//! An instance's end is the last pass that listed it; after a controller restart the closed
//! totals come back from the fleet's status document and a listed instance is accounted from
//! its launch at the current price.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Rate, BILLING_MINIMUM_MS};
use crate::clock::Millis;
use crate::model::WorkerInfo;
use crate::provider::Instance;

/// Dollars and times of a fleet's instances.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CostTotals {
    /// Everything: `boot + busy + idle`.
    pub dollars: f64,
    pub boot_dollars: f64,
    pub busy_dollars: f64,
    pub idle_dollars: f64,
    /// Billed instance time, priced or not.
    pub instance_ms: Millis,
    /// Instance time without a known price (not in `dollars`).
    #[serde(default)]
    pub unpriced_ms: Millis,
    /// Instances accounted (closed ones, or all for a fleet's whole figure).
    pub instances: u64,
    /// `instance_ms` split as the dollars are, priced or not: before a worker registered
    /// (with the minimum's top-up of an instance that never got one)...
    #[serde(default)]
    pub boot_ms: Millis,
    /// ... the busy share of the slots' time (in instance time: an instance with one of two
    /// slots busy for an hour adds half an hour) ...
    #[serde(default)]
    pub busy_ms: Millis,
    /// ... and the rest, the minimum's top-up included.
    #[serde(default)]
    pub idle_ms: Millis,
    /// The part of `idle_ms` when no slot of the instance was busy (the minimum's top-up
    /// included): what idle instances cost, as against free slots beside busy ones.
    #[serde(default)]
    pub empty_ms: Millis,
}

impl CostTotals {
    /// Adds `o`'s figures to these (two fleets' totals, a fleet's closed and listed ones).
    pub fn add(&mut self, o: &CostTotals) {
        self.dollars += o.dollars;
        self.boot_dollars += o.boot_dollars;
        self.busy_dollars += o.busy_dollars;
        self.idle_dollars += o.idle_dollars;
        self.instance_ms += o.instance_ms;
        self.unpriced_ms += o.unpriced_ms;
        self.instances += o.instances;
        self.boot_ms += o.boot_ms;
        self.busy_ms += o.busy_ms;
        self.idle_ms += o.idle_ms;
        self.empty_ms += o.empty_ms;
    }

    /// Share of the cost spent with no task running (idle, not boot); 0 when nothing cost.
    pub fn idle_share(&self) -> f64 {
        share(self.idle_dollars, self.dollars)
    }

    /// Share of the cost spent booting.
    pub fn boot_share(&self) -> f64 {
        share(self.boot_dollars, self.dollars)
    }

    /// Cost per finished task, everything included; `None` before a task finished.
    pub fn per_task(&self, finished: u64) -> Option<f64> {
        (finished > 0).then(|| self.dollars / finished as f64)
    }

    /// Cost of the slot time tasks used, per finished task (boot and idle left out).
    pub fn busy_per_task(&self, finished: u64) -> Option<f64> {
        (finished > 0).then(|| self.busy_dollars / finished as f64)
    }
}

fn share(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole
    } else {
        0.0
    }
}

/// A fleet's cost figures as `anamo status` and `anamo simulate` show them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetCost {
    /// Closed and listed instances together.
    #[serde(flatten)]
    pub totals: CostTotals,
    /// Instances no longer listed (what a restarted controller resumes from).
    pub closed: CostTotals,
    /// What the listed instances cost per hour together.
    pub usd_per_hour: f64,
    pub idle_share: f64,
    pub boot_share: f64,
    /// `dollars` per finished (succeeded or failed) task of the step, once one finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_task: Option<f64>,
    /// Busy slot time's cost per finished task (boot and idle left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_per_task: Option<f64>,
}

impl FleetCost {
    /// The published figures of `totals`, with `finished` tasks of the step (if counted).
    pub fn new(
        totals: CostTotals,
        closed: CostTotals,
        usd_per_hour: f64,
        finished: Option<u64>,
    ) -> FleetCost {
        FleetCost {
            usd_per_hour,
            idle_share: totals.idle_share(),
            boot_share: totals.boot_share(),
            per_task: finished.and_then(|n| totals.per_task(n)),
            busy_per_task: finished.and_then(|n| totals.busy_per_task(n)),
            closed,
            totals,
        }
    }
}

/// One listed instance, as the ledger keeps it between passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open {
    launched_at: Millis,
    seen_at: Millis,
    /// Whether a worker has registered on it (its boot is over).
    ready: bool,
    rate: Option<Rate>,
    totals: CostTotals,
}

/// An instance as one pass sees it.
pub struct Listed<'a> {
    pub instance: &'a Instance,
    pub worker: Option<&'a WorkerInfo>,
    pub rate: Option<Rate>,
}

/// A fleet's account: closed instances' totals and the listed ones'.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostLedger {
    closed: CostTotals,
    open: BTreeMap<String, Open>,
}

impl CostLedger {
    /// A ledger that goes on from `closed` (the totals a previous controller published).
    pub fn resume(closed: CostTotals) -> CostLedger {
        CostLedger {
            closed,
            open: BTreeMap::new(),
        }
    }

    /// Accrues every listed instance up to `now` and closes those no longer listed. Call it
    /// only with a complete listing: an instance missing from a failed listing would be closed.
    pub fn observe<'a>(&mut self, now: Millis, listed: impl IntoIterator<Item = Listed<'a>>) {
        let mut open = BTreeMap::new();
        for l in listed {
            let id = l.instance.id.clone();
            let o = self.accrued(now, l);
            open.insert(id, o);
        }
        for (_, o) in std::mem::replace(&mut self.open, open) {
            self.closed.add(&close(o));
        }
    }

    /// Accrues one listed instance up to `now`, leaving the others at their last pass: for a
    /// caller that sees every change of an instance's busy slots (the simulator accrues an
    /// instance just before each change, so its busy and idle time are exact).
    pub fn observe_one(&mut self, now: Millis, listed: Listed<'_>) {
        let id = listed.instance.id.clone();
        let o = self.accrued(now, listed);
        self.open.insert(id, o);
    }

    /// Closes one instance that is no longer listed, at its last accrual (see
    /// [`CostLedger::observe_one`]); nothing happens for an instance never accrued.
    pub fn close_one(&mut self, id: &str) {
        if let Some(o) = self.open.remove(id) {
            self.closed.add(&close(o));
        }
    }

    /// `l`'s instance taken from the open ones (or begun at its launch) and accrued to `now`.
    fn accrued(&mut self, now: Millis, l: Listed<'_>) -> Open {
        let mut o = self.open.remove(&l.instance.id).unwrap_or_else(|| Open {
            launched_at: l.instance.launched_at,
            seen_at: l.instance.launched_at,
            ready: false,
            rate: l.rate,
            totals: CostTotals {
                instances: 1,
                ..CostTotals::default()
            },
        });
        o.rate = l.rate.or(o.rate);
        accrue(&mut o, now, l.worker);
        o
    }

    /// Closed instances' totals (what a restarted controller resumes from).
    pub fn closed(&self) -> &CostTotals {
        &self.closed
    }

    /// Closed and listed instances together, the listed ones up to their last pass.
    pub fn totals(&self) -> CostTotals {
        let mut t = self.closed.clone();
        for o in self.open.values() {
            t.add(&o.totals);
        }
        t
    }

    /// How many listed instances have a known price.
    pub fn priced_open(&self) -> u32 {
        let n = self.open.values().filter(|o| o.rate.is_some()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// What the listed instances cost per hour together.
    pub fn usd_per_hour(&self) -> f64 {
        self.open
            .values()
            .filter_map(|o| o.rate.map(|r| r.usd_per_hour))
            .fold(0.0, |a, b| a + b)
    }
}

/// Adds the time from the instance's last pass to `now`: boot until a worker registered (from
/// the worker's start when it is known), then busy and idle by the share of busy slots now.
fn accrue(o: &mut Open, now: Millis, worker: Option<&WorkerInfo>) {
    let from = o.seen_at;
    let to = now.max(from);
    o.seen_at = to;
    let boot_end = match (o.ready, worker) {
        (true, _) => from,
        (false, Some(w)) => w.started_at.clamp(from, to),
        (false, None) => to,
    };
    o.ready = o.ready || worker.is_some();
    let busy = worker
        .filter(|w| w.slots > 0)
        .map(|w| f64::from(w.busy_slots.min(w.slots)) / f64::from(w.slots))
        .unwrap_or(0.0);
    let after_boot = to - boot_end;
    let busy_ms = (after_boot as f64 * busy).round() as Millis;
    let t = &mut o.totals;
    t.instance_ms += to - from;
    t.boot_ms += boot_end - from;
    t.busy_ms += busy_ms;
    t.idle_ms += after_boot - busy_ms;
    if busy == 0.0 {
        t.empty_ms += after_boot;
    }
    let Some(rate) = o.rate else {
        t.unpriced_ms += to - from;
        return;
    };
    t.boot_dollars += rate.dollars(boot_end - from);
    let after_boot = rate.dollars(after_boot);
    t.busy_dollars += after_boot * busy;
    t.idle_dollars += after_boot * (1.0 - busy);
    t.dollars = t.boot_dollars + t.busy_dollars + t.idle_dollars;
}

/// A closed instance's totals: billed at least [`BILLING_MINIMUM_MS`].
fn close(mut o: Open) -> CostTotals {
    let ran = o.seen_at - o.launched_at;
    let top_up = (BILLING_MINIMUM_MS - ran).max(0);
    if top_up > 0 {
        let t = &mut o.totals;
        t.instance_ms += top_up;
        if o.ready {
            t.idle_ms += top_up;
            t.empty_ms += top_up;
        } else {
            t.boot_ms += top_up;
        }
        match o.rate {
            Some(rate) if o.ready => t.idle_dollars += rate.dollars(top_up),
            Some(rate) => t.boot_dollars += rate.dollars(top_up),
            None => t.unpriced_ms += top_up,
        }
        t.dollars = t.boot_dollars + t.busy_dollars + t.idle_dollars;
    }
    o.totals
}
