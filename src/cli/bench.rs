//! `supernet bench`: prompt-processing and decode throughput, measured the way llama-bench
//! measures pp512 and tg128, so the two can be compared on the same machine.
//!
//! pp: one forward pass over `--prompt-tokens` tokens into an empty cache (logits for the
//! last token only). tg: `--gen-tokens` single-token forward passes from an empty cache,
//! each computing full logits. Token ids are pseudo-random. One untimed warm-up run comes
//! first; then `--repetitions` timed runs give the mean and standard deviation.
//!
//! With `--concurrency 1,4,8,16`: for each level, that many sequences each get a prompt of
//! `--batch-prompt` tokens, then `--gen-tokens` decode steps run them all in one batched
//! forward pass each (the batch scheduler's arithmetic, logits for every sequence). It
//! reports aggregate tokens per second and the step time (every stream's inter-token
//! latency), p50 and p99.
//!
//! With `--json-schema FILE`: constrained decoding's cost ([`super::bench_constraint`]).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::backend::{open_gpu, BackendChoice};
use crate::engine::backend::Arithmetic;
use crate::engine::cpu::default_threads;
use crate::engine::cuda::CudaOptions;
use crate::engine::kv::blocks::BlockPool;
use crate::engine::kv::blocks_for;
use crate::engine::model::SeqBatch;
use crate::engine::{Backend, CpuBackend, Model};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    /// Something other than the engine to measure.
    #[command(subcommand)]
    pub target: Option<BenchTarget>,
    /// Path to a GGUF model file.
    #[arg(long, env = "SUPERNET_MODEL", required = true)]
    pub model: Option<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Prompt length of the prompt-processing test (0 skips it).
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Tokens generated in the decode test (0 skips it).
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Timed runs per test.
    #[arg(long, default_value_t = 5)]
    pub repetitions: usize,
    /// Batched decode instead: these numbers of sequences decoding together.
    #[arg(long, value_delimiter = ',')]
    pub concurrency: Vec<usize>,
    /// Prompt tokens of each sequence in the batched decode test.
    #[arg(long, default_value_t = 48)]
    pub batch_prompt: usize,
    /// Constrained decoding instead: decode speed with and without a grammar built from this
    /// JSON schema file, and the grammar's own cost per token.
    #[arg(long, value_name = "FILE")]
    pub json_schema: Option<PathBuf>,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Where the model runs; on a GPU the bench also measures its bandwidth and launch
    /// floors, and batched decode at 1, 8, 32, 64 and 128 unless --concurrency says.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
}

#[derive(Subcommand, Debug)]
pub enum BenchTarget {
    /// A cluster's coordinator: placement rate and latency, driven straight through the bus
    /// against simulated workers (see loadtest/sim-cluster.sh).
    Placement(super::bench_placement::PlacementArgs),
    /// Hosted media calls: the time the platform adds to a backend's, or calls a second
    /// through simulated media workers, in-process
    Media(super::bench_media::MediaBenchArgs),
    /// Durable runs' events: the delay from an append to a follower (the SSE path) with many
    /// runs in flight, and the store's growth per run
    Runs(super::bench_runs::RunsBenchArgs),
    /// The vision tower's encode time per image (decode, preprocess, encode)
    Vision(super::bench_vision::VisionBenchArgs),
}

#[derive(Serialize)]
struct BatchReport {
    concurrency: usize,
    tok_s: f64,
    tok_s_sd: f64,
    step_p50_ms: f64,
    step_p99_ms: f64,
}

#[derive(Serialize)]
struct Report {
    model: String,
    backend: String,
    threads: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    repetitions: usize,
    pp_tok_s: f64,
    pp_sd: f64,
    tg_tok_s: f64,
    tg_sd: f64,
}

pub(super) fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % vocab as u64) as u32
        })
        .collect()
}

pub(super) fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn pp_run(model: &Model, be: &dyn Backend, toks: &[u32]) -> anyhow::Result<f64> {
    let mut cache = model.new_cache(Some(toks.len()));
    let t = Instant::now();
    model.forward(be, &mut cache, toks)?;
    Ok(toks.len() as f64 / t.elapsed().as_secs_f64())
}

