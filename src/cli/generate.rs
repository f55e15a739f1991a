//! `supernet generate`: one prompt through the engine, streamed to stdout or as JSON.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::backend::{open_gpu, BackendChoice};
use crate::engine::cpu::default_threads;
use crate::engine::cuda::{CudaOptions, Pick, Picked};
use crate::engine::generate::{
    generate, generate_with, FinishReason, GenerateParams, TokenLogprob,
};
use crate::engine::sampler::SamplerParams;
use crate::engine::template::{ChatMessage, ChatTemplate};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::EngineError;
use crate::engine::{CpuBackend, Model};

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Path to a GGUF model file.
    #[arg(long, env = "SUPERNET_MODEL")]
    pub model: PathBuf,
    /// The prompt, tokenized exactly as given (special tokens such as <|im_start|> are honoured).
    #[arg(long)]
    pub prompt: String,
    /// Wrap the prompt as one user message through the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0 disables).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches P (1 disables).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0 disables).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Penalise repeats of the last 64 tokens (1 disables).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Stop when this text is generated (repeatable); it is not included in the output.
    #[arg(long)]
    pub stop: Vec<String>,
    /// Random seed; the same seed and inputs give the same output.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = BackendChoice::Cpu)]
    pub backend: BackendChoice,
    /// Print one JSON object with token ids, text and speeds instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// With --json: each token's log-probability and this many most likely alternatives
    /// (the log-softmax of the logits before penalties and temperature).
    #[arg(long, requires = "json", value_parser = clap::value_parser!(u8).range(0..=20))]
    logprobs: Option<u8>,
}

#[derive(Serialize)]
struct JsonOutput {
    prompt_token_ids: Vec<u32>,
    token_ids: Vec<u32>,
    text: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    finish_reason: &'static str,
    prefill_tok_s: f64,
    decode_tok_s: f64,
    /// With --logprobs: per token, `{token, logprob, top: [[id, logprob], ...]}`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    logprobs: Vec<TokenLogprob>,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    let model = Model::load(&a.model).with_context(|| format!("loading {}", a.model.display()))?;
    let tok = Tokenizer::from_gguf(&model.file)?;
    let prompt_text = if a.chat {
        let tmpl = ChatTemplate::from_gguf(&model.file, &tok)?;
        tmpl.render(
            &[ChatMessage::new("user", &a.prompt)],
            None,
            true,
            &Default::default(),
        )?
    } else {
        a.prompt.clone()
    };
    let prompt = tok.encode(&prompt_text)?;
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        stop: a.stop.clone(),
        sampler: SamplerParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
            ..SamplerParams::default()
        },
        grammar: None,
        logprobs: a.logprobs.map(usize::from),
        logit_bias: Vec::new(),
    };
    let mut stdout = std::io::stdout().lock();
    let on_text = |t: &str, _| {
        // A closed pipe (`| head`) ends the generation quietly.
        if a.json
            || stdout
                .write_all(t.as_bytes())
                .and_then(|_| stdout.flush())
                .is_ok()
        {
            std::ops::ControlFlow::Continue(())
        } else {
            std::ops::ControlFlow::Break(())
        }
    };
    let limit = model.config.context_length;
    let g = match open_gpu(
        a.backend,
        &model,
        CudaOptions {
            kv_tokens: limit,
            max_seqs: 1,
            ..CudaOptions::default()
        },
    )? {
        Some(mut gpu) => {
            // One sequence: the cache's blocks in order.
            let blocks: Vec<u32> = (0..gpu.kv_blocks() as u32).collect();
            let mut pos = 0;
            let mut forward = |t: &[u32]| -> Result<Vec<f32>, EngineError> {
                let picked = gpu.run_sequence(&blocks, pos, t, Pick::Logits)?;
                pos += t.len();
                match picked {
                    Picked::Logits(l) => Ok(l),
                    other => unreachable!("asked for logits, got {other:?}"),
                }
            };
            generate_with(
                &tok,
                &prompt,
                &params,
                limit.min(blocks.len() * 16),
                &mut forward,
                on_text,
            )?
        }
        None => {
            let be = CpuBackend::new(a.threads.unwrap_or_else(default_threads));
            model.prepare(&be);
            generate(&model, &be, &tok, &prompt, &params, on_text)?
        }
    };
    let rate = |n: usize, d: std::time::Duration| {
        if d.is_zero() {
            0.0
        } else {
            n as f64 / d.as_secs_f64()
        }
    };
    if a.json {
        let out = JsonOutput {
            prompt_tokens: prompt.len(),
            completion_tokens: g.token_ids.len(),
            prefill_tok_s: rate(prompt.len(), g.prefill_time),
            decode_tok_s: rate(g.decode_steps, g.decode_time),
            finish_reason: match g.finish {
                FinishReason::Stop => "stop",
                FinishReason::Length => "length",
                FinishReason::Cancelled => "cancelled",
            },
            prompt_token_ids: prompt,
            token_ids: g.token_ids,
            text: g.text,
            logprobs: g.logprobs,
        };
        writeln!(stdout, "{}", serde_json::to_string(&out)?)?;
    } else {
        let _ = writeln!(stdout);
    }
    Ok(())
}
