//! Spot interruptions and rebalance recommendations counted per fleet, instance type and zone
//! (`anamo_fleet_interruptions_total`), from the workers' registrations (`stop_reason`, see
//! `anamo worker`) and the provider's listing (instance type, `market.zone`).
//!
//! Each instance is counted once: the controller remembers the instances it counted while
//! their workers stay registered. The first pass after a (re)start only notes the stops
//! already registered: a previous controller counted them, and a restarted counter that
//! counted them again would show in `increase()` as new interruptions. Stops that happened
//! while no controller ran are therefore not counted. The totals a fleet's status shows are
//! resumed from its published status, like its cost.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::{StopReason, WorkerInfo};
use crate::provider::Instance;

/// The label value when the listing does not give an instance's type or zone.
pub const UNKNOWN: &str = "unknown";

/// One interrupted (or rebalanced) instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Interrupted {
    pub instance_type: String,
    pub zone: String,
    /// `interruption` or `rebalance`.
    pub kind: &'static str,
}

/// A fleet's interrupted and rebalanced instances so far, as its status shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptionTotals {
    /// Instances whose worker got a spot interruption notice.
    pub interruption: u64,
    /// Instances whose worker got a rebalance recommendation (and no notice).
    pub rebalance: u64,
    /// The same instances by kind, instance type and zone (the labels of
    /// `anamo_fleet_interruptions_total`), sorted. Missing in statuses published before it
    /// was added: those totals resume without a breakdown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_offering: Vec<OfferingInterruptions>,
}

/// Interrupted (or rebalanced) instances of one kind, instance type and zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OfferingInterruptions {
    /// `interruption` or `rebalance`.
    pub kind: String,
    pub instance_type: String,
    pub zone: String,
    pub count: u64,
}

impl InterruptionTotals {
    fn add(&mut self, kind: &str, instance_type: &str, zone: &str) {
        match kind {
            "rebalance" => self.rebalance += 1,
            _ => self.interruption += 1,
        }
        self.add_to_breakdown(kind, instance_type, zone, 1);
    }

    /// Adds `n` instances to the breakdown only.
    fn add_to_breakdown(&mut self, kind: &str, instance_type: &str, zone: &str, n: u64) {
        let same = |o: &&mut OfferingInterruptions| {
            o.kind == kind && o.instance_type == instance_type && o.zone == zone
        };
        match self.by_offering.iter_mut().find(same) {
            Some(o) => o.count += n,
            None => {
                self.by_offering.push(OfferingInterruptions {
                    kind: kind.to_string(),
                    instance_type: instance_type.to_string(),
                    zone: zone.to_string(),
                    count: n,
                });
                self.by_offering.sort();
            }
        }
    }
}

/// The `kind` of a stop reason, when it is one counted here.
fn kind_of(reason: Option<StopReason>) -> Option<&'static str> {
    match reason? {
        StopReason::SpotInterruption => Some("interruption"),
        StopReason::Rebalance => Some("rebalance"),
        _ => None,
    }
}

/// What one fleet's counting remembers between passes.
#[derive(Debug, Default)]
pub struct InterruptionTally {
    /// Instances (or, off EC2, workers) counted and still registered; `None` before the first
    /// pass.
    counted: Option<BTreeSet<String>>,
    totals: InterruptionTotals,
}

impl InterruptionTally {
    /// What was counted so far (with what was resumed).
    pub fn totals(&self) -> InterruptionTotals {
        self.totals.clone()
    }

    /// Adds the totals a previous controller published.
    pub fn resume(&mut self, published: InterruptionTotals) {
        self.totals.interruption += published.interruption;
        self.totals.rebalance += published.rebalance;
        for o in published.by_offering {
            self.totals
                .add_to_breakdown(&o.kind, &o.instance_type, &o.zone, o.count);
        }
    }

