//! What operators see of a running process: logs, traces and metrics.
//!
//! - Logs go to stderr (stdout stays free for what a command prints), human-readable or one
//!   JSON object per line (`--log-format json`), filtered by `RUST_LOG` (default `info`).
//! - Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, every
//!   `tracing` span is also exported over OTLP/HTTP ([`otlp`]). The W3C trace context rides
//!   in every bus envelope ([`trace_context`]), so one request is one trace across the
//!   front, coordinator and worker processes.
//! - Metrics: Prometheus counters and histograms ([`metrics`]) served at `/metrics` by every
//!   process ([`metrics_http`] for the roles without an API).

pub mod metrics;
pub mod metrics_http;
mod otlp;
pub mod snapshot;
pub mod trace_context;

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, with the span's fields (for log collectors).
    Json,
}

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops trace export"]
pub struct Telemetry {
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            if let Err(e) = t.shutdown() {
                eprintln!("flushing traces: {e}");
            }
        }
    }
}

/// Sets up logging and, when the OTLP environment asks for it, trace export under
/// `service` (the `service.name` unless `OTEL_SERVICE_NAME` says otherwise). A second call
/// in one process (tests that run several commands) keeps the first setup.
pub fn init(service: &str, format: LogFormat) -> anyhow::Result<Telemetry> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let fmt = match format {
        LogFormat::Human => fmt.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let tracer = otlp::provider(service)?;
    let otel = tracer.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("supernet"))
            .with_location(false)
            .with_threads(false)
    });
    let installed = tracing_subscriber::registry()
        .with(fmt.with_filter(filter()))
        .with(otel.map(|l| l.with_filter(filter())))
        .try_init()
        .is_ok();
    if installed {
        if let Some(endpoint) = otlp::endpoint() {
            tracing::info!(%endpoint, "exporting traces over OTLP");
        }
    }
    Ok(Telemetry {
        tracer: tracer.filter(|_| installed),
    })
}
