// One helper thread of the threaded engine worker (a module Worker started
// by worker_loader.js): instantiates the engine's module with its shared
// memory, says so, then takes pieces of the kernels' products for good
// (crates/kernels/src/gang.rs).
self.onmessage = async ({ data: { module, memory } }) => {
  let glue;
  try {
    glue = await import('./worker_threads.js');
    await glue.default({ module_or_path: module, memory });
  } catch (e) {
    postMessage({ ready: false, error: String(e && e.message ? e.message : e) });
    return;
  }
  postMessage({ ready: true });
  try {
    glue.kernel_helper();
  } catch (e) {
    // The helper trapped (a panic, or memory running out, in a piece). A
    // piece it had taken will never be done: say so, and the product
    // waiting for it ends the engine worker, which the page restarts,
    // instead of waiting for good.
    glue.kernel_helper_died();
    throw e;
  }
};
