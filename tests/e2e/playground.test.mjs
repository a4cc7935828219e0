// The playground in headless Chromium: the engine compiled to wasm, in a Web
// Worker, driven through the page by role and label, checked against the
// native CLI on the same inputs.
//
// Run by `cargo xtask test` (which builds, serves and sets the environment);
// by hand: `cargo xtask serve` in one shell, then `node --test tests/e2e/`.

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  URL, ROOT, launch, cli, state as state_, waitState, until, screenshot, loadPrecision, setThreads, readIds, waitCompare, readHeatmap, alertText,
  seeded, writeSafetensors,
} from './helpers.mjs';

const MINUTE = 60_000;
const tmp = mkdtempSync(join(tmpdir(), 'scalpel-e2e-docs-'));
const MODEL_DIR = process.env.SCALPEL_MODEL_DIR ?? join(ROOT, 'models');

/** A TopK sparsify SAE on layer 2's MLP output (1,024 latents, k = 16) in the served
 * models/ folder (git-ignored), as a Hugging Face folder would hold it; returns its folder. */
function writeTestDictionary() {
  const dir = join(MODEL_DIR, 'sae-e2e', 'layers.2.mlp');
  const [dIn, n] = [576, 1024];
  const rand = seeded(7);
  writeSafetensors(join(dir, 'sae.safetensors'), {
    'encoder.weight': [[n, dIn], Float32Array.from({ length: n * dIn }, () => 0.2 * rand())],
    'encoder.bias': [[n], new Float32Array(n)],
    W_dec: [[n, dIn], Float32Array.from({ length: n * dIn }, () => 0.05 * rand())],
    b_dec: [[dIn], new Float32Array(dIn)],
  });
  writeFileSync(join(dir, 'cfg.json'), JSON.stringify({ activation: 'topk', k: 16, num_latents: n, d_in: dIn, transcode: false, skip_connection: false }));
  return dir;
}

/** A circuit-tracer transcoder set (config.yaml + layer_3.safetensors, its layout: W_enc [n, d]),
 * a JumpReLU with some negative thresholds and a skip connection, in the served models/ folder. */
function writeCircuitTracerSet() {
  const dir = join(MODEL_DIR, 'ct-e2e');
  const [d, n] = [576, 512];
  const rand = seeded(11);
  writeSafetensors(join(dir, 'layer_3.safetensors'), {
    W_enc: [[n, d], Float32Array.from({ length: n * d }, () => 0.3 * rand())],
    W_dec: [[n, d], Float32Array.from({ length: n * d }, () => 0.05 * rand())],
    b_enc: [[n], Float32Array.from({ length: n }, () => 0.2 * rand())],
    b_dec: [[d], new Float32Array(d)],
    'activation_function.threshold': [[n], Float32Array.from({ length: n }, () => 0.5 * rand())],
    W_skip: [[d, d], Float32Array.from({ length: d * d }, () => 0.01 * rand())],
  });
  writeFileSync(join(dir, 'config.yaml'), 'model_name: SmolLM2-135M-Instruct\nmodel_kind: transcoder_set\nfeature_input_hook: mlp.hook_in\nfeature_output_hook: mlp.hook_out\n');
  return dir;
}

/** The Features table's latents, once a new one is shown, against `scalpel features` on the same prompt. */
async function compareLatents(page, logs, sae, prompt, label) {
  await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill(prompt);
  await page.getByRole('button', { name: 'Encode prompt' }).click();
  await until(page, async () => (await page.getByRole('table', { name: 'Features per position' }).count()) > 0, 2 * MINUTE, 'the features');
  await waitState(page, 'ready', MINUTE, logs);
  const rows = await page.getByRole('table', { name: 'Features per position' }).evaluate((t) => [...t.querySelectorAll('tbody tr')].map((r) => r.dataset.latents));
  const want = cli(['features', '--sae', sae, '--prompt', prompt, '--top-k', '5', '--json']);
  assert.equal(rows.length, want.positions.length);
  let worst = 0;
  want.positions.forEach((p, i) => {
    const got = rows[i].split(',').filter(Boolean).map((x) => x.split(':').map(Number));
    assert.deepEqual(got.map((g) => g[0]), p.latents.map((l) => l.id), `${label}: position ${i} ids`);
    got.forEach((g, j) => { worst = Math.max(worst, Math.abs(g[1] - p.latents[j].activation)); });
  });
  console.log(`${label}: ${rows.length} positions, top-5 ids equal the CLI's, max |activation page - CLI| = ${worst.toExponential(2)}; ${await page.getByLabel('Features summary').textContent()}`);
  assert.ok(worst < 1e-4, `${label}: activations differ by ${worst}`);
  return want;
}

async function preset(page, title, logs) {
  await page.getByRole('button', { name: `Preset: ${title}` }).click();
  await page.waitForTimeout(100);
  await waitState(page, 'ready', 5 * MINUTE, logs);
}

/** Navigate for real (a URL differing only in its #fragment would not reload). */
async function open(page, url) {
  await page.goto('about:blank');
  await page.goto(url);
}

/** Serves the engine worker's loader (any `?threads=`) with `from` replaced
 * by `to`: how a test reaches the worker's exports, which the page never
 * exposes. The original headers are kept (the worker needs its COEP
 * header). Returns the undo. */
async function patchLoader(page, from, to) {
  const loader = (url) => url.pathname.endsWith('/worker_loader.js');
  await page.route(loader, async (route) => {
    const response = await route.fetch();
    await route.fulfill({ response, body: (await response.text()).replace(from, to) });
  });
  return () => page.unroute(loader);
}

async function tab(page, name) {
  await page.getByRole('tab', { name }).click();
}

