//! Cost accounting in each pass (the decisions are in [`crate::cost`]): spot prices read where
//! a fleet has spot instances and the last read is older than [`SPOT_PRICE_REFRESH_MS`], then
//! each completely observed fleet's instances accrued into its [`CostLedger`]. A fleet seen for
//! the first time resumes from the closed totals its last published status carries, so a
//! restarted or new leader goes on counting instead of starting at zero.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use tracing::warn;

use super::interruptions::InterruptionTotals;
use super::observe::Observed;
use super::Controller;
use crate::clock::Millis;
use crate::cost::ledger::{CostLedger, CostTotals, Listed};
use crate::cost::{PriceBook, Priced, SPOT_PRICE_REFRESH_MS};
use crate::planner::{PlanInput, Spend};
use crate::provider::offerings::Lifecycle;
use crate::store::StatusDoc;

/// The status document of a fleet (its published report, which carries its cost).
pub(super) fn fleet_doc(fleet: &str) -> String {
    format!("fleet/{fleet}")
}

/// The value at `path` in `fleet`'s published report (its cost's closed-instance totals, its
/// interruption totals); the default when the report or the value is missing or unreadable.
fn published<T: DeserializeOwned + Default>(fleet: &str, docs: &[StatusDoc], path: &[&str]) -> T {
    let name = fleet_doc(fleet);
    docs.iter()
        .find(|d| d.name == name)
        .and_then(|d| path.iter().try_fold(&d.body, |v, key| v.get(key)))
        .and_then(|v| T::deserialize(v).ok())
        .unwrap_or_default()
}

/// What the controller keeps for cost between passes.
#[derive(Debug, Default)]
pub(super) struct CostState {
    pub prices: PriceBook,
    /// When each fleet's spot prices were last read.
    spot_read_at: BTreeMap<String, Millis>,
}

impl Controller {
    /// Accrues every completely observed fleet's instances into its cost ledger.
    pub(super) async fn account(&mut self, observed: &[Observed], now: Millis) {
        self.cost.prices.on_demand = self
            .manifests
            .current()
            .controller
            .as_ref()
            .map(|c| c.spec.on_demand_prices.clone())
            .unwrap_or_default();
        self.resume_ledgers(observed).await;
        for obs in observed {
            if obs.error.is_some() {
                // Accrued next pass, from the instances' last pass: a partial listing would
                // close instances that still run.
                continue;
            }
            self.read_spot_prices(obs, now).await;
            let workers: BTreeMap<&str, _> = obs
                .workers
                .iter()
                .filter_map(|w| Some((w.instance_id.as_deref()?, w)))
                .collect();
            let fleet_price = obs
                .fleet
                .spec
                .budget
                .as_ref()
                .and_then(|b| b.price_per_instance_hour);
            let prices = &self.cost.prices;
            let listed: Vec<Listed<'_>> = obs
                .instances
                .iter()
                .map(|i| Listed {
                    instance: i,
                    worker: workers.get(i.id.as_str()).copied(),
                    rate: prices.rate(
                        Priced {
                            instance_type: i.instance_type.as_deref(),
                            lifecycle: i.market.lifecycle,
                            zone: i.market.zone.as_deref(),
                        },
                        fleet_price,
                    ),
                })
                .collect();
            let mem = self.memory.entry(obs.fleet.name().to_string()).or_default();
            if let Some(ledger) = mem.cost.as_mut() {
                ledger.observe(now, listed);
            }
        }
    }

    /// Hands each fleet's spend to its plan input, for `maxHourlyCost` and `maxTotalCost`.
    pub(super) fn spend_into(&self, input: &mut PlanInput) {
        for f in &mut input.fleets {
            let Some(ledger) = self
                .memory
                .get(&f.policy.fleet)
                .and_then(|m| m.cost.as_ref())
            else {
                continue;
            };
            f.policy.spend = Some(Spend::of(ledger));
        }
    }

    /// Gives every fleet without a ledger one, from its published closed totals (one read of
    /// the status documents, on the first pass that sees such a fleet).
    async fn resume_ledgers(&mut self, observed: &[Observed]) {
        let new: Vec<&str> = observed
            .iter()
            .map(|o| o.fleet.name())
            .filter(|f| self.memory.get(*f).is_none_or(|m| m.cost.is_none()))
            .collect();
        if new.is_empty() {
            return;
        }
        let docs = match self.store.list_status().await {
            Ok(docs) => docs,
            Err(e) => {
                warn!(error = %e, "cannot read the published cost; trying again next pass");
                return;
            }
        };
        for fleet in new {
            let closed: CostTotals = published(fleet, &docs, &["cost", "closed"]);
            let mem = self.memory.entry(fleet.to_string()).or_default();
            mem.cost = Some(CostLedger::resume(closed));
            // Resumed with the cost, from the same document and as often.
            let interruptions: InterruptionTotals = published(fleet, &docs, &["interruptions"]);
            mem.interruptions.resume(interruptions);
        }
    }

    /// Reads the spot prices of the fleet's spot instances' types when they are due: every
    /// [`SPOT_PRICE_REFRESH_MS`], or at once for a type without a price yet. A failed read
    /// leaves the last prices (and on-demand prices for types without one).
    async fn read_spot_prices(&mut self, obs: &Observed, now: Millis) {
        let Some(provider) = obs.provider.as_ref() else {
            return;
        };
        let types: BTreeSet<String> = obs
            .instances
            .iter()
            .filter(|i| i.market.lifecycle == Some(Lifecycle::Spot))
            .filter_map(|i| i.instance_type.clone())
            .collect();
        if types.is_empty() {
            return;
        }
        let fleet = obs.fleet.name();
        let known = |t: &String| self.cost.prices.spot.keys().any(|(k, _)| k == t);
        let stale = self
            .cost
            .spot_read_at
            .get(fleet)
            .is_none_or(|at| now - at >= SPOT_PRICE_REFRESH_MS);
        if !stale && types.iter().all(known) {
            return;
        }
        self.cost.spot_read_at.insert(fleet.to_string(), now);
        let types: Vec<String> = types.into_iter().collect();
        match provider.spot_prices(&types).await {
            Ok(prices) => self.cost.prices.set_spot(&prices),
            Err(e) => warn!(fleet, error = %e, "cannot read spot prices; using the last ones"),
        }
    }
}
