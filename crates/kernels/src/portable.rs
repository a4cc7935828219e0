//! The reference kernel, for every target. Integer block dots are exact; the
//! float operations follow the order described in the crate docs (ggml's and
//! candle's scalar order), the same as the simd128 kernel's, so both give
//! bit-identical results.

use std::ops::Range;

use crate::{QActs, QMatrix, QType, V16};

/// Exact integer dot of one weight block with one activation block.
#[inline]
pub(crate) fn block_isum(ty: QType, w: &[V16], x: &[V16]) -> i32 {
    let (x0, x1) = (&x[0].0, &x[1].0);
    let mut s = 0i32;
    match ty {
        QType::Q4_0 | QType::Q4_1 => {
            let off = if ty == QType::Q4_0 { 8 } else { 0 };
            let q = &w[0].0;
            for j in 0..16 {
                let lo = (q[j] & 0x0F) as i32 - off;
                let hi = (q[j] >> 4) as i32 - off;
                s += lo * x0[j] as i8 as i32 + hi * x1[j] as i8 as i32;
            }
        }
        QType::Q8_0 => {
            let (w0, w1) = (&w[0].0, &w[1].0);
            for j in 0..16 {
                s += w0[j] as i8 as i32 * x0[j] as i8 as i32 + w1[j] as i8 as i32 * x1[j] as i8 as i32;
            }
        }
    }
    s
}

/// Dot of weight row `r` with activation row `t`: blocks summed in order,
/// `f += (isum * d_w) * d_x (+ m_w * s_x)`, as ggml's / candle's scalar code.
pub(crate) fn dot(w: &QMatrix, r: usize, a: &QActs, t: usize) -> f32 {
    let vecs = w.ty.vecs();
    let wq = &w.qs[r * w.nb * vecs..(r + 1) * w.nb * vecs];
    let xq = &a.qs[t * a.nb * 2..(t + 1) * a.nb * 2];
    let (wd, xd) = (&w.d[r * w.nbp..(r + 1) * w.nbp], &a.d[t * a.nbp..(t + 1) * a.nbp]);
    let mut f = 0f32;
    for b in 0..w.nb {
        let isum = block_isum(w.ty, &wq[b * vecs..(b + 1) * vecs], &xq[2 * b..2 * b + 2]);
        let mut v = (isum as f32 * wd[b]) * xd[b];
        if w.ty == QType::Q4_1 {
            v += w.m[r * w.nbp + b] * a.s[t * a.nbp + b];
        }
        f += v;
    }
    f
}

/// Weight rows `rows` times every activation row: `out` is `[a.rows, rows.len()]`.
pub(crate) fn matmul(w: &QMatrix, a: &QActs, rows: Range<usize>, out: &mut [f32]) {
    for (t, row) in out.chunks_exact_mut(rows.len()).enumerate() {
        for (r, o) in rows.clone().zip(row.iter_mut()) {
            *o = dot(w, r, a, t);
        }
    }
}
