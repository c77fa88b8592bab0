//! `anamo simulate --plot FILE.svg`: fleet size of each policy and anamo's backlog over time.

use std::path::Path;

use plotters::prelude::*;

use super::{PolicyKind, Sample, SimReport};

const ANAMO: RGBColor = RGBColor(31, 119, 180);
const ANAMO_BUSY: RGBColor = RGBColor(158, 202, 225);
const STATIC: RGBColor = RGBColor(127, 127, 127);
const KEDA: RGBColor = RGBColor(255, 127, 14);
const CLAIRVOYANT: RGBColor = RGBColor(44, 160, 44);
const BACKLOG: RGBColor = RGBColor(214, 39, 40);

/// Writes an SVG of instances over time (every policy; anamo's busy instances too) with the
/// pending backlog of anamo's run on the right axis.
pub fn plot_svg(
    path: &Path,
    report: &SimReport,
    timelines: &[(PolicyKind, Vec<Sample>)],
) -> Result<(), String> {
    draw(path, report, timelines).map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

/// The axes' upper ends: hours, instances, and anamo's pending tasks.
fn ranges(timelines: &[(PolicyKind, Vec<Sample>)]) -> (f64, f64, f64) {
    let h = |s: &Sample| s.t_ms as f64 / 3_600_000.0;
    let x_max = timelines
        .iter()
        .flat_map(|(_, t)| t.iter().map(h))
        .fold(0.0f64, f64::max)
        .max(0.1);
    let y_max = timelines
        .iter()
        .flat_map(|(_, t)| t.iter().map(|s| s.instances))
        .max()
        .unwrap_or(1)
        .max(1) as f64
        * 1.1;
    let anamo = timelines.iter().find(|(k, _)| *k == PolicyKind::Anamo);
    let backlog_max = anamo
        .map(|(_, t)| t.iter().map(|s| s.pending).max().unwrap_or(0))
        .unwrap_or(0)
        .max(1) as f64
        * 1.1;
    (x_max, y_max, backlog_max)
}

/// A policy's line colour and legend.
fn line_of(kind: PolicyKind) -> (RGBColor, &'static str) {
    match kind {
        PolicyKind::Anamo => (ANAMO, "anamo: instances"),
        PolicyKind::Static => (STATIC, "static: instances"),
        PolicyKind::Keda => (KEDA, "KEDA-like: instances"),
        PolicyKind::Clairvoyant => (CLAIRVOYANT, "clairvoyant: instances"),
    }
}

fn draw(
    path: &Path,
    report: &SimReport,
    timelines: &[(PolicyKind, Vec<Sample>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let h = |s: &Sample| s.t_ms as f64 / 3_600_000.0;
    let (x_max, y_max, backlog_max) = ranges(timelines);
    let anamo = timelines.iter().find(|(k, _)| *k == PolicyKind::Anamo);

    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "{}: {} tasks; fleet size and backlog over time",
        report.trace, report.tasks
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .right_y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)?
        .set_secondary_coord(0f64..x_max, 0f64..backlog_max);
    chart
        .configure_mesh()
        .x_desc("simulated time (hours)")
        .y_desc("instances")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart
        .configure_secondary_axes()
        .y_desc("pending tasks (anamo run)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;

    for (kind, samples) in timelines {
        let (color, label) = line_of(*kind);
        let style = color.stroke_width(2);
        chart
            .draw_series(LineSeries::new(
                samples.iter().map(|s| (h(s), f64::from(s.instances))),
                style,
            ))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        if *kind == PolicyKind::Anamo {
            let busy = ANAMO_BUSY.stroke_width(2);
            chart
                .draw_series(LineSeries::new(
                    samples.iter().map(|s| (h(s), f64::from(s.busy))),
                    busy,
                ))?
                .label("anamo: busy instances")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], busy));
        }
    }
    if let Some((_, samples)) = anamo {
        let style = BACKLOG.stroke_width(1);
        chart
            .draw_secondary_series(LineSeries::new(
                samples.iter().map(|s| (h(s), s.pending as f64)),
                style,
            ))?
            .label("anamo: pending tasks (right axis)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
