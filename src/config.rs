//! The service's settings in one struct, read from a TOML file (`--config`). Command-line
//! flags (with their `SUPERNET_*` environment fallbacks) override the file; the file
//! overrides these defaults. Unknown keys are errors, so a typo never silently does nothing.
//!
//! ```toml
//! [server]
//! host = "0.0.0.0"
//! port = 8080
//! max_body_bytes = 26214400
//! max_queue = 64
//! http_workers = 0          # HTTP threads; 0: one per core but one
//!
//! [coordinator]             # `supernet serve`'s placement (a cluster's: flags of `supernet coordinator`)
//! max_queue = 1024          # jobs that may wait for a worker; beyond, 429
//! max_jobs_per_account = 0  # jobs one account may have in flight; more wait (0: no limit)
//!
//! [billing]
//! spark_usd = "0.005"
//! sogni_usd = "0.01"
//!
//! [limits]                  # per API key; 0 = no limit
//! max_concurrent = 32
//! requests_per_minute = 600
//!
//! [default_tier]            # every model without its own [models."<id>"] table
//! input_usd_per_m = "0.30"
//! output_usd_per_m = "0.90"
//! max_tokens = 4096
//!
//! [tools]                   # hosted tools run by the server
//! max_rounds = 4            # LLM rounds one request may take; then the answer says so
//! image_usd = "0.02"        # price of each image made
//! video_second_usd = "0.05" # of each second of video asked for
//! audio_second_usd = "0.002"
//! prices = { sogni_generate_image = "0.03" }   # USD per unit for one tool
//!
//! [models."SmolLM2-135M-Instruct"]
//! input_usd_per_m = "0.10"
//! default_max_tokens = 256
//! priority = 1              # queue order: higher is placed first
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::billing::limits::KeyLimits;
use crate::billing::pricing::{ModelPrice, TokenRates};
use crate::money::Amount;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    /// Larger request bodies get 413.
    pub max_body_bytes: usize,
    /// Jobs a worker holds beyond a full batch; the coordinator queues the rest.
    pub max_queue: usize,
    /// Threads serving HTTP; 0 means two per core. Each thread runs the sessions of the
    /// requests it took, reads their tokens off an inbox stream of its own and relays them
    /// one after another, so a thread that is preempted or draining a burst holds up only
    /// its share of the streams: with more threads than cores the kernel interleaves them.
    /// On 2 cores, relaying 50,000 tokens/s to 500 streams, the front's relay p99 was 12.7-14
    /// ms with two threads and 2.2-6.8 ms with four in the same hour, and the added TTFT at
    /// 500 req/s does not depend on it (docs/BENCHMARKS.md).
    pub http_workers: usize,
}

impl ServerConfig {
    /// How many HTTP threads to run.
    pub fn http_threads(&self) -> usize {
        match self.http_workers {
            0 => std::thread::available_parallelism().map_or(2, |n| 2 * n.get()),
            n => n,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            max_body_bytes: 25 << 20,
            max_queue: 64,
            http_workers: 0,
        }
    }
}

/// The coordinator's queue (in `supernet serve`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Jobs that may wait for a worker at once; beyond, requests get 429 with Retry-After.
    pub max_queue: usize,
    /// Jobs one account may have in flight at once; more wait (0: no limit).
    pub max_jobs_per_account: usize,
}

/// The default bound of the coordinator's queue.
pub const MAX_WAITING: usize = 1024;

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            max_queue: MAX_WAITING,
            max_jobs_per_account: 0,
        }
    }
}

/// What a model tier allows; every sampling field is clamped into these bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct TierLimits {
    /// Completion tokens when the request names none.
    pub default_max_tokens: u32,
    /// The most completion tokens one request may ask for.
    pub max_tokens: u32,
    pub max_temperature: f32,
    /// The largest `top_k` honoured (0 = no cap).
    pub max_top_k: u32,
}

impl Default for TierLimits {
    fn default() -> Self {
        Self {
            default_max_tokens: 512,
            max_tokens: 4096,
            max_temperature: 2.0,
            max_top_k: 0,
        }
    }
}

/// A model tier: its price and its limits.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tier {
    pub input_usd_per_m: Amount,
    pub output_usd_per_m: Amount,
    pub default_max_tokens: u32,
    pub max_tokens: u32,
    pub max_temperature: f32,
    pub max_top_k: u32,
    /// Queue order: when jobs wait for a worker, higher priorities (premium tiers) are
    /// placed first.
    pub priority: u8,
}

impl Default for Tier {
    fn default() -> Self {
        let (p, l) = (ModelPrice::default(), TierLimits::default());
        Self {
            input_usd_per_m: p.input_usd_per_m,
            output_usd_per_m: p.output_usd_per_m,
            default_max_tokens: l.default_max_tokens,
            max_tokens: l.max_tokens,
            max_temperature: l.max_temperature,
            max_top_k: l.max_top_k,
            priority: 0,
        }
    }
}

impl Tier {
    pub fn price(&self) -> ModelPrice {
        ModelPrice {
            input_usd_per_m: self.input_usd_per_m,
            output_usd_per_m: self.output_usd_per_m,
        }
    }

