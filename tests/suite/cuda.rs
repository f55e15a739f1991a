//! The GPU path against the CPU backend.
//!
//! `kernels_compile_for_hopper` runs everywhere: NVRTC (the PyPI wheel that
//! `scripts/fetch-cuda-tools.sh` puts under `target/cuda-wheels`) compiles every kernel,
//! and `ptxas` checks the PTX for sm_90 (no spills). The rest need an NVIDIA GPU and are
//! ignored elsewhere; on a CUDA machine run them with `cargo test --release --test suite cuda:: -- --ignored`.
//!
//! Every kernel check draws fresh random inputs, poisons the outputs (NaN) before the run
//! and fails on any non-finite value. Tolerances (‖gpu − cpu‖ / ‖cpu‖): 1e-4 where the GPU
//! computes what the CPU computes (Q4_0/Q4_1/Q8_0 products, whose Q8 activations are the
//! same bits on both; attention; RoPE; norms), 3e-2 for K-quant and IQ4_XS products (the CPU
//! quantizes their activations in 256-element Q8_K blocks, the GPU in 32-element blocks).

use crate::common;

use std::path::PathBuf;
use std::process::Command;

use supernet::engine::backend::{Arithmetic, AttentionShape, MatmulJob, SeqAttention};
use supernet::engine::cuda::gpu::{DevBuf, Gpu};
use supernet::engine::cuda::ops::{self, Epilogue, GpuMat, Heads, Input, Rope, Rows};
use supernet::engine::cuda::{compile, CudaModel, CudaOptions, Pick, Picked};
use supernet::engine::kv::{KvStore, BLOCK};
use supernet::engine::model::config::RopeConfig;
use supernet::engine::model::weights::Weight;
use supernet::engine::quant::{dequantize_row, GgmlType};
use supernet::engine::{Backend, CpuBackend, Model};

/// Where `scripts/fetch-cuda-tools.sh` leaves NVRTC and ptxas, unless the environment says.
fn cuda_wheels() -> PathBuf {
    common::repo().join("target/cuda-wheels/nvidia/cu13")
}

fn use_cuda_libs() {
    if std::env::var_os("SUPERNET_CUDA_LIB_DIRS").is_none() {
        std::env::set_var("SUPERNET_CUDA_LIB_DIRS", cuda_wheels().join("lib"));
    }
}