describe('playground', { timeout: 60 * MINUTE }, () => {
  let page, logs, close, context;

  before(async () => {
    ({ page, logs, close, context } = await launch());
  });

  after(async () => {
    if (logs?.length) console.log(`browser log (last 30):\n${logs.slice(-30).join('\n')}`);
    await close?.();
  });

  test('the default model loads (f32) with a progress bar and runs a first comparison', { timeout: 10 * MINUTE }, async () => {
    const t0 = Date.now();
    await open(page, URL);
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), true, 'server must send COOP/COEP');
    await waitState(page, 'ready', 10 * MINUTE, logs);
    console.log(`page open -> model ready (f32, network): ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    assert.match(await page.getByRole('status').textContent(), /Ready|Comparison|Generating/);
    const loaded = page.getByLabel('Loaded model');
    assert.match(await loaded.textContent(), /SmolLM2-135M-Instruct\.Q4_1\.gguf · f32 · 98\.4 MB · download/);
    assert.equal(await loaded.getAttribute('data-cached'), 'false');
    assert.match(await page.getByLabel('Download progress').textContent(), /98\.4 MB \/ 98\.4 MB \(100%\)/);
    assert.equal(await page.getByRole('progressbar', { name: 'Model download' }).getAttribute('value'), '100.0');
    await waitCompare(page, 3 * MINUTE, logs);
    await screenshot(page, '01-loaded');
  });

  test('the first screen on a 1024×700 laptop: once the model loads, its card folds to one line and the experiment shows; Change opens it and the choice is kept', { timeout: 10 * MINUTE }, async () => {
    const fresh = await launch([], { cardOpen: false });
    try {
      const p = fresh.page;
      await p.setViewportSize({ width: 1024, height: 700 });
      await open(p, URL);
      await waitState(p, 'ready', 5 * MINUTE, fresh.logs);
      await waitCompare(p, 5 * MINUTE, fresh.logs);
      const card = p.getByRole('region', { name: 'Model' });
      assert.match(await card.getAttribute('class'), /folded/);
      assert.match(await p.getByLabel('Loaded model').textContent(), /SmolLM2-135M-Instruct.*· f32 · .*1 thread/);
      assert.equal(await p.getByRole('combobox', { name: 'Precision' }).count(), 0, 'the folded card has no controls');
      const cardBox = await card.boundingBox();
      assert.ok(cardBox.height < 60, `one line: ${cardBox.height}px`);
      // The experiment is on the first screen: the tabs and both columns' start.
      const tabs = await p.getByRole('tablist', { name: 'Panels' }).boundingBox();
      const lane = await p.getByRole('log', { name: 'Baseline output' }).boundingBox();
      console.log(`first screen 1024x700: model card ${cardBox.height.toFixed(0)} px tall, tabs at ${tabs.y.toFixed(0)} px, baseline output at ${lane.y.toFixed(0)} px`);
      assert.ok(lane.y < 700, `the baseline output starts at ${lane.y}px, below the first screen`);
      await screenshot(p, '00-first-screen-1024x700');
      // Change: the whole card; kept open across a reload; Fold folds it.
      await p.getByRole('button', { name: 'Change the model, precision or backend' }).click();
      assert.equal(await p.getByRole('combobox', { name: 'Precision' }).count(), 1);
      await open(p, URL);
      await waitState(p, 'ready', 5 * MINUTE, fresh.logs);
      assert.equal(await p.getByRole('combobox', { name: 'Precision' }).count(), 1, 'kept open after a reload');
      await p.getByRole('button', { name: 'Fold the model card to one line' }).click();
      assert.match(await p.getByRole('region', { name: 'Model' }).getAttribute('class'), /folded/);
    } finally {
      await fresh.close();
    }
  });

  test('steering: the intervened output differs, and both equal the CLI running the same document', { timeout: 10 * MINUTE }, async () => {
    await preset(page, '"Love − Hate" steering', logs);
    await waitCompare(page, 5 * MINUTE, logs);
    const base = await readIds(page, 'Baseline output');
    const steered = await readIds(page, 'Intervened output');
    const doc = await page.getByLabel('Intervention document', { exact: true }).textContent();
    const prompt = await page.getByRole('textbox', { name: 'Prompt', exact: true }).inputValue();
    const file = join(tmp, 'steer.json');
    writeFileSync(file, doc);
    const args = ['generate', '--prompt', prompt, '--max-new-tokens', '16', '--temperature', '0', '--json'];
    const wantBase = cli(args);
    const wantSteered = cli([...args, '--interventions', file]);
    console.log(`baseline  page ${JSON.stringify(await page.getByRole('log', { name: 'Baseline output' }).textContent())}`);
    console.log(`intervened page ${JSON.stringify(await page.getByRole('log', { name: 'Intervened output' }).textContent())}`);
    assert.deepEqual(base, wantBase.ids, 'baseline ids equal the CLI');
    assert.deepEqual(steered, wantSteered.ids, 'intervened ids equal the CLI with the page\'s document');
    assert.notDeepEqual(base, steered, 'steering changes the output');
    // Differing tokens are highlighted; each token has its probability.
    const diffs = await page.getByRole('log', { name: 'Intervened output' }).locator('.tok.diff').count();
    assert.ok(diffs > 0, 'differing tokens are highlighted');
    const p = Number(await page.getByRole('log', { name: 'Intervened output' }).locator('.tok').first().getAttribute('data-prob'));
    assert.ok(p > 0 && p <= 1, `token probability ${p}`);
    // Keyboard: focusing a token shows its probability and alternatives.
    await page.getByRole('log', { name: 'Intervened output' }).locator('.tok').nth(1).focus();
    assert.match(await page.getByLabel('Intervened token details').textContent(), /p = [\d.]+% · top: /);
    assert.match(await page.getByLabel('Intervention report').textContent(), /add: \d+ hook call\(s\) changed at blocks\.4\.hook_resid_pre/);
    assert.equal(await page.getByRole('list', { name: 'Intervened next-token probabilities' }).getByRole('listitem').count(), 8);
    await screenshot(page, '02-steering');
  });

  test('the stack: toggling the intervention off makes both columns equal; editing the strength re-runs', { timeout: 10 * MINUTE }, async () => {
    const base = await readIds(page, 'Baseline output');
    await page.getByRole('checkbox', { name: 'Intervention 1 enabled' }).uncheck();
    await until(page, async () => (await page.getByRole('log', { name: 'Intervened output' }).textContent()).includes('no enabled interventions'), 2 * MINUTE, 'the re-run without interventions');
    await waitState(page, 'ready', MINUTE, logs);
    await page.getByRole('checkbox', { name: 'Intervention 1 enabled' }).check();
    const strength = page.getByRole('spinbutton', { name: 'Intervention 1 strength' });
    await strength.fill('0');
    await strength.press('Enter');
    await page.waitForTimeout(600);
    await waitCompare(page, 3 * MINUTE, logs);
    assert.deepEqual(await readIds(page, 'Intervened output'), base, 'strength 0 gives the baseline');
    // Add a second intervention from the picker, then delete it.
    await page.getByRole('combobox', { name: 'New intervention type' }).selectOption('zero');
    await page.getByRole('button', { name: 'Add intervention' }).click();
    assert.equal(await page.getByRole('listitem', { name: /^Intervention \d$/ }).count(), 2);
    await page.getByRole('button', { name: 'Intervention 2 delete' }).click();
    assert.equal(await page.getByRole('listitem', { name: /^Intervention \d$/ }).count(), 1);
    await strength.fill('5');
    await strength.press('Enter');
    await page.waitForTimeout(600);
    await waitCompare(page, 3 * MINUTE, logs);
  });

  test('vector files: a llama.cpp control vector and an SAE latent become interventions the CLI agrees with', { timeout: 10 * MINUTE }, async () => {
    await preset(page, '"Love − Hate" steering', logs);
    await waitCompare(page, 5 * MINUTE, logs);
    // A control vector exported by the CLI (layers 3-5), imported through the page.
    const gguf = join(tmp, 'love.gguf');
    cli(['vector', '--plus', 'I love you', '--minus', 'I hate you', '--hook', 'blocks.*.hook_resid_post', '--layers', '3-5', '--out', gguf, '--json']);
    await page.getByRole('combobox', { name: 'Intervention 1 vector source' }).selectOption('control');
    await page.getByRole('combobox', { name: 'Intervention 1 layer' }).selectOption('all');
    await page.getByLabel('Intervention 1 control vector file').setInputFiles(gguf);
    await until(page, async () => /Control vector love\.gguf imported/.test(await page.getByRole('status').textContent()), MINUTE, 'the import');
    await page.waitForTimeout(600);
    await waitCompare(page, 3 * MINUTE, logs);
    let doc = JSON.parse(await page.getByLabel('Intervention document', { exact: true }).textContent());
    assert.deepEqual(doc.interventions.map((i) => i.hook), [3, 4, 5].map((k) => `blocks.${k}.hook_resid_post`));
    let file = join(tmp, 'control.json');
    writeFileSync(file, JSON.stringify(doc));
    let want = cli(['generate', '--prompt', 'I think my neighbour is', '--max-new-tokens', '16', '--interventions', file, '--json']);
    assert.deepEqual(await readIds(page, 'Intervened output'), want.ids);

    // A tiny SAELens SAE for blocks.3.hook_resid_pre (d_in 576, 8 latents), written here,
    // loaded in the Features panel; the stack's vector is its latent 5's decoder row.
    const [dIn, dSae] = [576, 8];
    const rand = seeded(1);
    const saeDir = join(tmp, 'sae-l3');
    writeSafetensors(join(saeDir, 'sae_weights.safetensors'), {
      W_enc: [[dIn, dSae], Float32Array.from({ length: dIn * dSae }, rand)],
      W_dec: [[dSae, dIn], Float32Array.from({ length: dSae * dIn }, rand)],
      b_enc: [[dSae], new Float32Array(dSae)],
      b_dec: [[dIn], new Float32Array(dIn)],
    });
    writeFileSync(join(saeDir, 'cfg.json'), JSON.stringify({ architecture: 'standard', d_in: dIn, d_sae: dSae, hook_name: 'blocks.3.hook_resid_pre' }));
    await tab(page, 'Features (SAEs)');
    await page.getByRole('combobox', { name: 'Dictionary source' }).selectOption('files');
    await page.getByLabel('Dictionary files').setInputFiles([join(saeDir, 'cfg.json'), join(saeDir, 'sae_weights.safetensors')]);
    await page.getByRole('button', { name: 'Load dictionary' }).click();
    await until(page, async () => /Dictionary .* loaded: 8 latents at blocks\.3\.hook_resid_pre/.test(await page.getByRole('status').textContent()), MINUTE, 'the SAE');
    await tab(page, 'Generate & intervene');
    await page.getByRole('combobox', { name: 'Intervention 1 layer' }).selectOption('3');
    await page.getByRole('combobox', { name: 'Intervention 1 hook' }).selectOption('hook_resid_pre');
    await page.getByRole('combobox', { name: 'Intervention 1 vector source' }).selectOption('sae');
    const latent = page.getByRole('spinbutton', { name: 'Intervention 1 latent' });
    await latent.fill('5');
    await latent.press('Enter');
    await page.waitForTimeout(600);
    await waitCompare(page, 3 * MINUTE, logs);
    doc = JSON.parse(await page.getByLabel('Intervention document', { exact: true }).textContent());
    assert.equal(doc.interventions[0].hook, 'blocks.3.hook_resid_pre');
    assert.deepEqual(doc.interventions[0].vector, { from: 'sae', latent: 5 });
    file = join(tmp, 'sae.json');
    writeFileSync(file, JSON.stringify(doc));
    want = cli(['generate', '--prompt', 'I think my neighbour is', '--max-new-tokens', '16', '--interventions', file, '--sae', saeDir, '--json']);
    assert.deepEqual(await readIds(page, 'Intervened output'), want.ids);
  });

  test('features: a sparsify dictionary by URL; latents per token, the corpus pass and a dashboard equal the CLI; steer and ablate from the dashboard run like the CLI; the pass is kept in IndexedDB', { timeout: 20 * MINUTE }, async () => {
    // A TopK sparsify SAE on layer 2's MLP output (1,024 latents, k = 16), in the served
    // models/ folder (git-ignored) as a Hugging Face folder would hold it.
    const dir = writeTestDictionary();
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await tab(page, 'Features (SAEs)');
    await page.getByRole('combobox', { name: 'Dictionary source' }).selectOption('url');
    await page.getByRole('textbox', { name: 'Dictionary folder URL' }).fill(`${URL}models/sae-e2e/layers.2.mlp/`);
    await page.getByRole('button', { name: 'Load dictionary' }).click();
    await until(page, async () => /1024 latents at blocks\.2\.hook_mlp_out/.test(await page.getByRole('status').textContent()), MINUTE, 'the dictionary');
    assert.match(await page.getByLabel('Loaded dictionary').textContent(), /sparsify · TopK, k = 16 · SAE at blocks\.2\.hook_mlp_out · 1024 latents/);

    // Latents per token: the page's equal the CLI's.
    const prompt = 'The Eiffel Tower is in Paris, and 7 + 5 = 12.';
    const want = await compareLatents(page, logs, dir, prompt, 'features');
    await screenshot(page, '20-features');

    // The corpus pass, then a dashboard: its top contexts equal `scalpel features --latent`.
    await page.getByRole('button', { name: 'Run the corpus pass' }).click();
    await until(page, async () => /Corpus pass done/.test(await page.getByRole('status').textContent()), 10 * MINUTE, 'the corpus pass');
    const status = await page.getByLabel('Corpus status').textContent();
    console.log(`corpus pass in the page (1,024 latents at layer 2): ${status}`);
    assert.match(status, /computed in/);
    const latentId = want.positions[1].latents[0].id;
    await page.getByRole('button', { name: new RegExp(`^Latent ${latentId}:`) }).first().click();
    const contexts = page.getByRole('list', { name: `Latent ${latentId} top contexts` });
    await until(page, async () => (await contexts.count()) > 0, 2 * MINUTE, 'the dashboard');
    await waitState(page, 'ready', MINUTE, logs);
    const got = await contexts.evaluate((l) => [...l.querySelectorAll('li')].map((li) => ({ window: +li.dataset.window, position: +li.dataset.position, activation: +li.dataset.activation })));
    const dash = cli(['features', '--sae', dir, '--latent', String(latentId), '--corpus', 'public/corpus/corpus-v1.txt', '--contexts', '10', '--json']);
    assert.deepEqual(got.map((c) => [c.window, c.position]), dash.contexts.map((c) => [c.window, c.position]));
    const dAct = Math.max(...got.map((c, i) => Math.abs(c.activation - dash.contexts[i].activation)));
    console.log(`dashboard of latent ${latentId}: ${got.length} top contexts equal the CLI's (max |dact| ${dAct.toExponential(2)}); native pass ${dash.tokens} tokens at ${dash.tokens_per_second.toFixed(0)} tokens/s`);
    assert.ok(dAct < 1e-4);
    assert.match(await page.getByLabel('Latent corpus summary').textContent(), new RegExp(`Fires at ${dash.fires} of ${dash.tokens} corpus tokens`));
    await screenshot(page, '21-dashboard');

    // One click each: steer with the latent and ablate it; the comparison equals the CLI's run of the same document.
    await page.getByRole('spinbutton', { name: 'Steering strength' }).fill('6');
    await page.getByRole('spinbutton', { name: 'Steering strength' }).press('Enter');
    await page.getByRole('button', { name: 'Steer with this latent' }).click();
    await page.getByRole('button', { name: 'Ablate this latent' }).click();
    await tab(page, 'Generate & intervene');
    await page.waitForTimeout(600);
    await waitCompare(page, 3 * MINUTE, logs);
    const doc = JSON.parse(await page.getByLabel('Intervention document', { exact: true }).textContent());
    assert.deepEqual(doc.interventions.map((i) => [i.hook, i.op]), [['blocks.2.hook_mlp_out', 'add'], ['blocks.2.hook_mlp_out', 'sae_clamp']]);
    const file = join(tmp, 'features.json');
    writeFileSync(file, JSON.stringify(doc));
    const run = cli(['generate', '--prompt', await page.getByRole('textbox', { name: 'Prompt', exact: true }).inputValue(), '--max-new-tokens', '24', '--interventions', file, '--sae', dir, '--json']);
    assert.deepEqual(await readIds(page, 'Intervened output'), run.ids);

    // A fresh page from the link: the dictionary loads with the Features panel, and the pass is read back from IndexedDB.
    await tab(page, 'Features (SAEs)');
    const link = page.url();
    await open(page, link);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await until(page, async () => /1024 latents/.test(await page.getByLabel('Loaded dictionary').textContent().catch(() => '')), 2 * MINUTE, 'the link\'s dictionary');
    await waitState(page, 'ready', MINUTE, logs);
    await page.getByRole('button', { name: 'Run the corpus pass' }).click();
    await until(page, async () => /IndexedDB/.test(await page.getByLabel('Corpus status').textContent()), MINUTE, 'the cached pass');

    // A dictionary for another model's width is refused by name.
    const bad = join(MODEL_DIR, 'sae-e2e', 'layers.3.mlp');
    writeSafetensors(join(bad, 'sae.safetensors'), {
      'encoder.weight': [[32, 64], new Float32Array(32 * 64)], 'encoder.bias': [[32], new Float32Array(32)],
      W_dec: [[32, 64], new Float32Array(32 * 64)], b_dec: [[64], new Float32Array(64)],
    });
    writeFileSync(join(bad, 'cfg.json'), JSON.stringify({ activation: 'topk', k: 4, num_latents: 32, d_in: 64 }));
    await page.getByRole('combobox', { name: 'Dictionary source' }).selectOption('url');
    await page.getByRole('textbox', { name: 'Dictionary folder URL' }).fill(`${URL}models/sae-e2e/layers.3.mlp/`);
    await page.getByRole('button', { name: 'Load dictionary' }).click();
    await until(page, async () => /64/.test(await alertText(page)) && /576/.test(await alertText(page)), MINUTE, 'the refusal');
    console.log(`mismatched dictionary: ${await alertText(page)}`);

    // A circuit-tracer transcoder set, by URL (the field names the layer's file) and by picked files.
    const ct = writeCircuitTracerSet();
    await page.getByRole('textbox', { name: 'Dictionary folder URL' }).fill(`${URL}models/ct-e2e/`);
    await page.getByRole('textbox', { name: 'Dictionary hook' }).fill('layer_3.safetensors');
    await page.getByRole('button', { name: 'Load dictionary' }).click();
    const loaded = async () => page.getByLabel('Loaded dictionary').textContent().catch(() => '');
    await until(page, async () => /512 latents/.test(await loaded()), MINUTE, 'the transcoder set');
    assert.match(await loaded(), /circuit_tracer · JumpReLU \(no ReLU.* · transcoder blocks\.3\.ln2\.hook_normalized → blocks\.3\.hook_mlp_out · 512 latents/);
    await compareLatents(page, logs, join(ct, 'layer_3.safetensors'), 'Paris is the capital of France.', 'circuit-tracer by URL');
    await screenshot(page, '23-circuit-tracer');
    await page.getByRole('combobox', { name: 'Dictionary source' }).selectOption('files');
    await page.getByRole('textbox', { name: 'Dictionary hook' }).fill('');
    await page.getByLabel('Dictionary files').setInputFiles([join(ct, 'config.yaml'), join(ct, 'layer_3.safetensors')]);
    await page.getByRole('button', { name: 'Load dictionary' }).click();
    await until(page, async () => /local files.*512 latents/.test(await loaded()), MINUTE, 'the picked transcoder set');
    await compareLatents(page, logs, join(ct, 'layer_3.safetensors'), 'Paris is the capital of France.', 'circuit-tracer from files');
  });

  test('every worked example runs without an error', { timeout: 10 * MINUTE }, async () => {
    for (const title of ['"Love − Hate" steering', 'Directional ablation', 'Logit lens: a fact lookup']) {
      await preset(page, title, logs);
      await page.waitForTimeout(700);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      assert.equal(await alertText(page), '', `preset ${title}`);
    }
    await preset(page, 'Directional ablation', logs);
    await waitCompare(page, 5 * MINUTE, logs);
    assert.notDeepEqual(await readIds(page, 'Intervened output'), await readIds(page, 'Baseline output'), 'the ablation changes the output');
    await screenshot(page, '09-directional-ablation');
  });

  test('patching: the heatmap fills in and equals `scalpel patch` on the same inputs', { timeout: 10 * MINUTE }, async () => {
    await preset(page, 'IOI name-mover patching', logs);
    await page.getByRole('button', { name: 'Run sweep' }).click();
    await until(page, async () => (await page.getByRole('table', { name: 'Patching heatmap', exact: true }).count()) > 0, 5 * MINUTE, 'the heatmap');
    await waitState(page, 'ready', MINUTE, logs);
    const got = await readHeatmap(page, 'Patching heatmap');
    const get = async (name) => page.getByRole('textbox', { name, exact: true }).inputValue();
    const want = cli(['patch', '--clean', await get('Clean prompt'), '--corrupt', await get('Corrupted prompt'),
      '--answer', await get('Answer'), '--wrong', await get('Wrong answer'), '--hook', 'resid_pre', '--metric', 'logit_diff_norm', '--json']);
    assert.equal(got.length, want.rows);
    assert.equal(got[0].length, want.cols);
    let maxDiff = 0;
    for (let r = 0; r < want.rows; r++) for (let c = 0; c < want.cols; c++) maxDiff = Math.max(maxDiff, Math.abs(got[r][c] - want.values[r][c]));
    console.log(`patching heatmap ${want.rows}x${want.cols}: max |page - CLI| = ${maxDiff.toExponential(2)}; ${await page.getByLabel('Patching summary').textContent()}`);
    assert.ok(maxDiff < 1e-3, `max diff ${maxDiff}`);
    await screenshot(page, '03-patching');
  });

  test('logit lens, attention and direct logit attribution agree with the CLI', { timeout: 10 * MINUTE }, async () => {
    await preset(page, 'Logit lens: a fact lookup', logs);
    await until(page, async () => (await page.getByRole('table', { name: 'Logit lens' }).count()) > 0, 3 * MINUTE, 'the lens');
    const prompt = await page.getByRole('textbox', { name: 'Prompt', exact: true }).inputValue();
    const lens = await readHeatmap(page, 'Logit lens');
    const wantLens = cli(['lens', '--prompt', prompt, '--target', ' Paris', '--json']);
    const last = wantLens.rows[wantLens.rows.length - 1].cells;
    const wantP = last[last.length - 1].target.prob;
    const gotP = lens[0][lens[0].length - 1]; // top row = last layer
    console.log(`lens: P(" Paris") at the last layer and position: page ${gotP.toFixed(5)}, CLI ${wantP.toFixed(5)}; rows ${lens.length}`);
    assert.equal(lens.length, wantLens.rows.length);
    assert.ok(Math.abs(gotP - wantP) < 1e-4);
    await screenshot(page, '04-lens');

    await tab(page, 'Attention');
    await until(page, async () => (await page.getByRole('table', { name: 'Attention pattern L0H0' }).count()) > 0, 2 * MINUTE, 'attention');
    await page.getByRole('combobox', { name: 'Attention layer' }).selectOption('5');
    await page.getByRole('combobox', { name: 'Attention head' }).selectOption('3');
    const pat = await readHeatmap(page, 'Attention pattern L5H3');
    for (const row of pat) assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-4, 'pattern rows sum to 1');
    await screenshot(page, '05-attention');

    await tab(page, 'Logit attribution & neurons');
    await until(page, async () => (await page.getByLabel('Attribution total').count()) > 0, 2 * MINUTE, 'DLA');
    const total = Number((await page.getByLabel('Attribution total').textContent()).match(/= (-?[\d.]+)/)[1]);
    const wantDla = cli(['dla', '--prompt', prompt, '--answer', ' Paris', '--json']);
    console.log(`DLA logit[" Paris"]: page ${total}, CLI ${wantDla.total}`);
    assert.ok(Math.abs(total - wantDla.total) < 1e-2);
    await page.getByRole('button', { name: 'Show neuron' }).click();
    await until(page, async () => (await page.getByRole('list', { name: 'Promoted tokens' }).count()) > 0, MINUTE, 'the neuron view');
    assert.equal(await page.getByRole('list', { name: 'Promoted tokens' }).getByRole('listitem').count(), 12);
    await screenshot(page, '06-attribution');
  });

  test('a share link reproduces the state and outputs in a fresh browser; embed mode renders one panel', { timeout: 15 * MINUTE }, async () => {
    await preset(page, '"Love − Hate" steering', logs);
    await waitCompare(page, 5 * MINUTE, logs);
    const link = page.url();
    assert.match(link, /#s=/);
    const want = await readIds(page, 'Intervened output');
    const fresh = await launch();
    try {
      await open(fresh.page, link);
      await waitState(fresh.page, 'ready', 10 * MINUTE, fresh.logs);
      await waitCompare(fresh.page, 5 * MINUTE, fresh.logs);
      assert.equal(await fresh.page.getByRole('textbox', { name: 'Prompt', exact: true }).inputValue(), 'I think my neighbour is');
      assert.equal(await fresh.page.getByRole('textbox', { name: 'Intervention 1 plus prompt' }).inputValue(), 'I love you');
      assert.deepEqual(await readIds(fresh.page, 'Intervened output'), want, 'same outputs from the link');

      const embed = link.replace('#', link.includes('?') ? '&embed=1#' : '?embed=1#');
      await fresh.page.setViewportSize({ width: 720, height: 520 });
      await open(fresh.page, embed);
      await waitState(fresh.page, 'ready', 5 * MINUTE, fresh.logs);
      await waitCompare(fresh.page, 5 * MINUTE, fresh.logs);
      assert.equal(await fresh.page.getByRole('heading', { name: 'Model' }).count(), 0, 'no model card in embed mode');
      assert.equal(await fresh.page.getByRole('tab').count(), 0, 'no tabs in embed mode');
      assert.equal(await fresh.page.getByRole('link', { name: /Open in Scalpel/ }).count(), 1);
      assert.deepEqual(await readIds(fresh.page, 'Intervened output'), want);
      await screenshot(fresh.page, '07-embed');
    } finally {
      await fresh.close();
    }
  });

  test('an embed offers its readers the controls the author picked: a strength slider and the prompt re-run the figure; an unknown control is named', { timeout: 15 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await preset(page, '"Love − Hate" steering', logs);
    await waitCompare(page, 5 * MINUTE, logs);
    // The author picks the readers' controls; the snippet carries them.
    await page.getByRole('button', { name: 'Embed', exact: true }).click();
    await page.getByRole('checkbox', { name: 'Embed control: strength' }).check();
    await page.getByRole('checkbox', { name: 'Embed control: prompt' }).check();
    const snippet = await page.getByRole('textbox', { name: 'Embed snippet' }).inputValue();
    const src = snippet.match(/src="([^"]+)"/)[1].replaceAll('&amp;', '&');
    assert.match(src, /\?embed=1&controls=prompt,strength#s=/);
    const want = await readIds(page, 'Intervened output');
    await page.setViewportSize({ width: 720, height: 620 });
    try {
      await open(page, src);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      await waitCompare(page, 5 * MINUTE, logs);
      assert.deepEqual(await readIds(page, 'Intervened output'), want, 'the embed shows the author\'s result first');
      assert.equal(await page.getByRole('tab').count(), 0, 'no tabs');
      assert.equal(await page.getByRole('button', { name: 'Add intervention' }).count(), 0, 'no stack editor');
      assert.equal(await page.getByRole('spinbutton', { name: 'Temperature' }).count(), 0, 'no sampling');
      assert.equal(await page.getByRole('textbox', { name: 'Intervention 1 plus prompt' }).count(), 0, 'no vector builder');
      await screenshot(page, '07b-embed-controls');
      // Strength 0: the intervened column becomes the baseline.
      const base = await readIds(page, 'Baseline output');
      const strength = page.getByRole('spinbutton', { name: 'Intervention 1 strength' });
      await strength.fill('0');
      await strength.press('Enter');
      await page.waitForTimeout(600);
      await waitCompare(page, 3 * MINUTE, logs);
      assert.deepEqual(await readIds(page, 'Intervened output'), base, 'strength 0 gives the baseline');
      // The prompt: the figure re-runs on the reader's text, and the
      // address keeps the embed and its controls.
      const prompt = page.getByRole('textbox', { name: 'Prompt', exact: true });
      await prompt.fill('My favourite food is');
      await page.waitForTimeout(600);
      await waitCompare(page, 3 * MINUTE, logs);
      assert.notDeepEqual(await readIds(page, 'Baseline output'), base, 'a new prompt, a new baseline');
      assert.match(page.url(), /\?embed=1&controls=prompt,strength#s=/);
      // A control that does not exist is named; the figure still renders.
      await open(page, src.replace('controls=prompt,strength', 'controls=prompt,layers'));
      await waitState(page, 'ready', 5 * MINUTE, logs);
      const notice = await page.getByRole('alert', { name: 'Link error' }).textContent();
      assert.match(notice, /'layers' that does not exist \(controls: prompt, strength, sampling, stack\)/);
      assert.equal(await page.getByRole('textbox', { name: 'Prompt', exact: true }).count(), 0, 'no controls from a bad list');
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
      await open(page, URL);
      await waitState(page, 'ready', 5 * MINUTE, logs);
    }
  });

  test('the course: every exercise solved the way a student would and checked in the worker; a wrong answer fails with the measured value; progress is kept', { timeout: 20 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const check = async () => {
      await page.getByRole('button', { name: 'Check', exact: true }).click();
      await until(page, async () => (await page.getByRole('status', { name: 'Exercise verdict' }).count()) > 0, 5 * MINUTE, 'the verdict');
      await waitState(page, 'ready', 5 * MINUTE, logs);
      const pass = (await page.getByRole('status', { name: 'Exercise verdict' }).getAttribute('data-pass')) === 'true';
      const items = (await page.getByRole('list', { name: 'Check results' }).locator('li').allTextContents()).join('\n');
      console.log(`exercise check: ${pass ? 'solved' : 'not yet'}\n${items}`);
      return { pass, items };
    };
    const exercise = async (title) => {
      await page.getByRole('button', { name: `Exercise: ${title}` }).click();
      await page.waitForTimeout(300);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      assert.equal(await page.getByRole('heading', { name: title }).count(), 1);
    };
    const strength = (n) => page.getByRole('spinbutton', { name: `Intervention ${n} strength` });

    // 1. Read the top next token; a wrong answer first, then greedy sampling.
    await exercise('1. The next token, and sampling');
    await waitCompare(page, 5 * MINUTE, logs);
    await page.getByRole('textbox', { name: 'Your answer' }).fill('London');
    let r = await check();
    assert.equal(r.pass, false);
    assert.match(r.items, /✗ the answer is right — you answered "London"/);
    assert.match(r.items, /✗ the generated text contains " Paris" \(without interventions\) — generated "/);
    await screenshot(page, '08-exercise-student-wrong');
    const top = (await page.getByRole('list', { name: 'Baseline next-token probabilities' }).locator('li').first().textContent()).match(/"([^"]*)"/)[1];
    await page.getByRole('textbox', { name: 'Your answer' }).fill(top);
    await page.getByRole('spinbutton', { name: 'Temperature' }).fill('0');
    await page.getByRole('spinbutton', { name: 'Temperature' }).press('Enter');
    await page.waitForTimeout(600);
    await waitCompare(page, 5 * MINUTE, logs);
    r = await check();
    assert.ok(r.pass, r.items);
    assert.equal(await page.getByRole('button', { name: 'Exercise: 1. The next token, and sampling' }).getAttribute('data-done'), 'true', 'progress kept');

    // 2. Steering with a prompt pair (the next exercise, from the verdict).
    await page.getByRole('button', { name: 'Next exercise →' }).click();
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.equal(await page.getByRole('heading', { name: '2. Steering with a prompt pair' }).count(), 1);
    await page.getByRole('combobox', { name: 'New intervention type' }).selectOption('add');
    await page.getByRole('button', { name: 'Add intervention' }).click();
    await page.getByRole('combobox', { name: 'Intervention 1 layer' }).selectOption('2');
    await page.getByRole('combobox', { name: 'Intervention 1 hook' }).selectOption('hook_resid_pre');
    await page.getByRole('textbox', { name: 'Intervention 1 plus prompt' }).fill('I love you');
    await page.getByRole('textbox', { name: 'Intervention 1 minus prompt' }).fill('I hate you');
    await strength(1).fill('4');
    await strength(1).press('Enter');
    await page.waitForTimeout(600);
    await waitCompare(page, 5 * MINUTE, logs);
    r = await check();
    assert.ok(r.pass, r.items);

    // 3. Where steering works: try layers until ' friend' passes 40%.
    await exercise('3. Where steering works');
    let found = null;
    for (const layer of [4, 6, 8, 10, 12]) {
      await page.getByRole('combobox', { name: 'Intervention 1 layer' }).selectOption(String(layer));
      await page.waitForTimeout(600);
      await waitCompare(page, 5 * MINUTE, logs);
      const bars = await page.getByRole('list', { name: 'Intervened next-token probabilities' }).locator('li').allTextContents();
      const friend = bars.find((b) => b.includes('" friend"'));
      if (friend && parseFloat(friend.match(/([\d.]+)%/)[1]) >= 40) { found = layer; break; }
    }
    assert.ok(found !== null, 'a layer where " friend" passes 40%');
    r = await check();
    assert.ok(r.pass, r.items);

    // 4. Zero- vs mean-ablation of L23H3: compare P(' Mary'), answer, keep the stronger.
    await exercise('4. Zero- or mean-ablation of a head');
    const pMary = async () => {
      await page.waitForTimeout(600);
      await waitCompare(page, 5 * MINUTE, logs);
      const bars = await page.getByRole('list', { name: 'Intervened next-token probabilities' }).locator('li').allTextContents();
      return parseFloat(bars.find((b) => b.includes('" Mary"')).match(/([\d.]+)%/)[1]);
    };
    await page.getByRole('combobox', { name: 'New intervention type' }).selectOption('zero');
    await page.getByRole('button', { name: 'Add intervention' }).click();
    await page.getByRole('combobox', { name: 'Intervention 1 layer' }).selectOption('23');
    await page.getByRole('textbox', { name: 'Intervention 1 heads' }).fill('3');
    await page.getByRole('textbox', { name: 'Intervention 1 heads' }).press('Enter');
    const zero = await pMary();
    await page.getByRole('combobox', { name: 'Intervention 1 operation' }).selectOption('mean');
    await page.getByRole('combobox', { name: 'Intervention 1 hook' }).selectOption('attn.hook_z');
    await page.getByRole('combobox', { name: 'Intervention 1 layer' }).selectOption('23');
    await page.getByRole('textbox', { name: 'Intervention 1 heads' }).fill('3');
    await page.getByRole('textbox', { name: 'Intervention 1 heads' }).press('Enter');
    const mean = await pMary();
    console.log(`exercise 4: P(" Mary") with L23H3 zero-ablated ${zero}%, mean-ablated ${mean}%`);
    assert.ok(zero < mean);
    await page.getByRole('combobox', { name: 'Intervention 1 operation' }).selectOption('zero');
    await page.getByRole('combobox', { name: 'Intervention 1 layer' }).selectOption('23');
    await page.getByRole('textbox', { name: 'Intervention 1 heads' }).fill('3');
    await page.getByRole('textbox', { name: 'Intervention 1 heads' }).press('Enter');
    await pMary();
    await page.getByRole('textbox', { name: 'Your answer' }).fill('zero');
    r = await check();
    assert.ok(r.pass, r.items);

    // 5. IOI patching: run the sweep, read the last column.
    await exercise('5. Patching: which position, which layer');
    await page.getByRole('button', { name: 'Run sweep' }).click();
    await until(page, async () => (await page.getByRole('table', { name: 'Patching heatmap' }).count()) > 0, 5 * MINUTE, 'the sweep');
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const rows = await page.getByRole('table', { name: 'Patching heatmap' }).evaluate((t) => [...t.querySelectorAll('tbody tr')]
      .map((tr) => [tr.querySelector('th').textContent, [...tr.querySelectorAll('td')].map((td) => Number(td.dataset.value))]));
    const half = rows.map(([label, v]) => [Number(label.replace(/^L/, '')), v[v.length - 1]]).filter(([, v]) => v > 0.5).map(([l]) => l);
    await page.getByRole('textbox', { name: 'Your answer' }).fill(String(Math.min(...half)));
    r = await check();
    assert.ok(r.pass, r.items);

    // 6. The logit lens: the first layer whose last cell reads ' Paris'.
    await exercise('6. The logit lens: where a fact appears');
    await page.getByRole('button', { name: 'Run lens' }).click();
    await until(page, async () => (await page.getByRole('table', { name: 'Logit lens' }).count()) > 0, 5 * MINUTE, 'the lens');
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const lens = await page.getByRole('table', { name: 'Logit lens' }).evaluate((t) => [...t.querySelectorAll('tbody tr')]
      .map((tr) => [tr.querySelector('th').textContent, [...tr.querySelectorAll('td')].map((td) => td.textContent)]));
    const paris = lens.filter(([label, cells]) => /^L\d+$/.test(label) && /Paris/.test(cells[cells.length - 1])).map(([label]) => Number(label.slice(1)));
    await page.getByRole('textbox', { name: 'Your answer' }).fill(String(Math.min(...paris)));
    r = await check();
    assert.ok(r.pass, r.items);
    for (const title of ['1. The next token, and sampling', '2. Steering with a prompt pair', '3. Where steering works', '4. Zero- or mean-ablation of a head', '5. Patching: which position, which layer', '6. The logit lens: where a fact appears']) {
      assert.equal(await page.getByRole('button', { name: `Exercise: ${title}` }).getAttribute('data-done'), 'true', `${title} marked solved`);
    }
  });

  test('a teacher makes an exercise in the page: checks from the current results, a preview, and a link that poses it in a fresh browser', { timeout: 15 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await preset(page, '"Love − Hate" steering', logs);
    await waitCompare(page, 5 * MINUTE, logs);
    await page.getByRole('button', { name: 'Make an exercise' }).click();
    await page.getByRole('textbox', { name: 'Exercise title' }).fill('Steer the neighbour');
    await page.getByRole('textbox', { name: 'Exercise task' }).fill('Steer with **love − hate** so the model speaks well of the neighbour.\n\n- at most one vector\n- strength at most `5`');
    await page.getByRole('textbox', { name: 'Exercise hints' }).fill('Layer 4 works.');
    await page.getByRole('button', { name: 'Next token is the current top-1' }).click();
    await page.getByRole('button', { name: 'Stack like the current one' }).click();
    const checks = await page.getByRole('list', { name: 'Exercise checks' }).locator('li').allTextContents();
    assert.equal(checks.length, 2);
    assert.match(checks[1], /exactly 1 enabled "Steer \(add a vector\)" intervention\(s\), strength at most 5/);
    await screenshot(page, '09-exercise-builder');
    await page.getByRole('button', { name: 'Copy exercise link' }).click();
    await page.getByRole('button', { name: 'Preview as student' }).click();
    assert.equal(await page.getByRole('heading', { name: 'Steer the neighbour' }).count(), 1);
    assert.equal(await page.getByRole('group', { name: 'Task' }).locator('strong').textContent(), 'love − hate');
    const link = page.url();
    const fresh = await launch();
    try {
      await open(fresh.page, link);
      await waitState(fresh.page, 'ready', 10 * MINUTE, fresh.logs);
      await waitCompare(fresh.page, 5 * MINUTE, fresh.logs);
      assert.equal(await fresh.page.getByRole('heading', { name: 'Steer the neighbour' }).count(), 1);
      await fresh.page.getByRole('button', { name: 'Check', exact: true }).click();
      await until(fresh.page, async () => (await fresh.page.getByRole('status', { name: 'Exercise verdict' }).count()) > 0, 5 * MINUTE, 'the verdict');
      assert.equal(await fresh.page.getByRole('status', { name: 'Exercise verdict' }).getAttribute('data-pass'), 'true', 'the teacher\'s own state passes');
      // Too strong: the stack check fails and says what it measured.
      const s = fresh.page.getByRole('spinbutton', { name: 'Intervention 1 strength' });
      await s.fill('9');
      await s.press('Enter');
      await fresh.page.waitForTimeout(600);
      await waitCompare(fresh.page, 5 * MINUTE, fresh.logs);
      await fresh.page.getByRole('button', { name: 'Check', exact: true }).click();
      await until(fresh.page, async () => (await fresh.page.getByRole('status', { name: 'Exercise verdict' }).getAttribute('data-pass')) === 'false', 5 * MINUTE, 'the failing verdict');
      const items = (await fresh.page.getByRole('list', { name: 'Check results' }).locator('li').allTextContents()).join('\n');
      assert.match(items, /✗ the stack has exactly 1 .* strongest \|strength\| 9/);
    } finally {
      await fresh.close();
    }
  });

  test('malformed and hostile links are rejected with a message or rendered as text', { timeout: 10 * MINUTE }, async () => {
    const linkError = () => page.getByRole('alert', { name: 'Link error' });
    await open(page, `${URL}#s=!!!not-base64`);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.match(await linkError().textContent(), /This link could not be opened: the link's state is not valid base64url/);
    assert.equal(await page.getByRole('textbox', { name: 'Prompt', exact: true }).inputValue(), 'I think dogs are', 'defaults are used');
    await screenshot(page, '08-bad-link');
    // Valid base64, wrong shape / out-of-range fields.
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    await open(page, `${URL}#s=${b64({ v: 1, hello: 'x' })}`);
    await until(page, async () => (await linkError().count()) > 0, MINUTE, 'a link error');
    assert.match(await linkError().textContent(), /not valid/);
    await page.getByRole('button', { name: 'Dismiss the link error' }).click();
    assert.equal(await linkError().count(), 0);
    // A prompt carrying markup is shown as text, never parsed as HTML. (An
    // address that failed to open is kept: take a valid state from a fresh page.)
    await open(page, URL);
    await until(page, async () => page.url().includes('#s='), MINUTE, 'the state in the address');
    const state = JSON.parse(Buffer.from(new globalThis.URL(page.url()).hash.slice(3), 'base64url').toString());
    state.prompt = '<img src=x onerror="window.__pwned=1">hi';
    await open(page, `${URL}#s=${b64(state)}`);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.equal(await page.getByRole('textbox', { name: 'Prompt', exact: true }).inputValue(), state.prompt);
    await waitCompare(page, 3 * MINUTE, logs);
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
    assert.equal(await page.locator('img').count(), 0);
    assert.equal(await linkError().count(), 0);
    state.sampling.max_new_tokens = 10_000_000;
    await open(page, `${URL}#s=${b64(state)}`);
    await until(page, async () => (await linkError().count()) > 0, MINUTE, 'a link error');
    assert.match(await linkError().textContent(), /max_new_tokens/);
    state.sampling.max_new_tokens = 8;
    state.model = { kind: 'gguf', url: 'javascript:alert(1)' };
    await open(page, `${URL}#s=${b64(state)}`);
    await until(page, async () => (await linkError().count()) > 0, MINUTE, 'a link error');
    assert.match(await linkError().textContent(), /http/);
    // More interventions than a link may hold (33 > 32): named, and the page still runs a comparison.
    delete state.model;
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await page.getByRole('button', { name: 'Add intervention' }).click();
    await until(page, async () => JSON.parse(Buffer.from(new globalThis.URL(page.url()).hash.slice(3), 'base64url').toString()).stack.length === 1, MINUTE, 'the item in the address');
    const item = JSON.parse(Buffer.from(new globalThis.URL(page.url()).hash.slice(3), 'base64url').toString()).stack[0];
    state.stack = Array.from({ length: 33 }, (_, i) => ({ ...item, id: i + 1 }));
    await open(page, `${URL}#s=${b64(state)}`);
    await until(page, async () => (await linkError().count()) > 0, MINUTE, 'a link error');
    assert.match(await linkError().textContent(), /the link has 33 interventions; at most 32/);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await waitCompare(page, 3 * MINUTE, logs);
    assert.ok((await readIds(page, 'Baseline output')).length > 0, 'a normal comparison runs after the hostile link');
    // A position range to 4e9 stays a range: named as outside the context, no crash.
    state.stack = [{ ...item, id: 1, positions: '0..4000000000' }];
    await open(page, `${URL}#s=${b64(state)}`);
    await until(page, async () => /beyond the model's context of 8192 tokens/.test(await alertText(page)), 5 * MINUTE, 'the range error');
    console.log(`range: ${await alertText(page)}`);
    assert.equal(await page.getByRole('note', { name: 'Notice' }).count(), 0, 'no worker crash');
    // 5,000 digits (one token each) fit the character cap and the context,
    // but not the memory a pass may take: refused before anything runs.
    state.stack = [];
    state.prompt = '7'.repeat(5000);
    await open(page, `${URL}#s=${b64(state)}`);
    await until(page, async () => /the prompt has 5000 tokens/.test(await alertText(page)), 5 * MINUTE, 'the prompt-length error');
    const said = await alertText(page);
    console.log(`5,000 digits: ${said}`);
    assert.match(said, /the prompt has 5000 tokens and up to 8 are generated: a forward pass over 5008 tokens needs about \d+ MB of working memory, more than the 805 MB this build allows; at most \d+ tokens fit/);
    assert.equal(await page.getByRole('note', { name: 'Notice' }).count(), 0, 'no worker crash');
    // An unbreakable prompt wraps: the page is no wider than the window.
    const [scrollWidth, innerWidth] = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(scrollWidth <= innerWidth, `the page is ${scrollWidth} px wide in a ${innerWidth} px window`);
    await screenshot(page, '08e-long-prompt');
    await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('I think dogs are');
    await waitCompare(page, 3 * MINUTE, logs);
    assert.ok((await readIds(page, 'Baseline output')).length > 0, 'a normal comparison runs after the long prompt');
  });

  test('a link\'s own model waits for a click that shows its host and size; //host, unreachable and oversize models are refused', { timeout: 10 * MINUTE }, async () => {
    const linkError = () => page.getByRole('alert', { name: 'Link error' });
    const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const gate = () => page.getByRole('region', { name: 'Model named by the link' });
    const cached = (url) => page.evaluate(async (u) => !!(await (await caches.open('scalpel-models-v1')).match(u)), url);
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const state = JSON.parse(Buffer.from(new globalThis.URL(page.url()).hash.slice(3), 'base64url').toString());

    for (const url of ['//evil.example/x.gguf', '/\\evil.example/x.gguf', '/\t/evil.example/x.gguf']) {
      state.model = { kind: 'gguf', url };
      await open(page, `${URL}#s=${b64(state)}`);
      await until(page, async () => (await linkError().count()) > 0, MINUTE, 'a link error');
      assert.match(await linkError().textContent(), /protocol-relative|control characters/, url);
    }

    // A model on this site under another address: its size is asked, nothing is downloaded before the click.
    const copy = 'models/SmolLM2-135M-Instruct.Q4_1.gguf?copy=1';
    state.model = { kind: 'gguf', url: copy };
    await open(page, `${URL}#s=${b64(state)}`);
    await waitState(page, 'confirm', MINUTE, logs);
    await until(page, async () => /MB/.test(await gate().getByLabel('Model size').textContent()), MINUTE, 'the size');
    assert.equal(await gate().getByLabel('Model size').textContent(), '98.4 MB');
    assert.match(await gate().getByLabel('Model host').textContent(), /^127\.0\.0\.1:\d+ \(this site\)$/);
    await page.waitForTimeout(1000);
    assert.equal(await state_(page), 'confirm');
    assert.equal(await cached(copy), false, 'nothing downloaded before the click');
    assert.equal(await page.getByLabel('Loaded model').textContent(), 'No model loaded');
    await screenshot(page, '08b-link-model');
    await gate().getByRole('button', { name: 'Download and load it' }).click();
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.match(await page.getByLabel('Loaded model').textContent(), /Loaded: SmolLM2-135M-Instruct\.Q4_1\.gguf · f32 · 98\.4 MB · download/);
    assert.equal(await cached(copy), true);
    await page.evaluate(async (u) => (await caches.open('scalpel-models-v1')).delete(u), copy);

    // A model URL that answers 404: said before any download.
    state.model = { kind: 'gguf', url: 'models/does-not-exist.gguf' };
    await open(page, `${URL}#s=${b64(state)}`);
    await waitState(page, 'confirm', MINUTE, logs);
    await until(page, async () => /404/.test(await gate().getByLabel('Model size').textContent()), MINUTE, 'the 404');
    assert.match(await gate().getByLabel('Model size').textContent(), /could not be reached: the server answered HTTP 404/);

    // A sharded checkpoint whose index declares 50 GB: cannot be downloaded at all.
    const huge = join(ROOT, 'models', 'huge-e2e');
    mkdirSync(huge, { recursive: true });
    writeFileSync(join(huge, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 50e9 }, weight_map: { 'w': 'model-00001-of-00002.safetensors' } }));
    state.model = { kind: 'hf_repo', base: 'models/huge-e2e/' };
    await open(page, `${URL}#s=${b64(state)}`);
    await waitState(page, 'confirm', MINUTE, logs);
    await until(page, async () => /more than/.test(await gate().getByLabel('Model size').textContent()), MINUTE, 'the size check');
    assert.match(await gate().getByLabel('Model size').textContent(), /^50000\.0 MB: more than the 2000\.0 MB the browser build takes/);
    assert.equal(await gate().getByRole('button', { name: 'Download and load it' }).isDisabled(), true);
    await screenshot(page, '08c-link-model-too-big');
    await gate().getByRole('button', { name: 'Use the default model instead' }).click();
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.match(await page.getByLabel('Loaded model').textContent(), /Loaded: SmolLM2-135M-Instruct\.Q4_1\.gguf ·/);
    await waitCompare(page, 3 * MINUTE, logs);
  });

  test('the last valid state is kept in the browser: a link that fails to open keeps its address and offers the previous session', { timeout: 10 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const prompt = page.getByRole('textbox', { name: 'Prompt', exact: true });
    await prompt.fill('My saved prompt');
    const promptInLink = async () => JSON.parse(Buffer.from(new globalThis.URL(page.url()).hash.slice(3), 'base64url').toString()).prompt;
    await until(page, async () => (await promptInLink()) === 'My saved prompt', MINUTE, 'the address to follow the edit');
    await waitState(page, 'ready', 3 * MINUTE, logs);
    const bad = `${URL}#s=!!!not-base64`;
    await open(page, bad);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.equal(page.url(), bad, 'the address that failed is left as it was');
    assert.equal(await prompt.inputValue(), 'I think dogs are');
    const offer = page.getByRole('region', { name: 'Previous session' });
    await offer.getByRole('button', { name: 'Restore previous session' }).click();
    assert.equal(await prompt.inputValue(), 'My saved prompt');
    await until(page, async () => page.url().includes('#s=') && (await promptInLink()) === 'My saved prompt', MINUTE, 'the restored state in the address');
    await waitCompare(page, 3 * MINUTE, logs);
    // A state the next visit would reject is never written: the address keeps the last valid one.
    await prompt.fill('x'.repeat(20_001));
    await until(page, async () => (await page.getByRole('alert', { name: 'State not saved' }).count()) > 0, MINUTE, 'the warning');
    assert.match(await page.getByRole('alert', { name: 'State not saved' }).textContent(), /field 'prompt' has 20001 characters; at most 20000/);
    assert.equal(await promptInLink(), 'My saved prompt');
    await prompt.fill('I think dogs are');
    await until(page, async () => (await page.getByRole('alert', { name: 'State not saved' }).count()) === 0, MINUTE, 'the warning to go');
    await waitState(page, ['ready', 'error'], 3 * MINUTE, logs);
  });

  test('a worker that runs out of memory mid-generation is replaced: the model is back, the state kept, nothing re-run', { timeout: 15 * MINUTE }, async () => {
    // The worker's loader keeps the wasm exports where the test can reach
    // its memory (the page itself never exposes them).
    const unpatch = await patchLoader(page, 'wasm_bindgen({', 'self.__scalpelWasm = wasm_bindgen({');
    try {
      await open(page, URL);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      await waitCompare(page, 3 * MINUTE, logs);
      const prompt = page.getByRole('textbox', { name: 'Prompt', exact: true });
      // Something else takes the rest of the worker's 4 GiB (the test grows
      // its wasm memory to the limit): the next pass's allocation fails for
      // real inside the engine, which aborts the worker mid-generation. The
      // 2,000-digit prompt is within the activation budget.
      const workers = page.workers();
      assert.equal(workers.length, 1);
      const grown = await workers[0].evaluate(async () => {
        const memory = (await self.__scalpelWasm).memory;
        for (let pages = 65536; pages > 0; ) {
          try { memory.grow(pages); } catch { pages = Math.floor(pages / 2); }
        }
        return memory.buffer.byteLength;
      });
      console.log(`worker memory grown to ${grown} bytes`);
      const digits = '7'.repeat(2000);
      await prompt.fill(digits);
      const notice = page.getByRole('note', { name: 'Notice' });
      await until(page, async () => (await notice.count()) > 0, 5 * MINUTE, 'the crash notice');
      const said = await notice.textContent();
      console.log(`crash notice: ${said}`);
      assert.match(said, /The engine worker crashed while running 'compare' \(.+\)\. A fresh worker reloads the model; your settings are kept and nothing is re-run until you ask\./);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      assert.match(await page.getByRole('status').textContent(), /reloaded after the crash; nothing was re-run/);
      assert.match(await page.getByLabel('Loaded model').textContent(), /Loaded: SmolLM2-135M-Instruct\.Q4_1\.gguf/);
      assert.equal(await prompt.inputValue(), digits, 'the prompt is kept');
      await page.waitForTimeout(2000);
      assert.equal(await state_(page), 'ready', 'nothing runs by itself');
      await screenshot(page, '08d-worker-crash');
      // A reload does not run the state that crashed.
      await open(page, page.url());
      await waitState(page, 'ready', 5 * MINUTE, logs);
      assert.match(await notice.textContent(), /The last time this state ran, the engine crashed: it is not run until you ask\./);
      await page.waitForTimeout(2000);
      assert.equal(await state_(page), 'ready');
      assert.deepEqual(await readIds(page, 'Baseline output'), []);
      // And the page still runs a normal comparison.
      await prompt.fill('I think dogs are');
      await waitCompare(page, 3 * MINUTE, logs);
      assert.ok((await readIds(page, 'Baseline output')).length > 0);
    } finally {
      await unpatch();
    }
  });

  test('model sources: a URL that fails and a local file', { timeout: 10 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await page.getByRole('combobox', { name: 'Model source' }).selectOption('gguf');
    await page.getByRole('textbox', { name: 'Model URL' }).fill(`${URL}models/does-not-exist.gguf`);
    await page.getByRole('button', { name: 'Load', exact: true }).click();
    await until(page, async () => (await alertText(page)).length > 0, MINUTE, 'a fetch error');
    assert.match(await alertText(page), /could not fetch .*does-not-exist\.gguf: HTTP 404.*\(the previous model is still loaded\)/);
    await waitState(page, 'ready', MINUTE, logs);
    assert.match(await page.getByLabel('Loaded model').textContent(), /Loaded: SmolLM2-135M-Instruct\.Q4_1\.gguf/);
    // A file that is not a GGUF.
    await page.getByLabel('Open a model file').setInputFiles(join(ROOT, 'public/style.css'));
    await until(page, async () => /style\.css/.test(await alertText(page)), MINUTE, 'a bad-file error');
    console.log(`bad file: ${await alertText(page)}`);
    // The real model from disk.
    await page.getByLabel('Open a model file').setInputFiles(join(ROOT, 'models/SmolLM2-135M-Instruct.Q4_1.gguf'));
    await until(page, async () => /Loaded: SmolLM2-135M-Instruct\.Q4_1\.gguf/.test(await page.getByLabel('Loaded model').textContent()), 5 * MINUTE, 'the file to load');
    await waitState(page, 'ready', 5 * MINUTE, logs);
  });

  test('a Hugging Face repository by URL (sharded safetensors + tokenizer.json) loads and generates like the CLI', { timeout: 10 * MINUTE }, async () => {
    // A tiny random GPT-2 written by the reference suite's builder into the
    // served models/ folder (git-ignored), standing in for a hub repository.
    const dir = join(ROOT, 'models', 'tiny-gpt2-e2e');
    const python = join(ROOT, '.tools', 'venv', 'bin', 'python');
    execFileSync(python, ['-c', `import sys; sys.path.insert(0, 'tests/reference'); import tiny_models; tiny_models.write_gpt2_dir(${JSON.stringify(dir)}, 'sharded')`], { cwd: ROOT });
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await page.getByRole('combobox', { name: 'Model source' }).selectOption('hf');
    await page.getByRole('textbox', { name: 'Model URL' }).fill(`${URL}models/tiny-gpt2-e2e/`);
    await page.getByRole('button', { name: 'Load', exact: true }).click();
    await until(page, async () => /Loaded: models\/tiny-gpt2-e2e/.test(await page.getByLabel('Loaded model').textContent()), 3 * MINUTE, 'the HF model');
    await waitCompare(page, 3 * MINUTE, logs);
    const got = await readIds(page, 'Baseline output');
    const want = cli(['generate', '--model', dir, '--prompt', 'I think dogs are', '--max-new-tokens', '24', '--json']);
    console.log(`tiny GPT-2 from an HF folder: page ${got.join(',')} | cli ${want.ids.join(',')}`);
    assert.deepEqual(got, want.ids);
  });

  test('every architecture (tiny checkpoints transformers wrote) loads by URL and generates the CLI\'s tokens', { timeout: 10 * MINUTE }, async () => {
    // tests/fixtures/arch: Qwen2, Qwen3 (bf16), GPT-NeoX, Gemma 2, Gemma 3
    // (bf16) and llama, each a Hugging Face folder; copied into the served
    // models/ folder (git-ignored), standing in for hub repositories.
    const archs = ['llama', 'qwen2', 'qwen3_bf16', 'gpt_neox', 'gemma2', 'gemma3'];
    for (const name of archs) {
      const dir = join(ROOT, 'models', `arch-e2e-${name}`);
      cpSync(join(ROOT, 'tests', 'fixtures', 'arch', name), dir, { recursive: true });
    }
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    for (const name of archs) {
      await page.getByRole('combobox', { name: 'Model source' }).selectOption('hf');
      await page.getByRole('textbox', { name: 'Model URL' }).fill(`${URL}models/arch-e2e-${name}/`);
      await page.getByRole('button', { name: 'Load', exact: true }).click();
      await until(page, async () => new RegExp(`Loaded: models/arch-e2e-${name}`).test(await page.getByLabel('Loaded model').textContent()), 3 * MINUTE, `the ${name} model`);
      await waitCompare(page, 3 * MINUTE, logs);
      const got = await readIds(page, 'Baseline output');
      const want = cli(['generate', '--model', join(ROOT, 'models', `arch-e2e-${name}`), '--prompt', 'I think dogs are', '--max-new-tokens', '24', '--json']);
      console.log(`${name} from an HF folder: page ${got.join(',')} | cli ${want.ids.join(',')}`);
      assert.deepEqual(got, want.ids, name);
    }
    await screenshot(page, '17-arch-gemma3');
  });

  test('the model menu; a gated repository needs the pasted token, which stays out of links and storage; a model too big is refused before its weights download', { timeout: 10 * MINUTE }, async () => {
    // The test server gates models/gated/ like the hub (crates/xtask/src/server.rs).
    const TOKEN = 'hf_scalpel_test_token';
    cpSync(join(ROOT, 'tests', 'fixtures', 'arch', 'gemma3'), join(ROOT, 'models', 'gated', 'gemma3-tiny'), { recursive: true });
    // Config files alone (no weights): a Qwen2.5-0.5B-shaped model (f32
    // does not fit beside its bf16 files, quantized does) and a 7B llama.
    const configs = {
      'too-big-for-f32': { model_type: 'qwen2', vocab_size: 151936, hidden_size: 896, num_hidden_layers: 24, num_attention_heads: 14,
        num_key_value_heads: 2, intermediate_size: 4864, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 1e6,
        tie_word_embeddings: true, hidden_act: 'silu', torch_dtype: 'bfloat16' },
      'too-big': { model_type: 'llama', vocab_size: 32000, hidden_size: 4096, num_hidden_layers: 32, num_attention_heads: 32,
        num_key_value_heads: 32, intermediate_size: 11008, max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000,
        tie_word_embeddings: false, hidden_act: 'silu', torch_dtype: 'float16' },
    };
    for (const [name, cfg] of Object.entries(configs)) {
      mkdirSync(join(ROOT, 'models', 'estimate-e2e', name), { recursive: true });
      writeFileSync(join(ROOT, 'models', 'estimate-e2e', name, 'config.json'), JSON.stringify(cfg));
    }
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const source = page.getByRole('combobox', { name: 'Model source' });
    const load = () => page.getByRole('button', { name: 'Load', exact: true }).click();
    const loadedLine = async () => (await page.getByLabel('Loaded model').textContent()) ?? '';

    // The menu: each entry says its size and the precision that fits.
    await source.selectOption('cat:qwen3-0.6b');
    const chosen = page.getByRole('group', { name: 'Chosen model' });
    assert.match(await chosen.textContent(), /Qwen3 0\.6B · Qwen\/Qwen3-0\.6B-GGUF · 639 MB Q8_0 GGUF · f32 does not fit a tab: quantized precision/);
    await source.selectOption('cat:gemma-3-270m');
    assert.match(await chosen.textContent(), /536 MB bf16 · f32 precision fits · gated: needs a Hugging Face token/);
    await screenshot(page, '18-model-menu');

    // Refused before any weight is fetched (the folders have none): the
    // message says what fits.
    await source.selectOption('hf');
    const urlBox = page.getByRole('textbox', { name: 'Model URL' });
    await urlBox.fill(`${URL}models/estimate-e2e/too-big-for-f32/`);
    await load();
    await until(page, async () => /Nothing was downloaded/.test(await alertText(page)), 2 * MINUTE, 'the estimate refusal');
    const f32Refusal = await alertText(page);
    console.log(`estimate refusal: ${f32Refusal}`);
    assert.match(f32Refusal, /494M weights need about 19\d\d MB in f32 precision/);
    assert.match(f32Refusal, /in quantized precision they need about 10\d\d MB, which fits/);
    assert.match(f32Refusal, /previous model is still loaded/);
    await urlBox.fill(`${URL}models/estimate-e2e/too-big/`);
    await load();
    await until(page, async () => /too-big: its/.test(await alertText(page)), 2 * MINUTE, 'the second estimate refusal');
    assert.match(await alertText(page), /does not fit a tab in either precision/);

    // Gated: refused without a token, then with a wrong one, each saying why.
    await urlBox.fill(`${URL}models/gated/gemma3-tiny/`);
    await load();
    await until(page, async () => /HTTP 401/.test(await alertText(page)), 2 * MINUTE, 'the gated refusal');
    assert.match(await alertText(page), /gated or private: accept its terms .* paste an access token/);
    const tokenBox = page.getByLabel('Hugging Face token');
    await tokenBox.fill('hf_wrong');
    await load();
    await until(page, async () => /HTTP 403/.test(await alertText(page)), 2 * MINUTE, 'the wrong-token refusal');
    assert.match(await alertText(page), /the token was refused/);
    await tokenBox.fill(TOKEN);
    await load();
    await until(page, async () => /Loaded: models\/gated\/gemma3-tiny|Loaded: gated\/gemma3-tiny/.test(await loadedLine()), 3 * MINUTE, 'the gated model');
    await waitCompare(page, 3 * MINUTE, logs);
    const got = await readIds(page, 'Baseline output');
    const want = cli(['generate', '--model', join(ROOT, 'models', 'gated', 'gemma3-tiny'), '--prompt', 'I think dogs are', '--max-new-tokens', '24', '--json']);
    assert.deepEqual(got, want.ids);
    // The token is in no link, no storage and no cached request.
    await until(page, async () => page.url().includes('#s='), MINUTE, 'the state in the address');
    const kept = await page.evaluate(async () => {
      const out = [location.href, JSON.stringify(Object.entries(localStorage)), JSON.stringify(Object.entries(sessionStorage))];
      for (const name of await caches.keys()) {
        const c = await caches.open(name);
        for (const r of await c.keys()) out.push(r.url, JSON.stringify([...r.headers]));
      }
      return out.join('\n');
    });
    assert.match(kept, /gated\/gemma3-tiny/, 'the cache holds the gated files');
    assert.ok(!kept.includes(TOKEN), 'the token leaked into the link, storage or cache');
    await screenshot(page, '19-gated-loaded');
  });

  test('cached reload: time to first token, speed, and the main thread during generation; Stop', { timeout: 10 * MINUTE }, async () => {
    await open(page, URL); // default state; the model is in the Cache API now
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await waitCompare(page, 3 * MINUTE, logs);
    assert.equal(await page.getByLabel('Loaded model').getAttribute('data-cached'), 'true');
    const speed = await page.getByLabel('Tokens per second').textContent();
    const ttft = Number(speed.match(/first token (\d+) ms after page open/)[1]);
    console.log(`cached model: first token ${ttft} ms after page open; ${speed}; ${await page.getByLabel('Loaded model').textContent()}`);

    await page.evaluate(() => {
      window.__longTasks = [];
      new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longTasks.push(e.duration); }).observe({ type: 'longtask' });
    });
    await page.getByRole('checkbox', { name: 'Re-run on change' }).uncheck();
    const max = page.getByRole('spinbutton', { name: 'Max new tokens' });
    await max.fill('400');
    await max.press('Enter');
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await until(page, async () => (await readIds(page, 'Baseline output')).length >= 24, 3 * MINUTE, '24 streamed tokens');
    await page.getByRole('button', { name: 'Stop' }).click();
    await until(page, async () => /stopped/.test(await page.getByLabel('Tokens per second').textContent()), 2 * MINUTE, 'the stop');
    await waitState(page, 'ready', MINUTE, logs);
    const n = (await readIds(page, 'Baseline output')).length;
    assert.ok(n < 400, `generated ${n} tokens after Stop`);
    const longTasks = await page.evaluate(() => window.__longTasks);
    const longest = Math.max(0, ...longTasks);
    console.log(`main-thread long tasks while ${n} tokens streamed: ${longTasks.length}, longest ${longest.toFixed(0)} ms`);
    assert.ok(longest < 100, `longest main-thread task ${longest} ms`);
  });

  // Quantized: the int8 activation rounding amplifies last-bit differences of
  // the f32 ops (wasm simd128 vs native AVX2 gemm) over 30 layers, so near-tied
  // tokens can flip later in a greedy run: the leading tokens must agree.
  test('quantized: the first greedy tokens equal the native CLI, with both kernel sets', { timeout: 10 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await loadPrecision(page, 'quantized', logs);
    for (const kernels of ['scalpel', 'candle']) {
      await page.getByRole('combobox', { name: 'Kernels' }).selectOption(kernels);
      await waitState(page, 'ready', MINUTE, logs);
      assert.match(await page.getByLabel('Backend').textContent(), new RegExp(`quantized kernels: ${kernels}`));
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await page.waitForTimeout(300);
      await waitCompare(page, 5 * MINUTE, logs);
      const got = await readIds(page, 'Baseline output');
      const want = cli(['generate', '--precision', 'quantized', '--kernels', kernels, '--prompt', 'I think dogs are', '--max-new-tokens', '24', '--json']).ids;
      console.log(`quantized (${kernels}) page ${got.slice(0, 8)}… cli ${want.slice(0, 8)}…`);
      assert.deepEqual(got.slice(0, 3), want.slice(0, 3));
    }
  });

  test('the benchmark, and llama.cpp\'s wasm build side by side on the same GGUF and prompt: its row, the ratio, and Stop', { timeout: 10 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await page.getByText('Benchmark', { exact: true }).click();
    const compare = page.getByRole('button', { name: 'Compare with llama.cpp' });
    // Offered (served next to the page by the test server, as by `cargo xtask serve`), after a result of Scalpel's own.
    await compare.waitFor({ timeout: MINUTE });
    assert.equal(await compare.isDisabled(), true, 'nothing to compare before the benchmark ran');
    await page.getByRole('button', { name: 'Run benchmark' }).click();
    await page.waitForTimeout(300);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    const res = page.getByLabel('Benchmark result');
    const ours = { prefill: Number(await res.getAttribute('data-prefill')), decode: Number(await res.getAttribute('data-decode')) };
    assert.ok(ours.prefill > 0 && ours.decode > 0, await res.textContent());
    // Stop: llama.cpp's worker ends, and the panel says so.
    await compare.click();
    await page.getByRole('button', { name: 'Stop llama.cpp' }).click();
    await until(page, async () => /llama\.cpp: stopped/.test(await page.locator('details.bench').textContent()), MINUTE, 'the stop');
    await compare.click();
    const row = page.getByRole('table', { name: 'llama.cpp result' }).locator('tr[data-threads="1"]');
    await row.waitFor({ timeout: 5 * MINUTE });
    const [prefill, decode, promptN, predictedN] = await Promise.all(['data-prefill', 'data-decode', 'data-prompt-n', 'data-predicted-n'].map(async (a) => Number(await row.getAttribute(a))));
    // llama.cpp tokenizes the prompt's text itself (bench::prompt_text): 64 tokens, as Scalpel's.
    assert.equal(promptN, 64, 'llama.cpp\'s prompt tokens');
    assert.ok(predictedN >= 63 && prefill > 0 && decode > 0, `llama.cpp decoded ${predictedN} tokens at ${decode} tok/s`);
    const ratio = await row.locator('td').nth(2).textContent();
    const shown = ratio.match(/^Scalpel ([\d.]+)× · ([\d.]+)×$/);
    assert.ok(shown, `the ratio cell "${ratio}"`);
    assert.ok(Math.abs(shown[1] - ours.prefill / prefill) <= 0.006 && Math.abs(shown[2] - ours.decode / decode) <= 0.006, `${ratio}: Scalpel's result over llama.cpp's`);
    console.log(`benchmark panel: Scalpel f32 1 thread ${ours.prefill.toFixed(1)}/${ours.decode.toFixed(1)} tok/s; llama.cpp wasm 1 thread ${prefill.toFixed(1)}/${decode.toFixed(1)} (prompt ${promptN}, ${predictedN} decoded): ${ratio}`);
    await page.locator('details.bench').scrollIntoViewIfNeeded();
    await screenshot(page, '09b-benchmark-llama-cpp');
  });

  test('threads: on 2 threads (the threaded build; this page is cross-origin isolated) the IOI sweep and the greedy tokens equal 1 thread bit for bit, in f32 and quantized; the Benchmark panel compares 2 threads with 1 in one run (offered only on more than 1 thread, and Stop ends it)', { timeout: 25 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    assert.equal(await page.evaluate(() => self.crossOriginIsolated), true);
    // A sweep: wait for the work to start, then to end.
    const runAndWait = async (button) => {
      await page.getByRole('button', { name: button, exact: true }).click();
      await until(page, async () => (await state_(page)) === 'busy', MINUTE, `${button} to start`);
      await waitState(page, 'ready', 10 * MINUTE, logs);
    };
    const run = async (precision, n) => {
      await setThreads(page, n, logs);
      await loadPrecision(page, precision, logs);
      await preset(page, 'IOI name-mover patching', logs);
      const t0 = Date.now();
      await runAndWait('Run sweep');
      const seconds = (Date.now() - t0) / 1000;
      const heatmap = await readHeatmap(page, 'Patching heatmap');
      // A fresh worker has no cached lanes: Run generates both anew.
      await tab(page, 'Generate & intervene');
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await page.waitForTimeout(300);
      await waitCompare(page, 5 * MINUTE, logs);
      const ids = await readIds(page, 'Baseline output');
      return { heatmap, ids, seconds };
    };
    // The Benchmark panel's "Against 1 thread": the kernels' threads and
    // the worker's thread alone taking turns in one run (bench::thread_gain,
    // which errs if a run's tokens differ between the sides).
    const gain = async () => {
      const button = page.getByRole('button', { name: 'Against 1 thread' });
      if (!(await button.isVisible())) await page.getByText('Benchmark', { exact: true }).click();
      await button.click();
      await until(page, async () => (await state_(page)) === 'busy', MINUTE, 'the thread comparison to start');
      await waitState(page, 'ready', 5 * MINUTE, logs);
      const g = page.getByLabel('Thread gain');
      const [threads, decode, prefill] = await Promise.all(['data-threads', 'data-decode-gain', 'data-prefill-gain'].map(async (a) => Number(await g.getAttribute(a))));
      assert.ok(threads === 2 && decode > 0 && prefill > 0, `thread gain: ${await g.textContent()} ${logs.slice(-5).join('\n')}`);
      return g.textContent();
    };
    for (const precision of ['f32', 'quantized']) {
      const one = await run(precision, 1);
      if (precision === 'f32') {
        if (!(await page.getByRole('button', { name: 'Against 1 thread' }).isVisible())) await page.getByText('Benchmark', { exact: true }).click();
        assert.equal(await page.getByRole('button', { name: 'Against 1 thread' }).isDisabled(), true, 'nothing to compare on 1 thread');
      }
      const two = await run(precision, 2);
      console.log(`threads (${precision}), the Benchmark panel: ${await gain()}`);
      if (precision === 'quantized') {
        // Stop ends it between windows.
        await page.getByRole('button', { name: 'Against 1 thread' }).click();
        await until(page, async () => (await state_(page)) === 'busy', MINUTE, 'the thread comparison to start');
        await page.waitForTimeout(1500);
        await page.locator('details.bench').getByRole('button', { name: 'Stop' }).click();
        await waitState(page, 'ready', MINUTE, logs);
        assert.equal(await page.getByLabel('Thread gain').textContent(), '', 'no result after Stop');
        assert.equal(await page.locator('details.bench').getByRole('button', { name: 'Stop' }).count(), 0, 'its Stop shows only while it runs');
        assert.doesNotMatch(await page.getByLabel('Tokens per second').textContent(), /stopped/, 'the finished comparison is not marked stopped');
      }
      assert.ok(one.heatmap.length > 0 && one.ids.length > 0);
      assert.deepEqual(two.heatmap, one.heatmap, `${precision}: the sweep on 2 threads equals 1 thread`);
      assert.deepEqual(two.ids, one.ids, `${precision}: greedy tokens on 2 threads equal 1 thread`);
      // Each sweep is the first after the worker restarted, slower than the
      // next ones on 2 threads (5.2 s against 3.6 s in one f32 run):
      // `cargo xtask bench` times warm sweeps.
      console.log(`threads (${precision}): IOI sweep ${one.heatmap.length}x${one.heatmap[0].length} in ${one.seconds.toFixed(1)} s on 1 thread, ${two.seconds.toFixed(1)} s on 2 (${(one.seconds / two.seconds).toFixed(2)}x; first sweeps after a restart), every cell equal; ${two.ids.length} greedy tokens equal`);
    }
    await screenshot(page, '10-threads');
    await setThreads(page, 1, logs);
    await loadPrecision(page, 'f32', logs);
  });

  test('a kernels\' helper thread that dies mid-product: the product panics instead of waiting for good, the crash notice quotes the panic, and a fresh worker comes back on 2 threads', { timeout: 10 * MINUTE }, async () => {
    // The loader keeps the threaded build's exports where the test can reach
    // them: the test then does what worker_helper.js does when a helper
    // traps (`kernel_helper_died`), without a helper having to trap.
    const unpatch = await patchLoader(page, 'glue.start_worker();', 'self.__scalpelGlue = glue; glue.start_worker();');
    try {
      await open(page, URL);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      await setThreads(page, 2, logs);
      await waitCompare(page, 3 * MINUTE, logs);
      // The engine's worker (its helpers run wasm for good: they never answer an evaluate).
      const engine = page.workers().filter((w) => new globalThis.URL(w.url()).pathname.endsWith('/worker_loader.js'));
      assert.equal(engine.length, 1, 'one engine worker');
      assert.equal(await engine[0].evaluate(() => typeof self.__scalpelGlue), 'object', 'the threaded build');
      await engine[0].evaluate(() => self.__scalpelGlue.kernel_helper_died());
      const t0 = Date.now();
      await page.getByRole('textbox', { name: 'Prompt', exact: true }).fill('A helper thread died, so');
      const notice = page.getByRole('note', { name: 'Notice' });
      await until(page, async () => (await notice.count()) > 0, 2 * MINUTE, 'the crash notice');
      const said = await notice.textContent();
      console.log(`helper died: crash notice after ${((Date.now() - t0) / 1000).toFixed(1)} s: ${said}`);
      assert.match(said, /The engine worker crashed while running 'compare' \(panicked at crates\/kernels\/src\/gang\.rs:\d+:\d+: a kernel helper thread stopped with an error in the middle of a product\)\. A fresh worker reloads the model/);
      await waitState(page, 'ready', 5 * MINUTE, logs);
      assert.match(await page.getByRole('status').textContent(), /reloaded after the crash; nothing was re-run/);
      assert.match((await page.getByLabel('Backend').textContent()).trim(), /· 2 threads$/);
      await page.getByRole('button', { name: 'Run', exact: true }).click();
      await page.waitForTimeout(300);
      await waitCompare(page, 3 * MINUTE, logs);
      assert.ok((await readIds(page, 'Baseline output')).length > 0, 'the fresh worker runs');
    } finally {
      await unpatch();
    }
    await setThreads(page, 1, logs);
  });

  test('WebGPU (SwiftShader): the default model on the GPU gives the CPU path\'s top-5 next tokens and greedy tokens, and runs a steering comparison with the CLI\'s tokens; quantized weights on the GPU too, from the threaded build', { timeout: 15 * MINUTE }, async () => {
    const gpu = await launch(['--enable-unsafe-webgpu']);
    try {
      const p = gpu.page;
      await open(p, URL);
      await waitState(p, 'ready', 10 * MINUTE, gpu.logs);
      await waitCompare(p, 5 * MINUTE, gpu.logs);
      // The steering preset, first on the CPU engine (16 tokens).
      await preset(p, '"Love − Hate" steering', gpu.logs);
      await waitCompare(p, 5 * MINUTE, gpu.logs);
      const prompt = await p.getByRole('textbox', { name: 'Prompt', exact: true }).inputValue();
      await p.getByText('WebGPU backend', { exact: true }).click();
      const max = p.getByRole('spinbutton', { name: 'Max new tokens' });
      // Two tokens per lane: SwiftShader decodes the default model at ~0.05
      // token/s (20 s a step); the second token is where steering shows.
      await max.fill('2');
      await max.press('Enter');
      await p.getByRole('checkbox', { name: 'Re-run on change' }).uncheck();
      await p.getByRole('checkbox', { name: 'Allow a software GPU adapter' }).check();
      const t0 = Date.now();
      await p.getByRole('button', { name: 'Start WebGPU' }).click();
      await until(p, async () => !/not started/.test(await p.getByLabel('WebGPU adapter').textContent()), 10 * MINUTE, 'the WebGPU backend');
      await waitState(p, 'ready', MINUTE, gpu.logs);
      console.log(`${await p.getByLabel('WebGPU adapter').textContent()} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
      assert.equal(await p.getByLabel('WebGPU adapter').getAttribute('data-software'), 'true');
      // The comparison on WebGPU: sampling and the steering edit on the GPU.
      assert.equal(await p.getByRole('radio', { name: 'WebGPU' }).isChecked(), true, 'comparisons switch to WebGPU once it is started');
      const t1 = Date.now();
      await p.getByRole('button', { name: 'Run', exact: true }).click();
      await p.waitForTimeout(300);
      await waitCompare(p, 10 * MINUTE, gpu.logs);
      const speed = await p.getByLabel('Tokens per second').textContent();
      console.log(`WebGPU comparison (2 tokens per lane) in ${((Date.now() - t1) / 1000).toFixed(1)} s: ${speed}`);
      assert.match(speed, /on WebGPU · /);
      const doc = await p.getByLabel('Intervention document', { exact: true }).textContent();
      const file = join(tmp, 'steer-gpu.json');
      writeFileSync(file, doc);
      const args = ['generate', '--prompt', prompt, '--max-new-tokens', '2', '--temperature', '0', '--json'];
      const gpuBase = await readIds(p, 'Baseline output');
      const gpuSteered = await readIds(p, 'Intervened output');
      const cliSteered = cli([...args, '--interventions', file]).ids;
      console.log(`WebGPU steered ${gpuSteered} (CLI ${cliSteered}); baseline ${gpuBase}`);
      // The baseline lane is greedy on the GPU; its next-token bars come from GPU logits.
      const want = cli(['logits', '--prompt', prompt, '--top-k', '5', '--json']).top.map((t) => t.id);
      const wantIds = cli(args).ids;
      const next = (await p.getByLabel('Baseline next tokens').getAttribute('data-ids')).split(',').map(Number).slice(0, 5);
      console.log(`WebGPU next ${next} (CPU ${want}); greedy ${gpuBase} (CPU ${wantIds})`);
      assert.deepEqual(next, want, 'GPU top-5 next tokens equal the CPU path');
      assert.deepEqual(gpuBase, wantIds, 'GPU baseline equals the CLI');
      assert.deepEqual(gpuSteered, cliSteered, 'GPU steered output equals the CLI with the page\'s document');
      assert.notDeepEqual(gpuSteered, gpuBase);
      assert.match(await p.getByLabel('Intervention report').textContent(), /#1 add: [1-9]\d* hook call\(s\) changed at blocks\.4\.hook_resid_pre/);
      await screenshot(p, '10-webgpu');
      // Switching back runs the same comparison on the CPU engine.
      await p.getByRole('radio', { name: 'CPU engine' }).check();
      await p.getByRole('button', { name: 'Run', exact: true }).click();
      await p.waitForTimeout(300);
      await waitCompare(p, 5 * MINUTE, gpu.logs);
      assert.match(await p.getByLabel('Tokens per second').textContent(), /on CPU wasm/);
      assert.deepEqual(await readIds(p, 'Intervened output'), cliSteered);
      // Quantized precision: the GGUF's Q8_0/Q4_1 blocks stay quantized on
      // the GPU (dequantized inside matvec_q/matmul_q, f32 activations), so
      // the tokens are the f32 CPU path's. In the threaded build (2 threads:
      // the default on machines with more than 2 cores), whose wasm memory
      // is shared.
      await setThreads(p, 2, gpu.logs);
      await loadPrecision(p, 'quantized', gpu.logs);
      await p.getByRole('button', { name: 'Start WebGPU' }).click();
      await until(p, async () => /quantized weights/.test(await p.getByLabel('WebGPU adapter').textContent()), 10 * MINUTE, 'the quantized WebGPU backend');
      await waitState(p, 'ready', 5 * MINUTE, gpu.logs);
      await p.getByRole('button', { name: 'Run on WebGPU' }).click();
      await until(p, async () => (await p.getByLabel('WebGPU result').count()) > 0, 10 * MINUTE, 'the quantized WebGPU run');
      const qres = p.getByLabel('WebGPU result');
      const qnext = (await qres.getAttribute('data-next-ids')).split(',').map(Number);
      const qids = (await qres.getAttribute('data-ids')).split(',').map(Number);
      console.log(`${await p.getByLabel('WebGPU adapter').textContent()}: next ${qnext}; greedy ${qids}; ${await qres.locator('p.muted').textContent()}`);
      assert.deepEqual(qnext, want);
      assert.deepEqual(qids, wantIds);
      // The WebGPU benchmark, on the quantized weights (SwiftShader's f32
      // decode takes twice as long and measures nothing more here).
      await p.getByRole('button', { name: 'Benchmark WebGPU' }).click();
      await p.waitForTimeout(300);
      await waitState(p, 'ready', 10 * MINUTE, gpu.logs);
      const b = p.getByLabel('Benchmark result');
      console.log(`WebGPU benchmark on SwiftShader (32-token prefill, ${await b.getAttribute('data-decode-tokens')} decode steps in a 3 s budget): prefill ${Number(await b.getAttribute('data-prefill')).toFixed(1)} tok/s, decode ${Number(await b.getAttribute('data-decode')).toFixed(2)} tok/s (${await b.getAttribute('data-backend')})`);
      assert.match(await b.getAttribute('data-backend'), /WebGPU/);
    } finally {
      await gpu.close();
    }
  });

  test('accessibility: axe-core finds no serious or critical violation on any panel, results shown', { timeout: 10 * MINUTE }, async () => {
    await open(page, URL);
    await waitState(page, 'ready', 5 * MINUTE, logs);
    await waitCompare(page, 3 * MINUTE, logs);
    await page.addScriptTag({ path: join(ROOT, 'tests/e2e/node_modules/axe-core/axe.min.js') });
    const found = [];
    for (const name of ['Generate & intervene', 'Activation patching', 'Logit lens', 'Attention', 'Logit attribution & neurons']) {
      await tab(page, name);
      await page.waitForTimeout(300);
      await waitState(page, ['ready', 'error'], 5 * MINUTE, logs);
      const violations = await page.evaluate(async () => (await axe.run(document, { resultTypes: ['violations'] })).violations
        .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')) })));
      console.log(`axe, ${name}: ${violations.length ? JSON.stringify(violations) : 'no violations'}`);
      found.push(...violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({ panel: name, ...v })));
    }
    // Features, with a dictionary's latents, a search and a dashboard shown.
    writeTestDictionary();
    await tab(page, 'Features (SAEs)');
    await page.getByRole('combobox', { name: 'Dictionary source' }).selectOption('url');
    await page.getByRole('textbox', { name: 'Dictionary folder URL' }).fill(`${URL}models/sae-e2e/layers.2.mlp/`);
    await page.getByRole('button', { name: 'Load dictionary' }).click();
    await until(page, async () => /1024 latents/.test(await page.getByRole('status').textContent()), MINUTE, 'the dictionary');
    await page.getByRole('button', { name: 'Encode prompt' }).click();
    await until(page, async () => (await page.getByRole('table', { name: 'Features per position' }).count()) > 0, 2 * MINUTE, 'the features');
    await page.getByRole('textbox', { name: 'Search token' }).fill(' dogs');
    await page.getByRole('button', { name: 'Search latents' }).click();
    await until(page, async () => (await page.getByRole('group', { name: 'Search results' }).count()) > 0, MINUTE, 'the search');
    await page.getByRole('group', { name: 'Search results' }).getByRole('button').first().click();
    await until(page, async () => (await page.getByRole('region', { name: /Latent \d+ dashboard/ }).count()) > 0, MINUTE, 'the dashboard');
    await waitState(page, ['ready', 'error'], MINUTE, logs);
    const violations = await page.evaluate(async () => (await axe.run(document, { resultTypes: ['violations'] })).violations
      .map((v) => ({ id: v.id, impact: v.impact, nodes: v.nodes.map((n) => n.target.join(' ')) })));
    console.log(`axe, Features (SAEs): ${violations.length ? JSON.stringify(violations) : 'no violations'}`);
    found.push(...violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => ({ panel: 'Features', ...v })));
    await screenshot(page, '22-features-search');
    await tab(page, 'Generate & intervene');
    assert.deepEqual(found, [], 'serious or critical accessibility violations');
  });
});
