//! `anamo simulate --sweep N`: elasticity measured on a family of workloads rather than on a
//! few traces. Case `k` of a sweep draws a regime (Poisson arrivals, bursts, diurnal waves,
//! heavy-tailed durations, many short tasks, long tasks, multi-step pipelines, spot
//! interruptions, capacity errors) and its parameters from a stream seeded by the sweep's seed
//! and `k`, generates the trace, and runs anamo, the static baseline and the clairvoyant
//! reference on it. The summary is the distribution over the cases of anamo's instance-hours ÷
//! the lower bound and ÷ the clairvoyant reference, its makespan ÷ the static baseline's, and
//! its busy terminations; the worst cases can be written out for replay. Beside them, what
//! any policy must spend (`bound::floor_hours`) and whether that alone rules out the
//! instance-hour goals on the sweep's cases ([`FloorSummary::rules_out_the_goals`]).
//!
//! The parameter ranges are wide on purpose (durations from seconds to hours, loads from a
//! fifth to nine tenths of the fleet's capacity, 1–8 slots, 4–40 instances): nothing here is
//! fitted to a planner's constants.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::bound::{deadline_bound_hours, floor_hours, steps_of};
use super::{fleets_for, simulate, FleetDefaults, PolicyKind, SimError, SimSettings};
use super::{GeneratorSpec, Trace};
use crate::clock::Millis;

/// A kind of workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Regime {
    Poisson,
    Bursts,
    Diurnal,
    HeavyTail,
    ShortTasks,
    LongTasks,
    Pipeline,
    Spot,
    CapacityErrors,
}

impl Regime {
    pub const ALL: [Regime; 9] = [
        Regime::Poisson,
        Regime::Bursts,
        Regime::Diurnal,
        Regime::HeavyTail,
        Regime::ShortTasks,
        Regime::LongTasks,
        Regime::Pipeline,
        Regime::Spot,
        Regime::CapacityErrors,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Regime::Poisson => "poisson",
            Regime::Bursts => "bursts",
            Regime::Diurnal => "diurnal",
            Regime::HeavyTail => "heavy-tail",
            Regime::ShortTasks => "short-tasks",
            Regime::LongTasks => "long-tasks",
            Regime::Pipeline => "pipeline",
            Regime::Spot => "spot",
            Regime::CapacityErrors => "capacity-errors",
        }
    }
}

/// One generated case: the generator spec, the fleet and the simulation settings.
#[derive(Debug, Clone)]
pub struct SweepCase {
    pub index: u32,
    pub regime: Regime,
    /// The `--generate` spec (with its seed) that makes the trace.
    pub spec: String,
    pub defaults: FleetDefaults,
    pub settings: SimSettings,
}

impl SweepCase {
    /// Case `index` of the sweep seeded with `seed`, on top of `defaults` and `base`.
    pub fn draw(seed: u64, index: u32, defaults: &FleetDefaults, base: &SimSettings) -> Self {
        let case_seed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(u64::from(index));
        let mut rng = ChaCha8Rng::seed_from_u64(case_seed);
        let regime = Regime::ALL[index as usize % Regime::ALL.len()];
        let slots = [1u32, 2, 4, 8][rng.random_range(0..4)];
        let max_instances = rng.random_range(4..=40u32);
        let mut settings = SimSettings {
            seed: case_seed,
            ..base.clone()
        };
        let spec = spec_for(
            regime,
            &mut rng,
            slots * max_instances,
            case_seed,
            &mut settings,
        );
        SweepCase {
            index,
            regime,
            spec,
            defaults: FleetDefaults {
                slots_per_instance: slots,
                max_instances,
                ..defaults.clone()
            },
            settings,
        }
    }

    /// The case's trace.
    pub fn trace(&self) -> Result<Trace, SimError> {
        let g = GeneratorSpec::parse(&self.spec).map_err(|e| SimError::Invalid(e.to_string()))?;
        let mut t = g.generate(self.settings.seed);
        t.name = format!("sweep case {} ({})", self.index, self.regime.as_str());
        Ok(t)
    }

