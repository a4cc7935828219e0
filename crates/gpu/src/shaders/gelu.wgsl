// GELU over rows of width n: kind 0 = tanh approximation (GPT-2 gelu_new),
// kind 1 = erf (Abramowitz–Stegun 7.1.26, |error| < 1.5e-7).
struct P { n: u32, kind: u32 }
@group(0) @binding(1) var<uniform> p: P;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

fn erf_(x: f32) -> f32 {
    let s = sign(x);
    let ax = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * ax);
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-ax * ax);
    return s * y;
}

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n) { return; }
    let o = wid.y * p.n + i;
    let x = a[o];
    if (p.kind == 0u) {
        let inner = clamp(0.7978845608028654 * (x + 0.044715 * x * x * x), -15.0, 15.0);
        out[o] = 0.5 * x * (1.0 + tanh(inner));
    } else {
        out[o] = 0.5 * x * (1.0 + erf_(x * 0.7071067811865476));
    }
}
