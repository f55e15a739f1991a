//! The SVG chart for people: latency (TTFT and end-to-end, p50 and p99) against the request
//! throughput each load level achieved, one set of lines per endpoint, so the knee where
//! queueing starts shows at a glance.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

use crate::report::{Metric, Report};

/// Draws `runs` (each an endpoint's reports, one per load level) into `path`.
pub fn draw(path: &Path, runs: &[Vec<Report>]) -> anyhow::Result<()> {
    let series = lines(runs);
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (xmax, ymax) = points.fold((0.0f64, 0.0f64), |(x, y), &(a, b)| (x.max(a), y.max(b)));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    let fail = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency against load", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..(xmax * 1.1).max(1.0), 0.0..(ymax * 1.1).max(1.0))
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("achieved throughput (requests/s)")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .background_style(WHITE.mix(0.85))
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

type Line = (String, Vec<(f64, f64)>);

/// One line per endpoint and metric, its points ordered by throughput.
fn lines(runs: &[Vec<Report>]) -> Vec<Line> {
    let mut out = Vec::new();
    for reports in runs {
        let Some(label) = reports.first().map(|r| r.label.clone()) else {
            continue;
        };
        let metrics: [Metric; 4] = [
            ("TTFT p50", |r| r.ttft.map(|s| s.p50)),
            ("TTFT p99", |r| r.ttft.map(|s| s.p99)),
            ("E2E p50", |r| r.e2e.map(|s| s.p50)),
            ("E2E p99", |r| r.e2e.map(|s| s.p99)),
        ];
        for (name, get) in metrics {
            let mut pts: Vec<(f64, f64)> = reports
                .iter()
                .filter_map(|r| get(r).map(|y| (r.throughput.requests_per_s, y)))
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            if !pts.is_empty() {
                out.push((format!("{label} {name}"), pts));
            }
        }
    }
    out
}
