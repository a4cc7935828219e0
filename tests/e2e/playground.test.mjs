// The thin end-to-end slice: the engine compiled to wasm, in a Web Worker,
// in headless Chromium, agrees with the native CLI.
//
// Run by `cargo xtask test` (which builds, serves and sets the environment);
// by hand: `cargo xtask serve` in one shell, then
// `node --test tests/e2e/` in another.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  URL, launch, cli, waitState, until, screenshot, readTopK, loadPrecision,
} from './helpers.mjs';

const PROMPT = 'The capital of France is';
const MINUTE = 60_000;

describe('playground (thin slice)', { timeout: 30 * MINUTE }, () => {
  let page, logs, close;

  before(async () => {
    ({ page, logs, close } = await launch());
  });

  after(async () => {
    if (logs?.length) console.log(`browser log (last 30):\n${logs.slice(-30).join('\n')}`);
    await close?.();
  });

  test('page loads the default model (f32) with progress', { timeout: 10 * MINUTE }, async () => {
    const t0 = Date.now();
    await page.goto(`${URL}?precision=f32`);
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), true, 'server must send COOP/COEP');
    // Progress is reported while downloading.
    await until(page, async () => {
      const s = await page.getByRole('main').getAttribute('data-state');
      return s !== 'starting';
    }, MINUTE, 'the worker to start');
    await waitState(page, 'ready', 10 * MINUTE, logs);
    const secs = (Date.now() - t0) / 1000;
    const status = await page.getByRole('status').textContent();
    assert.match(status, /Ready: SmolLM2-135M-Instruct\.Q4_1\.gguf loaded/);
    const loaded = await page.getByLabel('Loaded model').textContent();
    assert.match(loaded, /^Loaded: f32 · 98\.4 MB/);
    assert.match(await page.getByLabel('Download progress').textContent(), /98\.4 MB \/ 98\.4 MB \(100%\)/);
    assert.equal(await page.getByRole('progressbar', { name: 'Model download' }).getAttribute('value'), '100.0');
    console.log(`page open -> model ready (f32): ${secs.toFixed(1)} s; ${loaded}`);
    await screenshot(page, '01-loaded');
  });

  test('top-5 next tokens equal the native CLI (f32, logits within 1e-3)', { timeout: 5 * MINUTE }, async () => {
    await page.getByRole('textbox', { name: 'Prompt' }).fill(PROMPT);
    await page.getByRole('button', { name: 'Next tokens' }).click();
    await waitState(page, 'ready', 2 * MINUTE, logs);
    const got = await readTopK(page);
    const want = cli(['logits', '--model', 'default', '--prompt', PROMPT, '--top-k', '5', '--json']).top;
    console.log(`page: ${JSON.stringify(got)}`);
    console.log(`cli:  ${JSON.stringify(want.map(({ id, logit }) => ({ id, logit })))}`);
    assert.equal(got.length, 5);
    assert.deepEqual(got.map((t) => t.id), want.map((t) => t.id));
    const maxDiff = Math.max(...got.map((t, i) => Math.abs(t.logit - want[i].logit)));
    console.log(`max |logit diff| page vs CLI (f32): ${maxDiff.toExponential(2)}`);
    assert.ok(maxDiff < 1e-3, `max logit diff ${maxDiff}`);
    await screenshot(page, '02-next-tokens');
  });

  test('greedy generation equals the native CLI (f32, 8 tokens)', { timeout: 5 * MINUTE }, async () => {
    await page.getByRole('textbox', { name: 'Prompt' }).fill(PROMPT);
    await page.getByRole('spinbutton', { name: 'Max new tokens' }).fill('8');
    await page.getByRole('spinbutton', { name: 'Temperature' }).fill('0');
    await page.getByRole('button', { name: 'Generate' }).click();
    const out = page.getByRole('log', { name: 'Generated text' });
    await until(page, async () => (await out.getAttribute('data-done')) === 'true', 3 * MINUTE, 'generation');
    await waitState(page, 'ready', MINUTE, logs);
    const ids = (await out.getAttribute('data-ids')).split(',').filter(Boolean).map(Number);
    const want = cli(['generate', '--model', 'default', '--prompt', PROMPT, '--max-new-tokens', '8', '--temperature', '0', '--json']);
    console.log(`page ids: ${ids.join(',')}  text: ${JSON.stringify(await out.textContent())}`);
    console.log(`cli  ids: ${want.ids.join(',')}  text: ${JSON.stringify(want.text)}`);
    assert.deepEqual(ids, want.ids);
    const speed = await page.getByLabel('Tokens per second').textContent();
    assert.match(speed, /[\d.]+ tokens\/s/);
    console.log(`page generation (f32): ${speed}`);
    await screenshot(page, '03-generated');
  });

  test('Stop ends a long generation early; the page stays responsive', { timeout: 5 * MINUTE }, async () => {
    // Long tasks (> 50 ms) on the page's main thread while tokens stream in.
    await page.evaluate(() => {
      window.__longTasks = [];
      new PerformanceObserver((list) => {
        for (const e of list.getEntries()) window.__longTasks.push(e.duration);
      }).observe({ type: 'longtask' });
    });
    await page.getByRole('spinbutton', { name: 'Max new tokens' }).fill('400');
    await page.getByRole('button', { name: 'Generate' }).click();
    const out = page.getByRole('log', { name: 'Generated text' });
    const count = async () => ((await out.getAttribute('data-ids')) ?? '').split(',').filter(Boolean).length;
    await until(page, async () => (await count()) >= 16, 3 * MINUTE, '16 streamed tokens');
    const stop = page.getByRole('button', { name: 'Stop' });
    assert.equal(await stop.isEnabled(), true);
    await stop.click();
    await until(page, async () => (await out.getAttribute('data-done')) === 'true', 2 * MINUTE, 'generation to stop');
    const n = await count();
    assert.ok(n < 400, `generated ${n} tokens after Stop`);
    assert.match(await page.getByLabel('Tokens per second').textContent(), /stopped/);
    const longTasks = await page.evaluate(() => window.__longTasks);
    const longest = Math.max(0, ...longTasks);
    console.log(`main-thread long tasks during a ${n}-token generation: ${longTasks.length}, longest ${longest.toFixed(0)} ms`);
    assert.ok(longest < 100, `longest main-thread task ${longest} ms`);
    await page.getByRole('spinbutton', { name: 'Max new tokens' }).fill('8');
  });

  test('errors are shown as text', { timeout: MINUTE }, async () => {
    await page.getByRole('textbox', { name: 'Prompt' }).fill('');
    await page.getByRole('button', { name: 'Next tokens' }).click();
    await until(page, async () => ((await page.getByRole('alert').textContent()) ?? '').length > 0, 30_000, 'an error');
    assert.match(await page.getByRole('alert').textContent(), /empty/i);
    await waitState(page, 'ready', 30_000, logs);
    await page.getByRole('textbox', { name: 'Prompt' }).fill(PROMPT);
  });

  // Quantized kernels differ between native (x86 SIMD) and wasm (simd128 /
  // scalar), so only the leading tokens are required to agree.
  test('quantized: top-3 next tokens equal the native CLI', { timeout: 10 * MINUTE }, async () => {
    await loadPrecision(page, 'quantized', logs);
    await page.getByRole('button', { name: 'Next tokens' }).click();
    await waitState(page, 'ready', 2 * MINUTE, logs);
    const got = await readTopK(page);
    const want = cli(['logits', '--model', 'default', '--precision', 'quantized', '--prompt', PROMPT, '--top-k', '5', '--json']).top;
    const maxDiff = Math.max(...got.map((t, i) => Math.abs(t.logit - want[i].logit)));
    console.log(`quantized page: ${JSON.stringify(got)}`);
    console.log(`quantized cli:  ${JSON.stringify(want.map(({ id, logit }) => ({ id, logit })))}`);
    console.log(`quantized max |logit diff| page vs CLI: ${maxDiff.toExponential(2)}`);
    assert.equal(got.length, 5);
    assert.deepEqual(got.slice(0, 3).map((t) => t.id), want.slice(0, 3).map((t) => t.id));
    assert.ok(maxDiff < 0.5, `quantized max logit diff ${maxDiff}`);
  });

  test('benchmark: wasm (single thread) next to native', { timeout: 15 * MINUTE }, async () => {
    const rows = [];
    for (const precision of ['quantized', 'f32']) {
      await loadPrecision(page, precision, logs);
      await page.getByRole('button', { name: 'Run benchmark' }).click();
      await waitState(page, 'ready', 10 * MINUTE, logs);
      const res = page.getByLabel('Benchmark result');
      const prefill = Number(await res.getAttribute('data-prefill'));
      const decode = Number(await res.getAttribute('data-decode'));
      assert.ok(prefill > 0 && decode > 0, `bench result ${await res.textContent()}`);
      rows.push([`wasm ${precision} (Chromium, 1 thread)`, prefill, decode]);
      if (precision === 'quantized') await screenshot(page, '04-benchmark');
    }
    // Native numbers from the CLI in the same run (single thread, same method).
    for (const precision of ['quantized', 'f32']) {
      // The quantized run is the headline (median of 3, with candle's reference);
      // one round is enough for the f32 comparison.
      const rounds = precision === 'quantized' ? '3' : '1';
      const native = cli(['bench', '--model', 'default', '--precision', precision, '--rounds', rounds, '--json']);
      rows.push([`native ${precision} (scalpel bench)`, native.ours.prefill_tok_s, native.ours.decode_tok_s]);
      if (precision === 'quantized' && native.candle_reference) {
        rows.push(['native candle reference (quantized)', native.candle_reference.prefill_tok_s, native.candle_reference.decode_tok_s]);
      }
    }
    console.log('benchmark                              prefill tok/s   decode tok/s');
    for (const [name, p, d] of rows) {
      console.log(`${name.padEnd(38)} ${p.toFixed(1).padStart(13)} ${d.toFixed(1).padStart(14)}`);
    }
  });
});
