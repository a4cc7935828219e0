// y[N] = w[N, K] · x (+ bias) for one row of x (decode). 8 output rows per
// workgroup, 32 lanes per row reading consecutive vec4s, tree reduction.
// mode 0: x row 0; mode 1: x row step.t-1. Workgroups may be laid out 2-D
// (x + y * num_workgroups.x) when N/8 exceeds the dispatch limit.
struct P { n: u32, k: u32, mode: u32, has_bias: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nw: vec3<u32>) {
    var xrow = 0u;
    if (p.mode == 1u) { xrow = step.t - 1u; }
    let k4 = p.k / 4u;
    let r = li / 32u;
    let lane = li % 32u;
    let row = (wid.x + wid.y * nw.x) * 8u + r;
    var s = 0.0;
    if (row < p.n) {
        let wb = row * k4;
        let xb = xrow * k4;
        for (var i = lane; i < k4; i += 32u) {
            s += dot(w[wb + i], x[xb + i]);
        }
    }
    red[li] = s;
    workgroupBarrier();
    for (var o = 16u; o > 0u; o >>= 1u) {
        if (lane < o) { red[li] += red[li + o]; }
        workgroupBarrier();
    }
    if (lane == 0u && row < p.n) {
        var v = red[li];
        if (p.has_bias == 1u) { v += bias[row]; }
        y[row] = v;
    }
}
