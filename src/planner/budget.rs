//! How many instances a fleet's budget allows, and which of its limits binds: `maxInstances`;
//! `maxHourlyCost`, counting listed instances at their own price (spot prices, the Controller's
//! `onDemandPrices`) once the fleet's cost is accounted and new ones at
//! `pricePerInstanceHour`; and `maxTotalCost`, which allows none once the fleet has cost that
//! much (running tasks finish; idle instances are stopped).

use crate::cost::ledger::CostLedger;
use crate::manifest::BudgetSpec;

use super::Spend;

/// The budget's limit and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub instances: u32,
    /// The limit that binds, as people read it (`maxTotalCost 50 reached: 50.12 spent`).
    pub why: String,
}

fn whole(n: f64) -> u32 {
    if n <= 0.0 || n.is_nan() {
        0
    } else if n >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        n.floor() as u32
    }
}

/// The instances `maxHourlyCost` allows: the listed priced instances at their own price and
/// new ones at `price`; when the listed ones already cost more than the limit (a spot price
/// rose), as many as fit at their average price.
fn by_rate(cap: f64, price: f64, spend: Option<&Spend>) -> (u32, String) {
    match spend.filter(|s| s.priced_instances > 0) {
        Some(s) if s.usd_per_hour <= cap => (
            s.priced_instances
                .saturating_add(whole((cap - s.usd_per_hour) / price)),
            format!(
                "maxHourlyCost {cap}: {} listed cost {:.2}/h, new ones {price}/h",
                s.priced_instances, s.usd_per_hour
            ),
        ),
        Some(s) => {
            let average = s.usd_per_hour / f64::from(s.priced_instances);
            (
                whole(cap / average),
                format!(
                    "maxHourlyCost {cap}: listed instances cost {:.2}/h, {average:.3}/h each",
                    s.usd_per_hour
                ),
            )
        }
        None => (
            whole(cap / price),
            format!("maxHourlyCost {cap} at {price} per instance-hour"),
        ),
    }
}

/// The strictest of the budget's limits, if it sets any that applies.
pub fn bound(b: &BudgetSpec, spend: Option<&Spend>) -> Option<Bound> {
    let mut limits: Vec<(u32, String)> = Vec::new();
    if let Some(m) = b.max_instances {
        limits.push((m, format!("budget.maxInstances {m}")));
    }
    if let (Some(cap), Some(price)) = (b.max_hourly_cost, b.price_per_instance_hour) {
        if cap.is_finite() && price.is_finite() && price > 0.0 {
            limits.push(by_rate(cap, price, spend));
        }
    }
    if let (Some(total), Some(s)) = (b.max_total_cost, spend) {
        if s.dollars >= total {
            limits.push((
                0,
                format!("maxTotalCost {total} reached: {:.2} spent", s.dollars),
            ));
        }
    }
    limits
        .into_iter()
        .min_by_key(|(n, _)| *n)
        .map(|(instances, why)| Bound { instances, why })
}

impl Spend {
    /// What `ledger`'s fleet has spent so far and spends per hour now (the controller's ledger
    /// and the simulator's alike).
    pub fn of(ledger: &CostLedger) -> Spend {
        Spend {
            dollars: ledger.totals().dollars,
            usd_per_hour: ledger.usd_per_hour(),
            priced_instances: ledger.priced_open(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(
        max: Option<u32>,
        hourly: Option<f64>,
        price: Option<f64>,
        total: Option<f64>,
    ) -> BudgetSpec {
        BudgetSpec {
            max_instances: max,
            max_hourly_cost: hourly,
            price_per_instance_hour: price,
            max_total_cost: total,
        }
    }

    fn spend(dollars: f64, usd_per_hour: f64, priced_instances: u32) -> Option<Spend> {
        Some(Spend {
            dollars,
            usd_per_hour,
            priced_instances,
        })
    }

    #[test]
    fn without_spend_the_hourly_cap_uses_the_flat_price() {
        let b = budget(Some(40), Some(25.0), Some(0.76), None);
        let got = bound(&b, None).unwrap();
        assert_eq!(got.instances, 32);
        assert_eq!(got.why, "maxHourlyCost 25 at 0.76 per instance-hour");
        assert_eq!(bound(&b, None).map(|b| b.instances), b.instance_limit());
    }

    #[test]
    fn listed_instances_count_at_their_own_price() {
        // 10 spot instances at 0.25 $/h: 2.5 $/h of 25; the rest at 0.76 → 10 + 29.
        let b = budget(Some(100), Some(25.0), Some(0.76), None);
        let got = bound(&b, spend(3.0, 2.5, 10).as_ref()).unwrap();
        assert_eq!(got.instances, 39, "{got:?}");
        assert!(got.why.contains("10 listed cost 2.50/h"), "{got:?}");
        // Spot prices rose above the cap: as many as fit at their average price.
        let got = bound(&b, spend(3.0, 30.0, 10).as_ref()).unwrap();
        assert_eq!(got.instances, 8, "{got:?}");
    }

    #[test]
    fn the_total_cap_allows_none_once_reached_and_says_so() {
        let b = budget(Some(5), None, None, Some(50.0));
        assert_eq!(
            bound(&b, spend(49.99, 1.0, 2).as_ref()).unwrap().instances,
            5
        );
        let got = bound(&b, spend(50.12, 1.0, 2).as_ref()).unwrap();
        assert_eq!(got.instances, 0);
        assert_eq!(got.why, "maxTotalCost 50 reached: 50.12 spent");
        // Without accounting (no spend), the total cap cannot bind.
        assert_eq!(bound(&b, None).unwrap().instances, 5);
        assert_eq!(bound(&budget(None, None, None, Some(1.0)), None), None);
    }
}
