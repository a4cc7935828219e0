// One helper thread of the threaded engine worker (a module Worker started
// by worker_loader.js): instantiates the engine's module with its shared
// memory, says so, then takes pieces of the kernels' products for good
// (crates/kernels/src/gang.rs).
self.onmessage = async ({ data: { module, memory } }) => {
  try {
    const glue = await import('./worker_threads.js');
    await glue.default({ module_or_path: module, memory });
    postMessage({ ready: true });
    glue.kernel_helper();
  } catch (e) {
    postMessage({ ready: false, error: String(e && e.message ? e.message : e) });
  }
};