    /// The command that replays the case from its trace written to `file`.
    pub fn replay_command(&self, file: &str) -> String {
        let s = &self.settings;
        let mut c = format!(
            "anamo simulate --trace {file} --slots {} --max-instances {} --seed {}",
            self.defaults.slots_per_instance, self.defaults.max_instances, s.seed
        );
        if s.spot_rate_per_hour > 0.0 {
            c.push_str(&format!(" --spot-rate {}", s.spot_rate_per_hour));
        }
        if s.capacity_error_prob > 0.0 {
            c.push_str(&format!(" --capacity-error-prob {}", s.capacity_error_prob));
        }
        c
    }
}

/// The generator spec of a regime; `capacity` is the fleet's slots at maxInstances. Sets the
/// fault rates of the spot and capacity-error regimes in `settings`.
fn spec_for(
    regime: Regime,
    rng: &mut ChaCha8Rng,
    capacity: u32,
    seed: u64,
    settings: &mut SimSettings,
) -> String {
    // Mean task time in seconds, a lognormal spread, and the load as a share of capacity.
    let mut mean = log_uniform(rng, 60.0, 1800.0);
    let sigma = rng.random_range(0.2..1.0);
    let load = rng.random_range(0.2..0.9);
    let mut tasks = rng.random_range(100..=600u32);
    let mut steps = 1;
    let mut duration = None;
    let mut arrival = None;
    match regime {
        Regime::Poisson | Regime::Pipeline | Regime::Spot | Regime::CapacityErrors => {}
        Regime::Bursts => {
            let count = rng.random_range(2..=6u32);
            let gap = log_uniform(rng, 600.0, 4.0 * 3600.0);
            arrival = Some(format!("waves({count},{gap:.0})"));
        }
        Regime::Diurnal => {
            let period = log_uniform(rng, 3600.0, 12.0 * 3600.0);
            arrival = Some(format!(
                "diurnal({:.6},{period:.0})",
                rate(load, capacity, mean)
            ));
        }
        Regime::HeavyTail => {
            let alpha: f64 = rng.random_range(1.2..2.5);
            let min = mean * (alpha - 1.0) / alpha;
            duration = Some(format!("pareto({min:.1},{alpha:.2})"));
        }
        Regime::ShortTasks => {
            mean = log_uniform(rng, 2.0, 60.0);
            tasks = rng.random_range(1000..=3000);
        }
        Regime::LongTasks => {
            mean = log_uniform(rng, 3600.0, 4.0 * 3600.0);
            tasks = rng.random_range(20..=200);
        }
    }
    match regime {
        Regime::Pipeline => steps = rng.random_range(2..=4u32),
        Regime::Spot => settings.spot_rate_per_hour = round3(rng.random_range(0.05..0.5)),
        Regime::CapacityErrors => settings.capacity_error_prob = round3(rng.random_range(0.1..0.5)),
        _ => {}
    }
    let duration = duration.unwrap_or_else(|| {
        // A lognormal with this mean: mu = ln(mean) - sigma²/2.
        format!(
            "lognormal({:.4},{sigma:.3})",
            mean.ln() - sigma * sigma / 2.0
        )
    });
    let arrival = arrival.unwrap_or_else(|| {
        if rng.random_bool(0.2) {
            "burst".to_string()
        } else {
            format!(
                "poisson({:.6})",
                rate(load, capacity, mean * f64::from(steps))
            )
        }
    });
    format!("tasks={tasks},steps={steps},duration={duration},arrival={arrival},seed={seed}")
}

