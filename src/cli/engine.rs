//! The engine flags that `supernet serve` and `supernet worker` share: threads and the
//! batch scheduler's limits.

use clap::Args;

use crate::engine::batch::BatchConfig;
use crate::engine::cpu::default_threads;
use crate::worker::engine_thread::EngineConfig;

#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Engine threads per model [default: the machine's cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Sequences decoded together in one step.
    #[arg(long, default_value_t = BatchConfig::default().max_batch)]
    pub max_batch: usize,
    /// Tokens computed in one step at most: one per decoding sequence, the rest for prompts,
    /// which are split into chunks so that running streams keep flowing.
    #[arg(long, default_value_t = BatchConfig::default().max_batch_tokens)]
    pub max_batch_tokens: usize,
    /// KV-cache positions shared by all sequences (blocks of 16); a sequence is preempted
    /// and computed again later when they run out.
    #[arg(long, default_value_t = BatchConfig::default().kv_tokens)]
    pub kv_tokens: usize,
    /// Do not share the KV blocks of common prompt prefixes between requests.
    #[arg(long)]
    pub no_prefix_cache: bool,
}

impl EngineArgs {
    /// The engine's settings, with `max_queue` jobs allowed to wait beyond a full batch.
    pub fn config(&self, max_queue: usize) -> EngineConfig {
        EngineConfig {
            threads: self.threads.unwrap_or_else(default_threads),
            batch: BatchConfig {
                max_batch: self.max_batch,
                max_batch_tokens: self.max_batch_tokens,
                kv_tokens: self.kv_tokens,
                prefix_cache: !self.no_prefix_cache,
            },
            max_queue,
        }
    }
}
