//! `loadtest compare`: the same requests against two endpoints, one after the other, and a
//! table of each metric side by side with the ratio B / A.

use std::fmt::Write;

use serde::Serialize;

use crate::report::{Metric, Report};

/// One compared metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub metric: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// B / A; absent when either is missing or A is 0.
    pub ratio: Option<f64>,
}

/// The metrics compared, in table order.
pub fn rows(a: &Report, b: &Report) -> Vec<Row> {
    let metrics: [Metric; 13] = [
        ("requests/s", |r| Some(r.throughput.requests_per_s)),
        ("output tokens/s", |r| {
            Some(r.throughput.output_tokens_per_s)
        }),
        ("TTFT p50 (ms)", |r| r.ttft.map(|s| s.p50)),
        ("TTFT p90 (ms)", |r| r.ttft.map(|s| s.p90)),
        ("TTFT p99 (ms)", |r| r.ttft.map(|s| s.p99)),
        ("TPOT p50 (ms)", |r| r.tpot.map(|s| s.p50)),
        ("TPOT p99 (ms)", |r| r.tpot.map(|s| s.p99)),
        ("ITL p50 (ms)", |r| r.itl.map(|s| s.p50)),
        ("ITL p99 (ms)", |r| r.itl.map(|s| s.p99)),
        ("E2E p50 (ms)", |r| r.e2e.map(|s| s.p50)),
        ("E2E p99 (ms)", |r| r.e2e.map(|s| s.p99)),
        ("output tokens", |r| Some(r.tokens.output as f64)),
        ("errors", |r| Some(r.errors.total as f64)),
    ];
    metrics
        .into_iter()
        .map(|(metric, get)| {
            let (a, b) = (get(a), get(b));
            let ratio = a.zip(b).filter(|(a, _)| *a != 0.0).map(|(a, b)| b / a);
            Row {
                metric,
                a,
                b,
                ratio,
            }
        })
        .collect()
}

/// The table for people.
pub fn table(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "── {} {} · A = {} ({}) · B = {} ({}) ──",
        a.load.mode, a.load.level, a.label, a.base_url, b.label, b.base_url
    );
    let _ = writeln!(s, "{:<18} {:>12} {:>12} {:>8}", "metric", "A", "B", "B/A");
    let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    for r in rows(a, b) {
        let _ = writeln!(
            s,
            "{:<18} {:>12} {:>12} {:>8}",
            r.metric,
            num(r.a),
            num(r.b),
            r.ratio
                .map_or_else(|| "-".to_string(), |v| format!("{v:.2}×"))
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrivals::Load;
    use crate::client::Outcome;
    use crate::report::{RunInfo, Slo};

    fn report(label: &str, ttft: f64, seconds: f64) -> Report {
        let o = Outcome {
            ttft: Some(ttft),
            itl: vec![5.0],
            e2e: ttft + 5.0,
            output_tokens: 2,
            ..Outcome::default()
        };
        let info = RunInfo {
            label,
            base_url: "http://h/v1",
            model: "m",
            load: Load::Concurrency(1),
            slo: Slo::default(),
        };
        Report::build(&info, &[o], seconds)
    }

    #[test]
    fn ratios_are_b_over_a() {
        let (a, b) = (report("a", 10.0, 1.0), report("b", 25.0, 2.0));
        let rows = rows(&a, &b);
        let get = |m: &str| rows.iter().find(|r| r.metric == m).unwrap().clone();
        assert_eq!(get("TTFT p50 (ms)").ratio, Some(2.5));
        assert_eq!(get("requests/s").ratio, Some(0.5));
        assert_eq!(get("errors").ratio, None, "0 errors in A: no ratio");
        assert!(table(&a, &b).contains("2.50×"));
    }
}
