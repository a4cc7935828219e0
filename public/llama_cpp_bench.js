// The Benchmark panel's side-by-side run of llama.cpp's wasm build (npm
// `@wllama/wllama`, MIT; a test dependency of Scalpel, not part of the app).
// `cargo xtask serve` serves the package's esm/ folder at llama.cpp/ next to
// the page; a page served without it does not offer the comparison.
//
// A module worker of its own, so the page's Stop is `terminate()`: it ends
// llama.cpp's own workers with it, whatever they are doing.
//
// Page -> worker, once: { model: URL string | Blob, prompt, threads: [n, ...],
// tokens, rounds }. Worker -> page: { status } while it runs, { result } per
// thread count (llama.cpp's own timings of the last round), then { done }, or
// { error }.

const base = new URL('llama.cpp/', self.location.href).href;
// llama.cpp's own logging is verbose; its warnings and errors go to the console.
const quiet = { debug() {}, log() {}, info() {}, warn: console.warn, error: console.error };

self.onmessage = async ({ data: { model, prompt, threads, tokens, rounds } }) => {
  try {
    const { Wllama } = await import(`${base}index.js`);
    for (const n of threads) {
      const w = new Wllama({ default: `${base}wasm/wllama.wasm` }, { suppressNativeLog: true, logger: quiet });
      try {
        self.postMessage({ status: `llama.cpp: loading the model on ${n} thread${n > 1 ? 's' : ''}…` });
        // CPU only (n_gpu_layers 0), as Scalpel's CPU engine.
        const params = { n_threads: n, n_gpu_layers: 0, n_ctx: 512 };
        if (typeof model === 'string') await w.loadModelFromUrl(model, { ...params, useCache: false });
        else await w.loadModel([model], params);
        let timings;
        for (let r = 0; r < rounds; r++) {
          self.postMessage({ status: `llama.cpp on ${w.getNumThreads()} thread${w.getNumThreads() > 1 ? 's' : ''}: round ${r + 1} of ${rounds}…` });
          // Greedy, no prompt cache, end-of-text ignored: each round prefills the whole prompt and decodes `tokens`.
          const res = await w.createCompletion({ prompt, max_tokens: tokens, temperature: 0, ignore_eos: true, cache_prompt: false });
          timings = res.timings;
        }
        self.postMessage({
          result: {
            asked: n,
            threads: w.getNumThreads(),
            prompt_n: timings.prompt_n,
            predicted_n: timings.predicted_n,
            prefill: timings.prompt_per_second,
            decode: timings.predicted_per_second,
          },
        });
      } finally {
        await w.exit();
      }
    }
    self.postMessage({ done: true });
  } catch (e) {
    self.postMessage({ error: String(e?.message ?? e) });
  }
};
