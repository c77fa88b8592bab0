//! Capacity types in the simulator ([`SimCapacity`], `anamo simulate --capacity-type`): each
//! fleet's instances are bought as spot or on-demand as the real `ec2` provider buys them —
//! the offering is chosen by the controller's own offerings cache
//! ([`CapacityState::choose`]: unavailable offerings skipped for [`UNAVAILABLE_TTL`],
//! `spot-with-fallback` on on-demand while no spot offering is available or after too many
//! interruptions), an offering inside one of its unavailable windows answers with an
//! insufficient-capacity error that marks it in that cache, and the launch then tries the
//! next choice (at most two per call, like `Ec2Fleet::launch_with_capacity`). Spot instances
//! are interrupted at the spot rate (seeded), on-demand ones never; each instance is priced
//! at its capacity type's price, in the fleet's cost ledger and in one ledger per capacity
//! type for the report.
//!
//! A simulated fleet has one instance type, so an offering here is (that type, capacity
//! type); zones are not modelled.

use std::collections::BTreeMap;

use serde::Serialize;

use super::World;
use crate::clock::Millis;
use crate::cost::ledger::{CostLedger, Listed};
use crate::cost::{PriceSource, Rate};
use crate::manifest::{CapacityType, SpotFallback};
use crate::provider::offerings::{CapacityState, Choice, Lifecycle, Offering, UNAVAILABLE_TTL};
use crate::provider::ProviderError;

/// How the simulated fleets buy their instances (every fleet alike).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimCapacity {
    pub capacity_type: CapacityType,
    pub fallback: SpotFallback,
    /// What a spot instance costs per hour; on-demand ones cost the fleet's price.
    pub spot_usd_per_hour: f64,
    /// Spot interruptions per spot instance-hour.
    pub spot_interruptions_per_hour: f64,
    /// `[from, to)` times after the start of the run when spot has no capacity.
    pub spot_unavailable: Vec<(Millis, Millis)>,
    /// The same for on-demand.
    pub on_demand_unavailable: Vec<(Millis, Millis)>,
}

impl SimCapacity {
    fn unavailable(&self, lifecycle: Lifecycle, since_start: Millis) -> bool {
        let windows = match lifecycle {
            Lifecycle::Spot => &self.spot_unavailable,
            Lifecycle::OnDemand => &self.on_demand_unavailable,
        };
        windows
            .iter()
            .any(|&(from, to)| (from..to).contains(&since_start))
    }
}

/// Instance time, cost and events of one capacity type over a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CapacityUse {
    /// `spot` or `on-demand`.
    pub capacity_type: &'static str,
    pub instance_hours: f64,
    pub dollars: f64,
    pub launches: u64,
    /// On-demand instances launched by `spot-with-fallback`'s fallback.
    pub fallback_launches: u64,
    pub interruptions: u64,
    /// Launch answers without capacity for this capacity type.
    pub insufficient_capacity: u64,
}

#[derive(Debug, Default)]
struct Counts {
    launches: u64,
    fallback_launches: u64,
    interruptions: u64,
    insufficient_capacity: u64,
}

/// The capacity part of the world: each fleet's offerings cache and what each capacity type
/// cost.
#[derive(Debug, Default)]
pub(crate) struct CapacityWorld {
    states: BTreeMap<usize, CapacityState>,
    ledgers: BTreeMap<Lifecycle, CostLedger>,
    counts: BTreeMap<Lifecycle, Counts>,
}

impl World {
    /// `FleetProvider::launch` of an `ec2` fleet with a capacity type: `count` instances of
    /// the offering the cache chooses, trying a second choice when the first had no capacity.
    pub(super) fn launch_with_capacity(
        &mut self,
        fleet: usize,
        count: u32,
        batch: &str,
        cap: &SimCapacity,
    ) -> Result<u32, ProviderError> {
        let now = self.now;
        let since_start = now - self.start();
        let pool = [(self.fleets[fleet].pricing.instance_type.clone(), None)];
        let mut failures = Vec::new();
        for _ in 0..2 {
            let state = self.capacity.states.entry(fleet).or_default();
            let (lifecycle, fallback) =
                match state.choose(cap.capacity_type, &cap.fallback, &pool, now) {
                    Choice::Launch {
                        lifecycle,
                        fallback,
                        ..
                    } => (lifecycle, fallback.is_some()),
                    Choice::Exhausted { reason, .. } => {
                        failures.push(reason);
                        break;
                    }
                };
            let counts = self.capacity.counts.entry(lifecycle).or_default();
            if cap.unavailable(lifecycle, since_start) {
                counts.insufficient_capacity += 1;
                self.tally.capacity_errors += 1;
                let offering = Offering {
                    instance_type: pool[0].0.clone(),
                    subnet: None,
                    lifecycle,
                };
                failures.push(format!(
                    "{offering}: InsufficientInstanceCapacity (simulated)"
                ));
                state.mark_unavailable(offering, now, UNAVAILABLE_TTL);
                continue;
            }
            let launched = self.spawn(fleet, count, batch, Some(lifecycle));
            let counts = self.capacity.counts.entry(lifecycle).or_default();
            counts.launches += u64::from(launched.1);
            if fallback {
                counts.fallback_launches += u64::from(launched.1);
            }
            return Ok(launched.0);
        }
        Err(ProviderError::InsufficientCapacity(failures.join("; ")))
    }

