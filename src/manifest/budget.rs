//! Checks of a fleet's `budget`: a limit is set, costs and prices are numbers that make sense,
//! and the budget leaves room for `minInstances`.

use super::types::BudgetSpec;
use super::validate::Report;

pub(super) fn check_budget(r: &mut Report<'_>, b: &BudgetSpec, min_instances: u32) {
    if b.max_instances.is_none() && b.max_hourly_cost.is_none() && b.max_total_cost.is_none() {
        r.push(
            "spec.budget",
            "sets no limit; set budget.maxInstances, budget.maxHourlyCost and/or \
             budget.maxTotalCost, or remove budget",
        );
    }
    if let Some(total) = b.max_total_cost {
        if !total.is_finite() || total < 0.0 {
            r.push(
                "spec.budget.maxTotalCost",
                format!("{total} is not a cost; use a number of dollars, 0 or more"),
            );
        }
    }
    if let Some(cost) = b.max_hourly_cost {
        if !cost.is_finite() || cost < 0.0 {
            r.push(
                "spec.budget.maxHourlyCost",
                format!("{cost} is not a cost; use a number of 0 or more"),
            );
        }
        if b.price_per_instance_hour.is_none() {
            r.push(
                "spec.budget.maxHourlyCost",
                "needs budget.pricePerInstanceHour to turn the cost into a number of \
                 instances; add pricePerInstanceHour (what one instance costs per hour)",
            );
        }
    }
    if let Some(price) = b.price_per_instance_hour {
        if !price.is_finite() || price <= 0.0 {
            r.push(
                "spec.budget.pricePerInstanceHour",
                format!("{price} is not a price; use a number greater than 0"),
            );
        }
    }
    if let Some(limit) = b.instance_limit() {
        if limit < min_instances {
            r.push(
                "spec.budget",
                format!(
                    "allows only {limit} instance(s), fewer than minInstances {}; \
                     lower minInstances or raise the budget",
                    min_instances
                ),
            );
        }
    }
}
