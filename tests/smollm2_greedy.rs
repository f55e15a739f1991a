//! Acceptance: `supernet generate --json --temperature 0 --max-tokens 48` reproduces
//! llama.cpp's greedy continuations of SmolLM2-135M-Instruct Q4_1 token for token.

mod common;

use std::process::Command;

#[test]
fn generate_matches_llama_cpp_greedy_references() {
    let model = common::smollm2();
    let refs = std::fs::read_to_string(common::reference().join("smollm2-greedy.jsonl")).expect("reading references");
    let mut cases = 0;
    for line in refs.lines().filter(|l| !l.trim().is_empty()) {
        let r: serde_json::Value = serde_json::from_str(line).expect("a reference line");
        let prompt = r["prompt"].as_str().expect("a prompt");
        let out = Command::new(env!("CARGO_BIN_EXE_supernet"))
            .args(["generate", "--model"])
            .arg(&model)
            .args(["--prompt", prompt, "--json", "--temperature", "0", "--max-tokens", "48"])
            .output()
            .expect("running supernet");
        assert!(out.status.success(), "generate failed: {}", String::from_utf8_lossy(&out.stderr));
        let o: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
        assert_eq!(common::ids(&o["prompt_token_ids"]), common::ids(&r["prompt_token_ids"]), "prompt ids for {prompt:?}");
        assert_eq!(common::ids(&o["token_ids"]), common::ids(&r["generated_token_ids"]), "generated ids for {prompt:?}");
        assert_eq!(o["prompt_tokens"].as_u64(), r["prompt_token_ids"].as_array().map(|a| a.len() as u64));
        for key in ["text", "completion_tokens", "prefill_tok_s", "decode_tok_s"] {
            assert!(o.get(key).is_some(), "missing `{key}` in {o}");
        }
        cases += 1;
    }
    assert!(cases >= 3, "expected at least 3 reference cases, found {cases}");
}
