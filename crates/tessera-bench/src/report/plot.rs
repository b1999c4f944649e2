//! `--plot FILE.png`: latency percentiles against output throughput, one
//! curve per server across its sweep: the usual shape of a serving benchmark,
//! where each point is one concurrency (or rate) and a better server is lower
//! and further right. Four panels (TTFT, TPOT, ITL, end-to-end), median solid
//! with circles, p99 dashed with triangles, log latency axis.
//!
//! Text is drawn with ab_glyph from DejaVu Sans compiled into the binary, so
//! plotting needs no system font or fontconfig.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::register_font;

use super::BenchReport;
use crate::error::{BenchError, Result};
use crate::stats::Distribution;
use crate::summary::Summary;

type Metric = (&'static str, fn(&Summary) -> Option<Distribution>);

const METRICS: [Metric; 4] = [
    ("Time to first token", |s| s.ttft_ms),
    ("Time per output token", |s| s.tpot_ms),
    ("Inter-token latency", |s| s.itl_ms),
    ("End-to-end latency", |s| s.e2el_ms),
];

/// One point of a curve: throughput, median, p99, and its sweep label.
struct Mark {
    x: f64,
    p50: f64,
    p99: f64,
    label: String,
}

/// Draws the reports' sweeps into one PNG at `path`.
pub fn plot(reports: &[BenchReport], path: &Path) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| BenchError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| err(&"the bundled DejaVu Sans font did not load"))?;
    let root = BitMapBackend::new(path, (1600, 1200)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (title, body) = root.split_vertically(50);
    let names: Vec<&str> = reports.iter().map(|r| r.label.as_str()).collect();
    let heading = match reports.first() {
        Some(r) => format!(
            "{} - {} ({})",
            names.join(" vs "),
            r.config.model,
            r.config.dataset
        ),
        None => "no runs".into(),
    };
    title
        .titled(&heading, ("sans-serif", 26))
        .map_err(|e| err(&e))?;
    for (area, (name, get)) in body.split_evenly((2, 2)).iter().zip(METRICS) {
        let curves: Vec<Vec<Mark>> = reports.iter().map(|r| marks(r, get)).collect();
        panel(area, name, reports, &curves).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

fn marks(report: &BenchReport, get: fn(&Summary) -> Option<Distribution>) -> Vec<Mark> {
    report
        .points
        .iter()
        .filter_map(|p| {
            let d = get(&p.summary)?;
            let label = match (p.point.max_concurrency, p.point.request_rate) {
                (Some(c), None) => format!("c={c}"),
                (_, Some(r)) => format!("{r}/s"),
                (None, None) => "inf".into(),
            };
            (p.summary.output_throughput > 0.0 && d.median > 0.0).then_some(Mark {
                x: p.summary.output_throughput,
                p50: d.median,
                p99: d.p99.max(d.median),
                label,
            })
        })
        .collect()
}

/// Axis labels without needless decimals: 1500, 42, 3.5, 0.25.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}").trim_end_matches(".0").to_string()
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    name: &str,
    reports: &[BenchReport],
    curves: &[Vec<Mark>],
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let all = curves.iter().flatten();
    let x_max = all.clone().map(|m| m.x).fold(0.0, f64::max).max(1.0) * 1.1;
    let y_min = all.clone().map(|m| m.p50).fold(f64::INFINITY, f64::min);
    let y_max = all.map(|m| m.p99).fold(0.0, f64::max);
    let (y_lo, y_hi) = if y_min.is_finite() && y_max > 0.0 {
        (y_min * 0.7, y_max * 1.5)
    } else {
        (1.0, 10.0) // nothing to draw: an empty, labelled panel
    };
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{name} (ms)"), ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_lo..y_hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("output throughput (tokens/s)")
        .y_desc("ms (log scale)")
        .y_labels(12)
        .y_label_formatter(&|v| short_number(*v))
        .x_label_formatter(&|v| short_number(*v))
        .label_style(("sans-serif", 15))
        .draw()?;
    for (i, (report, curve)) in reports.iter().zip(curves).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let p50: Vec<(f64, f64)> = curve.iter().map(|m| (m.x, m.p50)).collect();
        let p99: Vec<(f64, f64)> = curve.iter().map(|m| (m.x, m.p99)).collect();
        chart
            .draw_series(LineSeries::new(p50.clone(), color.stroke_width(2)))?
            .label(format!("{} median", report.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
        chart.draw_series(p50.iter().map(|&c| Circle::new(c, 4, color.filled())))?;
        chart
            .draw_series(DashedLineSeries::new(
                p99.clone(),
                8,
                6,
                color.stroke_width(1),
            ))?
            .label(format!("{} p99", report.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(1))
            });
        chart.draw_series(
            p99.iter()
                .map(|&c| TriangleMarker::new(c, 5, color.filled())),
        )?;
        // Each median marked with its sweep value, just right of the point.
        chart.draw_series(curve.iter().map(|m| {
            EmptyElement::at((m.x, m.p50))
                + Text::new(
                    m.label.clone(),
                    (7, 2),
                    ("sans-serif", 14).into_font().color(&color),
                )
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()?;
    Ok(())
}
