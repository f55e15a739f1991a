//! `supernet bench --backend cuda`: decode speed of the GPU path against its two floors.
//!
//! - Bandwidth floor: bytes of weights a decode step reads over the device's measured
//!   copy bandwidth (a 1 GiB device-to-device copy, bytes read plus written).
//! - Launch floor: the step's kernel count times the time one empty kernel node takes in
//!   a replayed graph.
//!
//! Single stream: `--gen-tokens` greedy steps from an empty cache (llama-bench's tg), the
//! token id read back after every step, with graphs and without. Batched: for each
//! `--concurrency` level, that many sequences with `--batch-prompt`-token prompts, then
//! `--gen-tokens` steps decoding all of them (one graph replay each).

use std::time::Instant;

use serde::Serialize;

use super::bench::{decode_steps, mean_sd, percentile, tokens, BenchArgs};
use crate::engine::cuda::gpu::elapsed_ms;
use crate::engine::cuda::{ops, CudaModel, Pick};
use crate::engine::kv::blocks_for;
use crate::engine::model::SeqBatch;

#[derive(Serialize)]
struct Batched {
    concurrency: usize,
    tok_s: f64,
    step_p50_ms: f64,
    step_p99_ms: f64,
}

#[derive(Serialize)]
struct GpuReport {
    device: String,
    model: String,
    weight_bytes: usize,
    copy_bandwidth_gb_s: f64,
    bandwidth_floor_tok_s: f64,
    kernels_per_step: usize,
    launch_node_us: f64,
    launch_floor_tok_s: f64,
    single_stream_tok_s: f64,
    single_stream_sd: f64,
    single_stream_no_graph_tok_s: f64,
    single_stream_no_graph_sd: f64,
    batch: Vec<Batched>,
}

