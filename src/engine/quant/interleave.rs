//! Row-interleaved copies of weight matrices, made once at load for the SIMD matmul.
//!
//! GGUF stores each row's blocks contiguously, so a kernel that works on four rows at once
//! reads four streams 1–2 KiB apart, which defeats the hardware prefetcher, and it must
//! gather four rows' scales one at a time. Here block `b` of rows `4g..4g+4` lies in one
//! run of bytes, read strictly forward:
//!
//! - **Q4_1** (80 bytes per block of four rows): the eight f16 `d0 m0 d1 m1 d2 m2 d3 m3`,
//!   then 32 bytes for rows 0 and 1 and 32 for rows 2 and 3. Byte `i` of a pair holds
//!   element `i` of the first row in its low nibble and of the second in its high nibble,
//!   so one mask or one shift and mask gives a row's 32 quants in element order.
//! - **Q8_0** (136 bytes): the four f16 scales `d0..d3`, then each row's 32 quants.
//!
//! The values are only moved, never changed, so the kernels' arithmetic is exactly the
//! one-row kernels'. Rows past the last full group of four stay in the original layout.

use super::GgmlType;

/// Rows per interleaved group.
pub const GROUP: usize = 4;

/// Bytes of one group of four rows of `cols` elements (the same as four plain rows).
pub fn group_bytes(ty: GgmlType, cols: usize) -> usize {
    GROUP * ty.row_bytes(cols)
}

/// The interleaved copy of the first `rows / 4 * 4` rows of `data` (`rows` rows of type
/// `ty`), or `None` when `ty` has no interleaved layout.
pub fn interleave(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Option<Vec<u8>> {
    // Bytes of scales at the head of each block.
    let head = match ty {
        GgmlType::Q4_1 => 4,
        GgmlType::Q8_0 => 2,
        _ => return None,
    };
    let rb = ty.row_bytes(cols);
    let nb = cols / 32;
    let groups = rows / GROUP;
    let mut out = Vec::with_capacity(groups * GROUP * rb);
    for g in 0..groups {
        let row = |r: usize, b: usize| {
            &data[(g * GROUP + r) * rb + b * ty.block_bytes()..][..ty.block_bytes()]
        };
        for b in 0..nb {
            for r in 0..GROUP {
                out.extend_from_slice(&row(r, b)[..head]);
            }
            if ty == GgmlType::Q4_1 {
                for pair in [0, 2] {
                    let (lo, hi) = (
                        element_nibbles(&row(pair, b)[head..]),
                        element_nibbles(&row(pair + 1, b)[head..]),
                    );
                    out.extend((0..32).map(|i| lo[i] | hi[i] << 4));
                }
            } else {
                for r in 0..GROUP {
                    out.extend_from_slice(&row(r, b)[head..]);
                }
            }
        }
    }
    Some(out)
}

/// A 4-bit block's 32 quants in element order (GGUF keeps element `j` in the low nibble of
/// byte `j` and element `j + 16` in its high nibble).
fn element_nibbles(qs: &[u8]) -> [u8; 32] {
    std::array::from_fn(|i| if i < 16 { qs[i] & 0xF } else { qs[i - 16] >> 4 })
}
