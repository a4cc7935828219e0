//! Quantized matrix × activation kernels for Scalpel.
//!
//! GGUF weight blocks (Q4_0, Q4_1, Q8_0: 32 weights each) are repacked once
//! into aligned arrays: the quants as 16-byte aligned vectors, the per-block
//! scales (and Q4_1 mins) as `f32`, each row's scale array padded with zeros
//! to a multiple of 4 blocks. Activations are quantized per 32-block to int8
//! with an f16-rounded scale and a block sum (exactly like candle / ggml's
//! Q8_0 / Q8_1 activation blocks, so the integer block dots equal candle's).
//!
//! Every (weight row, activation row) dot product has one fixed order of
//! float operations, ggml's and candle's scalar order: for each block in
//! turn, the exact integer block dot `isum` is turned into
//! `(isum * d_w) * d_x` (`+ m_w * s_x` for Q4_1) and added to one f32 sum.
//! The SIMD kernel forms four blocks' integer dots and their four terms in
//! one f32x4 and adds the lanes in block order. So the wasm simd128 path
//! (`target_arch = "wasm32"`, `target_feature = "simd128"`) and the portable
//! path are bit-identical (native tests validate the wasm math), and both
//! equal candle's scalar Q4_1 kernel bit for bit. That order matters more
//! than it seems: a different (equally valid) summation order flips a few
//! int8 activation roundings downstream, and over 30 layers that moved the
//! default model's logits by up to ~1.0. Decode (one activation row) and
//! prefill (many rows, tiled four activation rows per loaded weight row)
//! share the per-pair order, so a token's output does not depend on how many
//! rows were multiplied at once.
//!
//! `exact.rs` multiplies f32 activations by the same blocks dequantized in
//! registers: the f32 path's numbers at quantized storage.
//!
//! No model logic lives here.

// The threaded wasm build is nightly-only anyway (std rebuilt with atomics):
// its helpers wait with `memory.atomic.wait32` (`gang.rs`).
#![cfg_attr(all(feature = "threads", target_arch = "wasm32", target_feature = "atomics"), feature(stdarch_wasm_atomic_wait))]

use std::fmt;
use std::ops::Range;

use half::f16;

mod exact;
pub use exact::matmul_exact_shared;
mod exp;
pub use exp::{exp_shifted, exp_shifted_portable};
#[cfg(all(feature = "threads", target_arch = "wasm32", target_feature = "atomics"))]
pub mod gang;
mod portable;
mod silu;
pub use silu::{silu_mul, silu_mul_portable};
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;

/// Weights (and activations) per block.
pub const QK: usize = 32;

/// Weight block types the kernels support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QType {
    /// `w = d * (q - 8)`, q in 0..16 (4 bits), f16 `d`.
    Q4_0,
    /// `w = d * q + m`, q in 0..16, f16 `d` and `m`.
    Q4_1,
    /// `w = d * q`, q in -128..128 (i8), f16 `d`.
    Q8_0,
}

impl QType {
    /// Bytes of one GGUF block.
    pub fn gguf_block_bytes(self) -> usize {
        match self {
            QType::Q4_0 => 18,
            QType::Q4_1 => 20,
            QType::Q8_0 => 34,
        }
    }
    /// 16-byte quant vectors per repacked block.
    fn vecs(self) -> usize {
        match self {
            QType::Q4_0 | QType::Q4_1 => 1,
            QType::Q8_0 => 2,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            QType::Q4_0 => "Q4_0",
            QType::Q4_1 => "Q4_1",
            QType::Q8_0 => "Q8_0",
        }
    }
}

/// Why a matrix or a product was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for KernelError {}

pub type Result<T> = std::result::Result<T, KernelError>;

fn err<T>(msg: impl Into<String>) -> Result<T> {
    Err(KernelError(msg.into()))
}

/// 16 bytes, 16-byte aligned: one simd128 load.
#[repr(C, align(16))]
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct V16(pub(crate) [u8; 16]);

