//! `supernet bench`: prompt-processing and decode throughput, measured the way llama-bench
//! measures pp512 and tg128, so the two can be compared on the same machine.
//!
//! pp: one forward pass over `--prompt-tokens` tokens into an empty cache (logits for the
//! last token only). tg: `--gen-tokens` single-token forward passes from an empty cache,
//! each computing full logits. Token ids are pseudo-random. One untimed warm-up run comes
//! first; then `--repetitions` timed runs give the mean and standard deviation.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::engine::cpu::default_threads;
use crate::engine::{Backend, CpuBackend, Model};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Path to a GGUF model file.
    #[arg(long, env = "SUPERNET_MODEL")]
    pub model: PathBuf,
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
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
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

fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
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

fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0);
    }
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 { v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64 } else { 0.0 };
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

pub fn run(a: BenchArgs) -> anyhow::Result<()> {
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let be = CpuBackend::new(a.threads.unwrap_or_else(default_threads));
    model.prepare(&be);
    let vocab = model.config.vocab_size;
    let reps = a.repetitions.max(1);
    eprintln!("model {} ({}), backend {}", a.model.display(), model.config.arch.name(), be.describe());

    let measure = |name: &str, n: usize, f: &dyn Fn(&[u32]) -> anyhow::Result<f64>| -> anyhow::Result<(f64, f64)> {
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
        model: a.model.display().to_string(),
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
            println!("| pp{} | {} | {:.1} ± {:.1} |", a.prompt_tokens, report.threads, pp, pp_sd);
        }
        if a.gen_tokens > 0 {
            println!("| tg{} | {} | {:.1} ± {:.1} |", a.gen_tokens, report.threads, tg, tg_sd);
        }
    }
    Ok(())
}
