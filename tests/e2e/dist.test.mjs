// The static build (`cargo xtask dist`) served the way a static host serves
// it: a plain file server with no COOP/COEP headers (only Content-Type and
// Content-Length), the site under a sub-path, the default model at a URL of
// its own (here a `/hub/…` path of the same test server, standing in for the
// Hugging Face hub). The page is not cross-origin isolated, so there is no
// shared stop flag: Stop must restart the engine worker, and say so.
//
// Run by `cargo xtask test`, which builds the site into target/e2e-dist with
// `--base /scalpel/ --model-url http://127.0.0.1:PORT/hub/…` on a free port and
// sets the environment below. By hand:
//   cargo xtask dist --base /scalpel/ --out target/e2e-dist \
//     --model-url http://127.0.0.1:8790/hub/SmolLM2-135M-Instruct.Q4_1.gguf
//   SCALPEL_DIST_DIR=target/e2e-dist node --test tests/e2e/dist.test.mjs
//
// Environment:
//   SCALPEL_DIST_DIR        the built site (without it the test is skipped)
//   SCALPEL_DIST_BASE       the sub-path it was built for  (/scalpel/)
//   SCALPEL_DIST_MODEL_URL  the model URL it was built with; this test's
//                           server listens on its port and serves the model
//                           at its path (http://127.0.0.1:8790/hub/<model>)
//   SCALPEL_MODEL           the model file     (models/SmolLM2-135M-Instruct.Q4_1.gguf)

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { extname, join, normalize, resolve, sep } from 'node:path';
import {
  ROOT, BIN, launch, cli, state, waitState, until, screenshot, readIds, waitCompare, readHeatmap,
} from './helpers.mjs';

const MINUTE = 60_000;
const MODEL_NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const DIST = process.env.SCALPEL_DIST_DIR ? resolve(ROOT, process.env.SCALPEL_DIST_DIR) : null;
const BASE = process.env.SCALPEL_DIST_BASE ?? '/scalpel/';
const MODEL_URL = process.env.SCALPEL_DIST_MODEL_URL ?? `http://127.0.0.1:8790/hub/${MODEL_NAME}`;
const MODEL_FILE = process.env.SCALPEL_MODEL ?? join(ROOT, 'models', MODEL_NAME);

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.json': 'application/json',
};

/**
 * A plain static server, like GitHub Pages or `python3 -m http.server`:
 * GET/HEAD of files, a directory's index.html, `/base` redirected to
 * `/base/`; no COOP, COEP, CORP or cache headers. `BASE` maps to the built
 * site and the model URL's path to the model file. Every request is logged.
 */
function staticServer(log) {
  const modelPath = new globalThis.URL(MODEL_URL).pathname;
  return createServer((req, res) => {
    const path = decodeURIComponent(new globalThis.URL(req.url, 'http://x').pathname);
    let file = null;
    if (path === modelPath) {
      file = MODEL_FILE;
    } else if (path === BASE.replace(/\/$/, '')) {
      log.push([req.method, path, 301]);
      res.writeHead(301, { Location: BASE });
      return res.end();
    } else if (path.startsWith(BASE)) {
      const rel = normalize(path.slice(BASE.length) || 'index.html');
      const full = join(DIST, rel.endsWith(sep) || rel === '.' ? join(rel, 'index.html') : rel);
      if (full.startsWith(DIST + sep)) file = full;
    }
    const ok = file && existsSync(file) && statSync(file).isFile();
    log.push([req.method, path, ok ? 200 : 404]);
    if (!ok) {
      res.writeHead(404, { 'Content-Type': 'text/plain; charset=utf-8' });
      return res.end('404 Not Found\n');
    }
    res.writeHead(200, {
      'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
      'Content-Length': statSync(file).size,
    });
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).pipe(res);
  });
}

