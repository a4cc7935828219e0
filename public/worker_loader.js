// Starts the engine worker: loads wasm-bindgen's no-modules glue (worker.js,
// built by Trunk from web/src/bin/worker.rs), then instantiates the wasm.
importScripts('./worker.js');
wasm_bindgen({ module_or_path: './worker_bg.wasm' });
