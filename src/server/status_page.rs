//! The status page served at `/`: one server-rendered HTML document (no scripts) built from the
//! same [`ControllerStatus`] as `/api/status`, refreshed by the browser every 5 seconds. The
//! failed-tasks table and the per-sample view are in [`super::status_samples`].
//!
//! Every figure is also carried in `data-*` attributes (`data-step="align"
//! data-succeeded="12"`, `data-fleet="align" data-desired="3"`, ...) so tests and scrapers can
//! read the page without parsing its prose. All text, attribute values included, is escaped:
//! step, fleet and task names come from users.

use std::fmt::Write as _;

use crate::clock::{format_duration_ms, format_millis, Millis};
use crate::controller::status::{
    eta_text, finished_text, staleness, ActionRecord, ControllerStatus, FleetReport, Role,
    StepReport, DEFAULT_CLUSTER, STALE_AFTER_INTERVALS, THROUGHPUT_WINDOW_TEXT,
};
use crate::planner::ConditionStatus;

/// Seconds between automatic reloads of the page.
pub const REFRESH_SECS: u32 = 5;

/// Segments of a step's progress bar, in display order, with their CSS colour.
const SEGMENTS: [(&str, &str); 6] = [
    ("succeeded", "#2f9e44"),
    ("failed", "#e03131"),
    ("running", "#1c7ed6"),
    ("pending", "#f59f00"),
    ("waiting", "#adb5bd"),
    ("cancelled", "#868e96"),
];

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Starting => "starting",
        Role::Leader => "leader",
        Role::Follower => "follower",
    }
}

/// `just now`, `12s ago`, `3m 5s ago` for a time `d` milliseconds back.
fn ago(d: Millis) -> String {
    if d < 1000 {
        "just now".to_string()
    } else {
        format!("{} ago", format_duration_ms(d / 1000 * 1000))
    }
}

/// `12s ago (2026-01-01T10:00:00Z)`, or `never`.
fn when(t: Option<Millis>, now: Millis) -> String {
    match t {
        Some(t) if t > 0 => format!("{} ({})", ago(now - t), format_millis(t)),
        _ => "never".to_string(),
    }
}

