// Node runner for the wasm build (see run.sh): node run.mjs PKG_DIR MODEL.gguf [prompt decode rounds]
// `node run.mjs PKG_DIR --check` runs only the checks (`cargo xtask test`): simd128 against portable,
// attention's grouped value heads against repeated ones, and decode's attention over slices
// against candle's ops.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [pkg, model, prompt = '64', decode = '32', rounds = '3'] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const m = require(path.resolve(pkg, 'scalpel_kernels_wasm_bench.js'));

const check = JSON.parse(m.self_test());
console.log('simd128 vs portable:', JSON.stringify(check));
if (check.bitwise_differing !== 0 || check.implementation !== 'simd128') {
  console.error('FAIL: the simd128 kernel differs from the portable one (or did not run)');
  process.exit(1);
}
const grouped = JSON.parse(m.grouped_values_self_test());
console.log('attention, grouped values vs repeated (candle matmul in wasm):', JSON.stringify(grouped));
if (grouped.bitwise_differing !== 0) {
  console.error('FAIL: grouping the value heads changes the attention output\'s bits in wasm');
  process.exit(1);
}
const onePosition = JSON.parse(m.one_position_attention_self_test());
console.log('attention at one position without candle\'s ops vs with them (wasm):', JSON.stringify(onePosition));
if (onePosition.bitwise_differing !== 0 || onePosition.outputs === 0) {
  console.error('FAIL: decode\'s attention over slices changes the logits\' bits in wasm');
  process.exit(1);
}
if (model === '--check') process.exit(0);
console.log('kernel GFLOP/s (wasm, single thread):');
for (const r of JSON.parse(m.kernel_bench(300))) {
  console.log(`  ${r.type} [${r.rows}x${r.cols}] n=${String(r.n).padStart(2)}: candle ${r.candle_gflops.toFixed(1).padStart(5)}  scalpel ${r.scalpel_gflops.toFixed(1).padStart(5)}  ratio ${r.ratio.toFixed(2)}`
    + ` | f32: dequantized ${r.f32_dequantized_gflops.toFixed(1).padStart(5)}  exact over blocks ${r.exact_gflops.toFixed(1).padStart(5)}  ratio ${r.exact_over_f32.toFixed(2)}`
    + (r.n === 1 ? ` | dequantize: simd128 ${r.dequantize_ms.toFixed(2)} ms  portable ${r.dequantize_portable_ms.toFixed(2)} ms  ratio ${(r.dequantize_portable_ms / r.dequantize_ms).toFixed(2)}` : ''));
}
if (model) {
  const res = JSON.parse(m.model_bench(readFileSync(model), +prompt, +decode, +rounds));
  console.log('model (wasm, single thread):', JSON.stringify(res, null, 1));
  const f = JSON.parse(m.model_bench_f32(readFileSync(model), +prompt, +decode, +rounds));
  console.log('model, f32 precision (wasm, single thread):', JSON.stringify(f, null, 1));
}
