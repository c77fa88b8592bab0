//! What instances cost, decided in pure functions: the price of an instance per hour
//! ([`PriceBook`]: spot prices read from EC2, on-demand prices from the Controller manifest,
//! the fleet's `budget.pricePerInstanceHour`, or the shipped table), and a fleet's running
//! account ([`ledger::CostLedger`]): each instance accrues its price from launch to the last
//! pass that listed it, with EC2's per-second billing and its 60-second minimum, and that cost
//! is split into boot, busy (slot-seconds that ran tasks) and idle time. The controller keeps a
//! ledger per fleet and publishes its figures; `anamo simulate` runs the same ledger.

pub mod ledger;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::provider::offerings::Lifecycle;
pub use crate::provider::SpotPrice;

pub use table::{DEFAULT_ON_DEMAND, DEFAULT_PRICES_AS_OF, DEFAULT_PRICES_REGION};

/// EC2 bills Linux instances per second with a minimum of 60 seconds
/// (<https://aws.amazon.com/ec2/pricing/on-demand/>, "Per Second Billing"): an instance that
/// ran 20 s is billed 60 s.
pub const BILLING_MINIMUM_MS: Millis = 60_000;

/// How often spot prices are read again. EC2 changes spot prices gradually, at most a few
/// times an hour for a type and zone; ten minutes keeps the figures current at one
/// `DescribeSpotPriceHistory` per fleet per ten minutes.
pub const SPOT_PRICE_REFRESH_MS: Millis = 10 * 60 * 1000;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Where an instance's hourly price came from, shown beside cost figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PriceSource {
    /// EC2's current spot price for the instance's type and zone.
    Spot,
    /// The Controller manifest's `onDemandPrices`.
    Manifest,
    /// The fleet's `budget.pricePerInstanceHour`.
    Fleet,
    /// The table shipped with anamo ([`DEFAULT_PRICES_AS_OF`], [`DEFAULT_PRICES_REGION`]).
    Shipped,
}

/// What one instance costs per hour, and why.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub usd_per_hour: f64,
    pub source: PriceSource,
}

impl Rate {
    /// Dollars for `ms` milliseconds at this rate.
    pub fn dollars(&self, ms: Millis) -> f64 {
        self.usd_per_hour * ms.max(0) as f64 / MS_PER_HOUR
    }
}

/// What an instance is, for pricing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Priced<'a> {
    pub instance_type: Option<&'a str>,
    pub lifecycle: Option<Lifecycle>,
    pub zone: Option<&'a str>,
}

/// The prices the controller knows.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    /// From the Controller manifest: instance type → on-demand dollars per hour.
    pub on_demand: BTreeMap<String, f64>,
    /// Latest spot price per (instance type, zone).
    pub spot: BTreeMap<(String, String), f64>,
}

impl PriceBook {
    pub fn new(on_demand: BTreeMap<String, f64>) -> PriceBook {
        PriceBook {
            on_demand,
            spot: BTreeMap::new(),
        }
    }

    /// Takes the latest spot prices (older ones for other types and zones stay).
    pub fn set_spot(&mut self, prices: &[SpotPrice]) {
        for p in prices {
            if p.usd_per_hour.is_finite() && p.usd_per_hour >= 0.0 {
                self.spot
                    .insert((p.instance_type.clone(), p.zone.clone()), p.usd_per_hour);
            }
        }
    }

    /// An instance's hourly price. A spot instance costs its type's spot price in its zone
    /// (the highest of its type's zones when the zone is unknown); with no spot price known,
    /// and for on-demand instances, the on-demand price: the Controller manifest's, else the
    /// fleet's `fleet_price`, else the shipped table's. `None`: no price is known.
    pub fn rate(&self, what: Priced<'_>, fleet_price: Option<f64>) -> Option<Rate> {
        if what.lifecycle == Some(Lifecycle::Spot) {
            if let Some(p) = what
                .instance_type
                .and_then(|t| self.spot_price(t, what.zone))
            {
                return Some(Rate {
                    usd_per_hour: p,
                    source: PriceSource::Spot,
                });
            }
        }
        if let Some(p) = what.instance_type.and_then(|t| self.on_demand.get(t)) {
            return Some(Rate {
                usd_per_hour: *p,
                source: PriceSource::Manifest,
            });
        }
        if let Some(p) = fleet_price.filter(|p| p.is_finite() && *p >= 0.0) {
            return Some(Rate {
                usd_per_hour: p,
                source: PriceSource::Fleet,
            });
        }
        let t = what.instance_type?;
        table::shipped(t).map(|p| Rate {
            usd_per_hour: p,
            source: PriceSource::Shipped,
        })
    }

    fn spot_price(&self, instance_type: &str, zone: Option<&str>) -> Option<f64> {
        if let Some(z) = zone {
            if let Some(p) = self.spot.get(&(instance_type.to_string(), z.to_string())) {
                return Some(*p);
            }
        }
        self.spot
            .iter()
            .filter(|((t, _), _)| t == instance_type)
            .map(|(_, p)| *p)
            .reduce(f64::max)
    }
}
