//! Paths shared by the integration tests: the reference material in `../shared` and the
//! model that `scripts/fetch-model.sh` puts under `models/`.

use std::path::PathBuf;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/reference`, or `$SUPERNET_SHARED/reference`.
#[allow(dead_code)]
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
#[allow(dead_code)]
pub fn smollm2() -> PathBuf {
    let p = repo().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.is_file(),
        "{} is missing: run `scripts/fetch-model.sh` (or `make model`)",
        p.display()
    );
    p
}

#[allow(dead_code)]
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("an id array")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}
