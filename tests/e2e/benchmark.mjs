// The benchmark: the page's paths (f32 over blocks and dequantize-all,
// quantized with candle's and Scalpel's kernels) next to llama.cpp's wasm
// build (npm @wllama/wllama, CPU only, 1 and 2 threads, run by the page's
// Benchmark panel) on the same GGUF in the same headless Chromium, and the
// native CLI's `scalpel bench`; the IOI patching sweep on 1 and 2 threads;
// 2 threads against 1 in one worker (the panel's "Against 1 thread");
// prints a table, ratios and each path's share of the memory-bandwidth
// bound.
//
// Run by `cargo xtask bench` (which builds, serves and sets the environment).
// Not part of `cargo xtask test`: it measures, it checks no behaviour the
// tests do not (about 10 minutes on 2 cores).

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { URL, launch, cli, state, until, waitState, loadPrecision, setThreads } from './helpers.mjs';

const MINUTE = 60_000;

/** Navigate for real (a URL differing only in its #fragment would not reload). */
async function open(page, url) {
  await page.goto('about:blank');
  await page.goto(url);
}

describe('benchmark', { timeout: 30 * MINUTE }, () => {
  let page, logs, close;

  before(async () => {
    ({ page, logs, close } = await launch());
  });

  after(async () => {
    if (logs?.length) console.log(`browser log (last 30):\n${logs.slice(-30).join('\n')}`);
    await close?.();
  });

  test('benchmark: wasm (single thread) next to native, per backend, and next to llama.cpp\'s wasm build in the same browser', { timeout: 30 * MINUTE }, async () => {
    const rows = [];
    const memory = {};
    const bench = async (label) => {
      await page.getByRole('button', { name: 'Run benchmark' }).click();
      await page.waitForTimeout(300);
      await waitState(page, 'ready', 10 * MINUTE, logs);
      const res = page.getByLabel('Benchmark result');
      const prefill = Number(await res.getAttribute('data-prefill'));
      const decode = Number(await res.getAttribute('data-decode'));
      assert.ok(prefill > 0 && decode > 0, `bench result ${await res.textContent()}`);
      rows.push([label, prefill, decode]);
      memory[label] = { wasm: Number(await res.getAttribute('data-wasm-memory')), weights: Number(await res.getAttribute('data-weight-bytes')) };
    };
    // f32 precision's two paths, each in a fresh page (a new worker: its
    // WebAssembly.Memory only grows, so it is measured from a clean start).
    for (const [query, label] of [['?precision=f32&kernels=candle', 'wasm f32, dequantize-all (candle)'], ['?precision=f32', 'wasm f32, exact over blocks (default)']]) {
      await open(page, URL + query);
      await waitState(page, 'ready', 10 * MINUTE, logs);
      await page.getByText('Benchmark', { exact: true }).click();
      await bench(label);
      console.log(`${label}: ${await page.getByLabel('Benchmark result').textContent()}`);
    }
    const [mAll, mExact] = [memory['wasm f32, dequantize-all (candle)'], memory['wasm f32, exact over blocks (default)']];
    console.log(`f32 precision memory: weights ${(mExact.weights / 1e6).toFixed(1)} MB over blocks vs ${(mAll.weights / 1e6).toFixed(1)} MB dequantized (${(mExact.weights / mAll.weights).toFixed(3)}x); `
      + `worker WebAssembly.Memory after load + benchmark ${(mExact.wasm / 1e6).toFixed(0)} MB vs ${(mAll.wasm / 1e6).toFixed(0)} MB (${(mExact.wasm / mAll.wasm).toFixed(3)}x)`);
    assert.ok(mExact.weights * 3 <= mAll.weights, 'the exact path holds the blocks, not f32 weights');
    assert.ok(mExact.wasm < mAll.wasm, 'the exact path\'s worker is smaller');
    await open(page, URL);
    await waitState(page, 'ready', 10 * MINUTE, logs);
    await page.getByText('Benchmark', { exact: true }).click();
    // llama.cpp's wasm build on the same GGUF and prompt, run by the page's
    // Benchmark panel (served from this origin, cross-origin isolated, so it
    // may use threads) at the thread count of the result above it, then at
    // 1 thread if that was more.
    const llama = async (threads) => {
      await page.getByRole('button', { name: 'Compare with llama.cpp' }).click();
      await page.getByRole('button', { name: 'Stop llama.cpp' }).waitFor({ state: 'detached', timeout: 10 * MINUTE });
      const failed = await page.locator('details.bench [role=alert]').count();
      assert.equal(failed, 0, failed ? await page.locator('details.bench [role=alert]').textContent() : '');
      const r = page.getByRole('table', { name: 'llama.cpp result' }).locator(`tr[data-threads="${threads}"]`);
      const [prefill, decode, promptN, predictedN] = await Promise.all(['data-prefill', 'data-decode', 'data-prompt-n', 'data-predicted-n'].map(async (a) => Number(await r.getAttribute(a))));
      assert.ok(promptN === 64 && predictedN >= 63, `llama.cpp prompt ${promptN} tokens, ${predictedN} decoded`);
      rows.push([`llama.cpp wasm (wllama), ${threads} thread${threads > 1 ? 's' : ''}`, prefill, decode]);
    };
    await loadPrecision(page, 'quantized', logs);
    for (const kernels of ['candle', 'scalpel']) {
      await page.getByRole('combobox', { name: 'Kernels' }).selectOption(kernels);
      await waitState(page, 'ready', MINUTE, logs);
      await bench(`wasm quantized, ${kernels} kernels`);
    }
    await llama(1);
    await loadPrecision(page, 'f32', logs);
    await bench('wasm f32');
    assert.match(await page.getByLabel('Benchmark result').getAttribute('data-backend'), /exact kernels/);
    await loadPrecision(page, 'quantized', logs);
    await bench('wasm quantized, scalpel kernels (again)');
    // The threaded build (this page is cross-origin isolated): the worker restarts on 2 threads.
    await setThreads(page, 2, logs);
    await bench('wasm quantized, scalpel kernels, 2 threads');
    // The panel's "Against 1 thread": 2 threads and 1 taking turns in one
    // worker (bench::thread_gain), less at the mercy of when each ran.
    const gains = {};
    const gain = async (label) => {
      await page.getByRole('button', { name: 'Against 1 thread' }).click();
      await until(page, async () => (await state(page)) === 'busy', MINUTE, 'the thread comparison to start');
      await waitState(page, 'ready', 10 * MINUTE, logs);
      const g = page.getByLabel('Thread gain');
      gains[label] = await g.textContent();
      assert.ok(Number(await g.getAttribute('data-decode-gain')) > 0, gains[label]);
    };
    await gain('quantized');
    await llama(2);
    await loadPrecision(page, 'f32', logs);
    await bench('wasm f32, 2 threads');
    await gain('f32');
    // The IOI patching sweep (30 layers x 14 positions), as the worker times
    // it: one sweep to warm up (a restarted worker's first runs are on
    // V8's baseline code), then the median of three.
    const sweeps = {};
    const sweep = async (label) => {
      await page.getByRole('button', { name: 'Preset: IOI name-mover patching' }).click();
      await page.waitForTimeout(100);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      const times = [];
      for (let i = 0; i < 4; i++) {
        await page.getByRole('button', { name: 'Run sweep', exact: true }).click();
        await until(page, async () => (await state(page)) === 'busy', MINUTE, 'the sweep to start');
        await waitState(page, 'ready', 10 * MINUTE, logs);
        const summary = await page.getByLabel('Patching summary').textContent();
        const m = summary.match(/· ([\d.]+) s$/);
        assert.ok(m, `a sweep time in "${summary}"`);
        if (i > 0) times.push(Number(m[1]));
      }
      sweeps[label] = times.sort((a, b) => a - b)[1];
    };
    await sweep('f32, 2 threads');
    await loadPrecision(page, 'quantized', logs);
    await sweep('quantized, 2 threads');
    await setThreads(page, 1, logs);
    await sweep('quantized, 1 thread');
    await loadPrecision(page, 'f32', logs);
    await sweep('f32, 1 thread');
    const q = cli(['bench', '--precision', 'quantized', '--kernels', 'candle,scalpel', '--rounds', '1', '--json']);
    rows.push(['native quantized, candle kernels', q.ours.candle.prefill_tok_s, q.ours.candle.decode_tok_s]);
    rows.push(['native quantized, scalpel kernels', q.ours.scalpel.prefill_tok_s, q.ours.scalpel.decode_tok_s]);
    const f = cli(['bench', '--precision', 'f32', '--kernels', 'candle,scalpel', '--rounds', '1', '--json']);
    rows.push(['native f32, dequantize-all (candle)', f.ours.candle.prefill_tok_s, f.ours.candle.decode_tok_s]);
    rows.push(['native f32, exact over blocks (scalpel)', f.ours.scalpel.prefill_tok_s, f.ours.scalpel.decode_tok_s]);
    console.log('benchmark (64 + 64 tokens, 1 thread unless said)   prefill tok/s   decode tok/s');
    for (const [name, p, d] of rows) console.log(`${name.padEnd(48)} ${p.toFixed(1).padStart(13)} ${d.toFixed(1).padStart(14)}`);
    const row = (label) => rows.find((r) => r[0] === label);
    const [qs, qc] = [row('wasm quantized, scalpel kernels'), row('wasm quantized, candle kernels')];
    console.log(`wasm quantized, scalpel / candle kernels: decode ${(qs[2] / qc[2]).toFixed(2)}x; prefill ${(qs[1] / qc[1]).toFixed(2)}x`);
    const [sq, sq2, sf, l1, l2] = ['wasm quantized, scalpel kernels', 'wasm quantized, scalpel kernels (again)', 'wasm f32',
      'llama.cpp wasm (wllama), 1 thread', 'llama.cpp wasm (wllama), 2 threads'].map(row);
    const quant = [(sq[1] + sq2[1]) / 2, (sq[2] + sq2[2]) / 2];
    console.log(`against llama.cpp wasm, 1 thread each: quantized prefill ${(quant[0] / l1[1]).toFixed(2)}x, decode ${(quant[1] / l1[2]).toFixed(2)}x; `
      + `f32 prefill ${(sf[1] / l1[1]).toFixed(2)}x, decode ${(sf[2] / l1[2]).toFixed(2)}x; llama.cpp 2 threads / 1: decode ${(l2[2] / l1[2]).toFixed(2)}x`);
    console.log(`IOI patching sweep in the page (median of 3 after a warm-up): f32 ${sweeps['f32, 1 thread']} s on 1 thread, ${sweeps['f32, 2 threads']} s on 2 (${(sweeps['f32, 1 thread'] / sweeps['f32, 2 threads']).toFixed(2)}x); `
      + `quantized ${sweeps['quantized, 1 thread']} s and ${sweeps['quantized, 2 threads']} s (${(sweeps['quantized, 1 thread'] / sweeps['quantized, 2 threads']).toFixed(2)}x)`);
    const [q2, f2] = ['wasm quantized, scalpel kernels, 2 threads', 'wasm f32, 2 threads'].map(row);
    console.log(`2 threads / 1 thread (the threaded build): quantized prefill ${(q2[1] / quant[0]).toFixed(2)}x, decode ${(q2[2] / quant[1]).toFixed(2)}x; `
      + `f32 prefill ${(f2[1] / sf[1]).toFixed(2)}x, decode ${(f2[2] / sf[2]).toFixed(2)}x; `
      + `against llama.cpp wasm, 2 threads each: quantized decode ${(q2[2] / l2[2]).toFixed(2)}x, f32 decode ${(f2[2] / l2[2]).toFixed(2)}x`);
    for (const [label, text] of Object.entries(gains)) console.log(`the panel's "Against 1 thread", ${label}: ${text}`);
    const [fa, fe] = ['wasm f32, dequantize-all (candle)', 'wasm f32, exact over blocks (default)'].map(row);
    console.log(`f32 precision, exact over blocks / dequantize-all (fresh pages): prefill ${(fe[1] / fa[1]).toFixed(2)}x, decode ${(fe[2] / fa[2]).toFixed(2)}x; `
      + `in the main page, f32 (exact) / quantized decode ${(sf[2] / quant[1]).toFixed(2)}x; f32 on 2 threads / f32 dequantize-all on 1: decode ${(f2[2] / fa[2]).toFixed(2)}x`);
    // The memory-bandwidth bound on decode: bytes a token reads over this machine's streaming-read rate (same run).
    const rate = q.read_bytes_per_s;
    const [qb, fb, eb] = [q.ours.scalpel.matrix_bytes_per_token, f.ours.candle.matrix_bytes_per_token, f.ours.scalpel.matrix_bytes_per_token];
    const share = (tok, bytes) => `${(100 * tok * bytes / rate).toFixed(0)}%`;
    console.log(`decode bound at ${(rate / 1e9).toFixed(1)} GB/s streaming read (native, 1 thread): quantized ${(qb / 1e6).toFixed(1)} MB/token -> ${(rate / qb).toFixed(1)} tok/s, `
      + `f32 dequantized ${(fb / 1e6).toFixed(1)} MB/token -> ${(rate / fb).toFixed(1)} tok/s, f32 over blocks ${(eb / 1e6).toFixed(1)} MB/token -> ${(rate / eb).toFixed(1)} tok/s; `
      + `share of it: page quantized ${share(quant[1], qb)}, page f32 dequantize-all ${share(fa[2], fb)}, page f32 exact ${share(sf[2], eb)}, `
      + `llama.cpp 1 thread ${share(l1[2], qb)}, native quantized ${share(q.ours.scalpel.decode_tok_s, qb)}, native f32 dequantize-all ${share(f.ours.candle.decode_tok_s, fb)}, `
      + `native f32 exact ${share(f.ours.scalpel.decode_tok_s, eb)}`);
  });
});
