//! A run's result: vLLM `benchmark_serving`'s metrics (TTFT, TPOT, ITL, end-to-end latency,
//! request and token throughput, goodput under an SLO) and the errors by status and type,
//! printed for people or as one JSON object (its schema is `loadtest/report.schema.json`).

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::arrivals::Load;
use crate::client::Outcome;
use crate::stats::Summary;

/// Latency objectives; a request meets them when it succeeded and is within every one set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

impl Slo {
    pub fn is_set(&self) -> bool {
        self.ttft_ms.is_some() || self.tpot_ms.is_some() || self.e2e_ms.is_some()
    }

    fn met(&self, o: &Outcome, tpot: Option<f64>) -> bool {
        let within =
            |limit: Option<f64>, v: Option<f64>| limit.is_none_or(|l| v.is_some_and(|v| v <= l));
        o.failure.is_none()
            && within(self.ttft_ms, o.ttft)
            && within(self.tpot_ms, tpot)
            && within(self.e2e_ms, Some(o.e2e))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadLevel {
    /// `concurrency` or `rate`.
    pub mode: String,
    pub level: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub sent: usize,
    pub completed: usize,
    pub failed: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub requests_per_s: f64,
    pub output_tokens_per_s: f64,
    pub total_tokens_per_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tokens {
    pub prompt: u64,
    pub output: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    pub slo: Slo,
    pub requests_per_s: f64,
    /// Of the requests sent, the share that met the SLO.
    pub fraction: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub total: usize,
    /// By HTTP status ("0": no response: connect, timeout, broken stream).
    pub by_status: BTreeMap<String, usize>,
    /// By the error envelope's `type` (or the transport failure).
    pub by_type: BTreeMap<String, usize>,
    /// The first few messages, to see what went wrong.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub label: String,
    pub base_url: String,
    pub model: String,
    pub load: LoadLevel,
    /// From the first request sent to the last one ended.
    pub duration_s: f64,
    pub requests: Requests,
    /// The unit of every latency below.
    pub latency_unit: String,
    pub ttft: Option<Summary>,
    pub itl: Option<Summary>,
    pub tpot: Option<Summary>,
    pub e2e: Option<Summary>,
    pub throughput: Throughput,
    pub tokens: Tokens,
    pub goodput: Option<Goodput>,
    pub errors: Errors,
}

/// A named figure read off a report (for tables and charts).
pub type Metric = (&'static str, fn(&Report) -> Option<f64>);

/// What a run was, for its report.
pub struct RunInfo<'a> {
    pub label: &'a str,
    pub base_url: &'a str,
    pub model: &'a str,
    pub load: Load,
    pub slo: Slo,
}

const EXAMPLES: usize = 3;

impl Report {
    pub fn build(info: &RunInfo<'_>, outcomes: &[Outcome], duration_s: f64) -> Self {
        let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_none()).collect();
        let tpot_of = |o: &Outcome| {
            o.ttft
                .filter(|_| o.output_tokens > 1)
                .map(|t| (o.e2e - t) / (o.output_tokens - 1) as f64)
        };
        let ttft: Vec<f64> = ok.iter().filter_map(|o| o.ttft).collect();
        let itl: Vec<f64> = ok.iter().flat_map(|o| o.itl.iter().copied()).collect();
        let tpot: Vec<f64> = ok.iter().filter_map(|o| tpot_of(o)).collect();
        let e2e: Vec<f64> = ok.iter().map(|o| o.e2e).collect();
        let tokens = Tokens {
            prompt: ok.iter().map(|o| o.prompt_tokens).sum(),
            output: ok.iter().map(|o| o.output_tokens).sum(),
        };
        let per_s = |n: f64| {
            if duration_s > 0.0 {
                n / duration_s
            } else {
                0.0
            }
        };
        let throughput = Throughput {
            requests_per_s: per_s(ok.len() as f64),
            output_tokens_per_s: per_s(tokens.output as f64),
            total_tokens_per_s: per_s((tokens.prompt + tokens.output) as f64),
        };
        let goodput = info.slo.is_set().then(|| {
            let good = outcomes
                .iter()
                .filter(|o| info.slo.met(o, tpot_of(o)))
                .count() as f64;
            Goodput {
                slo: info.slo,
                requests_per_s: per_s(good),
                fraction: if outcomes.is_empty() {
                    0.0
                } else {
                    good / outcomes.len() as f64
                },
            }
        });
        let mut errors = Errors::default();
        for f in outcomes.iter().filter_map(|o| o.failure.as_ref()) {
            errors.total += 1;
            *errors.by_status.entry(f.status.to_string()).or_default() += 1;
            *errors.by_type.entry(f.kind.clone()).or_default() += 1;
            if errors.examples.len() < EXAMPLES {
                errors
                    .examples
                    .push(format!("{} {}: {}", f.status, f.kind, f.message));
            }
        }
        let (mode, level) = match info.load {
            Load::Concurrency(n) => ("concurrency", n as f64),
            Load::Rate(r) => ("rate", r),
        };
        Self {
            label: info.label.to_string(),
            base_url: info.base_url.to_string(),
            model: info.model.to_string(),
            load: LoadLevel {
                mode: mode.into(),
                level,
            },
            duration_s,
            requests: Requests {
                sent: outcomes.len(),
                completed: ok.len(),
                failed: errors.total,
            },
            latency_unit: "ms".into(),
            ttft: Summary::of(&ttft),
            itl: Summary::of(&itl),
            tpot: Summary::of(&tpot),
            e2e: Summary::of(&e2e),
            throughput,
            tokens,
            goodput,
            errors,
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "── {} · {} · {} {} ──",
            self.label, self.model, self.load.mode, self.load.level
        );
        let _ = writeln!(
            s,
            "requests      {} sent, {} completed, {} failed in {:.2} s",
            self.requests.sent, self.requests.completed, self.requests.failed, self.duration_s
        );
        let t = &self.throughput;
        let _ = writeln!(
            s,
            "throughput    {:.2} req/s, {:.1} output tok/s, {:.1} total tok/s",
            t.requests_per_s, t.output_tokens_per_s, t.total_tokens_per_s
        );
        let _ = writeln!(
            s,
            "tokens        {} prompt, {} output",
            self.tokens.prompt, self.tokens.output
        );
        let _ = writeln!(
            s,
            "{:<13} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "mean", "p50", "p90", "p99", "max"
        );
        for (name, m) in [
            ("TTFT", &self.ttft),
            ("TPOT", &self.tpot),
            ("ITL", &self.itl),
            ("E2E", &self.e2e),
        ] {
            match m {
                Some(m) => {
                    _ = writeln!(
                        s,
                        "{name:<13} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                        m.mean, m.p50, m.p90, m.p99, m.max
                    )
                }
                None => _ = writeln!(s, "{name:<13} {:>9}", "-"),
            }
        }
        if let Some(g) = &self.goodput {
            let _ = writeln!(
                s,
                "goodput       {:.2} req/s ({:.1}% of requests met the SLO)",
                g.requests_per_s,
                g.fraction * 100.0
            );
        }
        if self.errors.total > 0 {
            let by: Vec<String> = self
                .errors
                .by_type
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            let _ = writeln!(s, "errors        {} ({})", self.errors.total, by.join(", "));
            for e in &self.errors.examples {
                let _ = writeln!(s, "  e.g. {e}");
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Failure;

    fn streamed(ttft: f64, itl: &[f64], e2e: f64, tokens: u64) -> Outcome {
        Outcome {
            ttft: Some(ttft),
            itl: itl.to_vec(),
            e2e,
            prompt_tokens: 10,
            output_tokens: tokens,
            ..Outcome::default()
        }
    }

    fn info(slo: Slo) -> RunInfo<'static> {
        RunInfo {
            label: "a",
            base_url: "http://x/v1",
            model: "m",
            load: Load::Rate(5.0),
            slo,
        }
    }

    #[test]
    fn metrics_follow_benchmark_serving() {
        let failed = Outcome {
            e2e: 3.0,
            failure: Some(Failure {
                status: 429,
                kind: "rate_limit_error".into(),
                message: "no".into(),
            }),
            ..Outcome::default()
        };
        let outcomes = vec![
            streamed(100.0, &[10.0, 20.0], 130.0, 3),
            streamed(200.0, &[30.0], 230.0, 2),
            failed,
        ];
        let r = Report::build(
            &info(Slo {
                ttft_ms: Some(150.0),
                ..Slo::default()
            }),
            &outcomes,
            2.0,
        );
        assert_eq!(
            (r.requests.sent, r.requests.completed, r.requests.failed),
            (3, 2, 1)
        );
        assert_eq!(r.ttft.unwrap().p50, 150.0);
        // TPOT = (e2e - ttft) / (tokens - 1): 15 and 30.
        assert_eq!(r.tpot.unwrap().mean, 22.5);
        assert_eq!(r.itl.unwrap().count, 3);
        assert_eq!((r.tokens.prompt, r.tokens.output), (20, 5));
        assert_eq!(r.throughput.requests_per_s, 1.0);
        assert_eq!(r.throughput.output_tokens_per_s, 2.5);
        assert_eq!(r.throughput.total_tokens_per_s, 12.5);
        let g = r.goodput.clone().unwrap();
        assert_eq!((g.requests_per_s, g.fraction), (0.5, 1.0 / 3.0));
        assert_eq!(r.errors.by_status["429"], 1);
        assert_eq!(r.errors.by_type["rate_limit_error"], 1);
        assert!(r.text().contains("rate_limit_error ×1"));
    }

    #[test]
    fn no_slo_no_goodput_and_empty_runs_report_nulls() {
        let r = Report::build(&info(Slo::default()), &[], 0.0);
        assert!(r.goodput.is_none() && r.ttft.is_none() && r.e2e.is_none());
        assert_eq!(r.throughput.requests_per_s, 0.0);
        let v = serde_json::to_value(&r).unwrap();
        assert!(v["ttft"].is_null());
    }

    /// The JSON report matches the published schema, and the schema is not vacuous.
    #[test]
    fn the_json_report_matches_its_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../report.schema.json")).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let outcomes = vec![streamed(100.0, &[10.0], 120.0, 2)];
        let full = serde_json::to_value(Report::build(
            &info(Slo {
                e2e_ms: Some(1.0),
                ..Slo::default()
            }),
            &outcomes,
            1.0,
        ))
        .unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&full)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let empty = serde_json::to_value(Report::build(&info(Slo::default()), &[], 0.0)).unwrap();
        assert!(validator.is_valid(&empty));
        let mut broken = full.clone();
        broken["ttft"].as_object_mut().unwrap().remove("p99");
        assert!(!validator.is_valid(&broken));
        let mut broken = full;
        broken["throughput"]["requests_per_s"] = "fast".into();
        assert!(!validator.is_valid(&broken));
    }
}
