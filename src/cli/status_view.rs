//! What `anamo status` shows, as pure functions of one snapshot ([`StatusView`]): the plain
//! text (tables; also each frame of `--watch` when stdout is not a terminal) and the terminal
//! frame of `--watch` (a bar per step, fleets, last actions), redrawn in place.
//!
//! Throughput and ETA come from [`crate::controller::status`], the same definitions the status
//! page and the metrics use; the controller's last report says how old the fleet figures are.

use std::fmt::Write as _;

use serde::Serialize;

use super::output::Table;
use crate::clock::{format_duration_ms, format_millis, Millis};
use crate::controller::failures::{FailedTasks, StarvedGather, MORE_FAILED_HINT};
use crate::controller::status::{
    eta_text, staleness, ControllerDoc, StepReport, STALE_AFTER_INTERVALS, THROUGHPUT_WINDOW_TEXT,
};
use crate::store::StatusDoc;

/// One snapshot of the store's progress and the controller's reports.
#[derive(Debug, Serialize)]
pub struct StatusView {
    pub steps: Vec<StepReport>,
    /// The fleets' status documents, as the controller last wrote them.
    pub fleets: Vec<StatusDoc>,
    pub controllers: Vec<ControllerSeen>,
    /// The newest tasks that failed on their own, and how many more failed.
    pub failed_tasks: FailedTasks,
    /// Waiting tasks that gather over a step without any task.
    pub starved: Vec<StarvedGather>,
    /// When this snapshot was taken.
    pub at: Millis,
    #[serde(skip)]
    pub store: String,
}

/// A controller as last seen through its report in the store.
#[derive(Debug, Clone, Serialize)]
pub struct ControllerSeen {
    pub cluster: String,
    pub identity: String,
    pub interval_ms: Millis,
    pub last_seen_at: Millis,
    pub last_seen_ms_ago: Millis,
    /// It said it stopped (shut down cleanly).
    pub stopped: bool,
    /// Stopped, or older than [`STALE_AFTER_INTERVALS`] intervals (stopped or stuck).
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_error: Option<String>,
}

impl ControllerSeen {
    pub fn new(doc: ControllerDoc, updated_at: Millis, now: Millis) -> Self {
        let s = staleness(updated_at, doc.interval_ms, now);
        ControllerSeen {
            cluster: doc.cluster,
            identity: doc.identity,
            interval_ms: doc.interval_ms,
            last_seen_at: updated_at,
            last_seen_ms_ago: s.age_ms,
            stopped: doc.stopped,
            stale: doc.stopped || s.stale,
            manifest_error: doc.manifest_error,
        }
    }
}

impl StatusView {
    /// Whether a fleet's figures are stale: every controller stopped, or they are older than
    /// [`STALE_AFTER_INTERVALS`] of the (longest) controller interval. Unknown without a
    /// controller report.
    fn fleet_stale(&self, doc: &StatusDoc) -> bool {
        if !self.controllers.is_empty() && self.controllers.iter().all(|c| c.stopped) {
            return true;
        }
        let interval = self.controllers.iter().map(|c| c.interval_ms).max();
        interval.is_some_and(|i| staleness(doc.updated_at, i, self.at).stale)
    }
}

/// `just now`, `12s ago`, `4m ago`.
fn ago(d: Millis) -> String {
    if d < 1000 {
        "just now".to_string()
    } else {
        format!("{} ago", format_duration_ms(d / 1000 * 1000))
    }
}

