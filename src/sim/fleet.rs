//! The fleets a simulation runs: from the manifests, or one per step from the command line's
//! settings, each with its planner policy, worker settings and instance price.

use std::time::Duration;

use serde::Serialize;

use super::{SimError, Trace};
use crate::clock::{ms, Millis};
use crate::cost::{PriceBook, Priced, Rate};
use crate::manifest::{self, ManifestSet, ProviderSpec};
use crate::planner::FleetPolicy;

/// A fleet as the simulator runs it: the planner's policy plus the worker settings the
/// planner does not see.
#[derive(Debug, Clone, PartialEq)]
pub struct SimFleet {
    pub policy: FleetPolicy,
    pub lease_ttl: Millis,
    /// Registration refresh interval (the worker's heartbeat).
    pub heartbeat: Millis,
    pub idle_exit: Option<Millis>,
    /// Steps whose task of the same id must succeed first.
    pub depends_on: Vec<String>,
    /// What its instances are and cost (see [`Pricing`]).
    pub pricing: Pricing,
}

/// What a simulated fleet's instances are and what one costs per hour, from the price book as
/// the controller prices them ([`PriceBook::rate`]): the Controller manifest's
/// `onDemandPrices`, else the fleet's `budget.pricePerInstanceHour`, else the shipped table.
/// Spot instances, with a capacity type (`SimSettings::capacity`), cost its spot price instead.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pricing {
    /// The fleet's first instance type (`provider.ec2.instanceTypes`, `--instance-type`).
    pub instance_type: Option<String>,
    /// `None`: no price is known; the instance time is reported as unpriced.
    pub rate: Option<Rate>,
}

impl Pricing {
    pub fn new(instance_type: Option<String>, fleet_price: Option<f64>, book: &PriceBook) -> Self {
        let rate = book.rate(
            Priced {
                instance_type: instance_type.as_deref(),
                ..Priced::default()
            },
            fleet_price,
        );
        Pricing {
            instance_type,
            rate,
        }
    }
}

impl SimFleet {
    /// The fleet of manifest `f`, its instances priced from `book`.
    pub fn from_manifest(f: &manifest::FleetManifest, book: &PriceBook) -> Self {
        let instance_type = match &f.spec.provider {
            ProviderSpec::Ec2(ec2) => ec2.instance_types.first().cloned(),
            _ => None,
        };
        let fleet_price = f
            .spec
            .budget
            .as_ref()
            .and_then(|b| b.price_per_instance_hour);
        SimFleet {
            pricing: Pricing::new(instance_type, fleet_price, book),
            policy: FleetPolicy::from_manifest(f),
            lease_ttl: ms(f.spec.lease_ttl),
            heartbeat: ms(f.spec.heartbeat_interval()),
            idle_exit: f.spec.idle_exit.map(ms),
            depends_on: f.spec.upstream_steps().map(str::to_string).collect(),
        }
    }
}

/// Fleet settings for steps that no manifest describes (`anamo simulate` flags). The defaults
/// are the manifest defaults.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetDefaults {
    pub min_instances: u32,
    pub max_instances: u32,
    pub slots_per_instance: u32,
    pub tasks_per_instance: Option<u32>,
    pub scale_down_delay: Duration,
    pub boot_timeout: Duration,
    pub lease_ttl: Duration,
    pub idle_exit: Option<Duration>,
    /// The tasks' typical run time (the manifest's `taskDuration`).
    pub task_duration: Option<Duration>,
    /// The instances' type, priced by the shipped table unless `price_per_instance_hour`.
    pub instance_type: Option<String>,
    /// What one instance costs per hour.
    pub price_per_instance_hour: Option<f64>,
}

impl Default for FleetDefaults {
    fn default() -> Self {
        FleetDefaults {
            min_instances: 0,
            max_instances: 20,
            slots_per_instance: manifest::DEFAULT_SLOTS,
            tasks_per_instance: None,
            scale_down_delay: manifest::DEFAULT_SCALE_DOWN_DELAY,
            boot_timeout: manifest::DEFAULT_BOOT_TIMEOUT,
            lease_ttl: manifest::DEFAULT_LEASE_TTL,
            idle_exit: None,
            task_duration: None,
            instance_type: None,
            price_per_instance_hour: None,
        }
    }
}

impl FleetDefaults {
    /// A fleet named after `step`, depending on `depends_on`.
    pub fn fleet(&self, step: &str, depends_on: Vec<String>) -> SimFleet {
        let heartbeat = manifest::default_heartbeat(self.lease_ttl);
        SimFleet {
            policy: FleetPolicy {
                fleet: step.to_string(),
                step: step.to_string(),
                min_instances: self.min_instances,
                max_instances: self.max_instances,
                slots_per_instance: self.slots_per_instance,
                tasks_per_instance: self.tasks_per_instance.unwrap_or(self.slots_per_instance),
                scale_down_delay: ms(self.scale_down_delay),
                boot_timeout: ms(self.boot_timeout),
                lost_after: ms(heartbeat).saturating_mul(3),
                worker_dead_after: ms(heartbeat)
                    .saturating_mul(3)
                    .saturating_add(ms(self.lease_ttl)),
                stall_after: ms(self.boot_timeout).saturating_mul(2),
                budget: None,
                spend: None,
                task_duration: self.task_duration.map(ms),
            },
            lease_ttl: ms(self.lease_ttl),
            heartbeat: ms(heartbeat),
            idle_exit: self.idle_exit.map(ms),
            depends_on,
            pricing: Pricing::new(
                self.instance_type.clone(),
                self.price_per_instance_hour,
                &PriceBook::default(),
            ),
        }
    }
}

/// The fleets for a trace: the manifests' fleets when given (every step of the trace must
/// have one), else one fleet per step from `defaults`, each step depending on the one before
/// it in the trace unless `independent`.
pub fn fleets_for(
    trace: &Trace,
    manifests: Option<&ManifestSet>,
    defaults: &FleetDefaults,
    independent: bool,
) -> Result<Vec<SimFleet>, SimError> {
    match manifests {
        Some(set) => {
            let missing: Vec<&str> = trace
                .steps
                .iter()
                .filter(|s| set.fleet_for_step(s).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                return Err(SimError::NoFleet {
                    steps: missing.join(", "),
                    have: set.steps().collect::<Vec<_>>().join(", "),
                });
            }
            let book = PriceBook::new(
                set.controller
                    .as_ref()
                    .map(|c| c.spec.on_demand_prices.clone())
                    .unwrap_or_default(),
            );
            Ok(set
                .in_dependency_order()
                .into_iter()
                .map(|f| SimFleet::from_manifest(f, &book))
                .collect())
        }
        None => Ok(trace
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let deps = if i == 0 || independent {
                    Vec::new()
                } else {
                    vec![trace.steps[i - 1].clone()]
                };
                defaults.fleet(step, deps)
            })
            .collect()),
    }
}
