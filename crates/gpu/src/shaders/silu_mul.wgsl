// h[t, i] = silu(gu[t, i]) * gu[t, m + i]: gate and up come from one fused
// [2m, d] projection.
struct P { m: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> gu: array<f32>;
@group(0) @binding(3) var<storage, read_write> h: array<f32>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = gid.x;
    let t = wid.y;
    if (i >= p.m) { return; }
    let g = gu[t * 2u * p.m + i];
    let u = gu[t * 2u * p.m + p.m + i];
    h[t * p.m + i] = g / (1.0 + exp(-g)) * u;
}
