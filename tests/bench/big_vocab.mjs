// The page with a 262,144-token vocabulary (Gemma 3's): is it responsive?
// Loads the tiny Gemma 3 of make_big_vocab.py by URL, then runs what reads
// the vocabulary (a comparison with its next-token lists, the logit lens,
// DLA, neuron → vocabulary) while a PerformanceObserver records the main
// thread's long tasks, and prints each step's time and the longest task.
// A benchmark: it prints numbers and asserts nothing about time.
//
//   cargo xtask serve --port 8765 &
//   python tests/bench/make_big_vocab.py models/bench-gemma3-262k
//   cd tests/e2e && SCALPEL_URL=http://127.0.0.1:8765/ node ../bench/big_vocab.mjs

import { launch, URL, waitState, waitCompare, until } from '../e2e/helpers.mjs';

const MINUTE = 60_000;
const { page, logs, close } = await launch();
const longest = async () => Math.max(0, ...(await page.evaluate(() => window.__longTasks ?? [])));
const observe = () => page.evaluate(() => {
  window.__longTasks = [];
  new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longTasks.push(e.duration); }).observe({ type: 'longtask' });
});
const rows = [];
const step = async (name, run) => {
  await observe();
  const t0 = Date.now();
  await run();
  await waitState(page, ['ready', 'error'], 5 * MINUTE, logs);
  rows.push([name, (Date.now() - t0) / 1000, await longest()]);
};
try {
  await page.goto(URL);
  await waitState(page, 'ready', 5 * MINUTE, logs);
  await step('load by URL (74 MB, vocab 262,144)', async () => {
    await page.getByRole('combobox', { name: 'Model source' }).selectOption('hf');
    await page.getByRole('textbox', { name: 'Model URL' }).fill(`${URL}models/bench-gemma3-262k/`);
    await page.getByRole('button', { name: 'Load', exact: true }).click();
    await until(page, async () => /Loaded: models\/bench-gemma3-262k/.test(await page.getByLabel('Loaded model').textContent()), 5 * MINUTE, 'the model');
    await waitCompare(page, 5 * MINUTE, logs);
  });
  await step('comparison, 24 tokens (next-token lists)', async () => {
    await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('The quick brown fox jumps over the lazy dog and');
    await page.waitForTimeout(600);
    await waitCompare(page, 5 * MINUTE, logs);
  });
  await step('logit lens, 12 positions x 3 rows', async () => {
    await page.getByRole('tab', { name: 'Logit lens' }).click();
    await page.getByRole('button', { name: 'Run lens' }).click();
    await until(page, async () => (await page.getByRole('table', { name: 'Logit lens' }).count()) > 0, 5 * MINUTE, 'the lens');
  });
  await step('direct logit attribution', async () => {
    await page.getByRole('tab', { name: 'Logit attribution & neurons' }).click();
    await page.waitForTimeout(300);
  });
  const err = (await page.locator('p.error').textContent()).trim();
  if (err) console.log(`page error: ${err}`);
  console.log('big vocabulary (262,144 tokens) in the page          seconds   longest main-thread task (ms)');
  for (const [name, s, lt] of rows) console.log(`${name.padEnd(50)} ${s.toFixed(1).padStart(8)} ${lt.toFixed(0).padStart(14)}`);
  const mem = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0);
  console.log(`main-thread JS heap after: ${(mem / 1e6).toFixed(0)} MB`);
} finally {
  if (logs.length) console.log(logs.filter((l) => /error|panic/i.test(l)).slice(-10).join('\n'));
  await close();
}