    /// The instances newly interrupted or rebalanced in this pass's `workers` (a fleet's
    /// registrations, read without error) and `instances` (its listing).
    pub fn observe(&mut self, workers: &[WorkerInfo], instances: &[Instance]) -> Vec<Interrupted> {
        let first_pass = self.counted.is_none();
        let counted = self.counted.get_or_insert_with(BTreeSet::new);
        let listed: BTreeMap<&str, &Instance> =
            instances.iter().map(|i| (i.id.as_str(), i)).collect();
        let mut registered = BTreeSet::new();
        let mut new = Vec::new();
        for w in workers {
            let Some(kind) = kind_of(w.stop_reason) else {
                continue;
            };
            let key = w.instance_id.clone().unwrap_or_else(|| w.worker_id.clone());
            registered.insert(key.clone());
            if !counted.insert(key) || first_pass {
                continue;
            }
            let inst = w.instance_id.as_deref().and_then(|i| listed.get(i));
            let hit = Interrupted {
                instance_type: inst
                    .and_then(|i| i.instance_type.clone())
                    .unwrap_or_else(|| UNKNOWN.to_string()),
                zone: inst
                    .and_then(|i| i.market.zone.clone())
                    .unwrap_or_else(|| UNKNOWN.to_string()),
                kind,
            };
            self.totals.add(kind, &hit.instance_type, &hit.zone);
            new.push(hit);
        }
        // A registration, once removed, does not come back: forget it.
        counted.retain(|k| registered.contains(k));
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::WorkerState;
    use crate::provider::{InstanceState, Market};

    fn worker(instance: &str, reason: Option<StopReason>) -> WorkerInfo {
        WorkerInfo {
            worker_id: format!("w-{instance}"),
            step: "align".into(),
            instance_id: Some(instance.into()),
            slots: 1,
            busy_slots: 0,
            started_at: 0,
            last_seen: 0,
            last_busy_at: 0,
            state: WorkerState::Draining,
            stop_reason: reason,
            drain_requested: false,
        }
    }

    fn instance(id: &str, ty: &str, zone: &str) -> Instance {
        Instance {
            id: id.into(),
            fleet: "align".into(),
            state: InstanceState::Running,
            launched_at: 0,
            instance_type: Some(ty.into()),
            launch_batch: None,
            protected: false,
            market: Market {
                lifecycle: None,
                zone: Some(zone.into()),
            },
        }
    }

    fn hit(ty: &str, zone: &str, kind: &'static str) -> Interrupted {
        Interrupted {
            instance_type: ty.into(),
            zone: zone.into(),
            kind,
        }
    }

    #[test]
    fn counts_each_instance_once_by_type_and_zone() {
        let mut t = InterruptionTally::default();
        let listed = [
            instance("i-1", "c6i.4xlarge", "eu-west-1a"),
            instance("i-2", "c6a.4xlarge", "eu-west-1b"),
        ];
        // The first pass (after a start) only notes what is registered already.
        let old = [worker("i-0", Some(StopReason::SpotInterruption))];
        assert!(t.observe(&old, &listed).is_empty());

        let mut ws = vec![
            old[0].clone(),
            worker("i-1", Some(StopReason::Rebalance)),
            worker("i-2", Some(StopReason::Signal)),
            worker("i-3", None),
        ];
        assert_eq!(
            t.observe(&ws, &listed),
            [hit("c6i.4xlarge", "eu-west-1a", "rebalance")]
        );
        // The next pass sees the same registrations: nothing new.
        assert!(t.observe(&ws, &listed).is_empty());

        // A rebalanced instance later interrupted is one instance, counted once; an instance
        // no longer listed is counted with unknown type and zone.
        ws[1].stop_reason = Some(StopReason::SpotInterruption);
        ws[3].stop_reason = Some(StopReason::SpotInterruption);
        assert_eq!(
            t.observe(&ws, &listed),
            [hit(UNKNOWN, UNKNOWN, "interruption")]
        );
        assert!(t.observe(&ws, &listed).is_empty());
        let published = OfferingInterruptions {
            kind: "interruption".into(),
            instance_type: UNKNOWN.into(),
            zone: UNKNOWN.into(),
            count: 4,
        };
        t.resume(InterruptionTotals {
            interruption: 5,
            rebalance: 1,
            by_offering: vec![published],
        });
        let totals = t.totals();
        assert_eq!((totals.interruption, totals.rebalance), (6, 2));
        let breakdown: Vec<_> = totals
            .by_offering
            .iter()
            .map(|o| {
                (
                    o.kind.as_str(),
                    o.instance_type.as_str(),
                    o.zone.as_str(),
                    o.count,
                )
            })
            .collect();
        assert_eq!(
            breakdown,
            [
                ("interruption", UNKNOWN, UNKNOWN, 5),
                ("rebalance", "c6i.4xlarge", "eu-west-1a", 1)
            ]
        );
    }
}
