// y[M, N] = x[M, K] · w[N, K]ᵀ for weights repacked from GGUF Q8_0 / Q4_1
// blocks of 32 (see `quant.rs`, `matvec_q.wgsl`); activations stay f32.
// Q8_0 block = 9 words: [d (f32 bits), 8 words of 4 × i8].
// Q4_1 block = 6 words: [d, m (f32 bits), 4 words: byte i holds value i in
// its low nibble and value i + 16 in its high nibble]; value = q·d + m.
// The tiled matmul for prefill: 64×64 output tile per workgroup of 16×16
// threads, 4×4 register tile per thread (rows lid.y + 16i, columns
// lid.x + 16j). K is walked one quant block (32) at a time: the 64×32 x tile
// and the 64 weight blocks of the tile's columns are dequantized into
// workgroup memory once per step (2 × 8 KiB), with the same f32 formula as
// `matvec_q` (q·d, or q·d + m), so the weights are bit-identical and only
// the summation order differs. A row of 8 vec4 chunks is stored at
// row·8 + (chunk ^ (row & 7)) so that neighbouring rows/columns hit
// different banks. K must be a multiple of 32.
// mode 0: M = step.t rows of x; mode 1: only row step.t-1 of x (→ y row 0).
// fmt 0: Q8_0, 1: Q4_1. Same uniform layout and bindings as `matvec_q`
// (bias unused), so the two share a bind group.
struct P { n: u32, k: u32, mode: u32, fmt: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> As: array<vec4<f32>, 512>;
var<workgroup> Bs: array<vec4<f32>, 512>;

fn q8(word: u32) -> vec4<f32> {
    let q = bitcast<i32>(word);
    return vec4<f32>(f32(extractBits(q, 0u, 8u)), f32(extractBits(q, 8u, 8u)),
                     f32(extractBits(q, 16u, 8u)), f32(extractBits(q, 24u, 8u)));
}

fn q4(word: u32, sh: u32) -> vec4<f32> {
    return vec4<f32>(f32((word >> sh) & 15u), f32((word >> (8u + sh)) & 15u),
                     f32((word >> (16u + sh)) & 15u), f32((word >> (24u + sh)) & 15u));
}

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
    var m = step.t;
    var xoff = 0u;
    if (p.mode == 1u) { m = 1u; xoff = step.t - 1u; }
    let n = p.n;
    let k4 = p.k / 4u;
    let nb = p.k / 32u;
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    // Weight loader: 4 threads per column (one block each step), each
    // dequantizing two 4-value chunks: Q8_0 chunks 2s, 2s+1 (two words);
    // Q4_1 chunks s, s+4 (low and high nibbles of word s).
    let lc = li / 4u;
    let s = li % 4u;
    let gc = col0 + lc;
    var j0 = 2u * s;
    var j1 = 2u * s + 1u;
    if (p.fmt == 1u) { j0 = s; j1 = s + 4u; }
    let bsw = lc & 7u;
    let sx = lid.x & 7u;
    let sy = lid.y & 7u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    for (var b = 0u; b < nb; b++) {
        for (var h = 0u; h < 2u; h++) {
            let idx = li + h * 256u;
            let r = idx / 8u;
            let c = idx % 8u;
            let gr = row0 + r;
            var av = vec4<f32>(0.0);
            if (gr < m) { av = x[(gr + xoff) * k4 + b * 8u + c]; }
            As[r * 8u + (c ^ (r & 7u))] = av;
        }
        var c0 = vec4<f32>(0.0);
        var c1 = vec4<f32>(0.0);
        if (gc < n) {
            let blk = gc * nb + b;
            if (p.fmt == 0u) {
                let base = blk * 9u;
                let d = bitcast<f32>(w[base]);
                c0 = q8(w[base + 1u + j0]) * d;
                c1 = q8(w[base + 1u + j1]) * d;
            } else {
                let base = blk * 6u;
                let d = bitcast<f32>(w[base]);
                let mn = bitcast<f32>(w[base + 1u]);
                let word = w[base + 2u + s];
                c0 = q4(word, 0u) * d + vec4<f32>(mn);
                c1 = q4(word, 4u) * d + vec4<f32>(mn);
            }
        }
        Bs[lc * 8u + (j0 ^ bsw)] = c0;
        Bs[lc * 8u + (j1 ^ bsw)] = c1;
        workgroupBarrier();
        for (var kk = 0u; kk < 8u; kk++) {
            let bk = kk ^ sx;
            let b0 = Bs[(lid.x) * 8u + bk];
            let b1 = Bs[(lid.x + 16u) * 8u + bk];
            let b2 = Bs[(lid.x + 32u) * 8u + bk];
            let b3 = Bs[(lid.x + 48u) * 8u + bk];
            let ak = kk ^ sy;
            for (var i = 0u; i < 4u; i++) {
                let a = As[(lid.y + 16u * i) * 8u + ak];
                acc[i] += vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + 16u * i;
        if (r < m) {
            for (var j = 0u; j < 4u; j++) {
                let c = col0 + lid.x + 16u * j;
                if (c < n) { y[r * n + c] = acc[i][j]; }
            }
        }
    }
}