/// Blocks per row padded to a multiple of 4 (the scale arrays' row stride).
fn padded(nb: usize) -> usize {
    nb.div_ceil(4) * 4
}

/// A repacked quantized weight matrix `[rows, cols]` (rows = outputs).
///
/// Q4 quants: one vector per block, byte `j` holds element `j` in its low
/// nibble and element `j + 16` in its high nibble (GGUF's order). Q8_0: two
/// vectors per block, elements 0..16 and 16..32, as i8.
#[derive(Clone, Debug)]
pub struct QMatrix {
    ty: QType,
    rows: usize,
    cols: usize,
    nb: usize,
    nbp: usize,
    qs: Vec<V16>,
    d: Vec<f32>,
    m: Vec<f32>,
}

impl QMatrix {
    /// Repacks `rows * cols / 32` GGUF blocks of type `ty`, row-major.
    pub fn from_gguf(ty: QType, rows: usize, cols: usize, bytes: &[u8]) -> Result<QMatrix> {
        if rows == 0 || cols == 0 || !cols.is_multiple_of(QK) {
            return err(format!("{} matrix [{rows}, {cols}]: rows must be > 0 and cols a positive multiple of {QK}", ty.name()));
        }
        let nb = cols / QK;
        let nbp = padded(nb);
        let want = rows
            .checked_mul(nb)
            .and_then(|n| n.checked_mul(ty.gguf_block_bytes()))
            .ok_or_else(|| KernelError(format!("{} matrix [{rows}, {cols}] is too large", ty.name())))?;
        if bytes.len() != want {
            return err(format!("{} matrix [{rows}, {cols}] needs {want} bytes, got {}", ty.name(), bytes.len()));
        }
        let f = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]).to_f32();
        let mut qs = Vec::with_capacity(rows * nb * ty.vecs());
        let mut d = vec![0f32; rows * nbp];
        let mut m = if ty == QType::Q4_1 { vec![0f32; rows * nbp] } else { Vec::new() };
        for (i, blk) in bytes.chunks_exact(ty.gguf_block_bytes()).enumerate() {
            let at = (i / nb) * nbp + i % nb;
            d[at] = f(&blk[0..2]);
            let quants = match ty {
                QType::Q4_0 => &blk[2..],
                QType::Q4_1 => {
                    m[at] = f(&blk[2..4]);
                    &blk[4..]
                }
                QType::Q8_0 => &blk[2..],
            };
            for v in quants.chunks_exact(16) {
                qs.push(V16(v.try_into().expect("16-byte chunk")));
            }
        }
        Ok(QMatrix { ty, rows, cols, nb, nbp, qs, d, m })
    }

    /// The GGUF bytes back (lossless: the scales came from f16).
    pub fn to_gguf(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.rows * self.nb * self.ty.gguf_block_bytes());
        let vecs = self.ty.vecs();
        for r in 0..self.rows {
            for b in 0..self.nb {
                let at = r * self.nbp + b;
                out.extend_from_slice(&f16::from_f32(self.d[at]).to_le_bytes());
                if self.ty == QType::Q4_1 {
                    out.extend_from_slice(&f16::from_f32(self.m[at]).to_le_bytes());
                }
                for v in &self.qs[(r * self.nb + b) * vecs..(r * self.nb + b + 1) * vecs] {
                    out.extend_from_slice(&v.0);
                }
            }
        }
        out
    }

    pub fn qtype(&self) -> QType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The weights in f32, `[rows, cols]` row-major, with the same formulas
    /// as candle's / ggml's `dequantize_row_*` (bit-identical values).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, y) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, y);
        }
        out
    }

    /// Rows `rows` of the weights in f32, `[rows.len(), cols]` row-major,
    /// with [`QMatrix::dequantize`]'s values, expanding only those rows (an
    /// embedding lookup, a readout of a few unembedding rows).
    pub fn dequantize_rows(&self, rows: &[u32]) -> Result<Vec<f32>> {
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= self.rows) {
            return err(format!("row {r} of a {}-row matrix", self.rows));
        }
        let mut out = vec![0f32; rows.len() * self.cols];
        for (&r, y) in rows.iter().zip(out.chunks_exact_mut(self.cols)) {
            self.dequantize_row(r as usize, y);
        }
        Ok(out)
    }

    /// The portable dequantization, whatever the target (to compare against
    /// the SIMD one).
    pub fn dequantize_portable(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, y) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row_portable(r, y);
        }
        out
    }

    fn dequantize_row(&self, r: usize, y: &mut [f32]) {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        simd128::dequantize_row(self, r, y);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        self.dequantize_row_portable(r, y);
    }

    fn dequantize_row_portable(&self, r: usize, y: &mut [f32]) {
        for (b, yb) in y.chunks_exact_mut(QK).enumerate() {
            yb.copy_from_slice(&self.block_f32(r, b));
        }
    }

    /// Block `b` of row `r`'s integer quants as f32 (exact): Q4_0 `q − 8`,
    /// Q4_1 `q`, Q8_0 `q`; the weights are these times `d` (plus `m`).
    #[inline(always)]
    pub(crate) fn block_quants(&self, r: usize, b: usize) -> [f32; QK] {
        let i = r * self.nb + b;
        let mut y = [0f32; QK];
        match self.ty {
            QType::Q4_0 | QType::Q4_1 => {
                let q = &self.qs[i].0;
                let off = if self.ty == QType::Q4_0 { 8 } else { 0 };
                for j in 0..16 {
                    y[j] = ((q[j] & 0x0F) as i16 - off) as f32;
                    y[j + 16] = ((q[j] >> 4) as i16 - off) as f32;
                }
            }
            QType::Q8_0 => {
                for (h, v) in self.qs[2 * i..2 * i + 2].iter().enumerate() {
                    for j in 0..16 {
                        y[h * 16 + j] = v.0[j] as i8 as f32;
                    }
                }
            }
        }
        y
    }

    /// Block `b` of row `r` in f32 with candle's / ggml's formulas
    /// (`dequantize_row_*`): Q4_0 `(q − 8)·d`, Q4_1 `q·d + m`, Q8_0 `q·d`.
    #[inline(always)]
    pub(crate) fn block_f32(&self, r: usize, b: usize) -> [f32; QK] {
        let at = r * self.nbp + b;
        let i = r * self.nb + b;
        let d = self.d[at];
        let mut y = [0f32; QK];
        match self.ty {
            QType::Q4_0 | QType::Q4_1 => {
                let q = &self.qs[i].0;
                let m = if self.ty == QType::Q4_1 { self.m[at] } else { 0.0 };
                for j in 0..16 {
                    let (lo, hi) = ((q[j] & 0x0F) as i16, (q[j] >> 4) as i16);
                    if self.ty == QType::Q4_0 {
                        y[j] = (lo - 8) as f32 * d;
                        y[j + 16] = (hi - 8) as f32 * d;
                    } else {
                        y[j] = lo as f32 * d + m;
                        y[j + 16] = hi as f32 * d + m;
                    }
                }
            }
            QType::Q8_0 => {
                for (h, v) in self.qs[2 * i..2 * i + 2].iter().enumerate() {
                    for j in 0..16 {
                        y[h * 16 + j] = v.0[j] as i8 as f32 * d;
                    }
                }
            }
        }
        y
    }

    /// `out[t * rows + r] = Σ_k w[r, k] * x[t, k]` with `x` quantized.
    /// `out` must hold `acts.rows() * self.rows()` numbers.
    pub fn matmul(&self, acts: &QActs, out: &mut [f32]) -> Result<()> {
        matmul_shared(&[self], acts, &mut [out])
    }

    /// The portable kernel, whatever the target (to compare against the SIMD one).
    pub fn matmul_portable(&self, acts: &QActs, out: &mut [f32]) -> Result<()> {
        self.check(acts, out)?;
        portable::matmul(self, acts, 0..self.rows, out);
        Ok(())
    }

    /// Quantizes `x` (`[n, cols]` row-major) and multiplies: `out` is `[n, rows]`.
    pub fn matmul_f32(&self, x: &[f32], out: &mut [f32]) -> Result<()> {
        let acts = QActs::quantize(x, self.cols)?;
        self.matmul(&acts, out)
    }

    fn check(&self, acts: &QActs, out: &[f32]) -> Result<()> {
        if acts.cols != self.cols {
            return err(format!("activations have {} columns; the matrix has {}", acts.cols, self.cols));
        }
        if out.len() != acts.rows * self.rows {
            return err(format!("output holds {} numbers; need {} x {}", out.len(), acts.rows, self.rows));
        }
        Ok(())
    }
}

