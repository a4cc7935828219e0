// y[N] = w[N, K] · x for weights repacked from GGUF Q8_0 / Q4_1 blocks of 32
// (see `quant.rs`), dequantized on the fly; activations stay f32.
// Q8_0 block = 9 words: [d (f32 bits), 8 words of 4 × i8].
// Q4_1 block = 6 words: [d, m (f32 bits), 4 words: byte i holds value i in
// its low nibble and value i + 16 in its high nibble]; value = q·d + m.
// 8 output rows per workgroup, 32 lanes per row, each lane one chunk of 4
// values (one vec4 of x) at a time, tree reduction (as `matvec`).
// mode 0: x row wid.z → y row wid.z (dispatch z = t: decode with t = 1, or
// prefill row by row); mode 1: x row step.t-1 → y row 0.
// fmt 0: Q8_0, 1: Q4_1. Workgroups may be 2-D (x + y * num_workgroups.x).
struct P { n: u32, k: u32, mode: u32, fmt: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 256>;

// Chunk j (0..8) of block b: 4 consecutive dequantized weights.
fn chunk(b: u32, j: u32) -> vec4<f32> {
    if (p.fmt == 0u) {
        let base = b * 9u;
        let d = bitcast<f32>(w[base]);
        let q = bitcast<i32>(w[base + 1u + j]);
        return vec4<f32>(f32(extractBits(q, 0u, 8u)), f32(extractBits(q, 8u, 8u)),
                         f32(extractBits(q, 16u, 8u)), f32(extractBits(q, 24u, 8u))) * d;
    }
    let base = b * 6u;
    let d = bitcast<f32>(w[base]);
    let m = bitcast<f32>(w[base + 1u]);
    let word = w[base + 2u + (j & 3u)];
    let sh = select(0u, 4u, j >= 4u);
    let q = vec4<f32>(f32((word >> sh) & 15u), f32((word >> (8u + sh)) & 15u),
                      f32((word >> (16u + sh)) & 15u), f32((word >> (24u + sh)) & 15u));
    return q * d + vec4<f32>(m);
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nw: vec3<u32>) {
    var xrow = wid.z;
    if (p.mode == 1u) { xrow = step.t - 1u; }
    let k4 = p.k / 4u;
    let nb = p.k / 32u;
    let r = li / 32u;
    let lane = li % 32u;
    let row = (wid.x + wid.y * nw.x) * 8u + r;
    var s = 0.0;
    if (row < p.n) {
        let xb = xrow * k4;
        for (var i = lane; i < k4; i += 32u) {
            s += dot(chunk(row * nb + i / 8u, i % 8u), x[xb + i]);
        }
    }
    red[li] = s;
    workgroupBarrier();
    for (var o = 16u; o > 0u; o >>= 1u) {
        if (lane < o) { red[li] += red[li + o]; }
        workgroupBarrier();
    }
    if (lane == 0u && row < p.n) {
        y[wid.z * p.n + row] = red[li];
    }
}
