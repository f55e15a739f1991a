//! The `supernet` command line: one subcommand per role. Each subcommand lives in its own
//! module and takes its parsed arguments.

pub mod admin;
mod backend;
pub mod bench;
mod bench_constraint;
mod bench_gpu;
mod bench_media;
mod bench_placement;
mod bench_runs;
mod bench_vision;
pub mod coordinator;
pub mod engine;
pub mod front;
pub mod generate;
mod media;
pub mod serve;
mod vision;
pub mod worker;

use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

#[derive(Parser)]
#[command(
    name = "supernet",
    version,
    about = "OpenAI-compatible LLM serving on a pool of GPU workers"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How the long-running roles log to stderr: readable lines, or one JSON object per line.
    /// Traces go over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "SUPERNET_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the whole service in one process: the OpenAI-compatible API, billing and a worker
    /// per model.
    Serve(serve::ServeArgs),
    /// Generate text from a prompt with a local GGUF model.
    Generate(generate::GenerateArgs),
    /// Measure prompt-processing and decode speed (like llama-bench's pp512 / tg128).
    Bench(bench::BenchArgs),
    /// Manage accounts, credits and API keys in the store (embedded, or a cluster's Redis).
    Admin(admin::AdminArgs),
    /// Cluster mode: an HTTP front; stateless, run any number behind a load balancer.
    Front(front::FrontArgs),
    /// Cluster mode: a coordinator; run two or more, one leads and the others stand by.
    Coordinator(coordinator::CoordinatorArgs),
    /// Cluster mode: a worker serving one model, joining from anywhere with the Redis URL.
    Worker(worker::WorkerArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    // The services log and trace under their role's name; one-shot commands print results.
    let service = match &cli.command {
        Command::Serve(_) => Some("supernet"),
        Command::Front(_) => Some("supernet-front"),
        Command::Coordinator(_) => Some("supernet-coordinator"),
        Command::Worker(_) => Some("supernet-worker"),
        Command::Generate(_) | Command::Bench(_) | Command::Admin(_) => None,
    };
    let _telemetry = service
        .map(|s| crate::telemetry::init(s, cli.log_format))
        .transpose()?;
    match cli.command {
        Command::Serve(a) => serve::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Admin(a) => admin::run(a),
        Command::Front(a) => front::run(a),
        Command::Coordinator(a) => coordinator::run(a),
        Command::Worker(a) => worker::run(a),
    }
}

/// Where a coordinator or worker serves /metrics and /healthz: `--metrics-addr`, or a free
/// port on loopback (logged), so several roles on one machine never collide and nothing is
/// exposed to the network unless asked.
fn metrics_addr(flag: Option<&str>) -> &str {
    flag.unwrap_or("127.0.0.1:0")
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM: {e}");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
