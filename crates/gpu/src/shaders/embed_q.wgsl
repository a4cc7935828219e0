// x[t, :] = dequantized table[ids[t], :] for a Q8_0 / Q4_1 table repacked as
// in `matvec_q.wgsl` (d % 32 == 0, so rows start on a block).
struct P { d: u32, fmt: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read> w: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.d) { return; }
    let t = wid.y;
    let e = ids[t] * p.d + i;
    let b = e / 32u;
    let j = e % 32u;
    var v: f32;
    if (p.fmt == 0u) {
        let q = bitcast<i32>(w[b * 9u + 1u + j / 4u]);
        v = f32(extractBits(q, (j % 4u) * 8u, 8u)) * bitcast<f32>(w[b * 9u]);
    } else {
        let word = w[b * 6u + 2u + (j % 16u) / 4u];
        let sh = (j % 4u) * 8u + select(0u, 4u, j >= 16u);
        v = f32((word >> sh) & 15u) * bitcast<f32>(w[b * 6u]) + bitcast<f32>(w[b * 6u + 1u]);
    }
    x[t * p.d + i] = v;
}
