// The worker's memory high-water mark loading the default model in f32
// precision, one fresh wasm instance per path (memory only grows), the file
// held in JS and read a range at a time as the page's worker reads it:
//   node memory.mjs PKG_DIR MODEL.gguf KERNELS   (KERNELS: candle | auto)
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [pkg, model, kernels] = process.argv.slice(2);
const require = createRequire(import.meta.url);
const m = require(path.resolve(pkg, 'scalpel_kernels_wasm_bench.js'));
const r = JSON.parse(m.load_memory(readFileSync(model), kernels, 64, 16));
console.log(`f32 precision, kernels ${kernels}: wasm memory after load ${(r.memory_after_load / 1e6).toFixed(1)} MB, `
  + `after 64 + 16 tokens ${(r.memory_after_run / 1e6).toFixed(1)} MB (weights ${(r.weight_bytes / 1e6).toFixed(1)} MB, file ${(r.file_bytes / 1e6).toFixed(1)} MB)`);
