// In-place hook intervention on rows of width `width` (one workgroup per
// row), for rows whose absolute position is in [pos_lo, pos_hi) and columns
// in [col_lo, col_hi):
//   mode 0 add:         x += alpha * src[col - col_lo]
//   mode 1 scale:       x *= alpha
//   mode 2 zero:        x = 0
//   mode 3 project_out: x -= (x·u) u, u = src (unit vector over the columns)
//   mode 4 patch:       x = src[(pos - src_pos0) * src_width + col - src_off]
//                       (a cached activation of the same hook point, kept
//                       on the GPU as whole rows: src_width = width,
//                       src_off = 0; or uploaded at the hook's own width,
//                       offset within the row: q/k/v share the qkv rows)
struct P { width: u32, mode: u32, pos_lo: u32, pos_hi: u32, col_lo: u32, col_hi: u32, src_pos0: u32, src_rows: u32, alpha: f32, src_width: u32, src_off: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(local_invocation_index) li: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let row = wid.y;
    let pos = step.start + row;
    if (pos < p.pos_lo || pos >= p.pos_hi) { return; }
    let base = row * p.width;
    if (p.mode == 0u) {
        for (var c = p.col_lo + li; c < p.col_hi; c += 256u) { x[base + c] += p.alpha * src[c - p.col_lo]; }
    } else if (p.mode == 1u) {
        for (var c = p.col_lo + li; c < p.col_hi; c += 256u) { x[base + c] *= p.alpha; }
    } else if (p.mode == 2u) {
        for (var c = p.col_lo + li; c < p.col_hi; c += 256u) { x[base + c] = 0.0; }
    } else if (p.mode == 3u) {
        var s = 0.0;
        for (var c = p.col_lo + li; c < p.col_hi; c += 256u) { s += x[base + c] * src[c - p.col_lo]; }
        red[li] = s;
        workgroupBarrier();
        for (var o = 128u; o > 0u; o >>= 1u) {
            if (li < o) { red[li] += red[li + o]; }
            workgroupBarrier();
        }
        let dotv = red[0];
        for (var c = p.col_lo + li; c < p.col_hi; c += 256u) { x[base + c] -= dotv * src[c - p.col_lo]; }
    } else {
        if (pos < p.src_pos0 || pos - p.src_pos0 >= p.src_rows) { return; }
        let sb = (pos - p.src_pos0) * p.src_width;
        for (var c = p.col_lo + li; c < p.col_hi; c += 256u) { x[base + c] = src[sb + c - p.src_off]; }
    }
}
