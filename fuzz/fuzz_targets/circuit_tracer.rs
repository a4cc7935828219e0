//! circuit-tracer's `config.yaml` and one `layer_N.safetensors` as a transcoder. The body, and what must hold, is `scalpel_fuzzing::circuit_tracer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| scalpel_fuzzing::circuit_tracer(data));
