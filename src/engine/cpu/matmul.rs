//! Quantized matrix products on the CPU: activations are quantized once per call to each
//! weight type's partner format, then the rows of all jobs are shared out among the threads.

use crate::engine::backend::{Arithmetic, MatmulJob};
use crate::engine::model::weights::Weight;
use crate::engine::quant::interleave::{group_bytes, GROUP};
use crate::engine::quant::{quantize_activations, ActType, DotFn, InterleavedFn, Kernels};

use super::pool::ThreadPool;
use super::OutPtr;

/// `out[t][r] = w.row(r) · x[t]` for every job, in one parallel region. Each row's result
/// is the one-row kernel's in [`Arithmetic::Invariant`]; in [`Arithmetic::Llama`] some
/// types switch to llama.cpp's batched arithmetic from `BATCHED_FROM` rows on.
pub fn matmul(
    pool: &ThreadPool,
    k: &Kernels,
    x: &[f32],
    n_tokens: usize,
    jobs: &mut [MatmulJob<'_>],
    arith: Arithmetic,
) {
    if n_tokens == 0 || jobs.is_empty() {
        return;
    }
    let cols = x.len() / n_tokens;
    let mut acts: Vec<(ActType, Vec<u8>)> = Vec::new();
    for j in jobs.iter() {
        assert_eq!(
            j.w.cols, cols,
            "matmul: {:?} does not take {cols}-wide input",
            j.w
        );
        assert_eq!(
            j.out.len(),
            j.w.rows * n_tokens,
            "matmul: output size for {:?}",
            j.w
        );
        let at = j.w.ty.act_type().expect("weights are checked at load");
        if !acts.iter().any(|(t, _)| *t == at) {
            acts.push((at, quantize_rows(pool, at, x, n_tokens)));
        }
    }

    struct Target<'a> {
        dot: DotFn,
        /// The four-row kernel and the weight's interleaved groups, where both exist.
        groups: Option<(InterleavedFn, &'a [u8])>,
        w: &'a Weight,
        act: &'a [u8],
        act_row: usize,
        out: OutPtr,
        first_row: usize,
    }
    let mut targets = Vec::with_capacity(jobs.len());
    let mut first_row = 0;
    for j in jobs.iter_mut() {
        let at = j.w.ty.act_type().expect("weights are checked at load");
        let act = &acts
            .iter()
            .find(|(t, _)| *t == at)
            .expect("quantized above")
            .1;
        let groups = k
            .interleaved(j.w.ty)
            .and_then(|f| Some((f, j.w.interleaved()?)));
        targets.push(Target {
            dot: match arith {
                Arithmetic::Llama => k.dot_for(j.w.ty, n_tokens, j.w.rows),
                Arithmetic::Invariant => k.dot(j.w.ty),
            },
            groups,
            w: j.w,
            act,
            act_row: at.row_bytes(cols),
            out: OutPtr(j.out.as_mut_ptr()),
            first_row,
        });
        first_row += j.w.rows;
    }
    let total_rows = first_row;
    // Chunks are whole groups of four rows so the interleaved kernels apply.
    let chunk = (256 / n_tokens).clamp(GROUP, 32) / GROUP * GROUP;

    pool.for_chunks(total_rows, chunk, &|range| {
        let mut group_out = Vec::new();
        let mut r = range.start;
        while r < range.end {
            let t = targets
                .iter()
                .rev()
                .find(|t| t.first_row <= r)
                .expect("row belongs to a job");
            let local = r - t.first_row;
            let grouped = local % GROUP == 0
                && local + GROUP <= t.w.rows / GROUP * GROUP
                && r + GROUP <= range.end;
            match t.groups {
                Some((f, data)) if grouped => {
                    let gb = group_bytes(t.w.ty, cols);
                    group_out.resize(n_tokens * GROUP, 0.0);
                    f(
                        &data[local / GROUP * gb..][..gb],
                        t.act,
                        t.act_row,
                        n_tokens,
                        cols,
                        &mut group_out,
                    );
                    for (tok, v) in group_out.chunks_exact(GROUP).enumerate() {
                        // SAFETY: rows (tok, local..local + 4) are written by this thread only.
                        unsafe {
                            std::ptr::copy_nonoverlapping(
                                v.as_ptr(),
                                t.out.get().add(tok * t.w.rows + local),
                                GROUP,
                            )
                        };
                    }
                    r += GROUP;
                }
                _ => {
                    let w = t.w.row(local);
                    for tok in 0..n_tokens {
                        let a = &t.act[tok * t.act_row..(tok + 1) * t.act_row];
                        // SAFETY: element (tok, local) is written by this thread only.
                        unsafe { *t.out.get().add(tok * t.w.rows + local) = (t.dot)(w, a, cols) };
                    }
                    r += 1;
                }
            }
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
            let o =
                unsafe { std::slice::from_raw_parts_mut(out.get().cast::<u8>().add(t * row), row) };
            quantize_activations(at, &x[t * cols..(t + 1) * cols], o);
        }
    });
    buf
}