fn opt_attr(v: Option<Millis>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

fn step_value(s: &StepReport, name: &str) -> u64 {
    let c = &s.counts;
    match name {
        "succeeded" => c.succeeded,
        "failed" => c.failed,
        "running" => c.running,
        "pending" => c.pending,
        "waiting" => c.waiting,
        "cancelled" => c.cancelled,
        _ => 0,
    }
}

/// The page's heading: `anamo`, followed by the cluster's name unless that is `anamo` too
/// (the default), which would read "anamo anamo".
fn heading(cluster: &str) -> String {
    if cluster == DEFAULT_CLUSTER {
        "anamo".to_string()
    } else {
        format!("anamo <span class=\"cluster\">{}</span>", escape(cluster))
    }
}

/// Banners above the figures: a stale status, a rejected manifest change, the last pass's
/// errors, a follower's note.
fn render_banners(h: &mut String, st: &ControllerStatus, now: Millis) {
    if let Some(at) = st.last_reconcile_at {
        let s = staleness(at, st.interval_ms, now);
        if s.stale {
            let _ = writeln!(
                h,
                "<p id=\"stale\" class=\"banner\" data-age-ms=\"{age}\">Stale: the last \
                 reconcile pass was {ago}, more than {STALE_AFTER_INTERVALS} intervals of {every} \
                 ago; the controller's passes are stuck, so the figures below may be out of \
                 date. Check its log.</p>",
                age = s.age_ms,
                ago = escape(&ago(s.age_ms)),
                every = escape(&format_duration_ms(st.interval_ms)),
            );
        }
    }
    if let Some(e) = &st.manifest_error {
        let _ = writeln!(
            h,
            "<p id=\"manifest-error\" class=\"banner\">A manifest change was rejected; the \
             last good manifests stay in force until the files are fixed:\
             <span class=\"detail\">{}</span></p>",
            escape(e)
        );
    }
    if let Some(e) = &st.last_error {
        let _ = writeln!(
            h,
            "<p id=\"last-error\" class=\"banner\">Last pass had errors: {}</p>",
            escape(e)
        );
    }
    for s in &st.starved {
        let _ = writeln!(
            h,
            "<p class=\"banner starved\" data-starved-step=\"{}\" data-upstream=\"{}\" \
             data-waiting=\"{}\">{}</p>",
            escape(&s.step),
            escape(&s.upstream),
            s.waiting,
            escape(&s.message())
        );
    }
    if st.role == Role::Follower {
        h.push_str(
            "<p class=\"banner muted\" id=\"follower-note\">This controller is a follower: \
             another controller holds the leadership and reconciles; the figures below are \
             the ones this controller last saw as leader, if ever.</p>\n",
        );
    }
}

const STYLE: &str = r#"
:root { color-scheme: light; --fg: #212529; --muted: #6c757d; --line: #dee2e6; --bg: #f8f9fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
header { background: #212529; color: #f8f9fa; padding: 12px 24px; display: flex; flex-wrap: wrap; align-items: baseline; gap: 8px 24px; }
header h1 { font-size: 20px; margin: 0; font-weight: 600; }
header h1 .cluster { color: #ffd43b; }
header dl { display: flex; flex-wrap: wrap; gap: 4px 20px; margin: 0; }
header dt { color: #adb5bd; display: inline; }
header dd { display: inline; margin: 0 0 0 4px; }
.role { padding: 2px 10px; border-radius: 10px; font-weight: 600; text-transform: uppercase; font-size: 12px; }
.role-leader { background: #2f9e44; color: #fff; }
.role-follower { background: #868e96; color: #fff; }
.role-starting { background: #f59f00; color: #212529; }
main { padding: 8px 24px 24px; max-width: 1400px; }
h2 { font-size: 16px; margin: 20px 0 8px; }
.banner .detail { display: block; white-space: pre-wrap; font-family: ui-monospace, monospace; margin-top: 4px; }
.banner { margin: 12px 0 0; padding: 8px 12px; border-radius: 4px; background: #fff5f5; border: 1px solid #ffa8a8; color: #c92a2a; }
.steps { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px; }
.step { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; }
.step-head { display: flex; justify-content: space-between; align-items: baseline; }
.step h3 { margin: 0; font-size: 15px; }
.progress-text { color: var(--muted); }
.bar { display: flex; height: 18px; border-radius: 4px; overflow: hidden; background: #e9ecef; margin: 8px 0; }
.seg { display: block; height: 100%; }
.legend { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 2px 14px; font-size: 13px; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
.rates { margin: 6px 0 0; color: var(--muted); font-size: 13px; }
.rates b { color: var(--fg); }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: #f1f3f5; font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.conditions, .interruptions { list-style: none; margin: 0; padding: 0; }
.condition { display: inline-block; margin: 0 4px 2px 0; padding: 0 6px; border-radius: 3px; font-size: 12px; border: 1px solid var(--line); color: var(--muted); }
.condition.cond-true { background: #e7f5ff; border-color: #74c0fc; color: #1864ab; font-weight: 600; }
.condition.cond-true.cond-stalled, .condition.cond-true.cond-atmax, .condition.cond-true.cond-budgetlimited { background: #fff4e6; border-color: #ffa94d; color: #d9480f; }
.condition.cond-unknown { border-style: dashed; }
.cond-message { display: block; font-weight: normal; color: var(--fg); }
.error { color: #c92a2a; }
.muted { color: var(--muted); }
.ok-false td { background: #fff5f5; }
.empty { color: var(--muted); font-style: italic; }
footer { padding: 0 24px 24px; color: var(--muted); font-size: 12px; }
"#;

/// Renders the whole page for `st` as seen at `now`.
pub fn render(st: &ControllerStatus, now: Millis) -> String {
    render_search(st, now, "")
}

/// Renders the whole page, its per-sample view showing the samples that contain `query`.
pub fn render_search(st: &ControllerStatus, now: Millis, query: &str) -> String {
    let mut h = String::with_capacity(16 * 1024);
    render_header(&mut h, st, now);
    render_banners(&mut h, st, now);
    render_sections(&mut h, st, now, query);
    let _ = write!(
        h,
        "<footer>Refreshes every {REFRESH_SECS} s · generated {} · \
         <a href=\"/api/status\">/api/status</a> · <a href=\"/metrics\">/metrics</a></footer>\n\
         </body></html>\n",
        escape(&format_millis(now)),
    );
    h
}

/// The document's head and the header: cluster, role, last passes, identity and store.
fn render_header(h: &mut String, st: &ControllerStatus, now: Millis) {
    let role = role_name(st.role);
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}{samples_style}</style></head>\n<body>\n",
        samples_style = super::status_samples::STYLE,
        title = if st.cluster == DEFAULT_CLUSTER {
            "anamo".to_string()
        } else {
            format!("anamo · {}", escape(&st.cluster))
        },
    );
    let _ = write!(
        h,
        "<header id=\"controller\" data-cluster=\"{cluster}\" data-identity=\"{identity}\" \
         data-role=\"{role}\" data-store=\"{store}\" data-last-reconcile-at=\"{lr}\" \
         data-last-success-at=\"{ls}\" data-generated-at=\"{now}\">\
         <h1>{heading}</h1>\
         <span id=\"role\" class=\"role role-{role}\">{role}</span>\
         <dl><div><dt>last reconcile</dt><dd id=\"last-reconcile\">{lr_text}</dd></div>\
         <div><dt>last success</dt><dd id=\"last-success\">{ls_text}</dd></div>\
         <div><dt>identity</dt><dd>{identity}</dd></div>\
         <div><dt>store</dt><dd>{store}</dd></div></dl></header>\n<main>\n",
        cluster = escape(&st.cluster),
        heading = heading(&st.cluster),
        identity = escape(&st.identity),
        store = escape(&st.store),
        lr = opt_attr(st.last_reconcile_at),
        ls = opt_attr(st.last_success_at),
        lr_text = escape(&when(st.last_reconcile_at, now)),
        ls_text = escape(&when(st.last_success_at, now)),
    );
}

/// The steps, the fleets and the last actions, closing `<main>`.
fn render_sections(h: &mut String, st: &ControllerStatus, now: Millis, query: &str) {
    h.push_str("<h2>Steps</h2>\n<section id=\"steps\" class=\"steps\">\n");
    if st.steps.is_empty() {
        h.push_str("<p class=\"empty\">No tasks yet.</p>\n");
    }
    for s in &st.steps {
        render_step(h, s, now);
    }
    h.push_str("</section>\n");
    super::status_samples::render_failed(h, st);
    super::status_samples::render_samples(h, st, query);

    h.push_str("<h2>Fleets</h2>\n<section id=\"fleets\">\n");
    if st.fleets.is_empty() {
        h.push_str("<p class=\"empty\">No fleets (yet).</p>\n");
    } else {
        h.push_str(
            "<table><thead><tr><th>fleet</th><th>step</th><th>provider</th>\
             <th class=\"num\">desired</th><th class=\"num\">actual</th>\
             <th class=\"num\">idle</th><th class=\"num\">busy</th>\
             <th class=\"num\">booting</th><th class=\"num\">cost</th>\
             <th class=\"num\">interrupted</th><th>conditions</th>\
             <th>last action</th><th>error</th></tr></thead><tbody>\n",
        );
        for f in &st.fleets {
            render_fleet(h, f, now);
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n");

    h.push_str("<h2>Last actions</h2>\n<section id=\"actions\">\n");
    if st.recent_actions.is_empty() {
        h.push_str("<p class=\"empty\">No actions yet.</p>\n");
    } else {
        h.push_str(
            "<table><thead><tr><th>when</th><th>fleet</th><th>action</th><th>reason</th>\
             <th>result</th></tr></thead><tbody>\n",
        );
        for a in &st.recent_actions {
            render_action(h, a, now);
        }
        h.push_str("</tbody></table>\n");
    }
    h.push_str("</section>\n</main>\n");
}

fn render_step(h: &mut String, s: &StepReport, now: Millis) {
    let c = &s.counts;
    let total = c.total();
    let finished = c.succeeded + c.failed + c.cancelled;
    let name = escape(&c.step);
    let _ = write!(
        h,
        "<div class=\"step\" data-step=\"{name}\" data-waiting=\"{}\" data-pending=\"{}\" \
         data-running=\"{}\" data-succeeded=\"{}\" data-failed=\"{}\" data-cancelled=\"{}\" \
         data-total=\"{total}\" data-throughput-per-min=\"{}\" data-eta-ms=\"{}\" \
         data-oldest-pending-age-ms=\"{}\" data-counted-at=\"{}\">\n\
         <div class=\"step-head\"><h3>{name}</h3><span class=\"progress-text\">{progress}\
         </span></div>\n<div class=\"bar\">",
        c.waiting,
        c.pending,
        c.running,
        c.succeeded,
        c.failed,
        c.cancelled,
        s.throughput_per_min,
        opt_attr(s.eta_ms),
        opt_attr(s.oldest_pending_age_ms),
        s.counted_at,
        progress = match (finished_text(c), (finished * 100).checked_div(total)) {
            (Some(done), _) => format!("{finished} / {total} {done}"),
            (None, Some(pct)) => format!("{finished} / {total} finished ({pct}%)"),
            (None, None) => "no tasks".to_string(),
        },
    );
    for (seg, colour) in SEGMENTS {
        let n = step_value(s, seg);
        if n == 0 || total == 0 {
            continue;
        }
        let _ = write!(
            h,
            "<span class=\"seg seg-{seg}\" data-state=\"{seg}\" data-count=\"{n}\" \
             style=\"width:{:.3}%;background:{colour}\" title=\"{seg}: {n}\"></span>",
            n as f64 * 100.0 / total as f64
        );
    }
    h.push_str("</div>\n<ul class=\"legend\">");
    for (seg, colour) in SEGMENTS {
        let n = step_value(s, seg);
        if seg == "cancelled" && n == 0 {
            continue;
        }
        let _ = write!(
            h,
            "<li class=\"legend-{seg}\"><span class=\"swatch\" style=\"background:{colour}\">\
             </span>{seg} <b class=\"count\" data-state=\"{seg}\">{n}</b></li>"
        );
    }
    let _ = write!(
        h,
        "</ul>\n<p class=\"rates\">throughput <b class=\"throughput\">{:.1}/min</b> \
         <span class=\"window\">({} done in the last {THROUGHPUT_WINDOW_TEXT})</span> · ETA \
         <b class=\"eta\">{}</b> · oldest pending <b class=\"oldest-pending\">{}</b> · counted \
         <b class=\"counted\">{}</b></p>\n</div>\n",
        s.throughput_per_min,
        s.finished_in_window,
        escape(&eta_text(s)),
        s.oldest_pending_age_ms
            .map(|a| format_duration_ms(a / 1000 * 1000))
            .unwrap_or_else(|| "-".into()),
        ago(now.saturating_sub(s.counted_at)),
    );
}

fn render_fleet(h: &mut String, f: &FleetReport, now: Millis) {
    let s = &f.status;
    let busy = s.busy;
    let booting = s.booting + s.launching;
    let on: Vec<&str> = f
        .conditions
        .iter()
        .filter(|c| c.status == ConditionStatus::True)
        .map(|c| c.type_.as_str())
        .collect();
    let _ = write!(
        h,
        "<tr class=\"fleet\" data-fleet=\"{fleet}\" data-step=\"{step}\" \
         data-provider=\"{provider}\" data-desired=\"{}\" data-actual=\"{}\" data-idle=\"{}\" \
         data-busy=\"{busy}\" data-booting=\"{booting}\" data-lost=\"{}\" \
         data-conditions=\"{}\" data-error=\"{}\">\
         <td class=\"fleet-name\">{fleet}</td><td>{step}</td><td>{provider}</td>\
         <td class=\"num desired\">{}</td><td class=\"num actual\">{}</td>\
         <td class=\"num idle\">{}</td><td class=\"num busy\">{busy}</td>\
         <td class=\"num booting\">{booting}</td>{cost}{interrupted}\
         <td><ul class=\"conditions\">",
        f.desired,
        f.actual,
        f.idle,
        s.lost,
        on.join(","),
        f.error.is_some(),
        f.desired,
        f.actual,
        f.idle,
        fleet = escape(&f.fleet),
        step = escape(&f.step),
        provider = escape(&f.provider),
        cost = cost_cell(f),
        interrupted = interrupted_cell(f),
    );
    for c in &f.conditions {
        let (class, status) = match c.status {
            ConditionStatus::True => ("cond-true", "True"),
            ConditionStatus::False => ("cond-false", "False"),
            ConditionStatus::Unknown => ("cond-unknown", "Unknown"),
        };
        let name = c.type_.as_str();
        let msg = escape(&c.message);
        // True (and Unknown) conditions show their message; False ones keep it as a tooltip.
        let shown = if c.status == ConditionStatus::False || msg.is_empty() {
            String::new()
        } else {
            format!("<span class=\"cond-message\">{msg}</span>")
        };
        let _ = write!(
            h,
            "<li class=\"condition {class} cond-{lower}\" data-condition=\"{name}\" \
             data-status=\"{status}\" title=\"{name}={status}: {msg}\">\
             <span class=\"cond-name\">{name}</span>{shown}</li>",
            lower = name.to_ascii_lowercase(),
        );
    }
    h.push_str("</ul></td><td class=\"last-action\">");
    match &f.last_action {
        Some(a) => {
            let _ = write!(
                h,
                "{}<br><span class=\"muted\">{}</span>",
                escape(a),
                escape(&when(f.last_action_at, now))
            );
        }
        None => h.push_str("<span class=\"muted\">-</span>"),
    }
    h.push_str("</td><td class=\"fleet-error error\">");
    if let Some(e) = &f.error {
        h.push_str(&escape(e));
    }
    h.push_str("</td></tr>\n");
}

/// A fleet's cost so far, its rate, idle share and cost per finished task (`-` without figures).
fn cost_cell(f: &FleetReport) -> String {
    let Some(c) = &f.cost else {
        return "<td class=\"num cost\" data-cost=\"\"><span class=\"muted\">-</span></td>".into();
    };
    let per_task = c
        .per_task
        .map(|p| format!(" · ${p:.4}/task"))
        .unwrap_or_default();
    format!(
        "<td class=\"num cost\" data-cost=\"{dollars}\" data-usd-per-hour=\"{rate}\">${dollars:.2}\
         <br><span class=\"muted\">${rate:.2}/h · idle {idle:.0}%{per_task}</span></td>",
        dollars = c.totals.dollars,
        rate = c.usd_per_hour,
        idle = c.idle_share * 100.0,
    )
}

/// A fleet's interrupted and rebalanced instances so far, with one line per kind, instance
/// type and zone (`-` without any).
fn interrupted_cell(f: &FleetReport) -> String {
    let t = &f.interruptions;
    let mut cell = format!(
        "<td class=\"num interrupted\" data-interruption=\"{}\" data-rebalance=\"{}\">",
        t.interruption, t.rebalance
    );
    if t.interruption + t.rebalance == 0 {
        cell.push_str("<span class=\"muted\">-</span></td>");
        return cell;
    }
    let _ = write!(cell, "{}", t.interruption);
    if t.rebalance > 0 {
        let _ = write!(cell, " +{} rebalanced", t.rebalance);
    }
    cell.push_str("<ul class=\"interruptions\">");
    for o in &t.by_offering {
        let _ = write!(
            cell,
            "<li class=\"muted\" data-kind=\"{kind}\" data-instance-type=\"{ty}\" \
             data-zone=\"{zone}\" data-count=\"{n}\">{n} {kind} · {ty} · {zone}</li>",
            kind = escape(&o.kind),
            ty = escape(&o.instance_type),
            zone = escape(&o.zone),
            n = o.count,
        );
    }
    cell.push_str("</ul></td>");
    cell
}

fn render_action(h: &mut String, a: &ActionRecord, now: Millis) {
    let _ = writeln!(
        h,
        "<tr class=\"action ok-{ok}\" data-at=\"{at}\" data-fleet=\"{fleet}\" \
         data-action=\"{action}\" data-ok=\"{ok}\"><td title=\"{ts}\">{ago}</td>\
         <td>{fleet}</td><td>{action}</td><td>{reason}</td><td>{result}</td></tr>",
        ok = a.ok,
        at = a.at,
        fleet = escape(&a.fleet),
        action = escape(&a.action),
        reason = escape(&a.reason),
        ts = escape(&format_millis(a.at)),
        ago = escape(&ago(now - a.at)),
        result = if a.ok {
            "ok".to_string()
        } else {
            format!(
                "<span class=\"error\">failed: {}</span>",
                escape(a.error.as_deref().unwrap_or("unknown error"))
            )
        },
    );
}

#[cfg(test)]
#[path = "status_page_tests.rs"]
mod tests;
