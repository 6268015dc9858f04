// The main page on SwiftShader: finds an adapter, generates with the built-in model, and the PNG
// equals the native CLI's (same prompt, seed, steps) within tolerance: a relation prompt, which
// both compose by region (src/lifelong/compose.rs; the page reads the parts' latents back
// asynchronously to settle them, the CLI blocks). Screenshots for people.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { REPO, serve, launch, profileDir, nativePng, comparePngs, ensureScreenshots } from './lib.mjs';

// Few steps: SwiftShader runs about 0.3 GFLOP/s. Guidance on, so both UNet batches are exercised.
const CASE = { prompt: 'a red circle to the left of a blue square', steps: 2, seed: 7, guidance: 7.5 };
const REGIONS = ['a large red circle in the center on a gray background', 'a large blue square in the center on a gray background'];
// f16 weights computed in f32 on two different backends (WGSL on SwiftShader vs burn-flex on the
// CPU) reorder sums; a few levels of 255 on single pixels, well under one level on average.
const MAX_DIFF = 8;
const MEAN_DIFF = 1.0;

let server;
let browser;
let page;

before(async () => {
  server = await serve();
  browser = await launch(profileDir('app', { fresh: true }), server.origin);
  page = await browser.context.newPage();
});

after(async () => {
  if (browser) {
    console.log(browser.logs.filter((l) => !l.startsWith('debug')).slice(-20).join('\n'));
    await browser.context.close();
  }
  if (server) server.stop();
  assert.deepEqual(browser?.offOrigin ?? [], [], 'no request may leave the origin');
});

test('the page loads and finds a WebGPU adapter', async () => {
  const started = Date.now();
  await page.goto(`${server.origin}/`);
  await page.waitForFunction(() => document.getElementById('status').dataset.state !== 'starting', null, { timeout: 60_000 });
  const status = await page.locator('#status').textContent();
  assert.equal(await page.locator('#status').getAttribute('data-state'), 'ready', status);
  assert.match(status, /WebGPU adapter/);
  console.log(`adapter found in ${Date.now() - started} ms: ${status}`);
});

test('generating with the built-in model equals the native CLI', async () => {
  await page.waitForFunction(() => !document.getElementById('generate').disabled, null, { timeout: 120_000 });
  await page.fill('#prompt', CASE.prompt);
  await page.fill('#steps', String(CASE.steps));
  await page.fill('#seed', String(CASE.seed));
  await page.fill('#guidance', String(CASE.guidance));
  const started = Date.now();
  await page.click('#generate');
  await page.waitForSelector('#gallery .card img', { timeout: 600_000 });
  const browserMs = Date.now() - started;
  const text = await page.locator('#gen-text').textContent();
  assert.match(text, /ms\/step/);
  assert.deepEqual(await page.evaluate(() => window.ldApp.last.result.regions), REGIONS, 'composed by region');
  const browserPng = await page.evaluate(async () => {
    const bytes = new Uint8Array(await window.ldApp.last.result.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  });
  const out = nativePng(CASE, join(tmpdir(), `ld-native-${process.pid}.png`));
  const nativeBase64 = readFileSync(out).toString('base64');
  const diff = await comparePngs(page, browserPng, nativeBase64);
  console.log(`browser generation ${browserMs} ms (${text}); vs native CLI: ${JSON.stringify(diff)}`);
  assert.ok(diff.maxDiff <= MAX_DIFF && diff.meanDiff <= MEAN_DIFF, `browser vs native: ${JSON.stringify(diff)}`);
  await page.screenshot({ path: join(ensureScreenshots(), 'main-after-generate.png'), fullPage: true });
});

test('the gallery offers the PNG for download', async () => {
  const link = page.locator('#gallery .card a[download]').first();
  assert.match(await link.getAttribute('download'), /\.png$/);
  assert.match(await link.getAttribute('href'), /^blob:/);
});

test('after a lost device the next Generate recovers on a fresh worker', async () => {
  // What client.js does on DeviceLostError or a wasm trap: drop the worker and its device.
  await page.evaluate(() => window.ldApp.client.restart());
  await page.fill('#steps', '1');
  const started = Date.now();
  await page.click('#generate');
  await page.waitForFunction(() => document.querySelectorAll('#gallery .card').length === 2, null, { timeout: 600_000 });
  assert.match(await page.locator('#gen-text').textContent(), /^done/);
  console.log(`recovered and generated 1 step in ${Date.now() - started} ms`);
});

test('the embed example renders (element and createGenerator)', async () => {
  const embed = await browser.context.newPage();
  const started = Date.now();
  await embed.goto(`${server.origin}/embed-example.html`);
  await embed.waitForSelector('lifelong-diffusion[data-state=done] img', { timeout: 600_000 });
  await embed.waitForSelector('#scripted[data-state=done] img', { timeout: 600_000 });
  const size = await embed.evaluate(() => {
    const img = document.querySelector('lifelong-diffusion img');
    return [img.naturalWidth, img.naturalHeight];
  });
  assert.ok(size[0] > 0 && size[1] > 0, `image size ${size}`);
  console.log(`embed example rendered in ${Date.now() - started} ms`);
  await embed.screenshot({ path: join(ensureScreenshots(), 'embed-example.png'), fullPage: true });
  await embed.close();
});

test('"load a model" takes a diffusers folder picked from disk', async () => {
  await page.selectOption('#model-select', 'folder');
  await page.setInputFiles('#model-folder', join(REPO, 'www/models/builtin'));
  await page.waitForFunction(() => /^builtin: .* ready in/.test(document.getElementById('load-text').textContent), null, { timeout: 120_000 });
  assert.ok(!(await page.locator('#generate').isDisabled()));
});
