//! Acceptance: images through both tiny vision towers (`qwen3vl_merger` with the tiny
//! qwen35moe, `idefics3` with the tiny SmolVLM llama) reproduce libmtmd's references in
//! `tests/data/vision/refs/`: the prompt's tokens, every image's embeddings, the logits at
//! the last prompt position, and the greedy tokens.

use crate::common;

use std::path::{Path, PathBuf};

use supernet::engine::sampler::argmax;
use supernet::engine::tokenizer::Tokenizer;
use supernet::engine::vision::preprocess::Rgb;
use supernet::engine::vision::tower::VisionTower;
use supernet::engine::vision::{PreparedImage, MARKER};
use supernet::engine::{CpuBackend, Model};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vision")
}

fn f32s(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

struct Case {
    name: String,
    prompt: String,
    images: Vec<PathBuf>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data().join("cases.tsv")).expect("cases.tsv");
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            Case {
                name: cols[0].into(),
                prompt: cols[1].replace("\\n", "\n"),
                images: cols[2].split(',').map(|p| data().join(p)).collect(),
            }
        })
        .collect()
}

/// Largest absolute difference and how many elements differ at all.
fn compare(ours: &[f32], theirs: &[f32]) -> (f32, usize) {
    assert_eq!(ours.len(), theirs.len());
    ours.iter().zip(theirs).fold((0.0f32, 0), |(m, n), (a, b)| {
        (
            m.max((a - b).abs()),
            n + usize::from(a.to_bits() != b.to_bits()),
        )
    })
}

fn check(model_path: &Path, mmproj: &str, refs: &str) {
    let be = CpuBackend::new(2);
    let model = Model::load(model_path).expect("model");
    let tok = Tokenizer::from_gguf(&model.file).expect("tokenizer");
    let tower = VisionTower::load(data().join(mmproj)).expect("mmproj");
    tower.check_vocabulary(&tok).expect("vocabulary");
    let refs = data().join("refs").join(refs);
    let mut failures = Vec::new();
    for case in cases() {
        let r: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(refs.join(format!("{}.json", case.name))).expect("ref"),
        )
        .expect("ref json");
        let images: Vec<PreparedImage> = case
            .images
            .iter()
            .map(|p| {
                let rgb = Rgb::decode(&std::fs::read(p).expect("image")).expect("decode");
                PreparedImage::new(&rgb, &tower.config)
            })
            .collect();
        let segments: Vec<&str> = case.prompt.split(MARKER).collect();
        let shapes: Vec<_> = images.iter().map(|i| i.prepared.shape.clone()).collect();
        let mut prompt = tower.prompt(&tok, &segments, &shapes).expect("prompt");

        // The chunks as libmtmd cut them: text runs between the image runs.
        let mut want_tokens = Vec::new();
        let mut image_files = Vec::new();
        for c in r["chunks"].as_array().expect("chunks") {
            if c["type"] == "text" {
                want_tokens.extend(common::ids(&c["tokens"]));
            } else {
                let n = c["n_tokens"].as_u64().expect("n_tokens") as usize;
                want_tokens.extend(std::iter::repeat_n(0, n));
                image_files.push(c["embeddings"].as_str().expect("file").to_string());
            }
        }
        assert_eq!(prompt.tokens, want_tokens, "{}: prompt tokens", case.name);
        for i in 0..images.len() {
            tower.encode_into(&be, &images, i, &mut prompt.spans);
        }
        assert_eq!(prompt.spans.runs.len(), image_files.len());
        for (run, file) in prompt.spans.runs.iter().zip(&image_files) {
            let theirs = f32s(&refs.join(file));
            let ours = run.rows.as_deref().expect("encoded");
            let (max, n) = compare(ours, &theirs);
            println!(
                "{mmproj} {}: {file}: {} values, {n} differ, max |diff| {max:e}",
                case.name,
                ours.len()
            );
            if n != 0 {
                failures.push(format!(
                    "{}: {file}: {n} values differ (max {max:e})",
                    case.name
                ));
            }
        }

        // The language model over the chunks, each on its own as libmtmd decodes them.
        let mut cache = model.new_cache(None);
        let mut cuts: Vec<usize> = prompt
            .spans
            .runs
            .iter()
            .flat_map(|r| [r.at, r.end()])
            .collect();
        cuts.push(prompt.tokens.len());
        let mut logits = Vec::new();
        let mut at = 0;
        for cut in cuts.into_iter().filter(|&c| c > 0) {
            if cut > at {
                logits = model
                    .forward_with_images(
                        &be,
                        &mut cache,
                        &prompt.tokens[at..cut],
                        Some(&prompt.spans),
                    )
                    .expect("prompt");
                at = cut;
            }
        }
        let theirs = f32s(&refs.join(r["last_logits"].as_str().expect("logits")));
        let (max, n) = compare(&logits, &theirs);
        println!(
            "{mmproj} {}: last logits: {n} differ, max |diff| {max:e}",
            case.name
        );
        let want = common::ids(&r["generated"]);
        let mut got = Vec::new();
        for _ in 0..want.len() {
            let t = argmax(&logits);
            got.push(t);
            logits = model
                .forward_with_images(&be, &mut cache, &[t], Some(&prompt.spans))
                .expect("decode");
        }
        if got != want {
            failures.push(format!(
                "{}: greedy tokens {got:?}, llama.cpp {want:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{mmproj}:\n{}", failures.join("\n"));
}

#[test]
fn qwen3vl_tower_matches_libmtmd() {
    check(
        &common::reference().join("tiny-models/tiny-qwen35moe-q8_0.gguf"),
        "tiny-mmproj-qwen3vl.gguf",
        "qwen3vl",
    );
}

#[test]
fn idefics3_tower_matches_libmtmd() {
    check(
        &data().join("tiny-smolvlm-q8_0.gguf"),
        "tiny-mmproj-idefics3.gguf",
        "idefics3",
    );
}