/// Bytes per second of a device-to-device copy, counting bytes read and written.
fn copy_bandwidth(m: &CudaModel) -> anyhow::Result<f64> {
    let g = &m.gpu;
    let bytes = 1 << 30;
    let (a, b) = (g.alloc(bytes)?, g.alloc(bytes)?);
    g.copy(b.ptr, a.ptr, bytes)?;
    let mut times = Vec::new();
    for _ in 0..10 {
        let t0 = g.mark()?;
        g.copy(b.ptr, a.ptr, bytes)?;
        let t1 = g.mark()?;
        times.push(elapsed_ms(&t0, &t1)? as f64 / 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(2.0 * bytes as f64 / percentile(&times, 0.5))
}

/// Seconds one empty kernel node takes in a replayed graph of many.
fn launch_node(m: &CudaModel) -> anyhow::Result<f64> {
    let g = &m.gpu;
    let n = 1000;
    let graph = g.capture(|| (0..n).try_for_each(|_| ops::noop(g)))?;
    graph.launch()?;
    g.sync()?;
    let mut times = Vec::new();
    for _ in 0..10 {
        let t0 = g.mark()?;
        graph.launch()?;
        let t1 = g.mark()?;
        times.push(elapsed_ms(&t0, &t1)? as f64 / 1e3 / n as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(percentile(&times, 0.5))
}

/// Tokens per second of `n` greedy single-token steps from an empty cache.
fn single_stream(m: &mut CudaModel, vocab: usize, n: usize, seed: u64) -> anyhow::Result<f64> {
    let blocks: Vec<u32> = (0..blocks_for(n) as u32).collect();
    let toks = tokens(n, vocab, seed);
    let t = Instant::now();
    for (i, &tok) in toks.iter().enumerate() {
        m.forward(
            &[SeqBatch {
                tokens: &[tok],
                start: i,
                blocks: &blocks,
                slot: 0,
                logits: true,
                images: None,
            }],
            &[Pick::Argmax],
        )?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// `c` sequences' prompts, then `gen` steps decoding them all: tokens/s and step times.
fn batched(
    m: &mut CudaModel,
    vocab: usize,
    c: usize,
    prompt: usize,
    gen: usize,
    seed: u64,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let per = blocks_for(prompt + gen);
    anyhow::ensure!(
        per * c <= m.kv_blocks(),
        "{c} sequences of {} positions need more than the {} KV blocks",
        prompt + gen,
        m.kv_blocks()
    );
    let tables: Vec<Vec<u32>> = (0..c)
        .map(|i| ((i * per) as u32..((i + 1) * per) as u32).collect())
        .collect();
    for (i, t) in tables.iter().enumerate() {
        m.run_sequence(t, 0, &tokens(prompt, vocab, seed + i as u64), Pick::Argmax)?;
    }
    let picks = vec![Pick::Argmax; c];
    let decoded = decode_steps(&tables, prompt, gen, vocab, seed, |seqs| {
        m.forward(seqs, &picks).map(drop)
    })?;
    Ok(decoded)
}

pub fn run(a: &BenchArgs, m: &mut CudaModel, model_path: &str, vocab: usize) -> anyhow::Result<()> {
    let reps = a.repetitions.max(1);
    let bw = copy_bandwidth(m)?;
    let node = launch_node(m)?;
    let floor = bw / m.weight_bytes() as f64;
    let launch_floor = 1.0 / (node * m.kernels_per_step() as f64);
    eprintln!("copy bandwidth {:.0} GB/s, bandwidth floor {floor:.0} tok/s; {} kernels per step at {:.2} us each: launch floor {launch_floor:.0} tok/s", bw / 1e9, m.kernels_per_step(), node * 1e6);

    let n = a.gen_tokens.max(1);
    let single = |m: &mut CudaModel, graphs: bool| -> anyhow::Result<(f64, f64)> {
        m.set_graphs(graphs);
        single_stream(m, vocab, n, 1)?; // warm-up (and graph capture)
        let rates = (0..reps)
            .map(|r| single_stream(m, vocab, n, 2 + r as u64))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (mean, sd) = mean_sd(&rates);
        eprintln!(
            "single stream, graphs {}: {mean:.1} ± {sd:.1} tok/s",
            if graphs { "on" } else { "off" }
        );
        Ok((mean, sd))
    };
    let (no_graph, no_graph_sd) = single(m, false)?;
    let (graph, graph_sd) = single(m, true)?;

    let levels = if a.concurrency.is_empty() {
        vec![1, 8, 32, 64, 128]
    } else {
        a.concurrency.clone()
    };
    let mut batch = Vec::new();
    for c in levels.into_iter().filter(|&c| c > 0) {
        batched(m, vocab, c, a.batch_prompt, a.gen_tokens.min(16), 7)?; // warm-up
        let (mut rates, mut steps) = (Vec::new(), Vec::new());
        for r in 0..reps {
            let (rate, s) = batched(m, vocab, c, a.batch_prompt, a.gen_tokens, 100 + r as u64)?;
            rates.push(rate);
            steps.extend(s);
        }
        steps.sort_by(f64::total_cmp);
        let (tok_s, _) = mean_sd(&rates);
        let b = Batched {
            concurrency: c,
            tok_s,
            step_p50_ms: percentile(&steps, 0.5) * 1e3,
            step_p99_ms: percentile(&steps, 0.99) * 1e3,
        };
        eprintln!(
            "batch {c}: {tok_s:.0} tok/s, step p50 {:.3} ms, p99 {:.3} ms",
            b.step_p50_ms, b.step_p99_ms
        );
        batch.push(b);
    }
    let r = GpuReport {
        device: m.gpu.name.clone(),
        model: model_path.to_string(),
        weight_bytes: m.weight_bytes(),
        copy_bandwidth_gb_s: bw / 1e9,
        bandwidth_floor_tok_s: floor,
        kernels_per_step: m.kernels_per_step(),
        launch_node_us: node * 1e6,
        launch_floor_tok_s: launch_floor,
        single_stream_tok_s: graph,
        single_stream_sd: graph_sd,
        single_stream_no_graph_tok_s: no_graph,
        single_stream_no_graph_sd: no_graph_sd,
        batch,
    };
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("| test | tok/s | of bandwidth floor |");
        println!("|---|---:|---:|");
        println!(
            "| tg{n}, graphs | {graph:.1} ± {graph_sd:.1} | {:.1} % |",
            100.0 * graph / floor
        );
        println!(
            "| tg{n}, no graphs | {no_graph:.1} ± {no_graph_sd:.1} | {:.1} % |",
            100.0 * no_graph / floor
        );
        for b in &r.batch {
            println!(
                "| batch {} | {:.0} | {:.1} % |",
                b.concurrency,
                b.tok_s,
                100.0 * b.tok_s / floor
            );
        }
    }
    Ok(())
}
