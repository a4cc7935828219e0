// Index of the largest logit of one row (lowest index on ties, NaN never
// wins), written to out[0] (the token-ids buffer, so the next decode step can
// read it without a round trip). mode 0: row 0; mode 1: row step.t-1.
struct P { v: u32, mode: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

var<workgroup> bv: array<f32, 256>;
var<workgroup> bi: array<u32, 256>;

const NONE: u32 = 0xffffffffu;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32) {
    var row = 0u;
    if (p.mode == 1u) { row = step.t - 1u; }
    let base = row * p.v;
    var best = 0.0;
    var idx = NONE;
    for (var i = li; i < p.v; i += 256u) {
        let x = logits[base + i];
        if (x == x && (idx == NONE || x > best)) { best = x; idx = i; }
    }
    bv[li] = best;
    bi[li] = idx;
    workgroupBarrier();
    for (var o = 128u; o > 0u; o >>= 1u) {
        if (li < o) {
            let j2 = bi[li + o];
            let v2 = bv[li + o];
            let j1 = bi[li];
            if (j2 != NONE && (j1 == NONE || v2 > bv[li] || (v2 == bv[li] && j2 < j1))) {
                bv[li] = v2;
                bi[li] = j2;
            }
        }
        workgroupBarrier();
    }
    if (li == 0u) { out[0] = bi[0]; }
}