/// Arrivals per second that keep `load` of `capacity` slots busy with tasks of `mean` seconds.
fn rate(load: f64, capacity: u32, mean: f64) -> f64 {
    load * f64::from(capacity) / mean
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (lo.ln() + (hi.ln() - lo.ln()) * rng.random::<f64>()).exp()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The makespan issue 18 allows, as a multiple of the static baseline's.
pub const MAKESPAN_GOAL: f64 = 1.10;

/// What anamo did on one case, relative to the references.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub index: u32,
    pub regime: Regime,
    pub spec: String,
    pub slots: u32,
    pub max_instances: u32,
    pub tasks: u64,
    /// Anamo's instance-hours ÷ the lower bound.
    pub vs_bound: f64,
    /// Anamo's instance-hours ÷ the clairvoyant reference's.
    pub vs_clairvoyant: f64,
    /// The clairvoyant reference's instance-hours ÷ the lower bound.
    pub clairvoyant_vs_bound: f64,
    /// Anamo's makespan ÷ the static baseline's.
    pub makespan_vs_static: f64,
    /// The least any policy spends to finish within the makespan the goal allows
    /// ([`MAKESPAN_GOAL`] × the static baseline's: its boots and the compulsory parts of long
    /// tasks, see `bound::deadline_bound_hours`) ÷ the lower bound: the least any policy that
    /// meets the makespan goal can reach on this case.
    pub boot_bound_vs_bound: f64,
    /// Anamo's instance-hours ÷ that bound.
    pub vs_boot_bound: f64,
    /// The least any policy spends at all (no makespan or latency constraint: task time ÷
    /// slots or the longest task, plus one boot per step, see `bound::floor_hours`) ÷ the
    /// lower bound.
    pub floor_vs_bound: f64,
    /// The least any policy spends that delays no task more than the static baseline's
    /// longest queue wait (the floor with the gaps such a policy cannot fill) ÷ the lower
    /// bound.
    pub wait_floor_vs_bound: f64,
    /// Anamo's instance time spent booting ÷ the lower bound.
    pub boot_vs_bound: f64,
    /// Anamo's idle slot time (in instance time, the billing minimum's top-up included) ÷ the
    /// lower bound: `vs_bound` is 1 plus this and `boot_vs_bound`.
    pub idle_vs_bound: f64,
    /// The part of `idle_vs_bound` with no slot of the instance busy.
    pub empty_vs_bound: f64,
    pub busy_terminated: u64,
    /// Tasks any policy left unfinished (0 unless it hit the time limit).
    pub unfinished: u64,
}

/// Runs anamo, the static baseline and the clairvoyant reference on `case`.
pub fn run_case(case: &SweepCase) -> Result<CaseResult, SimError> {
    let trace = case.trace()?;
    let fleets = fleets_for(&trace, None, &case.defaults, false)?;
    let kinds = [
        PolicyKind::Anamo,
        PolicyKind::Static,
        PolicyKind::Clairvoyant,
    ];
    let r = simulate(&trace, &fleets, &case.settings, &kinds)?.report;
    let get = |k| {
        r.policy(k)
            .ok_or_else(|| SimError::Invalid(format!("{k:?} did not run")))
    };
    let (a, s, c) = (
        get(PolicyKind::Anamo)?,
        get(PolicyKind::Static)?,
        get(PolicyKind::Clairvoyant)?,
    );
    let work = steps_of(&trace, &fleets);
    let boot = case.settings.boot_delay;
    // The static baseline's longest wait, plus a tick for a submission to be seen, one for a
    // completion, and the report's rounding.
    let static_delay = (s.max_wait_s * 1000.0).ceil() as Millis + 2 * case.settings.tick + 100;
    let bound = a.lower_bound_hours.max(1e-9);
    let floor_vs_bound = floor_hours(&work, boot, None) / bound;
    let wait_floor_vs_bound = floor_hours(&work, boot, Some(static_delay)) / bound;
    // The makespan counts from the first submission; it is rounded to a tenth of a second.
    let start = trace.tasks.iter().map(|t| t.submit_ms).min().unwrap_or(0);
    let deadline = start + (MAKESPAN_GOAL * s.makespan_s * 1000.0).ceil() as Millis + 100;
    let boot_bound =
        deadline_bound_hours(&work, boot, start, deadline).unwrap_or(a.lower_bound_hours);
    Ok(CaseResult {
        index: case.index,
        regime: case.regime,
        spec: case.spec.clone(),
        slots: case.defaults.slots_per_instance,
        max_instances: case.defaults.max_instances,
        tasks: r.tasks,
        vs_bound: a.ratio,
        vs_clairvoyant: a.instance_hours / c.instance_hours.max(1e-9),
        clairvoyant_vs_bound: c.ratio,
        makespan_vs_static: a.makespan_s / s.makespan_s.max(1e-9),
        boot_bound_vs_bound: boot_bound / a.lower_bound_hours.max(1e-9),
        vs_boot_bound: a.instance_hours / boot_bound.max(1e-9),
        floor_vs_bound,
        wait_floor_vs_bound,
        boot_vs_bound: a.boot_hours / bound,
        idle_vs_bound: a.idle_hours / bound,
        empty_vs_bound: a.empty_hours / bound,
        busy_terminated: a.busy_terminated,
        unfinished: a.unfinished + s.unfinished + c.unfinished,
    })
}

