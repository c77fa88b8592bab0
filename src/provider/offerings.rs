//! Offerings of a fleet and which of them to launch into: an *offering* is an (instance type,
//! subnet, capacity type) the fleet may launch; one without capacity is *unavailable* for
//! [`UNAVAILABLE_TTL`] and skipped meanwhile, and `spot-with-fallback` fleets switch to
//! on-demand offerings while no spot one is available or after too many spot interruptions.
//! Pure bookkeeping (no I/O, no clock reads): the `ec2` provider keeps one [`CapacityState`]
//! per fleet and asks [`CapacityState::choose`] before every launch.
//!
//! A subnet lies in exactly one availability zone, so (type, subnet, capacity type) is
//! Karpenter's (type, zone, capacity type) key for fleets with one subnet per zone, and finer
//! otherwise (an exhausted subnet does not hide a sibling subnet of the same zone).

use std::collections::{BTreeMap, BTreeSet};

use crate::clock::{format_millis, Millis};
use crate::manifest::{CapacityType, SpotFallback};

/// How long an offering that answered "insufficient capacity" is skipped: 3 minutes, as
/// Karpenter's `UnavailableOfferingsTTL` (`pkg/cache/unavailableofferings.go` in
/// aws/karpenter-provider-aws). Capacity pools refill within minutes; much shorter would
/// spend every pass on an API call that fails again, much longer would leave a refilled
/// cheaper pool unused while a fleet grows.
pub const UNAVAILABLE_TTL: Millis = 3 * 60 * 1000;

/// How an instance is bought.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    Spot,
    OnDemand,
}

impl Lifecycle {
    /// `spot` or `on-demand`, as EC2 writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Spot => "spot",
            Lifecycle::OnDemand => "on-demand",
        }
    }
}

/// Something a fleet can launch: an instance type in a subnet as spot or on-demand. `None`:
/// the launch template decides.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offering {
    pub instance_type: Option<String>,
    pub subnet: Option<String>,
    pub lifecycle: Lifecycle,
}

impl std::fmt::Display for Offering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.instance_type.as_deref().unwrap_or("template type");
        write!(f, "{} {t}", self.lifecycle.as_str())?;
        match &self.subnet {
            Some(s) => write!(f, " in {s}"),
            None => Ok(()),
        }
    }
}

/// What to launch next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Launch `lifecycle` instances over these offerings (all of that lifecycle, available).
    Launch {
        lifecycle: Lifecycle,
        offerings: Vec<Offering>,
        /// Why on-demand while spot was asked for (`None`: the configured capacity type).
        fallback: Option<String>,
    },
    /// Every offering the fleet may use is unavailable until `until` at the earliest.
    Exhausted { until: Millis, reason: String },
}

/// One fleet's unavailable offerings and recent spot interruptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapacityState {
    unavailable: BTreeMap<Offering, Millis>,
    /// Interrupted instances by id, with when the interruption was seen.
    interrupted: BTreeMap<String, Millis>,
}

impl CapacityState {
    /// Marks `offering` unavailable until `now + ttl` (a later mark extends it).
    pub fn mark_unavailable(&mut self, offering: Offering, now: Millis, ttl: Millis) {
        let until = now + ttl;
        let e = self.unavailable.entry(offering).or_insert(until);
        *e = (*e).max(until);
    }

    pub fn is_available(&self, offering: &Offering, now: Millis) -> bool {
        self.unavailable
            .get(offering)
            .is_none_or(|&until| until <= now)
    }

    /// Offerings unavailable at `now`, with until when.
    pub fn unavailable(&self, now: Millis) -> Vec<(&Offering, Millis)> {
        self.unavailable
            .iter()
            .filter(|(_, &until)| until > now)
            .map(|(o, &until)| (o, until))
            .collect()
    }

    /// Records that spot instance `id` was interrupted (seen at `now`); false when it was
    /// recorded already. Entries older than `keep` are dropped.
    pub fn record_interruption(&mut self, id: &str, now: Millis, keep: Millis) -> bool {
        self.interrupted.retain(|_, at| now - *at < keep);
        if self.interrupted.contains_key(id) {
            return false;
        }
        self.interrupted.insert(id.to_string(), now);
        true
    }

    /// Interruptions seen within `window` before `now`.
    pub fn interruptions_within(&self, window: Millis, now: Millis) -> usize {
        self.interrupted
            .values()
            .filter(|&&at| now - at < window)
            .count()
    }

    /// Which offerings of `pool` ((type, subnet) combinations) to launch into next under
    /// `capacity`. `fallback` applies to `spot-with-fallback` only.
    pub fn choose(
        &self,
        capacity: CapacityType,
        fallback: &SpotFallback,
        pool: &[(Option<String>, Option<String>)],
        now: Millis,
    ) -> Choice {
        let of = |lifecycle: Lifecycle| -> Vec<Offering> {
            pool.iter()
                .map(|(t, s)| Offering {
                    instance_type: t.clone(),
                    subnet: s.clone(),
                    lifecycle,
                })
                .collect()
        };
        let spot = of(Lifecycle::Spot);
        let on_demand = of(Lifecycle::OnDemand);
        let window = crate::clock::ms(fallback.window);
        let interruptions = self.interruptions_within(window, now);
        let (first, second, why) = match capacity {
            CapacityType::Spot => (spot, Vec::new(), None),
            CapacityType::OnDemand => (on_demand, Vec::new(), None),
            CapacityType::SpotWithFallback
                if interruptions >= fallback.interruptions.max(1) as usize =>
            {
                let why = format!(
                    "{interruptions} spot interruptions within {}",
                    humantime::format_duration(fallback.window)
                );
                (on_demand, Vec::new(), Some(why))
            }
            CapacityType::SpotWithFallback => (
                spot,
                on_demand,
                Some("no spot offering is available".to_string()),
            ),
        };
        let available = |list: &[Offering]| -> Vec<Offering> {
            list.iter()
                .filter(|o| self.is_available(o, now))
                .cloned()
                .collect()
        };
        let first_ok = available(&first);
        let fallback_reason = if second.is_empty() { why.clone() } else { None };
        if let Some(lifecycle) = first_ok.first().map(|o| o.lifecycle) {
            return Choice::Launch {
                lifecycle,
                offerings: first_ok,
                fallback: fallback_reason,
            };
        }
        let second_ok = available(&second);
        if let Some(lifecycle) = second_ok.first().map(|o| o.lifecycle) {
            return Choice::Launch {
                lifecycle,
                offerings: second_ok,
                fallback: why,
            };
        }
        self.exhausted(first.iter().chain(&second), now)
    }

    fn exhausted<'a>(&self, all: impl Iterator<Item = &'a Offering>, now: Millis) -> Choice {
        let all: BTreeSet<&Offering> = all.collect();
        let until = all
            .iter()
            .filter_map(|o| self.unavailable.get(*o))
            .copied()
            .min()
            .unwrap_or(now);
        let names: Vec<String> = all.iter().map(|o| o.to_string()).collect();
        Choice::Exhausted {
            until,
            reason: format!(
                "every offering of the fleet is out of capacity until {} at the earliest ({})",
                format_millis(until),
                names.join(", ")
            ),
        }
    }
}

/// Whether an EC2 state-reason code says a spot instance was interrupted (reclaimed by EC2).
pub fn is_spot_interruption(state_reason_code: &str) -> bool {
    state_reason_code == "Server.SpotInstanceTermination"
}

#[cfg(test)]
#[path = "offerings_tests.rs"]
mod tests;
