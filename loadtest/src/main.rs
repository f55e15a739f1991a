//! `loadtest`: the load harness for any OpenAI-compatible chat endpoint (supernet,
//! llama-server, vLLM, a hosted API). It offers load in a closed loop (`--concurrency`) or
//! an open one (`--rate`, Poisson arrivals), and reports the metrics of vLLM's
//! `benchmark_serving` and llmperf, so numbers can be set beside theirs.
//!
//! - [`mix`]: the request shapes (`--mix FILE`) and the synthetic prompts.
//! - [`arrivals`]: closed and open loops; the Poisson process.
//! - [`client`]: one request, timed chunk by chunk.
//! - [`runner`]: one load level against one endpoint, with the progress bar.
//! - [`stats`], [`report`]: percentiles and the report (text or `--json`).
//! - [`compare`], [`chart`]: the ratio table of two endpoints; the SVG chart.

mod arrivals;
mod chart;
mod client;
mod compare;
mod mix;
mod report;
mod runner;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use arrivals::Load;
use mix::Mix;
use report::{Report, Slo};
use runner::{Plan, Target};

/// The harness shares the machine with what it measures; it parses a JSON chunk per token,
/// and mimalloc makes that cheaper than glibc malloc does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "loadtest",
    version,
    about = "Load harness for OpenAI-compatible chat endpoints (vLLM benchmark_serving metrics)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Offer load to one endpoint and report latency, throughput, goodput and errors.
    Run(RunArgs),
    /// Run the same requests against two endpoints back to back and print the ratios B / A.
    Compare(CompareArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The API base, e.g. http://127.0.0.1:8080/v1.
    #[arg(long)]
    base_url: String,
    /// The API key (sent as a bearer token; empty sends none).
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        default_value = "",
        hide_env_values = true
    )]
    api_key: String,
    /// The model [default: the first one /models lists].
    #[arg(long)]
    model: Option<String>,
    /// Names the endpoint in reports and charts [default: the base URL's host].
    #[arg(long)]
    label: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct CompareArgs {
    /// Endpoint A's API base.
    #[arg(long)]
    a: String,
    /// Endpoint B's API base.
    #[arg(long)]
    b: String,
    /// The API key for both, unless --a-key or --b-key is given.
    #[arg(
        long,
        env = "OPENAI_API_KEY",
        default_value = "",
        hide_env_values = true
    )]
    api_key: String,
    #[arg(long)]
    a_key: Option<String>,
    #[arg(long)]
    b_key: Option<String>,
    /// The model for both, unless --a-model or --b-model is given [default: each one's first].
    #[arg(long)]
    model: Option<String>,
    #[arg(long)]
    a_model: Option<String>,
    #[arg(long)]
    b_model: Option<String>,
    #[arg(long, default_value = "A")]
    a_label: String,
    #[arg(long, default_value = "B")]
    b_label: String,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct LoadArgs {
    /// Closed loop: this many clients, each with one request in flight. A list (1,4,16)
    /// runs one level after another.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "rate",
        conflicts_with = "rate"
    )]
    concurrency: Vec<usize>,
    /// Open loop: Poisson arrivals at this many requests per second. A list sweeps.
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Requests per level [default: 100 when --duration is not given].
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds per level; requests in flight at the end are waited for.
    #[arg(long)]
    duration: Option<f64>,
    /// max_tokens of requests whose mix shape does not set it.
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Request shapes (TOML; the format is in loadtest/src/mix.rs and the README) [default:
    /// ~128-token prompts, streamed].
    #[arg(long)]
    mix: Option<PathBuf>,
    /// Print one JSON report per level (the last line is the last level's).
    #[arg(long)]
    json: bool,
    /// Draw latency against load into this SVG file.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Seeds prompts, shapes and arrivals; the same seed sends the same requests.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds before one request is given up (a `timeout` error).
    #[arg(long, default_value_t = 600.0)]
    timeout: f64,
    /// Goodput: a request counts if its time to first token is at most this.
    #[arg(long)]
    slo_ttft_ms: Option<f64>,
    /// Goodput: ... and its time per output token at most this.
    #[arg(long)]
    slo_tpot_ms: Option<f64>,
    /// Goodput: ... and its end-to-end latency at most this.
    #[arg(long)]
    slo_e2e_ms: Option<f64>,
    /// Client threads (the harness shares the machine with what it measures, so 1 by default).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

impl LoadArgs {
    fn levels(&self) -> anyhow::Result<Vec<Load>> {
        if self.concurrency.contains(&0) {
            bail!("--concurrency must be at least 1");
        }
        if self.rate.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            bail!("--rate must be a positive number of requests per second");
        }
        Ok(self
            .concurrency
            .iter()
            .map(|&n| Load::Concurrency(n))
            .chain(self.rate.iter().map(|&r| Load::Rate(r)))
            .collect())
    }

    fn plan(&self) -> anyhow::Result<Plan> {
        if self.duration.is_some_and(|d| !(d.is_finite() && d > 0.0)) {
            bail!("--duration must be a positive number of seconds");
        }
        if self.requests == Some(0) {
            bail!("--requests must be at least 1");
        }
        let mix = match &self.mix {
            Some(path) => Mix::load(path, self.max_tokens)?,
            None => Mix::default_with(self.max_tokens),
        };
        let requests = self.requests.or(if self.duration.is_none() {
            Some(100)
        } else {
            None
        });
        let slo = Slo {
            ttft_ms: self.slo_ttft_ms,
            tpot_ms: self.slo_tpot_ms,
            e2e_ms: self.slo_e2e_ms,
        };
        Ok(Plan {
            requests,
            duration: self.duration.map(Duration::from_secs_f64),
            seed: self.seed,
            mix,
            slo,
        })
    }

    fn http(&self) -> anyhow::Result<reqwest::Client> {
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            bail!("--timeout must be a positive number of seconds");
        }
        Ok(reqwest::Client::builder()
            .timeout(Duration::from_secs_f64(self.timeout))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(usize::MAX)
            .build()?)
    }
}