fn tg_run(model: &Model, be: &dyn Backend, toks: &[u32]) -> anyhow::Result<f64> {
    let mut cache = model.new_cache(Some(toks.len()));
    let t = Instant::now();
    for &tok in toks {
        model.forward(be, &mut cache, &[tok])?;
    }
    Ok(toks.len() as f64 / t.elapsed().as_secs_f64())
}

/// `c` sequences of `prompt` tokens, then `gen` batched decode steps: aggregate tokens per
/// second and each step's time.
fn batch_run(
    model: &Model,
    be: &dyn Backend,
    c: usize,
    prompt: usize,
    gen: usize,
    seed: u64,
) -> (f64, Vec<f64>) {
    let vocab = model.config.vocab_size;
    let per_seq = blocks_for(prompt + gen);
    let mut pool = BlockPool::new(per_seq * c);
    let tables: Vec<Vec<u32>> = (0..c)
        .map(|_| (0..per_seq).filter_map(|_| pool.allocate()).collect())
        .collect();
    let mut store = model.new_store();
    store.grow_to(pool.high_water());
    let prompts: Vec<Vec<u32>> = (0..c)
        .map(|i| tokens(prompt, vocab, seed + i as u64))
        .collect();
    let seqs: Vec<SeqBatch> = prompts
        .iter()
        .zip(&tables)
        .enumerate()
        .map(|(slot, (p, b))| SeqBatch {
            tokens: p,
            start: 0,
            blocks: b,
            slot,
            logits: true,
            images: None,
        })
        .collect();
    model.forward_batch(be, &mut store, &seqs, Arithmetic::Invariant);
    let decoded = decode_steps(&tables, prompt, gen, vocab, seed, |seqs| {
        model.forward_batch(be, &mut store, seqs, Arithmetic::Invariant);
        Ok::<_, std::convert::Infallible>(())
    });
    match decoded {
        Ok(measured) => measured,
        Err(never) => match never {},
    }
}

/// `gen` decode steps of the sequences in `tables` (one each, their `prompt` tokens already
/// computed), one random token per sequence a step through `forward`: aggregate tokens per
/// second and each step's time. The CPU and GPU benchmarks share it.
pub(super) fn decode_steps<E>(
    tables: &[Vec<u32>],
    prompt: usize,
    gen: usize,
    vocab: usize,
    seed: u64,
    mut forward: impl FnMut(&[SeqBatch]) -> Result<(), E>,
) -> Result<(f64, Vec<f64>), E> {
    let c = tables.len();
    let next = tokens(gen * c, vocab, seed ^ 0xdec0de);
    let mut steps = Vec::with_capacity(gen);
    let t = Instant::now();
    for (step, toks) in next.chunks_exact(c).enumerate() {
        let s = Instant::now();
        let seqs: Vec<SeqBatch> = toks
            .chunks(1)
            .zip(tables)
            .enumerate()
            .map(|(slot, (t, b))| SeqBatch {
                tokens: t,
                start: prompt + step,
                blocks: b,
                slot,
                logits: true,
                images: None,
            })
            .collect();
        forward(&seqs)?;
        steps.push(s.elapsed().as_secs_f64());
    }
    Ok(((c * gen) as f64 / t.elapsed().as_secs_f64(), steps))
}

pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

