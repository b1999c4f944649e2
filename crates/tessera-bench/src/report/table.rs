//! The tables printed at the end: GitHub-flavoured markdown, aligned, so they
//! read in a terminal and paste into BENCHMARKS.md as they are. With several
//! reports (`tessera bench compare`), rows of the same run are side by side.

use super::{BenchReport, PointReport};
use crate::stats::Distribution;
use crate::summary::Summary;
use crate::sweep::Point;

/// A latency metric: its name and where it is in a summary.
type Metric = (&'static str, fn(&Summary) -> Option<Distribution>);

/// Throughput per run: requests, tokens, goodput.
pub fn throughput_table(reports: &[BenchReport]) -> String {
    let many = reports.len() > 1;
    let goodput = reports.iter().any(|r| r.config.slo.is_some());
    let mut head = vec!["concurrency", "rate (req/s)"];
    if many {
        head.insert(0, "server");
    }
    head.extend([
        "completed",
        "failed",
        "duration (s)",
        "req/s",
        "output tok/s",
        "total tok/s",
    ]);
    if goodput {
        head.push("goodput (req/s)");
    }
    head.push("peak in flight");
    let mut rows = Vec::new();
    for (report, p) in interleaved(reports) {
        let s = &p.summary;
        let mut row = point_cells(&p.point);
        if many {
            row.insert(0, report.label.clone());
        }
        row.extend([
            s.completed.to_string(),
            s.failed.to_string(),
            format!("{:.2}", s.duration_s),
            format!("{:.2}", s.request_throughput),
            format!("{:.1}", s.output_throughput),
            format!("{:.1}", s.total_token_throughput),
        ]);
        if goodput {
            row.push(
                s.goodput
                    .map_or("-".into(), |g| format!("{:.2}", g.request_rate)),
            );
        }
        row.push(s.peak_concurrency.to_string());
        rows.push(row);
    }
    markdown(&head, &rows)
}

/// Latency percentiles per metric and run, in milliseconds.
pub fn latency_table(reports: &[BenchReport]) -> String {
    let many = reports.len() > 1;
    let mut head = vec!["metric (ms)", "concurrency", "rate (req/s)"];
    if many {
        head.push("server");
    }
    head.extend(["mean", "median", "p90", "p99"]);
    let metrics: [Metric; 4] = [
        ("TTFT", |s| s.ttft_ms),
        ("TPOT", |s| s.tpot_ms),
        ("ITL", |s| s.itl_ms),
        ("E2E latency", |s| s.e2el_ms),
    ];
    let mut rows = Vec::new();
    for (name, get) in metrics {
        for (report, p) in interleaved(reports) {
            let mut row = vec![name.to_string()];
            row.extend(point_cells(&p.point));
            if many {
                row.push(report.label.clone());
            }
            match get(&p.summary) {
                Some(d) => row.extend([d.mean, d.median, d.p90, d.p99].map(|v| format!("{v:.2}"))),
                None => row.extend(["-"; 4].map(String::from)),
            }
            rows.push(row);
        }
    }
    markdown(&head, &rows)
}

/// Everything a reader must know to trust the tables: failures, warm-up
/// failures, fallbacks, workload notes. One line each, prefixed by the run.
pub fn notes(report: &BenchReport) -> Vec<String> {
    let mut lines: Vec<String> = report
        .config
        .workload_notes
        .iter()
        .map(|n| format!("{}: {n}", report.label))
        .collect();
    for p in &report.points {
        if p.warmup_failures > 0 {
            lines.push(format!(
                "{} at {}: {} of {} warm-up requests failed",
                report.label, p.point, p.warmup_failures, p.warmup_requests
            ));
        }
        for n in p.summary.notes() {
            lines.push(format!("{} at {}: {n}", report.label, p.point));
        }
        if let Some(f) = p.requests.iter().find_map(|r| r.error.as_ref()) {
            lines.push(format!(
                "{} at {}: first failure: {}: {}",
                report.label, p.point, f.kind, f.message
            ));
        }
    }
    lines
}

/// Each report's points, point by point: every report's first run, then
/// every report's second, and so on.
fn interleaved(reports: &[BenchReport]) -> Vec<(&BenchReport, &PointReport)> {
    let longest = reports.iter().map(|r| r.points.len()).max().unwrap_or(0);
    (0..longest)
        .flat_map(|i| {
            reports
                .iter()
                .filter_map(move |r| r.points.get(i).map(|p| (r, p)))
        })
        .collect()
}

fn point_cells(p: &Point) -> Vec<String> {
    vec![
        p.max_concurrency
            .map_or("unlimited".into(), |c| c.to_string()),
        p.request_rate.map_or("inf".into(), |r| r.to_string()),
    ]
}

/// A markdown table with columns padded to their widest cell; numbers
/// right-aligned.
fn markdown(head: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..head.len())
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .chain([head[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let numeric: Vec<bool> = (0..head.len())
        .map(|c| {
            rows.iter().all(|r| {
                r.get(c)
                    .is_some_and(|s| s == "-" || s.parse::<f64>().is_ok())
            })
        })
        .collect();
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut out = line(
        head.iter()
            .zip(&widths)
            .map(|(h, w)| format!("{h:<w$}"))
            .collect(),
    );
    out += &line(
        widths
            .iter()
            .zip(&numeric)
            .map(|(w, &num)| {
                if num {
                    format!("{}:", "-".repeat(w - 1))
                } else {
                    "-".repeat(*w)
                }
            })
            .collect(),
    );
    for row in rows {
        out += &line(
            row.iter()
                .zip(&widths)
                .zip(&numeric)
                .map(|((s, w), &num)| {
                    if num {
                        format!("{s:>w$}")
                    } else {
                        format!("{s:<w$}")
                    }
                })
                .collect(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::markdown;

    #[test]
    fn tables_align_and_right_align_numbers() {
        let t = markdown(
            &["name", "n"],
            &[
                vec!["a".into(), "1.5".into()],
                vec!["long name".into(), "-".into()],
            ],
        );
        assert_eq!(
            t,
            "| name      | n   |\n| --------- | --: |\n| a         | 1.5 |\n| long name |   - |\n"
        );
    }
}