/// The products of several matrices with one input (a layer's q, k and v
/// projections, or its gate and up): `outs[i] = x @ ws[i]ᵀ`, `[n, ws[i].rows]`.
/// The activations are quantized once by the caller, and the matrices' rows
/// are one job for the threads ([`over_rows`]), so a matrix too small to
/// split on its own (SmolLM2's 192-row k and v) shares the threads with the
/// others. Each output's bits are those of [`QMatrix::matmul`] of its own
/// matrix: no pair's operations depend on which rows share a piece.
pub fn matmul_shared(ws: &[&QMatrix], acts: &QActs, outs: &mut [&mut [f32]]) -> Result<()> {
    check_shared(ws, outs.len(), |w, i| w.check(acts, &outs[i][..]))?;
    over_rows(ws, acts.rows, outs, |w, rows, out| {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        simd128::matmul(w, acts, rows, out);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        portable::matmul(w, acts, rows, out);
    });
    Ok(())
}

/// One output per matrix, one input width, and each matrix's own check.
fn check_shared(ws: &[&QMatrix], outs: usize, check: impl Fn(&QMatrix, usize) -> Result<()>) -> Result<()> {
    if ws.len() != outs {
        return err(format!("{} matrices but {outs} outputs", ws.len()));
    }
    if let Some(p) = ws.windows(2).find(|p| p[0].cols != p[1].cols) {
        return err(format!("matrices sharing an input must have its width; got {} and {} columns", p[0].cols, p[1].cols));
    }
    ws.iter().enumerate().try_for_each(|(i, w)| check(w, i))
}

