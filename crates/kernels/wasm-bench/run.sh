#!/bin/sh
# Builds the wasm bench (simd128) and runs it under Node:
#   crates/kernels/wasm-bench/run.sh [MODEL.gguf [prompt_tokens decode_tokens rounds]]
# With a model it also prints the memory of loading it in f32 precision (memory.mjs).
# Needs the wasm32 target, .tools/bin/wasm-bindgen (== Cargo.lock's) and node >= 20.
set -e
root=$(cd "$(dirname "$0")/../../.." && pwd)
cd "$root"
cargo build --release --target wasm32-unknown-unknown -p scalpel-kernels-wasm-bench
out=target/kernels-wasm-bench
.tools/bin/wasm-bindgen --target nodejs --out-dir "$out" target/wasm32-unknown-unknown/release/scalpel_kernels_wasm_bench.wasm
node crates/kernels/wasm-bench/run.mjs "$out" "$@"
if [ -n "$1" ]; then
  for k in candle auto; do node crates/kernels/wasm-bench/memory.mjs "$out" "$1" $k; done
fi
