// The corpus pass in the page: how many tokens per second the worker reads
// for the default model and a 36,864-latent TopK dictionary (the width of
// EleutherAI/sae-SmolLM2-135M-64x), and whether the page stays responsive
// while it runs. Writes a random sparsify dictionary of that shape (k = 32,
// layers.6.mlp, 170 MB) into models/ (git-ignored), loads it by URL, runs
// the pass for DURATION seconds while a PerformanceObserver records the main
// thread's long tasks and typing into a field is timed, then stops it; then the native
// CLI reads the whole corpus with the same dictionary, side by side.
// A benchmark: it prints numbers and asserts nothing about time.
//
//   cargo xtask serve --port 8765 &
//   cd tests/e2e && SCALPEL_URL=http://127.0.0.1:8765/ node ../bench/corpus_pass.mjs

import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { launch, cli, URL, ROOT, waitState, until, seeded, writeSafetensors } from '../e2e/helpers.mjs';

const MINUTE = 60_000;
const DURATION = Number(process.env.DURATION ?? 60);
const MODEL_DIR = process.env.SCALPEL_MODEL_DIR ?? join(ROOT, 'models');
const dir = join(MODEL_DIR, 'sae-bench', 'layers.6.mlp');
const [dIn, n, k] = [576, 36864, 32];

if (!existsSync(join(dir, 'sae.safetensors'))) {
  const rand = seeded(3);
  writeSafetensors(join(dir, 'sae.safetensors'), {
    'encoder.weight': [[n, dIn], Float32Array.from({ length: n * dIn }, () => 0.1 * rand())],
    'encoder.bias': [[n], new Float32Array(n)],
    W_dec: [[n, dIn], Float32Array.from({ length: n * dIn }, () => 0.05 * rand())],
    b_dec: [[dIn], new Float32Array(dIn)],
  });
  writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ activation: 'topk', k, num_latents: n, d_in: dIn }));
}

const { page, logs, close } = await launch();
try {
  await page.goto(URL);
  await waitState(page, 'ready', 5 * MINUTE, logs);
  await page.getByRole('tab', { name: 'Features (SAEs)' }).click();
  await page.getByRole('combobox', { name: 'Dictionary source' }).selectOption('url');
  await page.getByRole('textbox', { name: 'Dictionary folder URL' }).fill(`${URL}models/sae-bench/layers.6.mlp/`);
  const t0 = Date.now();
  await page.getByRole('button', { name: 'Load dictionary' }).click();
  await until(page, async () => /36864 latents/.test(await page.getByRole('status').textContent()), 5 * MINUTE, 'the dictionary');
  console.log(`dictionary (170 MB) fetched and loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  await page.evaluate(() => {
    window.__longTasks = [];
    new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longTasks.push(e.duration); }).observe({ type: 'longtask' });
  });
  await page.getByRole('button', { name: 'Run the corpus pass' }).click();
  await page.waitForTimeout(DURATION * 1000 / 2);
  // The page answers while the worker computes: typing into a field is timed
  // (another panel's tab would send a request, which pauses the pass).
  const c0 = Date.now();
  await page.getByRole('textbox', { name: 'Search token' }).fill(' responsive');
  await until(page, async () => (await page.getByRole('textbox', { name: 'Search token' }).inputValue()) === ' responsive', MINUTE, 'the typing');
  const clickMs = Date.now() - c0;
  await page.waitForTimeout(DURATION * 1000 / 2);
  await page.locator('.features').getByRole('button', { name: 'Stop' }).click();
  await until(page, async () => /stopped|done/i.test(await page.getByRole('status').textContent()), 5 * MINUTE, 'the stop');
  await waitState(page, 'ready', MINUTE, logs);
  const status = await page.getByLabel('Corpus status').textContent();
  const longest = Math.max(0, ...(await page.evaluate(() => window.__longTasks)));
  const mem = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0);
  const native = cli(['features', '--sae', dir, '--latent', '0', '--corpus', 'public/corpus/corpus-v1.txt', '--json']);
  const pageRate = Number(/([\d.]+) tokens\/s/.exec(status)?.[1] ?? NaN);
  console.log(`corpus pass, default model (f32) + TopK dictionary of ${n} latents at blocks.6.hook_mlp_out, 1 thread:`);
  console.log(`  page (wasm worker, ${DURATION} s then Stop): ${status}`);
  console.log(`  native CLI, whole corpus: ${native.tokens} tokens in ${native.seconds.toFixed(1)} s = ${native.tokens_per_second.toFixed(0)} tokens/s`);
  console.log(`  page / native: ${(pageRate / native.tokens_per_second).toFixed(2)}`);
  console.log(`  main thread during the pass: longest task ${longest.toFixed(0)} ms; typing into a field answered in ${clickMs} ms; JS heap ${(mem / 1e6).toFixed(0)} MB`);
} finally {
  if (logs.length) console.log(logs.filter((l) => /error|panic/i.test(l)).slice(-10).join('\n'));
  await close();
}
