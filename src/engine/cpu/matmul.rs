//! Quantized matrix products on the CPU: activations are quantized once per call to each
//! weight type's partner format, then the rows of all jobs are shared out among the threads.

use crate::engine::backend::MatmulJob;
use crate::engine::quant::{quantize_activations, ActType, Kernels};

use super::pool::ThreadPool;
use super::OutPtr;

/// A raw output pointer that threads write disjoint elements through.
pub fn matmul(pool: &ThreadPool, k: &Kernels, x: &[f32], n_tokens: usize, jobs: &mut [MatmulJob<'_>]) {
    if n_tokens == 0 || jobs.is_empty() {
        return;
    }
    let cols = x.len() / n_tokens;
    let mut acts: Vec<(ActType, Vec<u8>)> = Vec::new();
    for j in jobs.iter() {
        assert_eq!(j.w.cols, cols, "matmul: {:?} does not take {cols}-wide input", j.w);
        assert_eq!(j.out.len(), j.w.rows * n_tokens, "matmul: output size for {:?}", j.w);
        let at = j.w.ty.act_type().expect("weights are checked at load");
        if !acts.iter().any(|(t, _)| *t == at) {
            acts.push((at, quantize_rows(pool, at, x, n_tokens)));
        }
    }

    struct Target<'a> {
        dot: crate::engine::quant::DotFn,
        dot4: Option<crate::engine::quant::Dot4Fn>,
        w: &'a crate::engine::model::weights::Weight,
        act: &'a [u8],
        act_row: usize,
        out: OutPtr,
        first_row: usize,
    }
    let mut targets = Vec::with_capacity(jobs.len());
    let mut first_row = 0;
    for j in jobs.iter_mut() {
        let at = j.w.ty.act_type().expect("weights are checked at load");
        let act = &acts.iter().find(|(t, _)| *t == at).expect("quantized above").1;
        targets.push(Target {
            dot: k.dot(j.w.ty),
            dot4: k.dot4(j.w.ty),
            w: j.w,
            act,
            act_row: at.row_bytes(cols),
            out: OutPtr(j.out.as_mut_ptr()),
            first_row,
        });
        first_row += j.w.rows;
    }
    let total_rows = first_row;
    // Chunks are whole groups of four rows so the four-row kernels apply.
    let chunk = (256 / n_tokens).clamp(4, 32) / 4 * 4;

    pool.for_chunks(total_rows, chunk, &|range| {
        let mut r = range.start;
        while r < range.end {
            let t = targets.iter().rev().find(|t| t.first_row <= r).expect("row belongs to a job");
            let local = r - t.first_row;
            let group = match t.dot4 {
                Some(f) if r + 4 <= range.end && local + 4 <= t.w.rows => Some(f),
                _ => None,
            };
            let rows = if group.is_some() { 4 } else { 1 };
            let w = &t.w.data()[local * t.w.row_bytes()..(local + rows) * t.w.row_bytes()];
            for tok in 0..n_tokens {
                let a = &t.act[tok * t.act_row..(tok + 1) * t.act_row];
                // SAFETY: rows (tok, local..local + rows) are written by this thread only.
                let out = unsafe { t.out.get().add(tok * t.w.rows + local) };
                match group {
                    Some(f) => {
                        let mut v = [0.0f32; 4];
                        f(w, a, cols, &mut v);
                        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), out, 4) };
                    }
                    None => unsafe { *out = (t.dot)(w, a, cols) },
                }
            }
            r += rows;
        }
    });
}

fn quantize_rows(pool: &ThreadPool, at: ActType, x: &[f32], n_tokens: usize) -> Vec<u8> {
    let cols = x.len() / n_tokens;
    let row = at.row_bytes(cols);
    let mut buf = vec![0u8; row * n_tokens];
    if n_tokens < 8 {
        for (o, x) in buf.chunks_exact_mut(row).zip(x.chunks_exact(cols)) {
            quantize_activations(at, x, o);
        }
        return buf;
    }
    let out = OutPtr(buf.as_mut_ptr().cast());
    pool.for_chunks(n_tokens, 4, &|range| {
        for t in range {
            // SAFETY: each token's row is written by one thread only.
            let o = unsafe { std::slice::from_raw_parts_mut(out.get().cast::<u8>().add(t * row), row) };
            quantize_activations(at, &x[t * cols..(t + 1) * cols], o);
        }
    });
    buf
}