/// Median, 90th percentile (nearest rank) and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
            v[i]
        };
        Spread {
            median: rank(0.5),
            p90: rank(0.9),
            max: rank(1.0),
        }
    }
}

/// The distribution over a sweep's cases.
#[derive(Debug, Clone, Serialize)]
pub struct SweepSummary {
    pub cases: usize,
    pub vs_bound: Spread,
    pub vs_clairvoyant: Spread,
    pub clairvoyant_vs_bound: Spread,
    pub makespan_vs_static: Spread,
    pub boot_bound_vs_bound: Spread,
    pub vs_boot_bound: Spread,
    /// The least cost of meeting the makespan goal ([`CaseResult::boot_bound_vs_bound`]),
    /// against the instance-hour goals: see [`FloorSummary::rules_out_with_the_makespan`].
    pub makespan_floor: FloorSummary,
    pub floor: FloorSummary,
    pub wait_floor: FloorSummary,
    pub busy_terminated: u64,
    pub unfinished: u64,
    pub by_regime: Vec<RegimeSummary>,
}

/// The spreads of one regime's cases.
#[derive(Debug, Clone, Serialize)]
pub struct RegimeSummary {
    pub regime: Regime,
    pub cases: usize,
    pub vs_bound: Spread,
    pub vs_clairvoyant: Spread,
    pub boot_bound_vs_bound: Spread,
    pub vs_boot_bound: Spread,
    pub floor: FloorSummary,
    pub wait_floor: FloorSummary,
}

/// The limits of issue 18's instance-hour goals: p90 ≤ 1.10 and max ≤ 1.25 × the lower bound.
pub const P90_GOAL: f64 = 1.10;
pub const MAX_GOAL: f64 = 1.25;

/// How a floor (a least cost, ÷ the lower bound) sits against the instance-hour goals.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FloorSummary {
    pub spread: Spread,
    /// Cases whose floor exceeds [`P90_GOAL`].
    pub over_p90_goal: usize,
    /// Cases whose floor exceeds [`MAX_GOAL`].
    pub over_max_goal: usize,
    pub cases: usize,
}

impl FloorSummary {
    pub fn of(ratios: impl IntoIterator<Item = f64>) -> FloorSummary {
        let v: Vec<f64> = ratios.into_iter().collect();
        FloorSummary {
            spread: Spread::of(v.iter().copied()),
            over_p90_goal: v.iter().filter(|r| **r > P90_GOAL).count(),
            over_max_goal: v.iter().filter(|r| **r > MAX_GOAL).count(),
            cases: v.len(),
        }
    }

    /// Cases a 90th percentile (nearest rank) may leave above its limit.
    fn may_miss(&self) -> usize {
        self.cases - (self.cases * 9).div_ceil(10)
    }

    /// No policy can meet the goals on these cases: more than a tenth of them have a floor
    /// above the p90 limit, or one has a floor above the max limit.
    pub fn rules_out_the_goals(&self) -> bool {
        self.over_p90_goal > self.may_miss() || self.over_max_goal > 0
    }

