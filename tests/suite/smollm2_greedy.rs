//! Acceptance: `supernet generate --json --temperature 0 --max-tokens 48` reproduces
//! llama.cpp's greedy continuations of SmolLM2-135M-Instruct Q4_1 token for token.
//!
//! The shared references have short prompts. `tests/data/smollm2-long-greedy.jsonl` adds
//! prompts of 77, 255 and 817 tokens, made with `tests/data/llama_greedy.cpp` (libllama at
//! the same commit and settings), which reach llama.cpp's other attention paths: the tiled
//! f32 prefill, the cache split of one-token decode past 256 positions, and a prompt over
//! two 512-token micro-batches.

use crate::common;

use std::path::Path;
use std::process::Command;

#[test]
fn generate_matches_llama_cpp_greedy_references() {
    let cases = check_references(&common::reference().join("smollm2-greedy.jsonl"));
    assert!(
        cases >= 3,
        "expected at least 3 reference cases, found {cases}"
    );
}

#[test]
fn long_prompts_match_llama_cpp_greedy_references() {
    let cases = check_references(&common::repo().join("tests/data/smollm2-long-greedy.jsonl"));
    assert_eq!(cases, 3);
}

/// Runs every case of a reference file and returns how many there were.
fn check_references(path: &Path) -> usize {
    let model = common::smollm2();
    let refs = std::fs::read_to_string(path).expect("reading references");
    let mut cases = 0;
    for line in refs.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).expect("a reference line");
        let prompt = r["prompt"].as_str().expect("a prompt");
        let out = Command::new(env!("CARGO_BIN_EXE_supernet"))
            .args(["generate", "--model"])
            .arg(&model)
            .args([
                "--prompt",
                prompt,
                "--json",
                "--temperature",
                "0",
                "--max-tokens",
                "48",
            ])
            .output()
            .expect("running supernet");
        assert!(
            out.status.success(),
            "generate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let o: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
        assert_eq!(
            common::ids(&o["prompt_token_ids"]),
            common::ids(&r["prompt_token_ids"]),
            "prompt ids for {prompt:?}"
        );
        assert_eq!(
            common::ids(&o["token_ids"]),
            common::ids(&r["generated_token_ids"]),
            "generated ids for {prompt:?}"
        );
        assert_eq!(
            o["prompt_tokens"].as_u64(),
            r["prompt_token_ids"].as_array().map(|a| a.len() as u64)
        );
        for key in ["text", "completion_tokens", "prefill_tok_s", "decode_tok_s"] {
            assert!(o.get(key).is_some(), "missing `{key}` in {o}");
        }
        cases += 1;
    }
    cases
}