    pub fn limits(&self) -> TierLimits {
        TierLimits {
            default_max_tokens: self.default_max_tokens,
            max_tokens: self.max_tokens,
            max_temperature: self.max_temperature,
            max_top_k: self.max_top_k,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub coordinator: CoordinatorConfig,
    pub billing: TokenRates,
    pub limits: KeyLimits,
    pub default_tier: Tier,
    /// Per model id; models not listed use `default_tier`.
    pub models: BTreeMap<String, Tier>,
    pub tools: ToolsConfig,
    pub runs: RunsConfig,
}

/// The hosted tool loop's bounds and the media jobs' prices (USD per unit: an image, or a
/// second of video or audio).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsConfig {
    pub max_rounds: u32,
    pub image_usd: Amount,
    pub video_second_usd: Amount,
    pub audio_second_usd: Amount,
    /// Per tool, over the above.
    pub prices: BTreeMap<String, Amount>,
}

impl Default for ToolsConfig {
    fn default() -> Self {
        Self {
            max_rounds: 4,
            image_usd: Amount::from_millis(20),
            video_second_usd: Amount::from_millis(50),
            audio_second_usd: Amount::from_millis(2),
            prices: BTreeMap::new(),
        }
    }
}

/// Durable runs: how long an executor's lease lasts without a heartbeat (a front that dies
/// loses its runs to another front this long after), how long ended runs are kept, and how
/// long a cost approval preview may be confirmed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunsConfig {
    pub lease_secs: u64,
    pub retention_secs: u64,
    pub approval_secs: u64,
    /// USD per capacity unit (the unit of `max_estimated_capacity_units` and of previews).
    pub capacity_unit_usd: Amount,
}

impl Default for RunsConfig {
    fn default() -> Self {
        Self {
            lease_secs: 10,
            retention_secs: 7 * 24 * 3600,
            approval_secs: 600,
            capacity_unit_usd: Amount::from_millis(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Config {
    /// The defaults, overridden by `path` when given.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: shown,
            message,
        })
    }

    /// [`Config::load`], then the command line's `--host` and `--port` over the file's.
    pub fn load_for_server(
        path: Option<&Path>,
        host: Option<String>,
        port: Option<u16>,
    ) -> Result<Self, ConfigError> {
        let mut c = Self::load(path)?;
        if let Some(h) = host {
            c.server.host = h;
        }
        if let Some(p) = port {
            c.server.port = p;
        }
        Ok(c)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, rate) in [
            ("billing.spark_usd", c.billing.spark_usd),
            ("billing.sogni_usd", c.billing.sogni_usd),
        ] {
            if rate <= Amount::ZERO {
                return Err(format!("{name} must be positive"));
            }
        }
        if c.tools.max_rounds == 0 {
            return Err("tools.max_rounds must be at least 1".into());
        }
        if c.runs.lease_secs < 2 || c.runs.approval_secs == 0 {
            return Err(
                "runs.lease_secs must be at least 2 and runs.approval_secs positive".into(),
            );
        }
        if c.runs.capacity_unit_usd <= Amount::ZERO {
            return Err("runs.capacity_unit_usd must be positive".into());
        }
        let prices = [
            c.tools.image_usd,
            c.tools.video_second_usd,
            c.tools.audio_second_usd,
        ];
        if prices
            .iter()
            .chain(c.tools.prices.values())
            .any(|p| p.is_negative())
        {
            return Err("tool prices must not be negative".into());
        }
        Ok(c)
    }

    /// The tier of `model`.
    pub fn tier(&self, model: &str) -> &Tier {
        self.models.get(model).unwrap_or(&self.default_tier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_over_the_defaults() {
        let doc: String = include_str!("config.rs")
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        let c = Config::parse(&doc).expect("the example in the module docs");
        assert_eq!(
            (c.server.host.as_str(), c.server.port, c.server.max_queue),
            ("0.0.0.0", 8080, 64)
        );
        assert_eq!(c.billing.sogni_usd.to_string(), "0.01");
        assert_eq!(c.limits, KeyLimits::default());
        let smol = c.tier("SmolLM2-135M-Instruct");
        assert_eq!(
            (
                smol.input_usd_per_m.to_string(),
                smol.output_usd_per_m.to_string()
            ),
            ("0.1".into(), "0.9".into())
        );
        assert_eq!(smol.default_max_tokens, 256);
        assert_eq!(c.tier("other").max_tokens, 4096);
        assert_eq!(Config::load(None).expect("defaults"), Config::default());
    }

    #[test]
    fn mistakes_are_named() {
        let e = Config::parse("[server]\nprot = 1\n").expect_err("a typo");
        assert!(e.contains("prot"), "{e}");
        let e = Config::parse("[default_tier]\ninput_usd_per_m = \"cheap\"\n")
            .expect_err("a bad amount");
        assert!(e.contains("cheap"), "{e}");
        let e = Config::parse("[billing]\nspark_usd = \"0\"\n").expect_err("a zero rate");
        assert!(e.contains("spark_usd"), "{e}");
        let e = Config::load(Some(Path::new("/nonexistent/supernet.toml")))
            .expect_err("a missing file");
        assert!(e.to_string().contains("/nonexistent/supernet.toml"));
    }
}