/// Activations `[rows, cols]` quantized per 32-block: int8 quants, the f16
/// scale `d = max|x| / 127` (as f32) and `s = d * Σq` (f16, as f32), exactly
/// as candle / ggml quantize to Q8_0 / Q8_1 (`round` half away from zero).
#[derive(Clone, Debug)]
pub struct QActs {
    rows: usize,
    cols: usize,
    nb: usize,
    nbp: usize,
    /// Two vectors (elements 0..16, 16..32) per block.
    qs: Vec<V16>,
    d: Vec<f32>,
    s: Vec<f32>,
}

/// `x.round()` (half away from zero, as ggml's `roundf`), without the libm
/// call wasm makes of it (wasm's `f32.nearest` rounds half to even): `x −
/// trunc(x)` is exact, so is the comparison, and `t ± 1` is exact wherever
/// the fraction can be nonzero. NaN and ±inf come back unchanged.
#[inline(always)]
fn round_half_away(x: f32) -> f32 {
    let t = x.trunc();
    if (x - t).abs() >= 0.5 {
        t + 1f32.copysign(x)
    } else {
        t
    }
}

/// A block's largest |x|, 0 if there is none (NaN is skipped). `a.max(v)`
/// without the call wasm makes of it (f32.max treats NaN otherwise): the
/// same value, as `a` is never NaN.
fn amax_portable(xs: &[f32]) -> f32 {
    xs.iter().fold(0f32, |a, &v| if v.abs() > a { v.abs() } else { a })
}

