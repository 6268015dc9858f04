// Without WebGPU: the page says so, and the concept store (IndexedDB, written by the Rust wrapper
// in the worker) still works: versioned saves, survival across reload and browser restart with the
// same profile, and a reload in the middle of a save leaves the previous version whole.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { serve, launch, profileDir, ensureScreenshots } from './lib.mjs';

let server;
let browser;
let page;
const PROFILE = profileDir('store', { fresh: true });
const offOrigin = [];

async function open() {
  browser = await launch(PROFILE, server.origin, { webgpu: false });
  page = await browser.context.newPage();
  await page.goto(`${server.origin}/`);
  await page.waitForFunction(() => document.getElementById('status').dataset.state !== 'starting', null, { timeout: 60_000 });
}

async function close() {
  offOrigin.push(...browser.offOrigin);
  await browser.context.close();
}

/** Runs a store operation in the page; `files` values are byte patterns { size, fill }. */
function store(op, args = {}) {
  return page.evaluate(async ([op, args]) => {
    const files = args.files && Object.fromEntries(Object.entries(args.files).map(([path, { size, fill }]) => {
      const bytes = new Uint8Array(size);
      for (let i = 0; i < size; i++) bytes[i] = (i * 31 + fill) & 255;
      return [path, bytes];
    }));
    const result = await window.ldApp.store(op, { ...args, files });
    if (op !== 'get' || !result) return result;
    // Summarise bytes: size and a checksum per file.
    const sums = Object.fromEntries(Object.entries(result.files).map(([path, b]) => [path, { size: b.length, sum: b.reduce((s, x) => (s * 33 + x) >>> 0, 5381) }]));
    return { manifest: result.manifest, files: sums };
  }, [op, args]);
}

const expectedSum = (size, fill) => {
  let s = 5381;
  for (let i = 0; i < size; i++) s = (s * 33 + ((i * 31 + fill) & 255)) >>> 0;
  return s;
};

/** Number of entries in the blobs store, read directly with IndexedDB in the page. */
function blobCount() {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const req = indexedDB.open('lifelong-diffusion');
    req.onsuccess = () => {
      const count = req.result.transaction('blobs').objectStore('blobs').count();
      count.onsuccess = () => { resolve(count.result); req.result.close(); };
      count.onerror = () => reject(count.error);
    };
    req.onerror = () => reject(req.error);
  }));
}

before(async () => {
  server = await serve();
  await open();
});

after(async () => {
  if (browser) await browser.context.close().catch(() => {});
  if (server) server.stop();
  assert.deepEqual(offOrigin, [], 'no request may leave the origin');
});

test('without --enable-unsafe-webgpu the page shows its no-WebGPU message', async () => {
  assert.equal(await page.locator('#status').getAttribute('data-state'), 'no-webgpu');
  assert.match(await page.locator('#status').textContent(), /no WebGPU/);
  assert.ok(await page.locator('#generate').isDisabled());
});

test('saves are versioned and replace the old version atomically', async () => {
  const v1 = await store('put', { name: 'test-cat', meta: { token: '<test-cat>' }, files: { 'adapter.safetensors': { size: 4096, fill: 1 }, 'thumb.png': { size: 100, fill: 2 } } });
  assert.equal(v1.version, 1);
  const v2 = await store('put', { name: 'test-cat', meta: { token: '<test-cat>' }, files: { 'adapter.safetensors': { size: 8192, fill: 3 }, 'thumb.png': { size: 200, fill: 4 } } });
  assert.equal(v2.version, 2);
  assert.equal(await blobCount(), 2, 'the old version\'s blobs are gone');
  const got = await store('get', { name: 'test-cat' });
  assert.equal(got.manifest.version, 2);
  assert.deepEqual(got.files['adapter.safetensors'], { size: 8192, sum: expectedSum(8192, 3) });
  assert.equal(await store('get', { name: 'nobody' }), null);
  await assert.rejects(store('put', { name: 'a/b', files: { x: { size: 1, fill: 0 } } }), /concept name/);
});

test('the store survives a reload, and a reload in the middle of a save keeps a whole version', async () => {
  // Start a big save and reload without waiting: the transaction is either whole or not at all.
  await page.evaluate(() => {
    const big = new Uint8Array(64 * 1024 * 1024).fill(9);
    window.ldApp.store('put', { name: 'test-cat', meta: {}, files: { 'adapter.safetensors': big } });
  });
  await page.reload();
  await page.waitForFunction(() => document.getElementById('status').dataset.state !== 'starting');
  const got = await store('get', { name: 'test-cat' });
  assert.ok([2, 3].includes(got.manifest.version), `version ${got.manifest.version}`);
  const size = got.manifest.version === 2 ? 8192 : 64 * 1024 * 1024;
  assert.equal(got.files['adapter.safetensors'].size, size);
  assert.equal(await blobCount(), got.manifest.files.length);
  console.log(`after a reload mid-save: version ${got.manifest.version} is whole`);
});

test('the store survives a browser restart with the same profile', async () => {
  const before = await store('get', { name: 'test-cat' });
  await close();
  await open();
  const after = await store('get', { name: 'test-cat' });
  assert.deepEqual(after, before);
  await page.evaluate(() => window.ldApp.refreshConcepts());
  await page.waitForFunction(() => document.getElementById('concepts').textContent.includes('test-cat'));
  await page.locator('#teach-panel').screenshot({ path: join(ensureScreenshots(), 'teach-panel.png') });
  assert.equal(await store('remove', { name: 'test-cat' }), true);
  assert.deepEqual(await store('list'), []);
  assert.equal(await blobCount(), 0);
});
