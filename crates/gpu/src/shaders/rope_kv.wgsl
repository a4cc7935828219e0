// Splits the fused qkv projection [t, (nh + 2 nkv) dh], rotates q and k with
// RoPE on pairs (i, i + dh/2) — Hugging Face order: the loader un-permutes
// GGUF's interleaved Q/K rows, so this equals candle's rope_i on the stored
// rows element for element — writes q to `q` [t, nh dh] and k, v into the
// layer's cache [nkv, max_seq, dh] at absolute position step.start + t.
// cos/sin tables are [max_seq, dh/2], computed on the CPU like the engine.
struct P { nh: u32, nkv: u32, dh: u32, max_seq: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> cosb: array<f32>;
@group(0) @binding(4) var<storage, read> sinb: array<f32>;
@group(0) @binding(5) var<storage, read_write> q: array<f32>;
@group(0) @binding(6) var<storage, read_write> kc: array<f32>;
@group(0) @binding(7) var<storage, read_write> vc: array<f32>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let t = wid.y;
    let half = p.dh / 2u;
    let heads = p.nh + 2u * p.nkv;
    let idx = gid.x;
    if (idx >= heads * half) { return; }
    let hh = idx / half;
    let i = idx % half;
    let src = t * heads * p.dh + hh * p.dh + i;
    let x0 = qkv[src];
    let x1 = qkv[src + half];
    let pos = step.start + t;
    let c = cosb[pos * half + i];
    let s = sinb[pos * half + i];
    if (hh < p.nh) {
        let o = t * p.nh * p.dh + hh * p.dh + i;
        q[o] = x0 * c - x1 * s;
        q[o + half] = x0 * s + x1 * c;
    } else if (hh < p.nh + p.nkv) {
        let o = ((hh - p.nh) * p.max_seq + pos) * p.dh + i;
        kc[o] = x0 * c - x1 * s;
        kc[o + half] = x0 * s + x1 * c;
    } else {
        let o = ((hh - p.nh - p.nkv) * p.max_seq + pos) * p.dh + i;
        vc[o] = x0;
        vc[o + half] = x1;
    }
}
