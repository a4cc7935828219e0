// Causal grouped-query attention for one (query head, query row) per
// workgroup: query at absolute position step.start + t attends to keys
// 0..=that position of kv head h / (nh / nkv). Keys are walked 64 at a time
// with an online softmax (running max and sum), so any context fits in
// workgroup memory. scores = q·k / sqrt(dh) like the engine. dh <= 256.
struct P { nh: u32, nkv: u32, dh: u32, max_seq: u32, scale: f32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> q: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;
@group(0) @binding(5) var<storage, read_write> z: array<f32>;

var<workgroup> qs: array<f32, 256>;
var<workgroup> ps: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

const NEG: f32 = -3.0e38;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let h = wid.x;
    let t = wid.y;
    let dh = p.dh;
    let kvh = h / (p.nh / p.nkv);
    let qb = t * p.nh * dh + h * dh;
    for (var d = tid; d < dh; d += 64u) { qs[d] = q[qb + d]; }
    workgroupBarrier();
    let n_keys = step.start + t + 1u;
    let kbase = kvh * p.max_seq * dh;
    var m = NEG;
    var s = 0.0;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var c0 = 0u; c0 < n_keys; c0 += 64u) {
        let j = c0 + tid;
        var sc = NEG;
        if (j < n_keys) {
            var dotv = 0.0;
            let kb = kbase + j * dh;
            for (var d = 0u; d < dh; d++) { dotv += qs[d] * kc[kb + d]; }
            sc = dotv / p.scale;
        }
        red[tid] = sc;
        workgroupBarrier();
        for (var o = 32u; o > 0u; o >>= 1u) {
            if (tid < o) { red[tid] = max(red[tid], red[tid + o]); }
            workgroupBarrier();
        }
        let mn = max(m, red[0]);
        workgroupBarrier();
        var pj = 0.0;
        if (j < n_keys) { pj = exp(sc - mn); }
        ps[tid] = pj;
        red[tid] = pj;
        workgroupBarrier();
        for (var o = 32u; o > 0u; o >>= 1u) {
            if (tid < o) { red[tid] += red[tid + o]; }
            workgroupBarrier();
        }
        let corr = exp(m - mn);
        s = s * corr + red[0];
        let cnt = min(64u, n_keys - c0);
        var k = 0u;
        for (var d = tid; d < dh; d += 64u) {
            var a = acc[k] * corr;
            for (var u = 0u; u < cnt; u++) {
                a += ps[u] * vc[kbase + (c0 + u) * dh + d];
            }
            acc[k] = a;
            k++;
        }
        m = mn;
        workgroupBarrier();
    }
    var k = 0u;
    for (var d = tid; d < dh; d += 64u) {
        z[qb + d] = acc[k] / s;
        k++;
    }
}
