// Starts the engine worker. The page asks for a number of threads
// (`?threads=N`, its Model card setting).
// - N > 1 on a cross-origin isolated page (SharedArrayBuffer): the threaded
//   build, worker_threads.js (ES module glue, wasm atomics and shared memory,
//   built by `cargo xtask` with nightly): this worker and N - 1 helper
//   Workers (worker_helper.js) share the module's memory and split each of
//   the kernels' products (crates/kernels/src/gang.rs).
// - Otherwise, or if the threaded build fails to start: the one-thread build,
//   worker.js (no-modules glue, built by Trunk from web/src/bin/worker.rs).
//   A failure is kept in `scalpelThreadsFailed`; the worker's Ready message
//   carries it to the page, which shows it next to the thread count.
const asked = Number(new URL(self.location.href).searchParams.get('threads'));
const threads = Number.isInteger(asked) && asked >= 1 && asked <= 64 ? asked : 1;

// The helpers, kept referenced while they run.
const helpers = [];

function oneThread() {
  importScripts('./worker.js');
  wasm_bindgen({ module_or_path: './worker_bg.wasm' });
}

if (threads > 1 && self.crossOriginIsolated) {
  import('./worker_threads.js')
    .then(async (glue) => {
      await glue.default({ module_or_path: './worker_threads_bg.wasm' });
      const [module, memory] = [glue.kernel_module(), glue.kernel_memory()];
      // This thread is one of the N; N - 1 helpers join it.
      await Promise.all(Array.from({ length: threads - 1 }, () => new Promise((ok, fail) => {
        const helper = new Worker('./worker_helper.js', { type: 'module' });
        helper.onmessage = ({ data }) => (data.ready ? ok() : fail(new Error(data.error)));
        helper.onerror = (e) => fail(new Error(e.message || 'a helper thread did not start'));
        helper.postMessage({ module, memory });
        helpers.push(helper);
      })));
      // Each helper counts itself in as its loop starts.
      for (const t0 = Date.now(); glue.kernel_threads_joined() < threads; ) {
        if (Date.now() - t0 > 10000) throw new Error(`${glue.kernel_threads_joined()} of ${threads} threads joined in 10 s`);
        await new Promise((ok) => setTimeout(ok, 1));
      }
      glue.start_worker();
    })
    .catch((e) => {
      helpers.forEach((h) => h.terminate());
      self.scalpelThreadsFailed = `the threaded build did not start (${e && e.message ? e.message : e})`;
      oneThread();
    });
} else {
  if (threads > 1) self.scalpelThreadsFailed = 'the page is not cross-origin isolated (no SharedArrayBuffer)';
  oneThread();
}