fn run_batched(a: &BenchArgs, model: &Model, be: &CpuBackend) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.gen_tokens > 0 && a.batch_prompt > 0,
        "--gen-tokens and --batch-prompt must be positive"
    );
    anyhow::ensure!(
        a.batch_prompt + a.gen_tokens <= model.config.context_length,
        "--batch-prompt plus --gen-tokens pass the model's context"
    );
    let reps = a.repetitions.max(1);
    let mut reports = Vec::new();
    for &c in a.concurrency.iter().filter(|&&c| c > 0) {
        batch_run(model, be, c, a.batch_prompt, a.gen_tokens.min(16), 0x5eed); // warm-up
        let (mut rates, mut steps) = (Vec::new(), Vec::new());
        for r in 0..reps {
            let (rate, s) = batch_run(
                model,
                be,
                c,
                a.batch_prompt,
                a.gen_tokens,
                0x5eed + 1000 * (r as u64 + 1),
            );
            rates.push(rate);
            steps.extend(s);
            eprint!("\rconcurrency {c}: run {}/{reps}", r + 1);
        }
        steps.sort_by(f64::total_cmp);
        let (m, sd) = mean_sd(&rates);
        let r = BatchReport {
            concurrency: c,
            tok_s: m,
            tok_s_sd: sd,
            step_p50_ms: percentile(&steps, 0.5) * 1e3,
            step_p99_ms: percentile(&steps, 0.99) * 1e3,
        };
        eprintln!(
            "\rconcurrency {c}: {m:8.1} ± {sd:5.1} tok/s, step p50 {:.1} ms, p99 {:.1} ms",
            r.step_p50_ms, r.step_p99_ms
        );
        reports.push(r);
    }
    if a.json {
        println!("{}", serde_json::to_string(&reports)?);
    } else {
        println!("| concurrency | threads | tok/s | step p50 ms | step p99 ms |");
        println!("|---:|---:|---:|---:|---:|");
        for r in &reports {
            println!(
                "| {} | {} | {:.1} ± {:.1} | {:.1} | {:.1} |",
                r.concurrency,
                be.threads(),
                r.tok_s,
                r.tok_s_sd,
                r.step_p50_ms,
                r.step_p99_ms
            );
        }
    }
    Ok(())
}

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let path = match a.target {
        Some(BenchTarget::Placement(p)) => return super::bench_placement::run(p),
        Some(BenchTarget::Media(m)) => return super::bench_media::run(m),
        Some(BenchTarget::Runs(r)) => return super::bench_runs::run(r),
        Some(BenchTarget::Vision(v)) => return super::bench_vision::run(v),
        None => a
            .model
            .clone()
            .context("--model FILE (or SUPERNET_MODEL) names the GGUF model to measure")?,
    };
    let model = Model::load(&path).with_context(|| format!("loading {}", path.display()))?;
    if let Some(mut gpu) = open_gpu(a.backend, &model, CudaOptions::default())? {
        eprintln!(
            "model {} ({}), backend {}",
            path.display(),
            model.config.arch.name(),
            gpu.describe()
        );
        return super::bench_gpu::run(
            &a,
            &mut gpu,
            &path.display().to_string(),
            model.config.vocab_size,
        );
    }
    let be = CpuBackend::new(a.threads.unwrap_or_else(default_threads));
    model.prepare(&be);
    let vocab = model.config.vocab_size;
    let reps = a.repetitions.max(1);
    eprintln!(
        "model {} ({}), backend {}",
        path.display(),
        model.config.arch.name(),
        be.describe()
    );
    if let Some(schema) = &a.json_schema {
        return super::bench_constraint::run(&a, schema, model, &be);
    }
    if !a.concurrency.is_empty() {
        return run_batched(&a, &model, &be);
    }

    let measure = |name: &str,
                   n: usize,
                   f: &dyn Fn(&[u32]) -> anyhow::Result<f64>|
     -> anyhow::Result<(f64, f64)> {
        if n == 0 {
            return Ok((0.0, 0.0));
        }
        f(&tokens(n, vocab, 0x5eed))?; // warm-up
        let mut rates = Vec::with_capacity(reps);
        for r in 0..reps {
            rates.push(f(&tokens(n, vocab, 0x5eed + r as u64 + 1))?);
            eprint!("\r{name}{n}: run {}/{reps}", r + 1);
        }
        let (m, sd) = mean_sd(&rates);
        eprintln!("\r{name}{n}: {m:8.1} ± {sd:5.1} tok/s");
        Ok((m, sd))
    };
    let (pp, pp_sd) = measure("pp", a.prompt_tokens, &|t| pp_run(&model, &be, t))?;
    let (tg, tg_sd) = measure("tg", a.gen_tokens, &|t| tg_run(&model, &be, t))?;

    let report = Report {
        model: path.display().to_string(),
        backend: be.describe(),
        threads: be.threads(),
        prompt_tokens: a.prompt_tokens,
        gen_tokens: a.gen_tokens,
        repetitions: reps,
        pp_tok_s: pp,
        pp_sd,
        tg_tok_s: tg,
        tg_sd,
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("| test | threads | tok/s |");
        println!("|---|---:|---:|");
        if a.prompt_tokens > 0 {
            println!(
                "| pp{} | {} | {:.1} ± {:.1} |",
                a.prompt_tokens, report.threads, pp, pp_sd
            );
        }
        if a.gen_tokens > 0 {
            println!(
                "| tg{} | {} | {:.1} ± {:.1} |",
                a.gen_tokens, report.threads, tg, tg_sd
            );
        }
    }
    Ok(())
}
