//! `anamo simulate --sweep N`: runs N generated cases across the workload regimes
//! ([`crate::sim::sweep`]) on the machine's cores and prints the distribution of anamo's
//! figures; `--sweep-out DIR` writes the worst cases' traces with their replay commands.

use std::process::ExitCode;

use anyhow::Context;

use super::output::{out, print_json, Table};
use super::simulate::{fleet_defaults, sim_settings, SimulateArgs};
use crate::sim::sweep::{
    run_case, CaseResult, FloorSummary, Spread, SweepCase, SweepSummary, MAKESPAN_GOAL, MAX_GOAL,
    P90_GOAL,
};

/// Worst cases written by `--sweep-out`.
const WORST: usize = 5;

pub fn run(args: &SimulateArgs, n: u32) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(n > 0, "--sweep needs at least 1 case");
    let defaults = fleet_defaults(args);
    let base = sim_settings(
        args,
        args.interval.unwrap_or(crate::manifest::DEFAULT_INTERVAL),
    );
    let cases: Vec<SweepCase> = (0..n)
        .map(|k| SweepCase::draw(args.seed, k, &defaults, &base))
        .collect();
    let mut results = run_all(&cases)?;
    results.sort_by_key(|r| r.index);
    let summary = SweepSummary::of(&results);
    if args.json {
        print_json(&SweepJson {
            seed: args.seed,
            summary: &summary,
            cases: &results,
        })?;
    } else {
        out!("{}", render(args.seed, &summary, &results));
    }
    if let Some(dir) = &args.sweep_out {
        write_worst(dir, &cases, &results)?;
    }
    Ok(if summary.unfinished > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `simulate --sweep N --json`: the summary and every case.
#[derive(serde::Serialize)]
struct SweepJson<'a> {
    seed: u64,
    summary: &'a SweepSummary,
    cases: &'a [CaseResult],
}

/// Runs the cases on as many threads as there are cores.
fn run_all(cases: &[SweepCase]) -> anyhow::Result<Vec<CaseResult>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = cases.len().div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(run_case).collect::<Result<Vec<_>, _>>()))
            .collect();
        let mut all = Vec::with_capacity(cases.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| anyhow::anyhow!("a sweep thread panicked"))??;
            all.extend(part);
        }
        Ok(all)
    })
}

fn render(seed: u64, s: &SweepSummary, results: &[CaseResult]) -> String {
    let mut t = Table::new(["ANAMO (per case)", "MEDIAN", "P90", "MAX"]);
    let mut row = |what: &str, sp: Spread| {
        t.row([
            what.to_string(),
            format!("{:.3}", sp.median),
            format!("{:.3}", sp.p90),
            format!("{:.3}", sp.max),
        ]);
    };
    row("instance-hours ÷ lower bound", s.vs_bound);
    row("instance-hours ÷ clairvoyant", s.vs_clairvoyant);
    row("makespan ÷ static", s.makespan_vs_static);
    row("(clairvoyant ÷ lower bound)", s.clairvoyant_vs_bound);
    row(
        "(bound at the makespan goal ÷ lower bound)",
        s.boot_bound_vs_bound,
    );
    row(
        "instance-hours ÷ bound at the makespan goal",
        s.vs_boot_bound,
    );
    let mut out = format!("sweep of {} cases, seed {seed}\n\n{}", s.cases, t.render());
    let busy_cases = results.iter().filter(|r| r.busy_terminated > 0).count();
    out.push_str(&format!(
        "busy instances terminated: {} (in {busy_cases} cases); unfinished tasks: {}\n\n",
        s.busy_terminated, s.unfinished
    ));
    let mut g = Table::new([
        "REGIME",
        "CASES",
        "÷ BOUND med/p90/max",
        "÷ CLAIRV. med/p90/max",
        "MAKESPAN BOUND ÷ BOUND med/p90/max",
        "÷ MAKESPAN BOUND med/p90/max",
    ]);
    for r in &s.by_regime {
        g.row([
            r.regime.as_str().to_string(),
            r.cases.to_string(),
            three(&r.vs_bound),
            three(&r.vs_clairvoyant),
            three(&r.boot_bound_vs_bound),
            three(&r.vs_boot_bound),
        ]);
    }
    out.push_str(&g.render());
    out.push_str(&format!(
        "(bound at the makespan goal: the longer of task time ÷ slots and the time tasks must \
         run whatever the policy (a task arriving at a and running d must run throughout [M − d, \
         a + d]), in whole instances, plus one boot for each instance needed to finish within \
         M = {MAKESPAN_GOAL} × the static baseline's makespan; no policy that meets the \
         makespan goal spends less)\n"
    ));
    out.push_str(&makespan_verdict(&s.makespan_floor));
    out.push_str(&render_floors(s));
    out.push_str("\nworst cases (instance-hours ÷ lower bound):\n");
    for r in worst(results, |r| r.vs_bound) {
        out.push_str(&format!(
            "  case {} {}: {:.3} (÷ clairvoyant {:.3}), {} slots, max {}: {}\n",
            r.index,
            r.regime.as_str(),
            r.vs_bound,
            r.vs_clairvoyant,
            r.slots,
            r.max_instances,
            r.spec
        ));
    }
    out.push_str("\nworst cases (makespan ÷ static):\n");
    for r in worst(results, |r| r.makespan_vs_static) {
        out.push_str(&format!(
            "  case {} {}: {:.3} (instance-hours ÷ lower bound {:.3}), {} slots, max {}: {}\n",
            r.index,
            r.regime.as_str(),
            r.makespan_vs_static,
            r.vs_bound,
            r.slots,
            r.max_instances,
            r.spec
        ));
    }
    out
}

