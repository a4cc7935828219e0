// Prepended to every kernel. `step` is written once per forward call:
// `start` = absolute position of the first new token, `t` = new tokens.
struct Step { start: u32, t: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> step: Step;
