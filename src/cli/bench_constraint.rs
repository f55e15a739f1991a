//! `supernet bench --json-schema FILE`: what constrained decoding costs per token.
//!
//! One request (greedy, the prompt asks for the JSON) runs through the real path: `prepare`
//! builds the grammar from `response_format`, the batch scheduler decodes. Each repetition
//! runs it twice, unconstrained and constrained, and reports decode tokens per second of
//! each (after the first token, so prefill is not counted). Then the constrained tokens are
//! replayed through a fresh constraint alone, timing the mask and the advance per token:
//! the pure cost of the grammar.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use super::bench::{mean_sd, BenchArgs};
use crate::api::chat_request::ChatRequest;
use crate::engine::batch::{BatchConfig, Output, Request, Scheduler};
use crate::engine::generate::{GenerateParams, Resume};
use crate::engine::template::ChatTemplate;
use crate::engine::tokenizer::Tokenizer;
use crate::engine::{CpuBackend, Model};
use crate::session::prompt::{prepare, ModelText, TierLimits};

#[derive(Serialize)]
struct Report {
    gen_tokens: usize,
    free_tok_s: f64,
    free_sd: f64,
    constrained_tok_s: f64,
    constrained_sd: f64,
    /// Tokens the constrained run produced (it ends where the schema does).
    constrained_tokens: usize,
    /// Mask plus advance, per token, microseconds.
    constraint_us_per_token: f64,
}

/// Decodes `params` after `prompt` alone; returns the tokens and decode tokens per second.
fn decode(
    model: &Arc<Model>,
    tok: &Arc<Tokenizer>,
    be: &CpuBackend,
    prompt: &[u32],
    params: GenerateParams,
) -> anyhow::Result<(Vec<u32>, f64)> {
    let mut s = Scheduler::new(Arc::clone(model), Arc::clone(tok), BatchConfig::default());
    s.add(
        0,
        Request {
            prompt: prompt.to_vec(),
            params,
            resume: Resume::default(),
            images: None,
        },
    )?;
    let (mut produced, mut first) = (Vec::new(), None);
    while !s.is_idle() {
        for out in s.step(be) {
            match out {
                Output::Token { token: Some(t), .. } => {
                    produced.push(t);
                    first.get_or_insert_with(Instant::now);
                }
                Output::Failed { reason, .. } => anyhow::bail!("the generation failed: {reason}"),
                Output::Token { .. } | Output::Finished { .. } => {}
            }
        }
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let rate = produced.len().saturating_sub(1) as f64 / secs.max(1e-9);
    Ok((produced, rate))
}

pub fn run(
    a: &BenchArgs,
    schema_path: &std::path::Path,
    model: Model,
    be: &CpuBackend,
) -> anyhow::Result<()> {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(schema_path)
            .with_context(|| format!("reading {}", schema_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", schema_path.display()))?;
    let tok = Arc::new(Tokenizer::from_gguf(&model.file)?);
    let template = ChatTemplate::from_gguf(&model.file, &tok)?;
    let text = ModelText {
        template: &template,
        tokenizer: &tok,
        context_length: model.config.context_length,
        id: "model",
        vision: None,
    };
    let body = json!({
        "messages": [{"role": "user", "content": format!("Write a JSON value that fits this schema: {schema}")}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}},
        "temperature": 0, "max_tokens": a.gen_tokens,
    });
    let req = ChatRequest::parse(&body).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let prepared = prepare(
        &req,
        &text,
        &TierLimits {
            max_tokens: u32::MAX,
            ..TierLimits::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let grammar = prepared
        .params
        .grammar
        .clone()
        .context("the schema gave no grammar")?;
    let free = GenerateParams {
        grammar: None,
        ..prepared.params.clone()
    };
    let model = Arc::new(model);

    decode(
        &model,
        &tok,
        be,
        &prepared.prompt_ids,
        prepared.params.clone(),
    )?; // warm-up
    let (mut free_rates, mut rates, mut produced) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..a.repetitions.max(1) {
        free_rates.push(decode(&model, &tok, be, &prepared.prompt_ids, free.clone())?.1);
        let (tokens, rate) = decode(
            &model,
            &tok,
            be,
            &prepared.prompt_ids,
            prepared.params.clone(),
        )?;
        rates.push(rate);
        produced = tokens;
        eprint!("\rrun {}/{}", r + 1, a.repetitions.max(1));
    }

    // The grammar alone: a fresh constraint follows the produced tokens.
    let mut logits = vec![0f32; model.config.vocab_size];
    let mut c = tok.grammars()?.compile(&grammar)?;
    let t = Instant::now();
    for &tk in &produced {
        c.mask(&mut logits)?;
        c.accept(tk)?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / produced.len().max(1) as f64;

    let ((f, fsd), (m, sd)) = (mean_sd(&free_rates), mean_sd(&rates));
    eprintln!("\rfree {f:.1} ± {fsd:.1} tok/s, constrained {m:.1} ± {sd:.1} tok/s ({} tokens), constraint {us:.0} µs/token", produced.len());
    let report = Report {
        gen_tokens: a.gen_tokens,
        free_tok_s: f,
        free_sd: fsd,
        constrained_tok_s: m,
        constrained_sd: sd,
        constrained_tokens: produced.len(),
        constraint_us_per_token: us,
    };
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("| decode | threads | tok/s |");
        println!("|---|---:|---:|");
        println!("| unconstrained | {} | {f:.1} ± {fsd:.1} |", be.threads());
        println!(
            "| JSON schema ({} tokens) | {} | {m:.1} ± {sd:.1} |",
            produced.len(),
            be.threads()
        );
        println!("| constraint alone | | {us:.0} µs/token |");
    }
    Ok(())
}