/// A block's 32 quants (`qs[0]` elements 0..16, `qs[1]` 16..32) at inverse
/// scale `id`; returns their sum.
fn quants_portable(xs: &[f32], id: f32, qs: &mut [V16]) -> i32 {
    let mut sum = 0i32;
    for (h, v) in qs[..2].iter_mut().enumerate() {
        for j in 0..16 {
            let q = round_half_away(xs[h * 16 + j] * id) as i8;
            v.0[j] = q as u8;
            sum += q as i32;
        }
    }
    sum
}

impl QActs {
    /// `x` is row-major with `cols` columns (a multiple of 32).
    pub fn quantize(x: &[f32], cols: usize) -> Result<QActs> {
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        return Self::quantize_with(x, cols, simd128::quantize::amax, simd128::quantize::quants);
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        Self::quantize_portable(x, cols)
    }

    /// The portable quantization, whatever the target (to compare against
    /// the SIMD one).
    pub fn quantize_portable(x: &[f32], cols: usize) -> Result<QActs> {
        Self::quantize_with(x, cols, amax_portable, quants_portable)
    }

    /// Quantizes each block with `amax` (its largest |x|) and `quants` (its
    /// 32 quants at an inverse scale, returning their sum).
    fn quantize_with(
        x: &[f32],
        cols: usize,
        amax: impl Fn(&[f32]) -> f32,
        quants: impl Fn(&[f32], f32, &mut [V16]) -> i32,
    ) -> Result<QActs> {
        if cols == 0 || !cols.is_multiple_of(QK) {
            return err(format!("activation width {cols} is not a positive multiple of {QK}"));
        }
        if !x.len().is_multiple_of(cols) {
            return err(format!("{} activations do not form rows of {cols}", x.len()));
        }
        let rows = x.len() / cols;
        let nb = cols / QK;
        let nbp = padded(nb);
        let mut qs = vec![V16::default(); rows * nb * 2];
        let mut d = vec![0f32; rows * nbp];
        let mut s = vec![0f32; rows * nbp];
        for (i, (xs, q)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(2)).enumerate() {
            let dd = amax(xs) / 127.0;
            let id = if dd != 0.0 { 1.0 / dd } else { 0.0 };
            let d16 = f16::from_f32(dd);
            let sum = quants(xs, id, q);
            let at = (i / nb) * nbp + i % nb;
            d[at] = d16.to_f32();
            s[at] = f16::from_f32(f16::from_f32(sum as f32).to_f32() * d16.to_f32()).to_f32();
        }
        Ok(QActs { rows, cols, nb, nbp, qs, d, s })
    }

    /// The same quants and the same bits of every scale.
    pub fn same_bits(&self, other: &QActs) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (self.rows, self.cols) == (other.rows, other.cols)
            && self.qs == other.qs
            && bits(&self.d) == bits(&other.d)
            && bits(&self.s) == bits(&other.s)
    }

    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Multiply-adds below which a product stays on the calling thread: handing
/// out pieces costs microseconds, a 576 x 576 decode product about 50.
const PARALLEL_MIN_WORK: usize = 1 << 17;

