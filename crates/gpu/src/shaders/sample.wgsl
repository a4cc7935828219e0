// Seeded sampling of the next token from one row of logits, with the CPU
// engine's semantics (engine `generate.rs`, `Sampler::sample`): c = l / T;
// keep the top_k largest; then keep the smallest highest-first set whose
// probability reaches top_p; then pick the first token, highest first, whose
// cumulative probability exceeds r, a uniform number in [0, 1) drawn on the
// CPU from the same seeded stream (so one seed gives the same tokens on both
// paths). The id goes to out[0] (the ids buffer), as argmax writes it, so a
// chained decode step embeds it without a round trip.
//
// No sort: each cut-off is found by a bitwise search over an order-preserving
// u32 key of the logit (32 passes over the row, each a count or a sum), the
// largest key whose "count/mass of tokens at or above it" still meets the
// condition. Tied logits at a cut-off are all kept (the CPU keeps them by
// id); tied logits at the final pick are walked in id order, like the CPU.
// One workgroup; thread j owns the contiguous ids [j·C, (j+1)·C).
// mode 0: row 0 (the last-row logits buffer); mode 1: row step.t - 1.
// r is rnd[(absolute position of the row) % 64]: the host writes one number
// per sampled position before submitting (64 steps may be chained).
struct P { v: u32, mode: u32, temperature: f32, top_k: u32, top_p: f32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read> rnd: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<u32>;
@group(0) @binding(5) var<storage, read_write> e: array<f32>;

var<workgroup> red_f: array<f32, 256>;
var<workgroup> red_u: array<u32, 256>;
var<workgroup> pick: vec2<u32>;

// NaN by its bits: shader compilers may assume `x != x` is false.
fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Larger float, larger key; NaN lowest (and never picked: e = 0).
fn key(x: f32) -> u32 {
    if (is_nan(x)) { return 0u; }
    let b = bitcast<u32>(x);
    if ((b & 0x80000000u) != 0u) { return ~b; }
    return b | 0x80000000u;
}

fn sum_f(li: u32, s: f32) -> f32 {
    red_f[li] = s;
    workgroupBarrier();
    for (var o = 128u; o > 0u; o >>= 1u) {
        if (li < o) { red_f[li] += red_f[li + o]; }
        workgroupBarrier();
    }
    let r = red_f[0];
    workgroupBarrier();
    return r;
}

fn max_f(li: u32, s: f32) -> f32 {
    red_f[li] = s;
    workgroupBarrier();
    for (var o = 128u; o > 0u; o >>= 1u) {
        if (li < o) { red_f[li] = max(red_f[li], red_f[li + o]); }
        workgroupBarrier();
    }
    let r = red_f[0];
    workgroupBarrier();
    return r;
}

fn sum_u(li: u32, s: u32) -> u32 {
    red_u[li] = s;
    workgroupBarrier();
    for (var o = 128u; o > 0u; o >>= 1u) {
        if (li < o) { red_u[li] += red_u[li + o]; }
        workgroupBarrier();
    }
    let r = red_u[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32) {
    var row = 0u;
    if (p.mode == 1u) { row = step.t - 1u; }
    let base = row * p.v;
    let chunk = (p.v + 255u) / 256u;
    let lo = min(li * chunk, p.v);
    let hi = min(lo + chunk, p.v);

    // c = l / T (as the CPU divides), e = exp(c - max c), NaN -> 0.
    var m = -3.4028235e38;
    for (var i = lo; i < hi; i++) {
        let l = logits[base + i];
        if (!is_nan(l)) { m = max(m, l / p.temperature); }
    }
    m = max_f(li, m);
    for (var i = lo; i < hi; i++) {
        let l = logits[base + i];
        var x = 0.0;
        if (!is_nan(l)) { x = exp(l / p.temperature - m); }
        e[i] = x;
    }

    // top-k: the largest key with at least k tokens at or above it.
    var cut = 0u;
    if (p.top_k < p.v) {
        for (var b = 31i; b >= 0i; b--) {
            let cand = cut | (1u << u32(b));
            var n = 0u;
            for (var i = lo; i < hi; i++) {
                if (key(logits[base + i]) >= cand) { n += 1u; }
            }
            cut = select(cut, cand, sum_u(li, n) >= p.top_k);
        }
    }
    // top-p: the largest key (at or above the top-k cut) whose mass at or
    // above it still reaches top_p of the kept mass.
    var s = 0.0;
    for (var i = lo; i < hi; i++) {
        if (key(logits[base + i]) >= cut) { s += e[i]; }
    }
    var total = sum_f(li, s);
    if (p.top_p < 1.0) {
        let need = p.top_p * total;
        var pc = 0u;
        for (var b = 31i; b >= 0i; b--) {
            let cand = max(pc | (1u << u32(b)), cut);
            var ms = 0.0;
            for (var i = lo; i < hi; i++) {
                if (key(logits[base + i]) >= cand) { ms += e[i]; }
            }
            pc = select(pc, pc | (1u << u32(b)), sum_f(li, ms) >= need);
        }
        cut = max(pc, cut);
        s = 0.0;
        for (var i = lo; i < hi; i++) {
            if (key(logits[base + i]) >= cut) { s += e[i]; }
        }
        total = sum_f(li, s);
    }

    // The pick: the largest key whose mass at or above it exceeds r · total.
    let goal = rnd[(step.start + step.t - 1u) % 64u] * total;
    var kc = 0u;
    for (var b = 31i; b >= 0i; b--) {
        let cand = max(kc | (1u << u32(b)), cut);
        var ms = 0.0;
        for (var i = lo; i < hi; i++) {
            if (key(logits[base + i]) >= cand) { ms += e[i]; }
        }
        kc = select(kc, kc | (1u << u32(b)), sum_f(li, ms) > goal);
    }
    kc = max(kc, cut);
    // Tokens tied at the picked value are walked in id order: skip the mass
    // strictly above them, then as many ties as the rest of the goal covers.
    var above = 0.0;
    var ties = 0u;
    var et = 0.0;
    for (var i = lo; i < hi; i++) {
        let k = key(logits[base + i]);
        if (k > kc) { above += e[i]; }
        if (k == kc) { ties += 1u; et = e[i]; }
    }
    red_u[li] = ties;
    let above_all = sum_f(li, above);
    let e_tie = max_f(li, et);
    if (li == 0u) {
        var j = 0u;
        if (e_tie > 0.0) { j = u32(max((goal - above_all) / e_tie, 0.0)); }
        // Thread owning the j-th tie (clamped to the last tie), and its rank there.
        var owner = 0u;
        var rank = 0u;
        var seen = 0u;
        var found = false;
        for (var t = 0u; t < 256u; t++) {
            let c = red_u[t];
            if (c > 0u) {
                owner = t;
                if (!found && j < seen + c) { rank = j - seen; found = true; break; }
                rank = c - 1u;
            }
            seen += c;
        }
        pick = vec2<u32>(owner, rank);
    }
    workgroupBarrier();
    if (li == pick.x) {
        var r = pick.y;
        for (var i = lo; i < hi; i++) {
            if (key(logits[base + i]) == kc) {
                if (r == 0u) { out[0] = i; break; }
                r -= 1u;
            }
        }
    }
}
