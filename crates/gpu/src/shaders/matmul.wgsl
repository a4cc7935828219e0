// y[M, N] = x[M, K] · w[N, K]ᵀ (+ bias). Both operands K-contiguous (weights
// as stored, [out, in]). 64×64 output tile per workgroup of 16×16 threads,
// each thread holds a 4×4 register tile; K is walked 16 at a time with vec4
// loads into workgroup memory. K must be a multiple of 4.
// mode 0: M = step.t rows of x; mode 1: only row step.t-1 of x (→ y row 0).
struct P { n: u32, k: u32, mode: u32, has_bias: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

var<workgroup> As: array<vec4<f32>, 256>;
var<workgroup> Bs: array<vec4<f32>, 256>;

@compute @workgroup_size(16, 16, 1)
fn main(@builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(workgroup_id) wid: vec3<u32>) {
    var m = step.t;
    var xoff = 0u;
    if (p.mode == 1u) { m = 1u; xoff = step.t - 1u; }
    let n = p.n;
    let k4 = p.k / 4u;
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    let lr = li / 4u;
    let lk = li % 4u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) { acc[i] = vec4<f32>(0.0); }
    for (var k0 = 0u; k0 < k4; k0 += 4u) {
        let gk = k0 + lk;
        let gr = row0 + lr;
        var av = vec4<f32>(0.0);
        if (gr < m && gk < k4) { av = x[(gr + xoff) * k4 + gk]; }
        As[li] = av;
        let gc = col0 + lr;
        var bv = vec4<f32>(0.0);
        if (gc < n && gk < k4) { bv = w[gc * k4 + gk]; }
        Bs[li] = bv;
        workgroupBarrier();
        for (var kk = 0u; kk < 4u; kk++) {
            let b0 = Bs[(lid.x * 4u + 0u) * 4u + kk];
            let b1 = Bs[(lid.x * 4u + 1u) * 4u + kk];
            let b2 = Bs[(lid.x * 4u + 2u) * 4u + kk];
            let b3 = Bs[(lid.x * 4u + 3u) * 4u + kk];
            for (var i = 0u; i < 4u; i++) {
                let a = As[(lid.y * 4u + i) * 4u + kk];
                acc[i] += vec4<f32>(dot(a, b0), dot(a, b1), dot(a, b2), dot(a, b3));
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        if (r < m) {
            for (var j = 0u; j < 4u; j++) {
                let c = col0 + lid.x * 4u + j;
                if (c < n) {
                    var v = acc[i][j];
                    if (p.has_bias == 1u) { v += bias[c]; }
                    y[r * n + c] = v;
                }
            }
        }
    }
}
