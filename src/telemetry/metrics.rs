//! The Prometheus metrics of every role, named in the spirit of vLLM's and SGLang's
//! (`vllm:time_to_first_token_seconds` is our `supernet:time_to_first_token_seconds`), so
//! existing dashboards translate by changing the prefix.
//!
//! Events (a request finished, a job placed) move counters and histograms in one registry
//! per process. A role's metrics are registered the first time the role starts, so a
//! process shows only its own. Figures that are state, not events (a worker's KV use, the
//! pool by state) are read when scraped ([`crate::telemetry::metrics_http`] and the front's
//! `/metrics`) and written with [`Family`].

use std::fmt::Write;
use std::sync::LazyLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Seconds, from 1 ms to about 2 minutes: request latencies.
const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
    10.0, 20.0, 40.0, 80.0, 160.0,
];
/// Seconds between tokens, from 1 ms to 2.5 s.
const TOKEN_GAP: &[f64] = &[
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Seconds of a placement decision: from 50 µs.
const DECISION: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
    30.0, 120.0,
];

fn register<M: prometheus::core::Collector + Clone + 'static>(m: M) -> M {
    // Names are constants of this file, each registered once: a clash is a bug here.
    REGISTRY
        .register(Box::new(m.clone()))
        .expect("each metric is registered once");
    m
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
}

fn histogram(name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    register(
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .expect("valid metric"),
    )
}

/// A histogram without labels.
fn single_histogram(name: &str, help: &str, buckets: &[f64]) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
            .expect("valid metric"),
    )
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("valid metric"))
}

/// A front's requests, as its clients see them.
pub struct Front {
    /// Chat requests in this front by `state`: `waiting` (no worker yet) or `running`.
    pub requests_in_flight: IntGaugeVec,
    pub time_to_first_token: HistogramVec,
    pub inter_token_latency: HistogramVec,
    pub e2e_latency: HistogramVec,
    /// From the hold being in place to a worker accepting the job.
    pub queue_time: HistogramVec,
    pub prompt_tokens: IntCounterVec,
    pub generation_tokens: IntCounterVec,
    pub request_success: IntCounterVec,
    /// Error responses by OpenAI error `type` and HTTP status.
    pub request_errors: IntCounterVec,
    pub failovers: IntCounterVec,
    pub billing_holds: IntCounterVec,
    pub billing_settles: IntCounterVec,
    /// What the front itself adds to each streamed piece of text once it has read it: from
    /// the worker's event being read off this node's stream to its SSE chunk being handed to
    /// the connection. Time an entry waits in Redis for the front's next read is not in it.
    pub relay: Histogram,
    /// What the front's side of the bus adds to each streamed piece of text: from its
    /// entry's append to this node's stream (by Redis's clock, so a skew between the hosts
    /// counts; the entry id keeps only the millisecond, read as its middle) to its SSE chunk
    /// being handed to the connection. The relay and the wait for the front's read together.
    pub token_delay: Histogram,
    /// What the front adds to each inter-token gap of a stream: a piece of text's token
    /// delay less the previous one's (none: the gap is no longer than on the bus). A delay
    /// every token shares adds nothing here (it adds to the first token's wait); one token
    /// held back lengthens its gap. Each append time is known to the millisecond, so a gap's
    /// figure is off by up to 1 ms either way.
    pub gap_added: Histogram,
}

pub fn front() -> &'static Front {
    static FRONT: LazyLock<Front> = LazyLock::new(|| {
        Front {
        requests_in_flight: register(IntGaugeVec::new(Opts::new("supernet:requests_in_flight", "Chat requests in this front, by state (waiting for a worker, or running)."), &["model", "state"]).expect("valid metric")),
        time_to_first_token: histogram("supernet:time_to_first_token_seconds", "Seconds from the request's arrival to its first token.", &["model"], LATENCY),
        inter_token_latency: histogram("supernet:inter_token_latency_seconds", "Seconds between consecutive tokens of a request.", &["model"], TOKEN_GAP),
        e2e_latency: histogram("supernet:e2e_request_latency_seconds", "Seconds from the request's arrival to its last token.", &["model"], LATENCY),
        queue_time: histogram("supernet:request_queue_time_seconds", "Seconds a request waited for a worker to accept it.", &["model"], LATENCY),
        prompt_tokens: counter("supernet:prompt_tokens_total", "Prompt tokens of finished requests (as billed).", &["model"]),
        generation_tokens: counter("supernet:generation_tokens_total", "Generated tokens of finished requests (as billed).", &["model"]),
        request_success: counter("supernet:request_success_total", "Requests that finished, by finish reason.", &["model", "finished_reason"]),
        request_errors: counter("supernet:request_errors_total", "Error responses, by OpenAI error type and HTTP status.", &["type", "status"]),
        failovers: counter("supernet:failovers_total", "Jobs moved to another worker after theirs was lost.", &["model"]),
        billing_holds: counter("supernet:billing_holds_total", "Billing holds, by outcome (held, insufficient, revoked, failed).", &["outcome"]),
        billing_settles: counter("supernet:billing_settles_total", "Billing settlements, by outcome (settled, failed).", &["outcome"]),
        token_delay: single_histogram("supernet:front_token_delay_seconds", "Seconds from a worker's text entering this front's stream (its entry's append, Redis's clock, to the millisecond) to its SSE chunk leaving for the client.", DECISION),
        gap_added: single_histogram("supernet:front_token_gap_added_seconds", "Seconds the front added to the gap between a stream's consecutive pieces of text: each one's token delay less the previous one's, or 0.", DECISION),
        relay: single_histogram("supernet:front_relay_seconds", "Seconds from reading a worker's text off this front's stream to its SSE chunk leaving for the client.", DECISION),
    }
    });
    &FRONT
}