#[test]
fn kernels_compile_for_hopper() {
    use_cuda_libs();
    assert!(
        supernet::engine::cuda::gpu::nvrtc_present(),
        "NVRTC not found: run scripts/fetch-cuda-tools.sh (or set SUPERNET_CUDA_LIB_DIRS)"
    );
    let ptx = compile::compile("compute_90").expect("every kernel compiles");
    let src = ptx.to_src();
    for k in compile::KERNELS {
        assert!(
            src.contains(&format!(".entry {k}(")),
            "kernel {k} is missing from the PTX"
        );
    }
    let ptxas = cuda_wheels().join("bin/ptxas");
    assert!(
        ptxas.is_file(),
        "{} not found: run scripts/fetch-cuda-tools.sh",
        ptxas.display()
    );
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("kernels.ptx");
    std::fs::write(&file, src).expect("writing the PTX");
    let out = Command::new(&ptxas)
        .args(["-arch=sm_90", "-v", "-o"])
        .arg(dir.path().join("k.cubin"))
        .arg(&file)
        .output()
        .expect("running ptxas");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ptxas failed:\n{log}");
    println!("{log}");
    for line in log.lines().filter(|l| l.contains("spill")) {
        assert!(
            line.contains("0 bytes spill stores, 0 bytes spill loads"),
            "a kernel spills: {line}"
        );
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// Fresh random seeds per run (the time), printed so a failure can be replayed.
fn rng(tag: u64) -> Rng {
    let seed = std::env::var("SUPERNET_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("seed {seed} (SUPERNET_TEST_SEED to replay)");
    Rng((seed ^ tag.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1)
}

fn gpu() -> Gpu {
    use_cuda_libs();
    Gpu::open(0).expect("a CUDA device")
}

fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    assert!(
        got.iter().all(|v| v.is_finite()),
        "a non-finite output (unwritten or NaN)"
    );
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

fn read(g: &Gpu, b: &DevBuf, n: usize) -> Vec<f32> {
    g.read(b.ptr, n).expect("reading back")
}

/// Random blocks of `ty` with sane f16 scales (random bits elsewhere are all valid).
fn random_weights(r: &mut Rng, ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let mut data: Vec<u8> = (0..rows * ty.row_bytes(cols))
        .map(|_| r.next() as u8)
        .collect();
    let scale = |at: usize, data: &mut Vec<u8>, r: &mut Rng| {
        let v = half::f16::from_f32(r.f() * 0.05);
        data[at..at + 2].copy_from_slice(&v.to_bits().to_le_bytes());
    };
    let bb = ty.block_bytes();
    for b in 0..data.len() / bb {
        let o = b * bb;
        match ty {
            GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::IQ4XS => scale(o, &mut data, r),
            GgmlType::Q4_1 | GgmlType::Q4K => {
                scale(o, &mut data, r);
                scale(o + 2, &mut data, r);
            }
            GgmlType::Q6K => scale(o + 208, &mut data, r),
            _ => unreachable!(),
        }
    }
    data
}

const TYPES: [GgmlType; 6] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q8_0,
    GgmlType::Q4K,
    GgmlType::Q6K,
    GgmlType::IQ4XS,
];

fn tolerance(ty: GgmlType) -> f64 {
    match ty {
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 1e-4,
        _ => 3e-2,
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn matvec_matches_cpu_for_every_type_width_and_epilogue() {
    let g = gpu();
    for name in ops::MATVEC_KERNELS {
        g.allow_shared(name, ops::MATVEC_SHARED).unwrap();
    }
    let cpu = CpuBackend::new(2);
    let mut r = rng(1);
    for ty in TYPES {
        for &k in &[512usize, 1536] {
            let rows = 96;
            let data = random_weights(&mut r, ty, rows, k);
            let w = Weight::from_bytes("w", ty, rows, k, &data).unwrap();
            let m = GpuMat::upload(&g, ty, rows, k, &data).unwrap();
            for &n in &[1usize, 3, 8, 13] {
                for norm in [false, true] {
                    for ep in [Epilogue::Store, Epilogue::Add, Epilogue::Swiglu] {
                        let x = r.vec(n * k);
                        let nw = r.vec(k);
                        let base = r.vec(n * rows);
                        // CPU: optional norm, the product, then the epilogue.
                        let mut h = x.clone();
                        if norm {
                            cpu.rms_norm(&mut h, k, &nw, 1e-5);
                        }
                        let mut want = vec![0.0; n * rows];
                        cpu.matmul(
                            &h,
                            n,
                            &mut [MatmulJob {
                                w: &w,
                                out: &mut want,
                            }],
                            Arithmetic::Invariant,
                        );
                        let (out_rows, want) = match ep {
                            Epilogue::Store => (rows, want),
                            Epilogue::Add => {
                                (rows, want.iter().zip(&base).map(|(a, b)| a + b).collect())
                            }
                            Epilogue::Swiglu => {
                                let half = rows / 2;
                                let mut gate: Vec<f32> =
                                    want.chunks(rows).flat_map(|c| c[..half].to_vec()).collect();
                                let up: Vec<f32> =
                                    want.chunks(rows).flat_map(|c| c[half..].to_vec()).collect();
                                cpu.swiglu(&mut gate, &up);
                                (half, gate)
                            }
                        };
                        let xb = g.upload(&x).unwrap();
                        let nb = g.upload(&nw).unwrap();
                        let out = g.alloc(n * out_rows * 4).unwrap();
                        if ep == Epilogue::Add {
                            g.write(out.ptr, &base).unwrap();
                        } else {
                            g.fill(&out, 0xFF).unwrap();
                        }
                        let input = Input {
                            ptr: xb.ptr,
                            ld: k,
                            ncols: n,
                            norm: norm.then_some((nb.ptr, 1e-5)),
                        };
                        ops::matvec(&g, &m, input, out.ptr, out_rows, ep).unwrap();
                        let got = read(&g, &out, n * out_rows);
                        let e = rel_err(&got, &want);
                        println!(
                            "{} k={k} n={n} norm={norm} {ep:?}: rel err {e:.2e}",
                            ty.name()
                        );
                        assert!(
                            e < tolerance(ty),
                            "{} k={k} n={n} norm={norm} {ep:?}: rel err {e:.2e}",
                            ty.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn embedding_lookup_matches_dequantize() {
    let g = gpu();
    let mut r = rng(2);
    for ty in TYPES {
        let (rows, k) = (40, 512);
        let data = random_weights(&mut r, ty, rows, k);
        let m = GpuMat::upload(&g, ty, rows, k, &data).unwrap();
        let toks: Vec<i32> = (0..7).map(|_| (r.next() % rows as u64) as i32).collect();
        let tb = g.upload(&toks).unwrap();
        let out = g.alloc(toks.len() * k * 4).unwrap();
        g.fill(&out, 0xFF).unwrap();
        ops::embed(&g, &m, tb.ptr, toks.len(), out.ptr).unwrap();
        let got = read(&g, &out, toks.len() * k);
        let rb = ty.row_bytes(k);
        let mut want = vec![0.0; toks.len() * k];
        for (i, &t) in toks.iter().enumerate() {
            dequantize_row(ty, &data[t as usize * rb..][..rb], &mut want[i * k..][..k]);
        }
        let e = rel_err(&got, &want);
        println!("embed {}: rel err {e:.2e}", ty.name());
        assert!(e < 1e-6, "embed {}: rel err {e:.2e}", ty.name());
    }
}

/// A random cache of `len` positions for one sequence through a shuffled block table,
/// the same on the CPU store and the device (keys and values f16-rounded by both).
struct Cache {
    store: KvStore,
    table: Vec<u32>,
    k: DevBuf,
    v: DevBuf,
}

fn random_cache(g: &Gpu, r: &mut Rng, len: usize, kd: usize) -> Cache {
    let nb = len.div_ceil(BLOCK) + 3;
    let mut table: Vec<u32> = (0..nb as u32).collect();
    for i in (1..table.len()).rev() {
        table.swap(i, (r.next() % (i as u64 + 1)) as usize);
    }
    let mut store = KvStore::new(1, kd, kd);
    store.grow_to(nb);
    let (k, v) = (r.vec(len * kd), r.vec(len * kd));
    store.write(0, &table, 0, &k, &v);
    let mut kh = vec![0u16; (nb + 1) * BLOCK * kd];
    let mut vh = kh.clone();
    for p in 0..len {
        let at = table[p / BLOCK] as usize * BLOCK + p % BLOCK;
        for i in 0..kd {
            kh[at * kd + i] = half::f16::from_f32(k[p * kd + i]).to_bits();
            vh[at * kd + i] = half::f16::from_f32(v[p * kd + i]).to_bits();
        }
    }
    Cache {
        store,
        k: g.upload(&kh).unwrap(),
        v: g.upload(&vh).unwrap(),
        table,
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn attention_matches_cpu_for_lengths_splits_and_gqa() {
    let g = gpu();
    let cpu = CpuBackend::new(2);
    let mut r = rng(3);
    for &(n_head, n_head_kv, hd) in &[(9usize, 3usize, 64usize), (8, 8, 128), (16, 2, 256)] {
        for &len in &[1usize, 5, 16, 17, 100, 1000] {
            let h = Heads {
                n_head,
                n_head_kv,
                head_dim: hd,
            };
            let kd = n_head_kv * hd;
            let c = random_cache(&g, &mut r, len, kd);
            // The last `n` positions as query rows (a prefill chunk; n = 1 is a decode step).
            let n = len.min(4);
            let q = r.vec(n * n_head * hd);
            let mut want = vec![0.0; n * n_head * hd];
            let shape = AttentionShape {
                n_head,
                n_head_kv,
                head_dim_k: hd,
                head_dim_v: hd,
                start: len - n,
                n_tokens: n,
                causal: true,
            };
            cpu.attention(
                &q,
                &[SeqAttention {
                    kv: c.store.view(0, &c.table),
                    shape,
                }],
                Arithmetic::Invariant,
                &mut want,
            );
            let qb = g.upload(&q).unwrap();
            let pos: Vec<i32> = (len - n..len).map(|p| p as i32).collect();
            let zeros = vec![0i32; n];
            let tables: Vec<i32> = c.table.iter().map(|&b| b as i32).collect();
            let (pb, tb, ttb) = (
                g.upload(&pos).unwrap(),
                g.upload(&zeros).unwrap(),
                g.upload(&tables).unwrap(),
            );
            let rows = Rows {
                n,
                pos: pb.ptr,
                table: tb.ptr,
                tables: ttb.ptr,
            };
            for &nsplit in &[1usize, 3, ops::MAX_SPLITS] {
                let partial = g.alloc(ops::partial_floats(n, h, nsplit) * 4).unwrap();
                let counters = g.alloc(n * n_head * 4).unwrap();
                let out = g.alloc(n * n_head * hd * 4).unwrap();
                for round in 0..2 {
                    g.fill(&out, 0xFF).unwrap();
                    ops::attention(
                        &g,
                        qb.ptr,
                        c.k.ptr,
                        c.v.ptr,
                        rows,
                        h,
                        nsplit,
                        partial.ptr,
                        counters.ptr,
                        out.ptr,
                    )
                    .unwrap();
                    let got = read(&g, &out, n * n_head * hd);
                    let e = rel_err(&got, &want);
                    println!("attention heads {n_head}/{n_head_kv}x{hd} len {len} splits {nsplit} round {round}: rel err {e:.2e}");
                    assert!(e < 1e-4, "attention heads {n_head}/{n_head_kv}x{hd} len {len} splits {nsplit}: rel err {e:.2e}");
                    let left: Vec<u32> = g.read(counters.ptr, n * n_head).unwrap();
                    assert!(
                        left.iter().all(|&c| c == 0),
                        "the split counters are left at zero for the next replay"
                    );
                }
            }
        }
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn qkv_post_matches_cpu_bias_norms_rope_and_cache_write() {
    let g = gpu();
    let cpu = CpuBackend::new(2);
    let mut r = rng(4);
    for &(neox, with_norm, with_bias, with_ff, n_rot) in &[
        (false, false, false, false, 64usize),
        (true, true, false, false, 64),
        (true, false, true, true, 32),
    ] {
        let (n_head, n_head_kv, hd) = (6, 2, 64);
        let (qd, kd) = (n_head * hd, n_head_kv * hd);
        let width = qd + 2 * kd;
        let n = 5;
        let qkv = r.vec(n * width);
        let bias = r.vec(width);
        let (qn, kn) = (r.vec(hd), r.vec(hd));
        let ff: Vec<f32> = (0..n_rot / 2).map(|_| 1.0 + r.f().abs()).collect();
        let positions: Vec<usize> = (0..n).map(|_| (r.next() % 3000) as usize).collect();
        let rope = RopeConfig {
            base: 10000.0,
            n_dims: n_rot,
            neox,
            freq_scale: 0.5,
            sections: None,
        };
        // CPU: bias, per-head norms, RoPE.
        let mut rows: Vec<Vec<f32>> = qkv.chunks(width).map(|c| c.to_vec()).collect();
        for row in &mut rows {
            if with_bias {
                row.iter_mut().zip(&bias).for_each(|(x, b)| *x += b);
            }
        }
        let mut q: Vec<f32> = rows.iter().flat_map(|row| row[..qd].to_vec()).collect();
        let mut k: Vec<f32> = rows
            .iter()
            .flat_map(|row| row[qd..qd + kd].to_vec())
            .collect();
        let v: Vec<f32> = rows
            .iter()
            .flat_map(|row| row[qd + kd..].to_vec())
            .collect();
        if with_norm {
            cpu.rms_norm(&mut q, hd, &qn, 1e-6);
            cpu.rms_norm(&mut k, hd, &kn, 1e-6);
        }
        let ffs = with_ff.then_some(ff.as_slice());
        let rope_pos: Vec<_> = positions
            .iter()
            .map(|&p| supernet::engine::model::config::text_pos(p))
            .collect();
        cpu.rope(&mut q, hd, &rope_pos, &rope, ffs);
        cpu.rope(&mut k, hd, &rope_pos, &rope, ffs);
        // GPU: each row its own block (positions far apart), table through a shuffle.
        let nb = 3000 / BLOCK + 2;
        let table: Vec<i32> = (0..nb as i32).rev().collect();
        let up = |v: &[f32]| g.upload(v).unwrap();
        let (qkvb, bb, qnb, knb, ffb) = (up(&qkv), up(&bias), up(&qn), up(&kn), up(&ff));
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let (pb, tb, ttb) = (
            g.upload(&pos).unwrap(),
            g.upload(&vec![0i32; n]).unwrap(),
            g.upload(&table).unwrap(),
        );
        let qout = g.alloc(n * qd * 4).unwrap();
        g.fill(&qout, 0xFF).unwrap();
        let (kc, vc) = (
            g.alloc((nb + 1) * BLOCK * kd * 2).unwrap(),
            g.alloc((nb + 1) * BLOCK * kd * 2).unwrap(),
        );
        let ptr = |on: bool, b: &DevBuf| if on { b.ptr } else { 0 };
        let gr = Rope {
            n_rot,
            neox,
            theta_scale: rope.base.powf(-2.0 / n_rot as f32),
            freq_scale: 0.5,
            freq_factors: ptr(with_ff, &ffb),
        };
        let rows_meta = Rows {
            n,
            pos: pb.ptr,
            table: tb.ptr,
            tables: ttb.ptr,
        };
        let heads = Heads {
            n_head,
            n_head_kv,
            head_dim: hd,
        };
        ops::qkv_post(
            &g,
            qkvb.ptr,
            ptr(with_bias, &bb),
            ptr(with_norm, &qnb),
            ptr(with_norm, &knb),
            1e-6,
            gr,
            rows_meta,
            heads,
            qout.ptr,
            kc.ptr,
            vc.ptr,
        )
        .unwrap();
        let got_q = read(&g, &qout, n * qd);
        let e = rel_err(&got_q, &q);
        println!("qkv_post neox={neox} norm={with_norm} bias={with_bias} ff={with_ff}: q rel err {e:.2e}");
        assert!(e < 1e-4, "q rel err {e:.2e}");
        let kh: Vec<u16> = g.read(kc.ptr, (nb + 1) * BLOCK * kd).unwrap();
        let vh: Vec<u16> = g.read(vc.ptr, (nb + 1) * BLOCK * kd).unwrap();
        let (mut gk, mut gv) = (Vec::new(), Vec::new());
        for &p in &positions {
            let at = table[p / BLOCK] as usize * BLOCK + p % BLOCK;
            gk.extend(
                kh[at * kd..][..kd]
                    .iter()
                    .map(|&b| half::f16::from_bits(b).to_f32()),
            );
            gv.extend(
                vh[at * kd..][..kd]
                    .iter()
                    .map(|&b| half::f16::from_bits(b).to_f32()),
            );
        }
        let f16r = |x: &[f32]| {
            x.iter()
                .map(|&v| half::f16::from_f32(v).to_f32())
                .collect::<Vec<_>>()
        };
        let (ek, ev) = (rel_err(&gk, &f16r(&k)), rel_err(&gv, &f16r(&v)));
        println!("  cache k rel err {ek:.2e}, v rel err {ev:.2e}");
        assert!(
            ek < 1e-3 && ev == 0.0,
            "cache write: k {ek:.2e}, v {ev:.2e}"
        );
    }
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn argmax_and_topk_match_the_cpu_order() {
    let g = gpu();
    let mut r = rng(5);
    let (rows, vocab) = (4, 49152);
    for ties in [false, true] {
        // With ties, logits take few distinct values, so the k-th place is shared.
        let logits: Vec<f32> = (0..rows * vocab)
            .map(|_| {
                if ties {
                    (r.next() % 50) as f32 * 0.5 - 3.0
                } else {
                    r.f() * 20.0
                }
            })
            .collect();
        let lb = g.upload(&logits).unwrap();
        let ids = g.alloc(rows * 4).unwrap();
        g.fill(&ids, 0xFF).unwrap();
        ops::argmax_rows(&g, lb.ptr, rows, vocab, ids.ptr).unwrap();
        let got: Vec<i32> = g.read(ids.ptr, rows).unwrap();
        for (i, row) in logits.chunks(vocab).enumerate() {
            assert_eq!(
                got[i] as u32,
                supernet::engine::sampler::argmax(row),
                "argmax row {i} ties={ties}"
            );
        }
        for &k in &[1usize, 40, 256] {
            let (kid, kval) = (g.alloc(k * 4).unwrap(), g.alloc(k * 4).unwrap());
            for (i, row) in logits.chunks(vocab).enumerate() {
                g.fill(&kid, 0xFF).unwrap();
                ops::topk_rows(&g, lb.at(i * vocab * 4), 1, vocab, k, kid.ptr, kval.ptr).unwrap();
                let got_ids: Vec<i32> = g.read(kid.ptr, k).unwrap();
                let got_vals: Vec<f32> = g.read(kval.ptr, k).unwrap();
                let mut want: Vec<(u32, f32)> = row
                    .iter()
                    .enumerate()
                    .map(|(j, &l)| (j as u32, l))
                    .collect();
                want.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                want.truncate(k);
                let got: Vec<(u32, f32)> =
                    got_ids.iter().map(|&x| x as u32).zip(got_vals).collect();
                assert_eq!(got, want, "top-{k} of row {i} ties={ties}");
            }
        }
    }
    println!("argmax and top-k (k = 1, 40, 256, with and without ties) equal the CPU order");
}

fn cuda_model(model: &Model, opts: CudaOptions) -> CudaModel {
    CudaModel::load(gpu(), model, opts).expect("the model loads on the GPU")
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn greedy_tokens_on_the_gpu_equal_the_cpu_and_llama_cpp() {
    use_cuda_libs();
    let model = common::smollm2();
    let mut files = vec![common::reference().join("smollm2-greedy.jsonl")];
    files.push(common::repo().join("tests/data/smollm2-long-greedy.jsonl"));
    let mut cases = 0;
    for f in files {
        for line in std::fs::read_to_string(&f)
            .expect("references")
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let r: serde_json::Value = serde_json::from_str(line).expect("a reference line");
            let prompt = r["prompt"].as_str().expect("a prompt");
            let run = |backend: &str| {
                let out = Command::new(env!("CARGO_BIN_EXE_supernet"))
                    .args(["generate", "--backend", backend, "--model"])
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
                    "generate --backend {backend} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let o: serde_json::Value =
                    serde_json::from_slice(&out.stdout).expect("one JSON object");
                common::ids(&o["token_ids"])
            };
            let (gpu_ids, cpu_ids) = (run("cuda"), run("cpu"));
            let want = common::ids(&r["generated_token_ids"]);
            println!(
                "{} prompt tokens: gpu == cpu {}, gpu == llama.cpp {}",
                common::ids(&r["prompt_token_ids"]).len(),
                gpu_ids == cpu_ids,
                gpu_ids == want
            );
            assert_eq!(gpu_ids, cpu_ids, "GPU and CPU greedy tokens for {prompt:?}");
            assert_eq!(
                gpu_ids, want,
                "GPU and llama.cpp greedy tokens for {prompt:?}"
            );
            cases += 1;
        }
    }
    println!("greedy_matches_cpu: {cases} cases");
    assert!(cases >= 6);
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn batched_and_graph_decode_equal_one_sequence_at_a_time() {
    let model = Model::load(common::smollm2()).unwrap();
    let mut m = cuda_model(
        &model,
        CudaOptions {
            kv_tokens: 16 * 1024,
            ..CudaOptions::default()
        },
    );
    let mut r = rng(6);
    let vocab = model.config.vocab_size as u64;
    let (c, prompt, steps) = (11usize, 40usize, 12usize);
    let per = (prompt + steps).div_ceil(BLOCK);
    let prompts: Vec<Vec<u32>> = (0..c)
        .map(|_| (0..prompt).map(|_| (r.next() % vocab) as u32).collect())
        .collect();
    let tables: Vec<Vec<u32>> = (0..c)
        .map(|i| ((i * per) as u32..((i + 1) * per) as u32).rev().collect())
        .collect();
    let run = |m: &mut CudaModel, batched: bool, graphs: bool| -> Vec<Vec<u32>> {
        m.set_graphs(graphs);
        let mut last: Vec<u32> = prompts
            .iter()
            .zip(&tables)
            .map(
                |(p, t)| match m.run_sequence(t, 0, p, Pick::Argmax).unwrap() {
                    Picked::Token(t) => t,
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        let mut out = vec![last.clone()];
        for s in 0..steps {
            let seqs: Vec<_> = (0..c)
                .map(|i| supernet::engine::model::SeqBatch {
                    tokens: std::slice::from_ref(&last[i]),
                    start: prompt + s,
                    blocks: &tables[i],
                    slot: i,
                    logits: true,
                    images: None,
                })
                .collect();
            let picked = if batched {
                m.forward(&seqs, &vec![Pick::Argmax; c]).unwrap()
            } else {
                seqs.iter()
                    .map(|sq| {
                        m.forward(std::slice::from_ref(sq), &[Pick::Argmax])
                            .unwrap()
                            .remove(0)
                    })
                    .collect()
            };
            last = picked
                .into_iter()
                .map(|p| match p {
                    Picked::Token(t) => t,
                    other => panic!("{other:?}"),
                })
                .collect();
            out.push(last.clone());
        }
        out
    };
    let alone = run(&mut m, false, false);
    assert_eq!(
        run(&mut m, true, false),
        alone,
        "eager batched decode differs from one sequence at a time"
    );
    assert_eq!(
        run(&mut m, true, true),
        alone,
        "graph replay differs from one sequence at a time"
    );
    assert_eq!(
        run(&mut m, false, true),
        alone,
        "single-sequence graphs differ"
    );
    println!("{c} sequences x {steps} steps: batched, graphs and one-at-a-time agree");
}

#[test]
#[ignore = "needs an NVIDIA GPU: run with --ignored on a CUDA machine"]
fn tiny_models_logits_match_cpu() {
    let dir = common::reference().join("tiny-models");
    let cpu = CpuBackend::new(2);
    let names = [
        "tiny-llama-q4_0",
        "tiny-llama-q4_1",
        "tiny-llama-q8_0",
        "tiny-llama-q4_k_m",
        "tiny-llama-q6_k",
        "tiny-llama-iq4_xs",
        "tiny-qwen2-q4_k_m",
        "tiny-qwen2-q8_0",
        "tiny-qwen3-q4_k_m",
        "tiny-qwen3-q8_0",
    ];
    for name in names {
        let model = Model::load(dir.join(format!("{name}.gguf"))).unwrap();
        let mut m = match CudaModel::load(
            gpu(),
            &model,
            CudaOptions {
                kv_tokens: 4096,
                ..CudaOptions::default()
            },
        ) {
            Ok(m) => m,
            Err(e) => {
                println!("{name}: not on the GPU path ({e})");
                continue;
            }
        };
        let vocab = model.config.vocab_size as u64;
        let mut r = rng(7);
        let toks: Vec<u32> = (0..37).map(|_| (r.next() % vocab) as u32).collect();
        let mut cache = model.new_cache(Some(64));
        let blocks: Vec<u32> = (0..8).collect();
        let mut worst = 0.0f64;
        for (i, chunk) in [&toks[..30], &toks[30..31], &toks[31..32], &toks[32..]]
            .iter()
            .enumerate()
        {
            let start = cache.len();
            let want = model.forward(&cpu, &mut cache, chunk).unwrap();
            let Picked::Logits(got) = m.run_sequence(&blocks, start, chunk, Pick::Logits).unwrap()
            else {
                panic!()
            };
            let e = rel_err(&got, &want);
            worst = worst.max(e);
            println!(
                "{name} call {i} ({} tokens): logits rel err {e:.2e}",
                chunk.len()
            );
        }
        let tol = if name.contains("q4_k") || name.contains("q6_k") || name.contains("iq4") {
            5e-2
        } else {
            2e-3
        };
        assert!(
            worst < tol,
            "{name}: logits rel err {worst:.2e} over {tol:.0e}"
        );
    }
}