fn main() {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Run(a) => a.load.threads,
        Command::Compare(a) => a.load.threads,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|rt| {
        rt.block_on(async {
            match cli.command {
                Command::Run(a) => run(a).await,
                Command::Compare(a) => compare(a).await,
            }
        })
    });
    if let Err(e) = result {
        eprintln!("loadtest: {e:#}");
        std::process::exit(1);
    }
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let (levels, plan, http) = (a.load.levels()?, a.load.plan()?, a.load.http()?);
    let target = target(&http, &a.base_url, &a.api_key, a.model, a.label).await?;
    let mut reports = Vec::new();
    for load in levels {
        let r = runner::run(&http, &target, &plan, load).await;
        print(&r, a.load.json);
        reports.push(r);
    }
    if let Some(svg) = &a.load.svg {
        chart::draw(svg, &[reports])?;
    }
    Ok(())
}

async fn compare(a: CompareArgs) -> anyhow::Result<()> {
    let (levels, plan, http) = (a.load.levels()?, a.load.plan()?, a.load.http()?);
    let key = |k: Option<String>| k.unwrap_or_else(|| a.api_key.clone());
    let ta = target(
        &http,
        &a.a,
        &key(a.a_key.clone()),
        a.a_model.or(a.model.clone()),
        Some(a.a_label),
    )
    .await?;
    let tb = target(
        &http,
        &a.b,
        &key(a.b_key.clone()),
        a.b_model.or(a.model),
        Some(a.b_label),
    )
    .await?;
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for load in levels {
        let x = runner::run(&http, &ta, &plan, load).await;
        let y = runner::run(&http, &tb, &plan, load).await;
        if a.load.json {
            println!(
                "{}",
                json!({ "a": x, "b": y, "ratios": compare::rows(&x, &y) })
            );
        } else {
            println!("{}", compare::table(&x, &y));
        }
        ra.push(x);
        rb.push(y);
    }
    if let Some(svg) = &a.load.svg {
        chart::draw(svg, &[ra, rb])?;
    }
    Ok(())
}

fn print(r: &Report, as_json: bool) {
    if as_json {
        match serde_json::to_string(r) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("loadtest: writing the report: {e}"),
        }
    } else {
        println!("{}", r.text());
    }
}

/// Resolves the endpoint's model (the first `/models` lists unless named) and checks with
/// one short request that it answers, so a wrong URL or key fails at once and clearly.
async fn target(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    model: Option<String>,
    label: Option<String>,
) -> anyhow::Result<Target> {
    let base = base.trim_end_matches('/').to_string();
    let label = label.unwrap_or_else(|| {
        reqwest::Url::parse(&base)
            .ok()
            .and_then(|u| {
                u.host_str()
                    .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
            })
            .unwrap_or_else(|| base.clone())
    });
    let model = match model {
        Some(m) => m,
        None => first_model(http, &base, key).await?,
    };
    let target = Target {
        label,
        base_url: base,
        api_key: key.to_string(),
        model,
    };
    let probe = mix::Body {
        json: json!({ "model": target.model, "messages": [{ "role": "user", "content": "Say hi." }], "max_tokens": 2, "stream": true }),
        stream: true,
    };
    let o = client::send(http, &target.base_url, &target.api_key, &probe).await;
    if let Some(f) = o.failure {
        bail!(
            "{} refused a probe request ({} {}): {}",
            target.base_url,
            f.status,
            f.kind,
            f.message
        );
    }
    Ok(target)
}

async fn first_model(http: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let r = client::authorized(http.get(format!("{base}/models")), key)
        .send()
        .await
        .with_context(|| format!("GET {base}/models"))?;
    let status = r.status();
    let body: serde_json::Value = r
        .json()
        .await
        .with_context(|| format!("GET {base}/models: not JSON"))?;
    if !status.is_success() {
        bail!("GET {base}/models answered {status}: {body}");
    }
    body["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("GET {base}/models lists no model; name one with --model"))
}
