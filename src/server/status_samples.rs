//! The status page's failed-tasks table and per-sample view, from the same
//! [`ControllerStatus`] as `/api/status` ([`super::api_document`]). Like the rest of the page:
//! no scripts (the search is a GET form, `/?sample=NA12`, kept by the page's refresh), every
//! figure also in `data-*` attributes, all text escaped.

use std::fmt::Write as _;

use super::status_page::escape;
use crate::clock::format_millis;
use crate::controller::failures::{FailedTask, MORE_FAILED_HINT};
use crate::controller::sample_view::SamplesPage;
use crate::controller::status::{ControllerStatus, SAMPLES_SHOWN};
use crate::pipeline::matrix::{glyph, states_text, Glyph};

pub(super) const STYLE: &str = r#"
.samples-search { margin: 0 0 8px; }
.samples-search input { font: inherit; padding: 3px 6px; width: 240px; }
td.cell { text-align: center; font-variant-numeric: tabular-nums; }
.glyph-done { color: #2f9e44; } .glyph-failed { color: #e03131; font-weight: 600; }
.glyph-held { color: #d9480f; } .glyph-running { color: #1c7ed6; }
.glyph-not-yet, .glyph-cancelled { color: var(--muted); }
tr.totals td { background: #f1f3f5; font-weight: 600; }
.log-line { font-family: ui-monospace, monospace; font-size: 12px; }
"#;

/// The failed-tasks table: the newest failures, how many more, how many failed with a
/// dependency.
pub(super) fn render_failed(h: &mut String, st: &ControllerStatus) {
    let f = &st.failed_tasks;
    let _ = writeln!(
        h,
        "<h2>Failed tasks</h2>\n<section id=\"failed\" data-total=\"{}\" \
         data-dependency-failed=\"{}\" data-more=\"{}\">",
        f.total,
        f.dependency_failed,
        f.more()
    );
    if f.newest.is_empty() {
        h.push_str("<p class=\"empty\">No task failed on its own.</p>\n");
    } else {
        h.push_str(
            "<table><thead><tr><th>sample</th><th>step</th><th>id</th><th>reason</th>\
             <th class=\"num\">exit</th><th>log</th><th class=\"num\">attempts</th>\
             <th>failed at</th></tr></thead><tbody>\n",
        );
        for t in &f.newest {
            render_failed_row(h, t);
        }
        h.push_str("</tbody></table>\n");
    }
    if f.more() > 0 {
        let _ = writeln!(
            h,
            "<p class=\"more\">{} more: <code>{MORE_FAILED_HINT}</code></p>",
            f.more()
        );
    }
    if f.dependency_failed > 0 {
        let _ = writeln!(
            h,
            "<p class=\"muted dependency-failed\">{} more failed because a task they depend on \
             failed (not listed; <code>anamo sample retry</code> or <code>anamo task requeue</code> \
             reruns them after it).</p>",
            f.dependency_failed
        );
    }
    h.push_str("</section>\n");
}

fn render_failed_row(h: &mut String, t: &FailedTask) {
    let text = |v: &Option<String>| v.as_deref().map(escape).unwrap_or_else(|| "-".into());
    let log = match (&t.log_href, &t.log_line) {
        (Some(href), line) => format!(
            "<a class=\"log-line\" href=\"{}\">{}</a>",
            escape(href),
            line.as_deref().map(escape).unwrap_or_else(|| "log".into())
        ),
        (None, line) => format!("<span class=\"log-line\">{}</span>", text(line)),
    };
    let _ = writeln!(
        h,
        "<tr class=\"failed-task\" data-sample=\"{sample}\" data-task-step=\"{step}\" \
         data-id=\"{id}\" data-exit-code=\"{exit}\" data-attempts=\"{}\" data-href=\"{href}\">\
         <td>{sample_text}</td><td>{step}</td><td>{id}</td><td>{reason}</td>\
         <td class=\"num\">{exit_text}</td><td>{log}</td><td class=\"num\">{}/{}</td>\
         <td>{at}</td></tr>",
        t.attempts,
        t.attempts,
        t.max_attempts,
        sample = t.sample.as_deref().map(escape).unwrap_or_default(),
        sample_text = text(&t.sample),
        step = escape(&t.step),
        id = escape(&t.id),
        exit = t.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        exit_text = t.exit_code.map_or("-".into(), |c| c.to_string()),
        href = t.log_href.as_deref().map(escape).unwrap_or_default(),
        reason = text(&t.reason),
        at = escape(&format_millis(t.failed_at)),
    );
}

/// The per-sample view: a search form, the first [`SAMPLES_SHOWN`] matching samples × steps
/// with a glyph per cell, the samples done per step, the steps not per sample, the legend.
pub(super) fn render_samples(h: &mut String, st: &ControllerStatus, query: &str) {
    let v = st.samples.view(query, SAMPLES_SHOWN);
    let _ = writeln!(
        h,
        "<h2>Samples</h2>\n<section id=\"samples\" data-total=\"{}\" data-matched=\"{}\" \
         data-query=\"{q}\">\n<form class=\"samples-search\" method=\"get\" action=\"/\" \
         role=\"search\"><input type=\"search\" name=\"sample\" value=\"{q}\" \
         placeholder=\"search samples\" aria-label=\"search samples\"> \
         <button type=\"submit\">Search</button></form>",
        v.total,
        v.matched,
        q = escape(&v.query),
    );
    if v.steps.is_empty() {
        h.push_str("<p class=\"empty\">No task belongs to a sample yet.</p>\n");
    } else {
        render_sample_table(h, &v);
    }
    for o in &v.other_steps {
        let _ = writeln!(
            h,
            "<p class=\"other-step\" data-other-step=\"{}\">{} (not per sample): {}</p>",
            escape(&o.step),
            escape(&o.step),
            escape(&states_text(Some(&o.tasks)))
        );
    }
    h.push_str("</section>\n");
}

/// The samples × steps table of `v`, its `done` row, how many are shown, and the legend.
fn render_sample_table(h: &mut String, v: &SamplesPage) {
    h.push_str("<table><thead><tr><th>sample</th>");
    for s in &v.steps {
        let _ = write!(h, "<th>{}</th>", escape(s));
    }
    h.push_str("</tr></thead><tbody>\n");
    for row in &v.samples {
        let _ = write!(
            h,
            "<tr class=\"sample-row\" data-sample=\"{s}\"><td>{s}</td>",
            s = escape(&row.sample)
        );
        for step in &v.steps {
            let cell = row.steps.get(step);
            let g = glyph(cell);
            let _ = write!(
                h,
                "<td class=\"cell glyph-{name}\" data-cell-step=\"{step}\" \
                 data-glyph=\"{name}\" title=\"{title}\">{text}</td>",
                name = g.name(),
                step = escape(step),
                title = escape(&states_text(cell)),
                text = escape(&g.text(false)),
            );
        }
        h.push_str("</tr>\n");
    }
    h.push_str("<tr class=\"totals\"><td>done</td>");
    for t in &v.totals {
        let _ = write!(
            h,
            "<td class=\"cell\" data-cell-step=\"{}\" data-done=\"{}\" data-samples=\"{}\">\
             {}/{}</td>",
            escape(&t.step),
            t.done,
            t.samples,
            t.done,
            t.samples
        );
    }
    h.push_str("</tr>\n</tbody></table>\n");
    if v.matched > v.samples.len() || v.matched < v.total {
        let _ = writeln!(
            h,
            "<p class=\"muted shown\">{} of {} sample(s) shown ({} match{}).</p>",
            v.samples.len(),
            v.total,
            v.matched,
            if v.query.is_empty() {
                ""
            } else {
                " the search"
            },
        );
    }
    let _ = writeln!(
        h,
        "<p class=\"muted legend-glyphs\">{}</p>",
        escape(&Glyph::legend(false))
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::controller::failures::failed_tasks;
    use crate::controller::sample_view::{SampleView, SharedSamples};
    use crate::controller::status::ControllerStatus;
    use crate::model::{Task, TaskResult, TaskSpec, TaskState};
    use crate::pipeline::matrix::build;
    use crate::pipeline::Graph;
    use crate::server::{api_document, status_page::render_search};

    fn status() -> ControllerStatus {
        let mut st = ControllerStatus::new("c", "i", "s");
        let g = Graph::default();
        let mut t = Task::new(TaskSpec::new("al<ign", "<b>S1</b>/x", "true"), 0);
        t.state = TaskState::Failed;
        t.attempts = 3;
        t.reason = Some("exit 3 <x>".into());
        t.result = Some(TaskResult {
            exit_code: Some(3),
            log_tail: "ok\nerror: <disk> full\n".into(),
            ..Default::default()
        });
        st.failed_tasks = failed_tasks(&g, &[t], 20);
        let ids = (0..300)
            .map(|i| (format!("NA{i:05}"), TaskState::Succeeded))
            .chain([("<b>S1</b>/x".to_string(), TaskState::Failed)])
            .collect();
        let matrix = build(&g, vec![("al<ign".into(), ids)]);
        st.samples = Arc::new(SharedSamples::new(SampleView::of_matrix(&g, &matrix)));
        st
    }

    #[test]
    fn failed_tasks_link_to_their_log_and_names_are_escaped() {
        let html = render_search(&status(), 0, "");
        assert!(!html.contains("<b>S1"), "escaped");
        assert!(html.contains("href=\"/api/tasks/al%3Cign/%3Cb%3ES1%3C%2Fb%3E%2Fx/log?attempt=3\""));
        assert!(html.contains("error: &lt;disk&gt; full"));
        assert!(html.contains("exit 3 &lt;x&gt;"));
        assert!(html.contains("id=\"failed\" data-total=\"1\""));
    }

    #[test]
    fn a_starved_gather_is_a_banner_and_in_the_api() {
        let mut st = status();
        st.starved = vec![crate::controller::failures::StarvedGather {
            step: "joint".into(),
            upstream: "call".into(),
            waiting: 4,
        }];
        let html = render_search(&st, 0, "");
        assert!(html.contains("class=\"banner starved\" data-starved-step=\"joint\""));
        assert!(html.contains("wait for step `call`, which has no tasks"));
        assert_eq!(api_document(&st, "")["starved"][0]["waiting"], 4);
    }

    #[test]
    fn the_sample_view_is_bounded_and_searched_like_the_api() {
        let st = status();
        let html = render_search(&st, 0, "");
        assert_eq!(html.matches("class=\"sample-row\"").count(), 200);
        assert!(html.contains("data-total=\"301\" data-matched=\"301\""));
        let doc = api_document(&st, "");
        assert_eq!(
            doc["samples"]["samples"].as_array().map(Vec::len),
            Some(200)
        );
        assert_eq!(doc["samples"]["total"], 301);
        assert_eq!(doc["failed_tasks"]["total"], 1);
        let html = render_search(&st, 0, "na0012");
        assert_eq!(html.matches("class=\"sample-row\"").count(), 10);
        assert!(html.contains("value=\"na0012\""));
        let doc = api_document(&st, "na0012");
        assert_eq!(doc["samples"]["matched"], 10);
        assert_eq!(doc["samples"]["samples"][0]["sample"], "NA00120");
        assert!(
            serde_json::to_string(&doc).unwrap().len() < 64 * 1024,
            "the document stays small"
        );
    }
}