describe('static build (cargo xtask dist) on a plain static server, under a sub-path, without COOP/COEP', {
  timeout: 30 * MINUTE,
  skip: DIST ? false : 'set SCALPEL_DIST_DIR to a `cargo xtask dist` build (cargo xtask test does)',
}, () => {
  let page, logs, close, server;
  const requests = [];
  const siteUrl = () => `http://127.0.0.1:${new globalThis.URL(MODEL_URL).port}${BASE}`;

  before(async () => {
    const html = readFileSync(join(DIST, 'index.html'), 'utf8');
    const how = `rebuild it: cargo xtask dist --base ${BASE} --model-url ${MODEL_URL} --out ${DIST}`;
    assert.ok(html.includes(`content="${MODEL_URL}"`), `${DIST}/index.html does not name the model ${MODEL_URL}; ${how}`);
    assert.ok(html.includes(`"${BASE}app-`), `${DIST}/index.html is not built for ${BASE}; ${how}`);
    assert.ok(!existsSync(join(DIST, 'models')), 'with --model-url the model is not copied into the site');
    assert.ok(existsSync(MODEL_FILE), `no model file at ${MODEL_FILE} (cargo xtask fetch-model)`);
    server = staticServer(requests);
    const port = Number(new globalThis.URL(MODEL_URL).port);
    await new Promise((ok, fail) => server.once('error', fail).listen(port, '127.0.0.1', ok));
    ({ page, logs, close } = await launch());
  });

  after(async () => {
    if (logs?.length) console.log(`browser log (last 30):\n${logs.slice(-30).join('\n')}`);
    await close?.();
    await new Promise((ok) => (server ? server.close(ok) : ok()));
  });

  test('the page loads the default model from its URL and generates, with no request outside the sub-path', { timeout: 10 * MINUTE }, async () => {
    const t0 = Date.now();
    await page.goto(siteUrl().replace(/\/$/, '')); // as typed: the server redirects /scalpel to /scalpel/
    assert.equal(page.url(), siteUrl());
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), false, 'a plain static server gives no cross-origin isolation');
    await waitState(page, 'ready', 10 * MINUTE, logs);
    console.log(`dist: page open -> model ready (f32, over http, no isolation): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.match(await page.getByLabel('Loaded model').textContent(), /SmolLM2-135M-Instruct\.Q4_1\.gguf · f32 · 98\.4 MB · download/);
    await waitCompare(page, 3 * MINUTE, logs);
    const ids = await readIds(page, 'Baseline output');
    assert.ok(ids.length > 0, 'the first comparison generated tokens');
    assert.ok((await page.getByRole('log', { name: 'Baseline output' }).textContent()).trim().length > 0);
    await screenshot(page, 'dist-01-loaded');
    // Two threads asked for where the page is not cross-origin isolated: the
    // one-thread build runs, the backend line says why, and the tokens are the same.
    const backend = page.getByLabel('Backend');
    await page.getByRole('combobox', { name: 'Threads' }).selectOption('2');
    await until(page, async () => /· 1 thread \(the page is not cross-origin isolated/.test(await backend.textContent()), 5 * MINUTE, 'the one-thread build saying why');
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await until(page, async () => (await page.getByRole('main').getAttribute('data-state')) === 'busy', MINUTE, 'the run to start');
    await waitState(page, 'ready', 3 * MINUTE, logs);
    assert.deepEqual(await readIds(page, 'Baseline output'), ids, 'the same tokens after the restart');
    console.log(`dist: 2 threads asked for, not isolated: "${(await backend.textContent()).trim()}"; same ${ids.length} tokens`);
    await page.getByRole('combobox', { name: 'Threads' }).selectOption('1');
    await until(page, async () => /· 1 thread$/.test((await backend.textContent()).trim()), 5 * MINUTE, 'one thread again');
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const modelPath = new globalThis.URL(MODEL_URL).pathname;
    const outside = requests.filter(([, p]) => !p.startsWith(BASE) && p !== modelPath && p !== BASE.replace(/\/$/, ''));
    assert.deepEqual(outside, [], 'every request stays under the sub-path or is the model URL');
    const missing = requests.filter(([, , code]) => code === 404);
    assert.deepEqual(missing, [], 'nothing the page asks for is missing');
    assert.ok(requests.some(([m, p, code]) => m === 'GET' && p === modelPath && code === 200), 'the model came from its URL');
  });

  test('the Benchmark panel runs here, and says llama.cpp is not served with a static build (no comparison offered)', { timeout: 10 * MINUTE }, async () => {
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await page.getByText('Benchmark', { exact: true }).click();
    await until(page, async () => /its wasm build is not served with this page/.test(await page.locator('details.bench').textContent()), MINUTE, 'the note');
    assert.equal(await page.getByRole('button', { name: 'Compare with llama.cpp' }).count(), 0);
    const asked = requests.filter(([m, p]) => m === 'HEAD' && p === `${BASE}llama.cpp/index.js`);
    assert.equal(asked.length, 1, 'one HEAD request, under the sub-path, when the panel opened');
    await page.getByRole('button', { name: 'Run benchmark' }).click();
    await page.waitForTimeout(300);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const res = page.getByLabel('Benchmark result');
    assert.ok(Number(await res.getAttribute('data-decode')) > 0, await res.textContent());
    console.log(`dist: ${await res.textContent()}`);
  });

  test('a patching sweep runs and equals the CLI', { timeout: 10 * MINUTE }, async () => {
    await page.getByRole('button', { name: 'Preset: IOI name-mover patching' }).click();
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const t0 = Date.now();
    await page.getByRole('button', { name: 'Run sweep' }).click();
    await until(page, async () => (await page.getByRole('table', { name: 'Patching heatmap', exact: true }).count()) > 0, 5 * MINUTE, 'the heatmap');
    await waitState(page, 'ready', MINUTE, logs);
    console.log(`dist: IOI patching sweep in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const got = await readHeatmap(page, 'Patching heatmap');
    assert.ok(got.length > 0 && got.every((row) => row.length > 0 && row.every(Number.isFinite)), 'a full heatmap of numbers');
    if (existsSync(BIN)) {
      const get = async (name) => page.getByRole('textbox', { name, exact: true }).inputValue();
      const want = cli(['patch', '--clean', await get('Clean prompt'), '--corrupt', await get('Corrupted prompt'),
        '--answer', await get('Answer'), '--wrong', await get('Wrong answer'), '--hook', 'resid_pre', '--metric', 'logit_diff_norm', '--json']);
      assert.equal(got.length, want.rows);
      assert.equal(got[0].length, want.cols);
      let maxDiff = 0;
      for (let r = 0; r < want.rows; r++) for (let c = 0; c < want.cols; c++) maxDiff = Math.max(maxDiff, Math.abs(got[r][c] - want.values[r][c]));
      console.log(`dist: patching heatmap ${want.rows}x${want.cols}: max |page - CLI| = ${maxDiff.toExponential(2)}`);
      assert.ok(maxDiff < 1e-3, `max diff ${maxDiff}`);
    } else {
      console.log(`dist: no CLI at ${BIN}; the heatmap is not compared`);
    }
    await screenshot(page, 'dist-02-patching');
  });

  test('Stop ends a long generation by restarting the worker, says so, keeps the output, and the page runs again', { timeout: 10 * MINUTE }, async () => {
    await page.getByRole('tab', { name: 'Generate & intervene' }).click();
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await page.getByRole('checkbox', { name: 'Re-run on change' }).uncheck();
    const max = page.getByRole('spinbutton', { name: 'Max new tokens' });
    await max.fill('400');
    await max.press('Enter');
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await until(page, async () => (await readIds(page, 'Baseline output')).length >= 24, 3 * MINUTE, '24 streamed tokens');
    const how = page.getByRole('note', { name: 'How Stop works here' });
    assert.match(await how.textContent(), /not cross-origin isolated .* Stop ends the engine worker and a fresh one reloads the model/);
    await screenshot(page, 'dist-03-generating');
    const workerBefore = page.workers()[0];
    let oldClosed = false;
    workerBefore.once('close', () => { oldClosed = true; });
    const t0 = Date.now();
    await page.getByRole('button', { name: 'Stop' }).click();
    await until(page, async () => /stopped/.test(await page.getByLabel('Tokens per second').textContent()), MINUTE, 'the stop');
    const stoppedAt = (await readIds(page, 'Baseline output')).length;
    await page.waitForTimeout(1000);
    assert.equal((await readIds(page, 'Baseline output')).length, stoppedAt, 'no token after Stop');
    await waitState(page, 'ready', 5 * MINUTE, logs);
    console.log(`dist: Stop after ${stoppedAt} tokens; the fresh worker had the model again ${((Date.now() - t0) / 1000).toFixed(1)} s after the click`);
    assert.ok(stoppedAt >= 24 && stoppedAt < 400, `stopped at ${stoppedAt} tokens`);
    // The old worker was terminated (Playwright hears of it a moment later) and a fresh one runs.
    await until(page, async () => oldClosed, 30_000, 'the stopped worker to close');
    await until(page, async () => page.workers().length === 1, 30_000, 'one worker');
    assert.notEqual(page.workers()[0], workerBefore, 'a fresh worker');
    assert.match(await page.getByRole('status').textContent(), /Stopped; SmolLM2-135M-Instruct\.Q4_1\.gguf reloaded in a fresh engine worker/);
    assert.equal(await page.getByLabel('Loaded model').getAttribute('data-cached'), 'true', 'reloaded from the browser cache');
    assert.equal((await readIds(page, 'Baseline output')).length, stoppedAt, 'the stopped output stays');
    await page.waitForTimeout(1500);
    assert.equal(await state(page), 'ready', 'nothing runs by itself after the restart');
    await screenshot(page, 'dist-04-stopped');
    // The fresh worker runs the next request.
    await max.fill('8');
    await max.press('Enter');
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await waitCompare(page, 3 * MINUTE, logs);
    const again = (await readIds(page, 'Baseline output')).length;
    assert.ok(again > 0 && again <= 8, `${again} tokens`);
    assert.doesNotMatch(await page.getByLabel('Tokens per second').textContent(), /stopped/);
  });

  test('Stop ends a patching sweep the same way, and the sweep runs again afterwards', { timeout: 10 * MINUTE }, async () => {
    await page.getByRole('tab', { name: 'Activation patching' }).click();
    await page.getByRole('button', { name: 'Run sweep' }).click();
    const progress = page.getByRole('progressbar', { name: 'Sweep progress' });
    await until(page, async () => Number((await progress.getAttribute('value').catch(() => null)) ?? 0) >= 1, 3 * MINUTE, 'the sweep to start');
    assert.match(await page.getByRole('note', { name: 'How Stop works here' }).textContent(), /Stop ends the engine worker/);
    await page.getByRole('button', { name: 'Stop' }).click();
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.match(await page.getByRole('status').textContent(), /Stopped; SmolLM2-135M-Instruct\.Q4_1\.gguf reloaded in a fresh engine worker/);
    assert.equal(await page.getByRole('table', { name: 'Patching heatmap', exact: true }).count(), 0, 'a stopped sweep shows no heatmap');
    await page.getByRole('button', { name: 'Run sweep' }).click();
    await until(page, async () => (await page.getByRole('table', { name: 'Patching heatmap', exact: true }).count()) > 0, 5 * MINUTE, 'the heatmap');
    await waitState(page, 'ready', MINUTE, logs);
  });
});