/// One model's per-request figures, resolved once per request so that the per-token path
/// does no label lookup.
pub struct ModelMetrics {
    pub waiting: IntGauge,
    pub running: IntGauge,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_latency: Histogram,
    pub queue_time: Histogram,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
}

impl Front {
    pub fn model(&self, model: &str) -> ModelMetrics {
        ModelMetrics {
            waiting: self
                .requests_in_flight
                .with_label_values(&[model, "waiting"]),
            running: self
                .requests_in_flight
                .with_label_values(&[model, "running"]),
            time_to_first_token: self.time_to_first_token.with_label_values(&[model]),
            inter_token_latency: self.inter_token_latency.with_label_values(&[model]),
            e2e_latency: self.e2e_latency.with_label_values(&[model]),
            queue_time: self.queue_time.with_label_values(&[model]),
            prompt_tokens: self.prompt_tokens.with_label_values(&[model]),
            generation_tokens: self.generation_tokens.with_label_values(&[model]),
        }
    }
}

/// The leader coordinator's placement work.
pub struct Coordinator {
    /// From a placement request's arrival to its job being sent to a worker.
    pub placement: Histogram,
    /// The decision alone: choosing a worker for one request.
    pub decision: Histogram,
    pub placements: IntCounterVec,
    pub queue_depth: IntGauge,
    pub leader: IntGauge,
    pub workers_dead: IntCounter,
    pub jobs_lost: IntCounter,
    pub holds_reaped: IntCounter,
}

pub fn coordinator() -> &'static Coordinator {
    static COORDINATOR: LazyLock<Coordinator> = LazyLock::new(|| Coordinator {
        placement: single_histogram(
            "supernet:placement_seconds",
            "Seconds from a placement request's arrival to its job's dispatch (queueing included).",
            LATENCY,
        ),
        decision: single_histogram(
            "supernet:placement_decision_seconds",
            "Seconds to choose a worker for one request.",
            DECISION,
        ),
        placements: counter(
            "supernet:placements_total",
            "Placement requests handled, by outcome (placed, refused, queue_full, withdrawn).",
            &["outcome"],
        ),
        queue_depth: gauge(
            "supernet:coordinator_queue_depth",
            "Jobs waiting for a worker with room.",
        ),
        leader: gauge(
            "supernet:coordinator_is_leader",
            "1 while this coordinator holds the leader lease.",
        ),
        workers_dead: register(
            IntCounter::new(
                "supernet:workers_declared_dead_total",
                "Workers declared dead after missing their heartbeats.",
            )
            .expect("valid metric"),
        ),
        jobs_lost: register(
            IntCounter::new(
                "supernet:jobs_lost_total",
                "Jobs whose worker died, reported lost so that they move.",
            )
            .expect("valid metric"),
        ),
        holds_reaped: register(
            IntCounter::new(
                "supernet:holds_reaped_total",
                "Billing holds released by the reaper after their lease ran out.",
            )
            .expect("valid metric"),
        ),
    });
    &COORDINATOR
}

/// Counts `gauge` up now and down when dropped.
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The registry's metrics, in Prometheus text format.
pub fn encode(out: &mut String) {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut buf) {
        tracing::error!("encoding metrics: {e}");
    }
    out.push_str(&String::from_utf8_lossy(&buf));
}

/// One metric family written by hand from state read at scrape time: `# HELP`, `# TYPE`,
/// then samples.
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl<'a> Family<'a> {
    pub fn new(out: &'a mut String, name: &'a str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Self { out, name }
    }

    /// A sample of the family (`suffix` for histogram parts, e.g. `_bucket`).
    pub fn sample(&mut self, suffix: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        let _ = writeln!(
            self.out,
            "{}{suffix}{{{}}} {value}",
            self.name,
            labels.join(",")
        );
    }
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
