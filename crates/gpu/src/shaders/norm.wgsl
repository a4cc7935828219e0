// RMSNorm (kind 0: x / sqrt(mean(x²) + eps) * w) or LayerNorm (kind 1:
// (x - mean) / sqrt(var + eps) * w + b), one workgroup per row.
// mode 0: rows 0..step.t; mode 1: only row step.t-1 (→ out row 0).
struct P { d: u32, mode: u32, kind: u32, eps: f32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
@group(0) @binding(4) var<storage, read> b: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

var<workgroup> red: array<f32, 256>;

fn block_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var o = 128u; o > 0u; o >>= 1u) {
        if (li < o) { red[li] += red[li + o]; }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let d = p.d;
    var src = wid.y;
    if (p.mode == 1u) { src = step.t - 1u; }
    let xb = src * d;
    let ob = wid.y * d;
    if (p.kind == 0u) {
        var s = 0.0;
        for (var i = li; i < d; i += 256u) { let v = x[xb + i]; s += v * v; }
        let tot = block_sum(li, s);
        let m = sqrt(tot / f32(d) + p.eps);
        for (var i = li; i < d; i += 256u) { out[ob + i] = x[xb + i] / m * w[i]; }
    } else {
        var s = 0.0;
        for (var i = li; i < d; i += 256u) { s += x[xb + i]; }
        let mean = block_sum(li, s) / f32(d);
        var s2 = 0.0;
        for (var i = li; i < d; i += 256u) { let c = x[xb + i] - mean; s2 += c * c; }
        let var_ = block_sum(li, s2) / f32(d);
        let m = sqrt(var_ + p.eps);
        for (var i = li; i < d; i += 256u) { out[ob + i] = (x[xb + i] - mean) / m * w[i] + b[i]; }
    }
}
