//! Paths shared by the tests: the reference material in `../shared` and the
//! model that `scripts/fetch-model.sh` puts under `models/`.

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/reference`, or `$SUPERNET_SHARED/reference`.
pub fn reference() -> PathBuf {
    let shared =
        std::env::var_os("SUPERNET_SHARED").map_or_else(|| repo().join("../shared"), PathBuf::from);
    let r = shared.join("reference");
    assert!(
        r.is_dir(),
        "reference material not found at {} (set SUPERNET_SHARED)",
        r.display()
    );
    r
}

/// The default model; fails with the command that fetches it.
pub fn smollm2() -> PathBuf {
    let p = repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run `scripts/fetch-model.sh` (or `make model`)",
        p.display()
    );
    p
}

pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an id array")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// SmolLM2-135M on the CPU backend (2 threads), ready for constrained-output tests: the
/// model, its tokenizer and chat template, and a batch scheduler of `max_batch` sequences.
pub fn smollm2_scheduler(
    max_batch: usize,
) -> (
    std::sync::Arc<supernet::engine::Model>,
    std::sync::Arc<supernet::engine::tokenizer::Tokenizer>,
    supernet::engine::template::ChatTemplate,
    supernet::engine::cpu::CpuBackend,
    supernet::engine::batch::Scheduler,
) {
    use std::sync::Arc;
    let model = Arc::new(supernet::engine::Model::load(smollm2()).expect("the model"));
    let tok = Arc::new(
        supernet::engine::tokenizer::Tokenizer::from_gguf(&model.file).expect("tokenizer"),
    );
    let template =
        supernet::engine::template::ChatTemplate::from_gguf(&model.file, &tok).expect("template");
    let be = supernet::engine::cpu::CpuBackend::new(2);
    model.prepare(&be);
    let scheduler = supernet::engine::batch::Scheduler::new(
        Arc::clone(&model),
        Arc::clone(&tok),
        supernet::engine::batch::BatchConfig {
            max_batch,
            ..supernet::engine::batch::BatchConfig::default()
        },
    );
    (model, tok, template, be, scheduler)
}
