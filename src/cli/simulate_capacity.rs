//! `anamo simulate`'s capacity-type options: spot and on-demand instances bought as a fleet
//! with `capacityType` buys them (see `sim::world::capacity`), and the report's table per
//! capacity type.

use std::time::Duration;

use clap::Args;

use super::output::Table;
use crate::clock::{ms, Millis};
use crate::manifest::{CapacityType, SpotFallback};
use crate::sim::{SimCapacity, SimReport};

#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Buy instances as a fleet with this `capacityType` does: `spot`, `on-demand` or
    /// `spot-with-fallback` (the offerings cache and fallback of the controller). Spot
    /// instances are interrupted at `--spot-rate`, on-demand ones never.
    #[arg(long, value_parser = parse_capacity_type, help_heading = "Capacity types")]
    pub capacity_type: Option<CapacityType>,
    /// Spot price per instance-hour (on-demand instances cost the fleet's price).
    #[arg(long, help_heading = "Capacity types")]
    pub spot_price: Option<f64>,
    /// A window, from the start of the run, when spot has no capacity, e.g. `1h..3h`
    /// (repeatable).
    #[arg(long, value_parser = parse_window, help_heading = "Capacity types")]
    pub spot_unavailable: Vec<(Millis, Millis)>,
    /// The same for on-demand (repeatable).
    #[arg(long, value_parser = parse_window, help_heading = "Capacity types")]
    pub on_demand_unavailable: Vec<(Millis, Millis)>,
    /// `spotFallback.interruptions` [default: 3].
    #[arg(long, help_heading = "Capacity types")]
    pub fallback_interruptions: Option<u32>,
    /// `spotFallback.window` [default: 30m].
    #[arg(long, value_parser = humantime::parse_duration, help_heading = "Capacity types")]
    pub fallback_window: Option<Duration>,
}

fn parse_capacity_type(s: &str) -> Result<CapacityType, String> {
    [
        CapacityType::Spot,
        CapacityType::OnDemand,
        CapacityType::SpotWithFallback,
    ]
    .into_iter()
    .find(|t| t.as_str() == s)
    .ok_or_else(|| format!("`{s}` is not spot, on-demand or spot-with-fallback"))
}

/// `FROM..TO` durations after the start, e.g. `1h..2h30m`.
fn parse_window(s: &str) -> Result<(Millis, Millis), String> {
    let (from, to) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a window like `1h..3h`"))?;
    let d = |x: &str| {
        humantime::parse_duration(x.trim())
            .map(ms)
            .map_err(|e| format!("`{x}` in `{s}`: {e}"))
    };
    let (from, to) = (d(from)?, d(to)?);
    if from >= to {
        return Err(format!("`{s}` ends before it starts"));
    }
    Ok((from, to))
}

impl CapacityArgs {
    /// The simulation's capacity settings; spot instances are interrupted at `spot_rate`.
    pub fn settings(&self, spot_rate: f64) -> anyhow::Result<Option<SimCapacity>> {
        let Some(capacity_type) = self.capacity_type else {
            anyhow::ensure!(
                self.spot_price.is_none()
                    && self.spot_unavailable.is_empty()
                    && self.on_demand_unavailable.is_empty(),
                "--spot-price and --*-unavailable need --capacity-type"
            );
            return Ok(None);
        };
        let spot_price = match (capacity_type, self.spot_price) {
            (CapacityType::OnDemand, p) => p.unwrap_or(0.0),
            (_, Some(p)) if p.is_finite() && p >= 0.0 => p,
            (t, _) => anyhow::bail!(
                "--capacity-type {} needs --spot-price (dollars per instance-hour, 0 or more)",
                t.as_str()
            ),
        };
        let defaults = SpotFallback::default();
        let fallback = SpotFallback {
            interruptions: self
                .fallback_interruptions
                .unwrap_or(defaults.interruptions),
            window: self.fallback_window.unwrap_or(defaults.window),
        };
        anyhow::ensure!(
            fallback.interruptions > 0 && !fallback.window.is_zero(),
            "--fallback-interruptions and --fallback-window must be more than 0"
        );
        Ok(Some(SimCapacity {
            capacity_type,
            fallback,
            spot_usd_per_hour: spot_price,
            spot_interruptions_per_hour: spot_rate,
            spot_unavailable: self.spot_unavailable.clone(),
            on_demand_unavailable: self.on_demand_unavailable.clone(),
        }))
    }
}

/// Per policy and capacity type: instance-hours, cost, launches (fallback ones), insufficient
/// capacity answers and interruptions; empty without capacity types.
pub fn capacity_table(r: &SimReport) -> String {
    if r.policies.iter().all(|p| p.capacity.is_empty()) {
        return String::new();
    }
    let mut t = Table::new([
        "POLICY",
        "CAPACITY",
        "INST-H",
        "COST",
        "LAUNCHES",
        "FALLBACK",
        "NO CAPACITY",
        "INTERRUPTED",
    ]);
    for p in &r.policies {
        for c in &p.capacity {
            t.row([
                p.policy.as_str().to_string(),
                c.capacity_type.to_string(),
                format!("{:.2}", c.instance_hours),
                format!("${:.2}", c.dollars),
                c.launches.to_string(),
                c.fallback_launches.to_string(),
                c.insufficient_capacity.to_string(),
                c.interruptions.to_string(),
            ]);
        }
    }
    format!(
        "\n{}FALLBACK = on-demand instances launched by spot-with-fallback; NO CAPACITY = \
         launch answers without capacity.\n",
        t.render()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_types_parse() {
        assert_eq!(parse_window("1h..2h30m"), Ok((3_600_000, 9_000_000)));
        assert!(parse_window("2h..1h").unwrap_err().contains("ends before"));
        assert!(parse_window("2h").is_err());
        assert_eq!(
            parse_capacity_type("spot-with-fallback"),
            Ok(CapacityType::SpotWithFallback)
        );
        assert!(parse_capacity_type("spotty").is_err());
    }
}
