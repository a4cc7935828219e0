// Shared set-up for the end-to-end tests: headless Debian Chromium through
// playwright-core, the native CLI for expected values, screenshots.
//
// Environment (set by `cargo xtask test`; defaults work after `cargo xtask serve`):
//   SCALPEL_URL          page URL                   (http://127.0.0.1:8080/)
//   SCALPEL_BIN          native CLI                 (target/release/scalpel)
//   SCALPEL_SCREENSHOTS  where screenshots go       (target/e2e-screenshots)
//   SCALPEL_CHROMIUM     browser executable         (/usr/bin/chromium)

import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../..');
export const URL = process.env.SCALPEL_URL ?? 'http://127.0.0.1:8080/';
export const BIN = process.env.SCALPEL_BIN ?? join(ROOT, 'target/release/scalpel');
export const SHOTS = process.env.SCALPEL_SCREENSHOTS ?? join(ROOT, 'target/e2e-screenshots');
export const CHROMIUM = process.env.SCALPEL_CHROMIUM ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/**
 * Launch Chromium with a throw-away profile. Returns { context, page, logs, close }.
 * `cardOpen`: the user's preference to keep the model card open (the
 * tests reach its controls); the folded first screen has its own test.
 */
export async function launch(extraArgs = [], { cardOpen = true } = {}) {
  const profile = mkdtempSync(join(tmpdir(), 'scalpel-e2e-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: { width: 1280, height: 900 },
  });
  if (cardOpen) {
    await context.addInitScript(() => {
      try { localStorage.setItem('scalpel.model_card', 'open'); } catch { /* about:blank */ }
    });
  }
  const page = context.pages()[0] ?? (await context.newPage());
  const logs = [];
  page.on('console', (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
  page.on('worker', (w) => w.on('console', (m) => logs.push(`[worker.${m.type()}] ${m.text()}`)));
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  };
  return { context, page, logs, close };
}

/** Run the native CLI and parse its JSON output. */
export function cli(args) {
  const out = execFileSync(BIN, args, {
    cwd: ROOT,
    encoding: 'utf8',
    maxBuffer: 256 << 20,
    // Single-threaded, like the page (rayon on 2 vCPUs is much slower, see toolchain notes).
    env: { ...process.env, RAYON_NUM_THREADS: '1' },
  });
  return JSON.parse(out);
}

export async function state(page) {
  return page.getByRole('main').getAttribute('data-state');
}

/** Wait until <main data-state> is one of `states`; fail fast on "error" with the page's message. */
export async function waitState(page, states, timeoutMs, logs = []) {
  const want = Array.isArray(states) ? states : [states];
  const t0 = Date.now();
  for (;;) {
    const s = await state(page);
    if (want.includes(s)) return s;
    if (s === 'error' && !want.includes('error')) {
      const msg = await page.locator('p.error').textContent();
      throw new Error(`page error: ${msg}\n${logs.slice(-20).join('\n')}`);
    }
    if (Date.now() - t0 > timeoutMs) {
      const status = await page.getByRole('status').textContent().catch(() => '?');
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${want} (state ${s}, status "${status}")\n${logs.slice(-20).join('\n')}`);
    }
    await page.waitForTimeout(100);
  }
}

/** Wait until a predicate on the page is true (polling, with timeout). */
export async function until(page, fn, timeoutMs, what) {
  const t0 = Date.now();
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await page.waitForTimeout(50);
  }
}

export async function screenshot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot: ${path}`);
  return path;
}

/** Token ids shown in an output log (`Baseline output` / `Intervened output`). */
export async function readIds(page, name) {
  const v = await page.getByRole('log', { name }).getAttribute('data-ids');
  return (v ?? '').split(',').filter(Boolean).map(Number);
}

/** Wait until both lanes of the comparison are done (and the page idle). */
export async function waitCompare(page, timeoutMs, logs = []) {
  await until(page, async () => {
    const b = await page.getByRole('log', { name: 'Baseline output' }).getAttribute('data-done');
    const i = await page.getByRole('log', { name: 'Intervened output' }).getAttribute('data-done');
    return b === 'true' && i === 'true';
  }, timeoutMs, 'the comparison to finish');
  await waitState(page, 'ready', timeoutMs, logs);
}

/** All cell values of a heatmap table, row by row. */
export async function readHeatmap(page, name) {
  const table = page.getByRole('table', { name, exact: true });
  return table.evaluate((t) => [...t.querySelectorAll('tbody tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => Number(td.dataset.value))));
}

/** The page's error text ('' when none). */
export async function alertText(page) {
  return ((await page.locator('p.error').textContent()) ?? '').trim();
}

export async function loadPrecision(page, precision, logs) {
  const select = page.getByRole('combobox', { name: 'Precision' });
  if ((await select.inputValue()) === precision && (await state(page)) === 'ready') return;
  await select.selectOption(precision);
  await waitState(page, 'ready', 10 * 60_000, logs);
  const loaded = await page.getByLabel('Loaded model').getAttribute('data-precision');
  if (loaded !== precision) throw new Error(`expected a ${precision} model, got "${loaded}"`);
}

/** Sets the Model card's Threads control to `n` (the worker restarts on that
 * many threads) and waits until the backend line reports them. */
export async function setThreads(page, n, logs) {
  const threads = page.getByRole('combobox', { name: 'Threads' });
  if ((await threads.inputValue()) !== String(n)) {
    await threads.selectOption(String(n));
    await until(page, async () => (await state(page)) !== 'ready', 60_000, 'the worker restart');
  }
  await waitState(page, 'ready', 10 * 60_000, logs);
  const backend = page.getByLabel('Backend');
  await until(page, async () => new RegExp(`· ${n} threads?$`).test((await backend.textContent()).trim()), 60_000, `"${n} thread(s)" in the backend line`);
}

/** A deterministic uniform(-0.5, 0.5) stream (Park–Miller). */
export function seeded(seed) {
  return () => ((seed = (seed * 16807) % 2147483647) / 2147483647 - 0.5);
}

/** Writes f32 tensors `{name: [shape, Float32Array]}` as a safetensors file (its folder made). */
export function writeSafetensors(path, tensors) {
  mkdirSync(dirname(path), { recursive: true });
  const header = {};
  let off = 0;
  for (const [k, [shape, data]] of Object.entries(tensors)) { header[k] = { dtype: 'F32', shape, data_offsets: [off, off + data.byteLength] }; off += data.byteLength; }
  const h = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8); len.writeBigUInt64LE(BigInt(h.length));
  writeFileSync(path, Buffer.concat([len, h, ...Object.values(tensors).map(([, d]) => Buffer.from(d.buffer, d.byteOffset, d.byteLength))]));
}

