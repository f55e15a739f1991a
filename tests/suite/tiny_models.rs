//! Acceptance: every llama, qwen2, qwen3, qwen3moe and qwen35moe tiny model reproduces
//! llama.cpp's greedy references. Dense and hybrid models must match all 32 tokens; qwen3moe
//! at least the prefix
//! llama.cpp itself keeps with an F32 KV cache (`robustness_leading_tokens_equal.
//! kv_f32_fa_off`). How far each line gets is printed (run with `--nocapture`).

use crate::common;

use supernet::engine::sampler::argmax;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::{CpuBackend, Model};

#[test]
fn tiny_models_match_llama_cpp() {
    let dir = common::reference().join("tiny-models");
    let refs = std::fs::read_to_string(dir.join("references.jsonl")).expect("reading references");
    let be = CpuBackend::new(2);
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in refs.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).expect("a reference line");
        let arch = r["arch"].as_str().unwrap_or_default();
        if !["llama", "qwen2", "qwen3", "qwen3moe", "qwen35moe"].contains(&arch) {
            continue;
        }
        let file = r["model"].as_str().expect("a model name");
        let model = Model::load(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let tok = Tokenizer::from_gguf(&model.file).expect("tokenizer");
        let prompt = common::ids(&r["prompt_token_ids"]);
        assert_eq!(
            tok.encode(r["prompt"].as_str().unwrap_or_default())
                .expect("encode"),
            prompt,
            "{file}: prompt ids"
        );
        let want = common::ids(&r["generated_token_ids"]);

        let mut cache = model.new_cache(None);
        let mut logits = model.forward(&be, &mut cache, &prompt).expect("prefill");
        let mut matched = 0;
        for (i, &w) in want.iter().enumerate() {
            let t = argmax(&logits);
            if t != w {
                break;
            }
            matched += 1;
            if i + 1 < want.len() {
                logits = model.forward(&be, &mut cache, &[t]).expect("decode");
            }
        }
        let required = if arch == "qwen3moe" {
            r["robustness_leading_tokens_equal"]["kv_f32_fa_off"]
                .as_u64()
                .unwrap_or(32) as usize
        } else {
            want.len()
        };
        println!(
            "{file:28} {:?}: {matched}/{} tokens equal (required {required})",
            &r["prompt"].as_str().unwrap_or("")[..12],
            want.len()
        );
        if matched < required {
            failures.push(format!(
                "{file} prompt {:?}: {matched} < {required}",
                r["prompt"]
            ));
        }
        checked += 1;
    }
    assert!(
        checked >= 60,
        "expected 60 reference lines, checked {checked}"
    );
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

/// How far a file's logits (standard deviation about 16) may be from llama.cpp's.
/// Q4_0 / Q4_K weights: llama.cpp repacks them into eight-row tiles whose sums run in
/// another order, and a near-tie in an MoE router turns that into up to 1.1 (measured
/// maximum 1.37, tiny-llama-q4_k_m). F32 / F16 weights: llama.cpp multiplies them with
/// llamafile's sgemm (measured maximum 0.058, tiny-qwen35moe-f16). Everything else is
/// bit-exact ([`BIT_EXACT`]).
fn logit_tolerance(file: &str) -> f32 {
    if file.contains("q4_0") || file.contains("q4_k") {
        1.5
    } else {
        0.1
    }
}

/// The files whose arithmetic we reproduce exactly: their logits at the last prompt
/// position (`harness_check.prompt_last_logits_file`) equal llama.cpp's bit for bit.
/// Not listed: F32 weights (llama.cpp multiplies them with llamafile's sgemm), and Q4_0 /
/// Q4_K weights, which llama.cpp repacks into eight-row tiles on AVX2.
const BIT_EXACT: [&str; 10] = [
    "tiny-llama-q8_0.gguf",
    "tiny-llama-q4_1.gguf",
    "tiny-llama-q5_k_m.gguf",
    "tiny-llama-q6_k.gguf",
    "tiny-llama-iq4_xs.gguf",
    "tiny-qwen2-q8_0.gguf",
    "tiny-qwen3-q8_0.gguf",
    "tiny-qwen3moe-q8_0.gguf",
    "tiny-qwen3moe-q4_k_m.gguf",
    "tiny-qwen35moe-q8_0.gguf",
];

/// Our logits at the last prompt position of reference line `r`, and llama.cpp's.
fn prompt_logits(
    be: &CpuBackend,
    dir: &std::path::Path,
    r: &serde_json::Value,
) -> (Vec<f32>, Vec<f32>) {
    let file = r["model"].as_str().expect("a model name");
    let path = r["harness_check"]["prompt_last_logits_file"]
        .as_str()
        .expect("a logits file");
    let want: Vec<f32> = std::fs::read(dir.join(path))
        .expect("reading reference logits")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let model = Model::load(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
    let mut cache = model.new_cache(None);
    let got = model
        .forward(be, &mut cache, &common::ids(&r["prompt_token_ids"]))
        .expect("prefill");
    (got, want)
}

#[test]
fn prompt_logits_equal_llama_cpp_bit_for_bit() {
    let dir = common::reference().join("tiny-models");
    let refs = std::fs::read_to_string(dir.join("references.jsonl")).expect("reading references");
    let be = CpuBackend::new(2);
    let mut checked = 0;
    for line in refs.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).expect("a reference line");
        let file = r["model"].as_str().expect("a model name");
        if !BIT_EXACT.contains(&file) {
            continue;
        }
        let (got, want) = prompt_logits(&be, &dir, &r);
        assert_eq!(got.len(), want.len(), "{file}: vocabulary");
        let differing = got
            .iter()
            .zip(&want)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            differing, 0,
            "{file} {:?}: {differing} logits differ from llama.cpp's",
            r["prompt"]
        );
        checked += 1;
    }
    assert_eq!(checked, BIT_EXACT.len() * 3);
}

/// Every file's logits at the last prompt position, against llama.cpp's: the largest
/// absolute difference, printed per file (run with `--nocapture`), must stay within
/// [`logit_tolerance`].
#[test]
fn prompt_logits_are_close_to_llama_cpp() {
    let dir = common::reference().join("tiny-models");
    let refs = std::fs::read_to_string(dir.join("references.jsonl")).expect("reading references");
    let be = CpuBackend::new(2);
    let (mut checked, mut over) = (0, Vec::new());
    for line in refs.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).expect("a reference line");
        let file = r["model"].as_str().expect("a model name");
        let (got, want) = prompt_logits(&be, &dir, &r);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!(
            "{file:28} {:?}: max |logit difference| {diff:.2e}",
            &r["prompt"].as_str().unwrap_or("")[..12]
        );
        if diff > logit_tolerance(file) {
            over.push(format!("{file} {:?}: {diff}", r["prompt"]));
        }
        checked += 1;
    }
    assert_eq!(checked, 60);
    assert!(over.is_empty(), "beyond tolerance:\n{}", over.join("\n"));
}