/// A pointer to pieces of an output that threads write disjointly.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: each piece writes only its own, disjoint part (see `over_rows`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
impl OutPtr {
    // A method, so closures capture the whole (Sync) wrapper, not its field.
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Runs `kernel(w, rows, piece)` over the weight rows of every matrix in
/// `ws` times `n` activation rows, where `piece` is the `[n, rows.len()]`
/// block of that matrix's output (`outs[i]`, `[n, ws[i].rows]`). With more
/// than one thread ([`threads`]), all the matrices' rows, end to end, are
/// cut into equal pieces (multiples of 4, the kernels' row tile; about four
/// per thread, so a thread slowed by other work, or late to start, is
/// covered, and at the end one waits for at most a small piece), a piece
/// running on into the next matrix where one ends: the matrices share an
/// input width, so equal rows are equal work and no thread is left waiting
/// on a short last piece. No pair's operations depend on which rows share a
/// piece (see the crate docs), so the results are bit-identical to one
/// thread.
fn over_rows(ws: &[&QMatrix], n: usize, outs: &mut [&mut [f32]], kernel: impl Fn(&QMatrix, Range<usize>, &mut [f32]) + Sync) {
    let threads = threads();
    let total: usize = ws.iter().map(|w| w.rows).sum();
    let work: usize = ws.iter().map(|w| w.rows * w.cols * n).sum();
    if threads < 2 || total < 8 || work < PARALLEL_MIN_WORK {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            kernel(w, 0..w.rows, out);
        }
        return;
    }
    let piece = total.div_ceil(4 * threads).next_multiple_of(4);
    let pieces = total.div_ceil(piece);
    // (matrix, its rows) of each piece's segments, pieces in order: piece p
    // is rows p·piece .. (p + 1)·piece of the matrices end to end.
    let mut segments: Vec<(usize, Range<usize>)> = Vec::with_capacity(pieces + ws.len());
    let mut first = Vec::with_capacity(pieces + 1);
    let mut offset = 0; // the first row of matrix i, end to end
    for (i, w) in ws.iter().enumerate() {
        for p in offset / piece..(offset + w.rows).div_ceil(piece) {
            let rows = (p * piece).max(offset) - offset..((p + 1) * piece).min(offset + w.rows) - offset;
            if first.len() == p {
                first.push(segments.len());
            }
            segments.push((i, rows));
        }
        offset += w.rows;
    }
    first.push(segments.len());
    if n == 1 {
        let at: Vec<OutPtr> = outs.iter_mut().map(|o| OutPtr(o.as_mut_ptr())).collect();
        run_pieces(pieces, &|p| {
            for (i, rows) in segments[first[p]..first[p + 1]].iter().cloned() {
                // SAFETY: segment (i, rows) owns outs[i][rows], inside outs[i], disjoint from the others'.
                let o = unsafe { std::slice::from_raw_parts_mut(at[i].at(rows.start), rows.len()) };
                kernel(ws[i], rows, o)
            }
        });
    } else {
        let mut bufs: Vec<Vec<f32>> = segments.iter().map(|(_, rows)| vec![0f32; n * rows.len()]).collect();
        let at: Vec<OutPtr> = bufs.iter_mut().map(|b| OutPtr(b.as_mut_ptr())).collect();
        run_pieces(pieces, &|p| {
            for s in first[p]..first[p + 1] {
                let (i, rows) = segments[s].clone();
                // SAFETY: segment s alone writes its own buffer, of n * rows.len() numbers.
                let o = unsafe { std::slice::from_raw_parts_mut(at[s].at(0), n * rows.len()) };
                kernel(ws[i], rows, o)
            }
        });
        for ((i, rows), b) in segments.iter().zip(&bufs) {
            let width = ws[*i].rows;
            for (t, src) in b.chunks_exact(rows.len()).enumerate() {
                outs[*i][t * width + rows.start..t * width + rows.end].copy_from_slice(src);
            }
        }
    }
}

/// Runs `f(0) .. f(pieces - 1)`, each once, on the build's threads (see
/// [`threads`]); returns when all have returned. The engine also hands its
/// f32 slices of many-row products out this way.
pub fn run_pieces(pieces: usize, f: &(dyn Fn(usize) + Sync)) {
    #[cfg(all(feature = "threads", target_arch = "wasm32", target_feature = "atomics"))]
    return gang::run(pieces, f);
    #[cfg(all(feature = "threads", not(target_arch = "wasm32")))]
    return rayon::prelude::ParallelIterator::for_each(rayon::prelude::IntoParallelIterator::into_par_iter(0..pieces), f);
    #[allow(unreachable_code)]
    (0..pieces).for_each(f)
}