/// `median/p90/max`.
fn three(sp: &Spread) -> String {
    format!("{:.3}/{:.3}/{:.3}", sp.median, sp.p90, sp.max)
}

/// The floors (the least any policy spends, see `sim::bound::floor_hours`) per regime, and
/// what they say about the instance-hour goals.
fn render_floors(s: &SweepSummary) -> String {
    let mut t = Table::new([
        "REGIME",
        "CASES",
        "FLOOR ÷ BOUND med/p90/max",
        "OVER GOALS",
        "FLOOR AT STATIC WAIT ÷ BOUND med/p90/max",
        "OVER GOALS",
    ]);
    let row = |name: &str, cases: usize, floor: &FloorSummary, wait: &FloorSummary| {
        let over = |f: &FloorSummary| format!("{} / {}", f.over_p90_goal, f.over_max_goal);
        [
            name.to_string(),
            cases.to_string(),
            three(&floor.spread),
            over(floor),
            three(&wait.spread),
            over(wait),
        ]
    };
    for r in &s.by_regime {
        t.row(row(r.regime.as_str(), r.cases, &r.floor, &r.wait_floor));
    }
    t.row(row("all", s.cases, &s.floor, &s.wait_floor));
    let mut out = format!(
        "\nwhat any policy must spend (floor: the longer of task time ÷ slots and the longest task, \
         plus one boot per step; floor at \
         static wait: also each gap in a step's arrivals that a policy delaying no task more than \
         the static baseline's longest wait cannot fill, at min(gap, boot)); OVER GOALS: cases \
         above {P90_GOAL} / above {MAX_GOAL}\n{}",
        t.render()
    );
    out.push_str(&verdict("any policy", &s.floor));
    out.push_str(&verdict(
        "any policy that delays no task more than the static baseline's longest wait",
        &s.wait_floor,
    ));
    out
}

/// Whether a floor rules out the instance-hour goals (p90 ≤ 1.10, max ≤ 1.25 × the bound).
fn verdict(who: &str, f: &FloorSummary) -> String {
    let counts = over_goals("a floor", f);
    if f.rules_out_the_goals() {
        format!(
            "{counts}: the instance-hour goals (p90 ≤ {P90_GOAL}, max ≤ {MAX_GOAL} × the lower \
             bound) CANNOT be met by {who} on this family\n"
        )
    } else {
        format!("{counts}: this floor does not rule out the instance-hour goals for {who}\n")
    }
}

/// Whether the least cost of meeting the makespan rules out meeting both goals at once.
fn makespan_verdict(f: &FloorSummary) -> String {
    let counts = over_goals("a bound at the makespan goal", f);
    if f.rules_out_with_the_makespan() {
        format!(
            "{counts}: NO policy meets the instance-hour goals (p90 ≤ {P90_GOAL}, max ≤ \
             {MAX_GOAL} × the lower bound) together with the makespan goal (p90 ≤ \
             {MAKESPAN_GOAL} × static) on this family: each such case misses one, and a p90 \
             leaves a tenth of the cases to each\n"
        )
    } else {
        format!("{counts}: this bound does not rule out meeting the goals together\n")
    }
}

/// `2 of 200 cases have WHAT above 1.1, 1 above 1.25`.
fn over_goals(what: &str, f: &FloorSummary) -> String {
    format!(
        "{} of {} cases have {what} above {P90_GOAL}, {} above {MAX_GOAL}",
        f.over_p90_goal, f.cases, f.over_max_goal
    )
}

/// The worst cases by `figure`, worst first.
fn worst(results: &[CaseResult], figure: fn(&CaseResult) -> f64) -> Vec<&CaseResult> {
    let mut v: Vec<&CaseResult> = results.iter().collect();
    v.sort_by(|a, b| figure(b).total_cmp(&figure(a)));
    v.truncate(WORST);
    v
}

/// Writes the worst cases' traces as CSV, each starting with the comment that replays it.
fn write_worst(
    dir: &std::path::Path,
    cases: &[SweepCase],
    results: &[CaseResult],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut both = worst(results, |r| r.vs_bound);
    both.extend(worst(results, |r| r.makespan_vs_static));
    both.sort_by_key(|r| r.index);
    both.dedup_by_key(|r| r.index);
    for r in both {
        let Some(case) = cases.iter().find(|c| c.index == r.index) else {
            continue;
        };
        let path = dir.join(format!("case-{:04}-{}.csv", r.index, r.regime.as_str()));
        let file = path.display().to_string();
        let text = format!(
            "# {}: anamo {:.3}× the lower bound, {:.3}× clairvoyant, makespan {:.3}× static\n# replay: {}\n{}",
            case.spec,
            r.vs_bound,
            r.vs_clairvoyant,
            r.makespan_vs_static,
            case.replay_command(&file),
            case.trace()?.to_csv()
        );
        std::fs::write(&path, text).with_context(|| format!("cannot write {file}"))?;
        out!("wrote {file}\n");
    }
    Ok(())
}
