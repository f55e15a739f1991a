//! Acceptance: dequantization of every listed format matches the `gguf` Python package's
//! `dequantize` (llama.cpp's reference) to within 1e-6, and exactly for formats whose values
//! are integers times a scale.

use crate::common;

use std::process::Command;

use supernet::engine::gguf::GgufFile;
use supernet::engine::quant::dequantize_row;

const REQUIRED: &[&str] = &[
    "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS",
];

#[test]
fn dequantization_matches_the_gguf_package() {
    let out = tempfile::tempdir().expect("tempdir");
    let script = common::repo().join("tests/gguf_dequant.py");
    let tiny = common::reference().join("tiny-models");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let run = Command::new(&python)
        .arg(&script)
        .arg(out.path())
        .arg(&tiny)
        .output()
        .expect("running python3");
    assert!(
        run.status.success(),
        "{} failed (is `pip install gguf numpy` done?): {}",
        script.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let manifest: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.path().join("manifest.json")).expect("manifest"))
            .expect("json");

    let mut covered = Vec::new();
    for m in &manifest {
        let ty = m["type"].as_str().unwrap();
        let f = GgufFile::open(m["file"].as_str().unwrap()).expect("open");
        let t = f.tensor(m["tensor"].as_str().unwrap()).expect("tensor");
        let want: Vec<f32> = std::fs::read(m["values"].as_str().unwrap())
            .expect("values")
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut got = vec![0.0f32; want.len()];
        let row = t.dims[0] as usize;
        let row_bytes = t.ty.row_bytes(row);
        for (src, dst) in t
            .data
            .chunks_exact(row_bytes)
            .zip(got.chunks_exact_mut(row))
        {
            dequantize_row(t.ty, src, dst);
        }
        let mut worst = 0.0f32;
        for (g, w) in got.iter().zip(&want) {
            worst = worst.max((g - w).abs());
        }
        // Q4_K/Q5_K compute d*sc*q - dmin*m; the package may associate differently.
        let tolerance = if ["Q4_K", "Q5_K"].contains(&ty) {
            1e-6
        } else {
            0.0
        };
        assert!(
            worst <= tolerance,
            "{ty} ({}): max difference {worst}",
            m["tensor"]
        );
        covered.push(ty.to_string());
    }
    for ty in REQUIRED {
        assert!(
            covered.iter().any(|c| c == ty),
            "no {ty} tensor was checked; covered {covered:?}"
        );
    }
}