/// `[f(0), .., f(n - 1)]`, computed as [`run_pieces`] runs them (each
/// call on some thread; a call that multiplies matrices then does so on its
/// own thread): independent forward passes (a sweep's layers, a prompt
/// set's runs) share the threads this way.
pub fn map_pieces<T: Send + Sync>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let out: Vec<std::sync::OnceLock<T>> = (0..n).map(|_| std::sync::OnceLock::new()).collect();
    run_pieces(n, &|i| {
        let _ = out[i].set(f(i));
    });
    out.into_iter().map(|o| o.into_inner().expect("run_pieces runs every piece")).collect()
}

/// How many independent forward passes (a sweep's layers, a prompt set's
/// runs) run at once, one per thread, through [`map_pieces`].
/// - Natively, rayon's threads: on this 2-core VM the CLI's IOI sweep took
///   9.1 s on 2 threads against 17.7 s on 1 (quantized; f32 3.3 s against
///   6.1 s).
/// - In the threaded wasm build, 1: the products within each pass are split
///   instead. Two passes at once measured slower there (the IOI sweep in
///   Chromium: 1.06–1.14× on 2 threads, against 1.4–1.5× splitting each
///   product; cause not found: docs/kernels.md, "Threads"). And a helper
///   running a pass would run candle's ops, whose rayon calls there go to
///   rayon's fallback pool, the one thread that first used it: the caller,
///   busy waiting for the helper, a deadlock, unless each helper had its
///   own pool.
pub fn pass_threads() -> usize {
    #[cfg(target_arch = "wasm32")]
    return 1;
    #[allow(unreachable_code)]
    threads()
}

/// Threads the kernels split a product over: natively rayon's pool, in the
/// threaded wasm build the caller and the helpers that joined
/// ([`gang::helper_loop`]); 1 without the `threads` feature.
pub fn threads() -> usize {
    #[cfg(all(feature = "threads", target_arch = "wasm32", target_feature = "atomics"))]
    return gang::threads();
    #[cfg(all(feature = "threads", not(target_arch = "wasm32")))]
    return rayon::current_num_threads();
    #[allow(unreachable_code)]
    1
}

/// Runs `f` with everything [`threads`] splits on the calling thread alone
/// (inside, [`threads`] is 1), then gives the other threads back. The
/// results are the same bits either way; what changes is the time, so the
/// benchmark can measure what the other threads add in one run, in windows
/// that alternate (`scalpel_experiments::bench::thread_gain`).
/// - In the threaded wasm build: the gang's helpers stay idle
///   ([`gang::alone`]).
/// - Natively: a one-thread rayon pool, made once, runs `f` (candle's own
///   rayon calls inside it run there too).
pub fn on_one_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(all(feature = "threads", target_arch = "wasm32", target_feature = "atomics"))]
    return gang::alone(f);
    #[cfg(all(feature = "threads", not(target_arch = "wasm32")))]
    {
        static ONE: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
        if let Some(pool) = ONE.get_or_init(|| rayon::ThreadPoolBuilder::new().num_threads(1).build().ok()) {
            return pool.install(f);
        }
    }
    #[allow(unreachable_code)]
    f()
}

/// Which implementation `QMatrix::matmul` runs on this build.
pub fn implementation() -> &'static str {
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    return "simd128";
    #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
    "portable"
}

#[cfg(test)]
mod tests {
    use super::round_half_away;

    /// Equal to `f32::round` bit for bit: halves, neighbours of halves,
    /// large and tiny values, signed zeros, infinities (NaN stays NaN).
    #[test]
    fn round_half_away_is_round() {
        let mut xs = vec![0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::MAX, f32::MIN_POSITIVE, 8388608.5, 16777216.0];
        for i in -600..=600 {
            let h = i as f32 * 0.5;
            xs.extend([h, f32::from_bits(h.to_bits() + 1), f32::from_bits(h.to_bits().wrapping_sub(1))]);
        }
        let mut s = 0x9e3779b9u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            xs.push(f32::from_bits(s));
        }
        for x in xs {
            let (a, b) = (round_half_away(x), x.round());
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{x:e}: {a:e} vs {b:e}");
        }
    }
}