    /// When a new instance of `lifecycle` is interrupted: spot ones at the capacity's rate,
    /// on-demand ones never, and without a capacity type at the settings' spot rate.
    pub(super) fn interruption_rate(&self, lifecycle: Option<Lifecycle>) -> f64 {
        match (lifecycle, &self.settings.capacity) {
            (Some(Lifecycle::OnDemand), _) => 0.0,
            (Some(Lifecycle::Spot), Some(cap)) => cap.spot_interruptions_per_hour,
            _ => self.settings.spot_rate_per_hour,
        }
    }

    /// Notes that instance `i` got a spot interruption notice: counted per capacity type and
    /// in its fleet's offerings cache (for `spot-with-fallback`).
    pub(super) fn note_interruption(&mut self, i: usize) {
        let inst = &self.instances[i];
        let Some(lifecycle) = inst.lifecycle else {
            return;
        };
        let keep = self
            .settings
            .capacity
            .as_ref()
            .map_or(0, |c| crate::clock::ms(c.fallback.window));
        let (fleet, id, now) = (inst.fleet, inst.id.clone(), self.now);
        self.capacity
            .states
            .entry(fleet)
            .or_default()
            .record_interruption(&id, now, keep);
        self.capacity
            .counts
            .entry(lifecycle)
            .or_default()
            .interruptions += 1;
    }

    /// The price of instance `i`: a spot instance's is the capacity's spot price, any other
    /// the fleet's.
    pub(super) fn rate_of(&self, i: usize) -> Option<Rate> {
        let inst = &self.instances[i];
        match (inst.lifecycle, &self.settings.capacity) {
            (Some(Lifecycle::Spot), Some(cap)) => Some(Rate {
                usd_per_hour: cap.spot_usd_per_hour,
                source: PriceSource::Spot,
            }),
            _ => self.fleets[inst.fleet].pricing.rate,
        }
    }

    /// Accrues instance `i` in its capacity type's ledger too.
    pub(super) fn accrue_capacity(&mut self, i: usize, listed: Listed<'_>) {
        if let Some(l) = self.instances[i].lifecycle {
            let now = self.now;
            self.capacity
                .ledgers
                .entry(l)
                .or_default()
                .observe_one(now, listed);
        }
    }

    /// Closes instance `i` in its capacity type's ledger.
    pub(super) fn close_capacity(&mut self, i: usize) {
        let inst = &self.instances[i];
        if let Some(l) = inst.lifecycle {
            if let Some(ledger) = self.capacity.ledgers.get_mut(&l) {
                ledger.close_one(&inst.id);
            }
        }
    }

    /// Instance time, cost and events per capacity type (empty without capacity types).
    pub fn capacity_use(&self) -> Vec<CapacityUse> {
        [Lifecycle::Spot, Lifecycle::OnDemand]
            .into_iter()
            .filter(|l| self.capacity.counts.contains_key(l))
            .map(|l| {
                let totals = self
                    .capacity
                    .ledgers
                    .get(&l)
                    .map(CostLedger::totals)
                    .unwrap_or_default();
                let c = &self.capacity.counts[&l];
                CapacityUse {
                    capacity_type: l.as_str(),
                    instance_hours: totals.instance_ms as f64 / 3_600_000.0,
                    dollars: totals.dollars,
                    launches: c.launches,
                    fallback_launches: c.fallback_launches,
                    interruptions: c.interruptions,
                    insufficient_capacity: c.insufficient_capacity,
                }
            })
            .collect()
    }
}