    /// For a floor that holds only for policies meeting the makespan in a case: no policy
    /// meets the instance-hour goals together with the makespan goal (p90 ≤ 1.10 × static).
    /// A case whose floor is above a limit either misses the makespan or goes over the limit;
    /// each p90 may leave a tenth of the cases above its limit, so more than two tenths above
    /// the p90 limit, or more than a tenth above the max limit, cannot all be absorbed.
    pub fn rules_out_with_the_makespan(&self) -> bool {
        self.over_p90_goal > 2 * self.may_miss() || self.over_max_goal > self.may_miss()
    }
}

impl SweepSummary {
    pub fn of(results: &[CaseResult]) -> SweepSummary {
        let spread = |f: fn(&CaseResult) -> f64| Spread::of(results.iter().map(f));
        SweepSummary {
            cases: results.len(),
            vs_bound: spread(|r| r.vs_bound),
            vs_clairvoyant: spread(|r| r.vs_clairvoyant),
            clairvoyant_vs_bound: spread(|r| r.clairvoyant_vs_bound),
            makespan_vs_static: spread(|r| r.makespan_vs_static),
            boot_bound_vs_bound: spread(|r| r.boot_bound_vs_bound),
            vs_boot_bound: spread(|r| r.vs_boot_bound),
            makespan_floor: FloorSummary::of(results.iter().map(|r| r.boot_bound_vs_bound)),
            floor: FloorSummary::of(results.iter().map(|r| r.floor_vs_bound)),
            wait_floor: FloorSummary::of(results.iter().map(|r| r.wait_floor_vs_bound)),
            busy_terminated: results.iter().map(|r| r.busy_terminated).sum(),
            unfinished: results.iter().map(|r| r.unfinished).sum(),
            by_regime: Regime::ALL
                .iter()
                .map(|g| {
                    let of: Vec<&CaseResult> = results.iter().filter(|r| r.regime == *g).collect();
                    let spread = |f: fn(&CaseResult) -> f64| Spread::of(of.iter().map(|r| f(r)));
                    RegimeSummary {
                        regime: *g,
                        cases: of.len(),
                        vs_bound: spread(|r| r.vs_bound),
                        vs_clairvoyant: spread(|r| r.vs_clairvoyant),
                        boot_bound_vs_bound: spread(|r| r.boot_bound_vs_bound),
                        vs_boot_bound: spread(|r| r.vs_boot_bound),
                        floor: FloorSummary::of(of.iter().map(|r| r.floor_vs_bound)),
                        wait_floor: FloorSummary::of(of.iter().map(|r| r.wait_floor_vs_bound)),
                    }
                })
                .filter(|g| g.cases > 0)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_use_nearest_ranks() {
        let s = Spread::of((1..=10).map(f64::from));
        assert_eq!((s.median, s.p90, s.max), (5.0, 9.0, 10.0));
    }

    #[test]
    fn cases_are_reproducible_and_cover_every_regime() {
        let (d, b) = (FleetDefaults::default(), SimSettings::default());
        let a = SweepCase::draw(7, 3, &d, &b);
        let again = SweepCase::draw(7, 3, &d, &b);
        assert_eq!(a.spec, again.spec);
        assert_eq!(a.trace().unwrap(), again.trace().unwrap());
        let regimes: Vec<Regime> = (0..9)
            .map(|k| SweepCase::draw(7, k, &d, &b).regime)
            .collect();
        assert_eq!(regimes, Regime::ALL);
    }

    #[test]
    fn a_small_case_runs_every_policy_to_the_end() {
        let (d, b) = (FleetDefaults::default(), SimSettings::default());
        let case = SweepCase {
            spec: "tasks=40,steps=2,duration=const(300),arrival=poisson(0.02),seed=1".into(),
            ..SweepCase::draw(1, 6, &d, &b)
        };
        let r = run_case(&case).unwrap();
        assert_eq!(r.unfinished, 0);
        assert_eq!(r.busy_terminated, 0);
        assert!(r.vs_bound >= 1.0 && r.clairvoyant_vs_bound >= 1.0, "{r:?}");
        // The bound with boots lies between the plain bound and what anamo spent.
        assert!(
            r.boot_bound_vs_bound > 1.0 && r.vs_boot_bound >= 1.0,
            "{r:?}"
        );
    }
}