/// Lines about each controller: when it was last seen, a warning when that is too long ago,
/// and a rejected manifest change.
fn controller_lines(v: &StatusView) -> String {
    let mut out = String::new();
    for c in &v.controllers {
        let who = format!("controller {} ({})", c.cluster, c.identity);
        let seen = ago(c.last_seen_ms_ago);
        if c.stopped {
            let _ = writeln!(
                out,
                "warning: {who} stopped {seen}; the fleets below are as it last saw them"
            );
        } else if c.stale {
            let _ = writeln!(
                out,
                "warning: {who} last seen {seen}, more than {STALE_AFTER_INTERVALS} intervals \
                 of {}: it has stopped or its passes are stuck; the fleets below are as it \
                 last saw them",
                format_duration_ms(c.interval_ms)
            );
        } else {
            let _ = writeln!(out, "{who} last seen {seen}");
        }
        if let Some(e) = &c.manifest_error {
            let _ = writeln!(
                out,
                "warning: a manifest change was rejected; the last good manifests stay in \
                 force until the files are fixed:"
            );
            for line in e.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
    }
    out
}

fn steps_table(steps: &[StepReport]) -> Table {
    let mut table = Table::new([
        "STEP".to_string(),
        "WAITING".into(),
        "PENDING".into(),
        "RUNNING".into(),
        "SUCCEEDED".into(),
        "FAILED".into(),
        "CANCELLED".into(),
        "OLDEST PENDING".into(),
        format!("DONE IN {THROUGHPUT_WINDOW_TEXT}"),
        "PER MIN".into(),
        "ETA".into(),
    ]);
    for s in steps {
        let c = &s.counts;
        table.row([
            c.step.clone(),
            c.waiting.to_string(),
            c.pending.to_string(),
            c.running.to_string(),
            c.succeeded.to_string(),
            c.failed.to_string(),
            c.cancelled.to_string(),
            s.oldest_pending_age_ms
                .map(format_duration_ms)
                .unwrap_or("-".into()),
            s.finished_in_window.to_string(),
            format!("{:.1}", s.throughput_per_min),
            eta_text(s),
        ]);
    }
    table
}

fn text_field(doc: &StatusDoc, key: &str) -> Option<String> {
    doc.body
        .get(key)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

fn fleets_table(v: &StatusView) -> Table {
    let mut ft = Table::new([
        "FLEET",
        "DESIRED",
        "ACTUAL",
        "CONDITIONS",
        "COST",
        "PER TASK",
        "IDLE",
        "INTERRUPTED",
        "UPDATED",
        "LAST ACTION",
    ]);
    for f in &v.fleets {
        let [cost, per_task, idle] = cost_cells(f);
        let field = |k: &str| f.body.get(k).map(|v| v.to_string()).unwrap_or("-".into());
        let conditions = text_field(f, "conditions_summary").unwrap_or("-".into());
        let stale = v.fleet_stale(f);
        ft.row([
            f.name.trim_start_matches("fleet/").to_string(),
            field("desired"),
            field("actual"),
            if stale {
                format!("stale (was: {conditions})")
            } else {
                conditions
            },
            cost,
            per_task,
            idle,
            interrupted_cell(f),
            ago(v.at.saturating_sub(f.updated_at).max(0)),
            text_field(f, "last_action")
                .map(|a| shorten(&a, 100))
                .unwrap_or("-".into()),
        ]);
    }
    ft
}

/// A fleet's interrupted instances so far, with the rebalanced ones (`3 +1 rebalanced`); `-`
/// where the controller published none.
fn interrupted_cell(f: &StatusDoc) -> String {
    let totals = f.body.get("interruptions");
    let num = |k: &str| totals.and_then(|t| t.get(k)).and_then(|v| v.as_u64());
    match (num("interruption"), num("rebalance")) {
        (Some(i), Some(0)) => i.to_string(),
        (Some(i), Some(r)) => format!("{i} +{r} rebalanced"),
        _ => "-".into(),
    }
}

/// A fleet's cost so far with its rate now (`$1.23 ($0.72/h)`), its cost per finished task and
/// the share of its cost spent idle; `-` where the controller published none.
fn cost_cells(f: &StatusDoc) -> [String; 3] {
    let cost = f.body.get("cost");
    let num = |k: &str| cost.and_then(|c| c.get(k)).and_then(|v| v.as_f64());
    let dollars = match (num("dollars"), num("usd_per_hour")) {
        (Some(d), Some(h)) => format!("${d:.2} (${h:.2}/h)"),
        _ => "-".into(),
    };
    let per_task = num("per_task").map_or("-".into(), |p| format!("${p:.4}"));
    let idle = match (num("dollars"), num("idle_share")) {
        (Some(d), Some(i)) if d > 0.0 => format!("{:.0}%", i * 100.0),
        _ => "-".into(),
    };
    [dollars, per_task, idle]
}

/// The plain text of `anamo status`.
pub fn render_text(v: &StatusView) -> String {
    let mut out = controller_lines(v);
    for s in &v.starved {
        let _ = writeln!(out, "warning: {}", s.message());
    }
    if !out.is_empty() {
        out.push('\n');
    }
    let table = steps_table(&v.steps);
    if table.is_empty() {
        let _ = writeln!(out, "no tasks in {}", v.store);
    } else {
        out.push_str(&table.render());
    }
    out.push_str(&failed_text(&v.failed_tasks));
    if !v.fleets.is_empty() {
        out.push('\n');
        out.push_str(&fleets_table(v).render());
    }
    out
}

/// The failed-tasks table (sample, step, id, reason, exit code, attempts, last log line),
/// with how many more failed; nothing when no task failed.
pub fn failed_text(f: &FailedTasks) -> String {
    let mut out = String::new();
    if f.total == 0 {
        return out;
    }
    if !f.newest.is_empty() {
        let _ = writeln!(
            out,
            "\nfailed tasks (newest {} of {} that failed on their own):",
            f.newest.len(),
            f.total - f.dependency_failed
        );
        let mut t = Table::new(["SAMPLE", "STEP", "ID", "REASON", "EXIT", "ATTEMPTS", "LOG"]);
        for x in &f.newest {
            let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            t.row([
                dash(&x.sample),
                x.step.clone(),
                x.id.clone(),
                dash(&x.reason),
                x.exit_code.map_or("-".into(), |c| c.to_string()),
                format!("{}/{}", x.attempts, x.max_attempts),
                shorten(&dash(&x.log_line), 60),
            ]);
        }
        out.push_str(&t.render());
    }
    if f.more() > 0 {
        let _ = writeln!(out, "{} more: {MORE_FAILED_HINT}", f.more());
    }
    if f.dependency_failed > 0 {
        let _ = writeln!(
            out,
            "{} more failed because a task they depend on failed (`anamo sample retry ID` or \
             `anamo task requeue` reruns them after it)",
            f.dependency_failed
        );
    }
    out
}

/// Characters of a step's bar, in display order (the legend explains them).
const BAR: [(&str, char); 6] = [
    ("succeeded", '='),
    ("failed", 'x'),
    ("running", '>'),
    ("pending", '-'),
    ("waiting", '.'),
    ("cancelled", '_'),
];

/// A `width`-character bar of `c`'s states; every state with tasks gets at least one
/// character, the rest is shared out in proportion (largest remainders first).
pub fn bar(c: &crate::model::StepCounts, width: usize) -> String {
    let counts: Vec<(char, u64)> = BAR
        .iter()
        .map(|(state, ch)| {
            let n = match *state {
                "succeeded" => c.succeeded,
                "failed" => c.failed,
                "running" => c.running,
                "pending" => c.pending,
                "waiting" => c.waiting,
                _ => c.cancelled,
            };
            (*ch, n)
        })
        .collect();
    let total = c.total();
    if total == 0 {
        return " ".repeat(width);
    }
    let exact: Vec<f64> = counts
        .iter()
        .map(|(_, n)| *n as f64 * width as f64 / total as f64)
        .collect();
    let mut cells: Vec<usize> = exact
        .iter()
        .zip(&counts)
        .map(|(e, (_, n))| {
            if *n > 0 {
                (e.floor() as usize).max(1)
            } else {
                0
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..cells.len()).filter(|&i| counts[i].1 > 0).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut k = 0;
    while cells.iter().sum::<usize>() < width && !order.is_empty() {
        cells[order[k % order.len()]] += 1;
        k += 1;
    }
    while cells.iter().sum::<usize>() > width {
        // Take from the widest segment (minimums can overshoot a narrow bar).
        let widest = (0..cells.len()).max_by_key(|&i| cells[i]).unwrap_or(0);
        cells[widest] -= 1;
    }
    counts
        .iter()
        .zip(cells)
        .map(|((ch, _), w)| ch.to_string().repeat(w))
        .collect()
}

/// One frame of `anamo status --watch` on a terminal, `width` columns wide.
pub fn render_frame(v: &StatusView, width: usize, every: &str) -> String {
    let mut out = format!(
        "anamo status · {} · {} · every {every} (Ctrl-C to stop)\n",
        v.store,
        format_millis(v.at)
    );
    out.push_str(&controller_lines(v));
    out.push('\n');
    if v.steps.is_empty() {
        let _ = writeln!(out, "no tasks in {}", v.store);
    }
    let name_w = v.steps.iter().map(|s| s.counts.step.chars().count()).max();
    let name_w = name_w.unwrap_or(0).max(4);
    let bar_w = width.saturating_sub(name_w + 50).clamp(10, 40);
    for s in &v.steps {
        let c = &s.counts;
        let finished = c.succeeded + c.failed + c.cancelled;
        let _ = writeln!(
            out,
            "{:<name_w$}  [{}]  {finished}/{}  {:.1}/min  ETA {}",
            c.step,
            bar(c, bar_w),
            c.total(),
            s.throughput_per_min,
            eta_text(s),
        );
        let _ = writeln!(
            out,
            "{:<name_w$}   succeeded {}  failed {}  running {}  pending {}  waiting {}{}",
            "",
            c.succeeded,
            c.failed,
            c.running,
            c.pending,
            c.waiting,
            if c.cancelled > 0 {
                format!("  cancelled {}", c.cancelled)
            } else {
                String::new()
            },
        );
    }
    if !v.steps.is_empty() {
        let legend: Vec<String> = BAR.iter().map(|(s, ch)| format!("{ch} {s}")).collect();
        let _ = writeln!(out, "{}", legend.join("  "));
    }
    if !v.fleets.is_empty() {
        out.push('\n');
        out.push_str(&fleets_table(v).render());
    }
    let mut actions: Vec<(Millis, String, String)> = v
        .fleets
        .iter()
        .filter_map(|f| {
            let at = f.body.get("last_action_at").and_then(|t| t.as_i64())?;
            let what = text_field(f, "last_action")?;
            Some((at, f.name.trim_start_matches("fleet/").to_string(), what))
        })
        .collect();
    actions.sort_by_key(|a| std::cmp::Reverse(a.0));
    if !actions.is_empty() {
        out.push_str("\nLAST ACTIONS\n");
        for (at, fleet, what) in actions {
            let line = format!("{:>10}  {fleet}  {what}", ago(v.at.saturating_sub(at)));
            let _ = writeln!(out, "{}", shorten(&line, width.max(20)));
        }
    }
    out
}

/// `frame` cut to a `width` × `height` terminal: longer lines are shortened and lines past
/// the bottom are replaced by a count, so redrawing in place never scrolls.
pub fn fit(frame: &str, width: usize, height: usize) -> Vec<String> {
    let lines: Vec<&str> = frame.lines().collect();
    let height = height.max(2);
    let mut out: Vec<String> = Vec::with_capacity(lines.len().min(height));
    if lines.len() <= height {
        out.extend(lines.iter().map(|l| shorten(l, width)));
    } else {
        out.extend(lines[..height - 1].iter().map(|l| shorten(l, width)));
        let more = format!(
            "… {} more lines (a larger window shows them)",
            lines.len() - (height - 1)
        );
        out.push(shorten(&more, width));
    }
    out
}

pub use crate::text::shorten;

#[cfg(test)]
#[path = "status_view_tests.rs"]
mod tests;
