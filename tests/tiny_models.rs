//! Acceptance: every llama, qwen2, qwen3 and qwen3moe tiny model reproduces llama.cpp's
//! greedy references. Dense models must match all 32 tokens; MoE models at least the prefix
//! llama.cpp itself keeps with an F32 KV cache (`robustness_leading_tokens_equal.
//! kv_f32_fa_off`). How far each line gets is printed (run with `--nocapture`).

mod common;

use supernet::engine::model::Logits;
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
        if !["llama", "qwen2", "qwen3", "qwen3moe"].contains(&arch) {
            continue;
        }
        let file = r["model"].as_str().expect("a model name");
        let model = Model::load(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let tok = Tokenizer::from_gguf(&model.file).expect("tokenizer");
        let prompt = common::ids(&r["prompt_token_ids"]);
        assert_eq!(tok.encode(r["prompt"].as_str().unwrap_or_default()).expect("encode"), prompt, "{file}: prompt ids");
        let want = common::ids(&r["generated_token_ids"]);

        let mut cache = model.new_cache(None);
        let mut logits = model.forward(&be, &mut cache, &prompt, Logits::Last).expect("prefill");
        let mut matched = 0;
        for (i, &w) in want.iter().enumerate() {
            let t = argmax(&logits);
            if t != w {
                break;
            }
            matched += 1;
            if i + 1 < want.len() {
                logits = model.forward(&be, &mut cache, &[t], Logits::Last).expect("decode");
            }
        }
        let required = if arch == "qwen3moe" {
            r["robustness_leading_tokens_equal"]["kv_f32_fa_off"].as_u64().unwrap_or(32) as usize
        } else {
            want.len()
        };
        println!("{file:28} {:?}: {matched}/{} tokens equal (required {required})", &r["prompt"].as_str().unwrap_or("")[..12], want.len());
        if matched < required {
            failures.push(format!("{file} prompt {:?}: {matched} < {required}", r["prompt"]));
        }
        checked += 1;
    }
    assert!(checked >= 51, "expected 51 reference lines, checked {checked}");
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}
