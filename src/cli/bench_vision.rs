//! `supernet bench vision`: the vision tower's encode time per image (the median of
//! `--runs` runs; decoding and preprocessing, timed once, apart), and the rows each image
//! becomes. Compare with llama.cpp's `mtmd_encode_chunk` times, which
//! `tests/data/vision/mtmd_ref.cpp` records (`encode_ms`), on the same machine and load.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::bench::percentile;
use crate::engine::cpu::default_threads;
use crate::engine::vision::preprocess::{prepare, Rgb};
use crate::engine::vision::tower::VisionTower;
use crate::engine::{Backend, CpuBackend};

#[derive(Args, Debug)]
pub struct VisionBenchArgs {
    /// The vision tower (mmproj GGUF) to measure.
    #[arg(long)]
    pub mmproj: PathBuf,
    /// Images to encode (PNG, JPEG or WebP); repeat the flag.
    #[arg(long = "image", required = true)]
    pub images: Vec<PathBuf>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs per image, after one untimed.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct ImageReport {
    image: String,
    width: usize,
    height: usize,
    rows: usize,
    /// Decoding and preprocessing, once.
    prepare_ms: f64,
    encode_ms_p50: f64,
}

pub fn run(a: VisionBenchArgs) -> anyhow::Result<()> {
    let tower = VisionTower::load(&a.mmproj)?;
    let be = CpuBackend::new(a.threads.unwrap_or_else(default_threads));
    be.prepare(&tower.matrices());
    let mut reports = Vec::new();
    for path in &a.images {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let t = Instant::now();
        let img = Rgb::decode(&bytes)?;
        let p = prepare(&img, &tower.config);
        let prepare_ms = t.elapsed().as_secs_f64() * 1e3;
        let encode = || -> usize {
            p.inputs
                .iter()
                .map(|i| tower.encode(&be, i).rows.len())
                .sum()
        };
        let values = encode() / tower.config.projection_dim;
        let mut ms = Vec::with_capacity(a.runs);
        for _ in 0..a.runs.max(1) {
            let t = Instant::now();
            encode();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let r = ImageReport {
            image: path.display().to_string(),
            width: img.width,
            height: img.height,
            rows: values,
            prepare_ms,
            encode_ms_p50: {
                ms.sort_by(f64::total_cmp);
                percentile(&ms, 0.5)
            },
        };
        println!(
            "{}: {}x{} -> {} rows, decode and preprocess {:.2} ms, encode {:.2} ms (median of {})",
            r.image, r.width, r.height, r.rows, r.prepare_ms, r.encode_ms_p50, a.runs
        );
        reports.push(r);
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({ "projector": tower.config.projector.name(), "images": reports })
        );
    }
    Ok(())
}
