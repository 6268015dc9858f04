// Without WebGPU: the page says so, and the concept store (IndexedDB, the Rust edge of the one
// store schema, in the worker) still works for the built-in model: imports are checked and make
// versions, survive a reload and a browser restart with the same profile, and a reload in the
// middle of a big save leaves a whole version. (Generation needs WebGPU; teach.test.mjs.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve, launch, profileDir, binary } from './lib.mjs';

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
  // The model loads without WebGPU too (the store belongs to it); the concept list follows.
  await page.waitForFunction(() => document.querySelector('#concepts li'), null, { timeout: 120_000 });
}

async function close() {
  offOrigin.push(...browser.offOrigin);
  await browser.context.close();
}

/**
 * Runs in the page: an export file (safetensors, the format of `concepts export`) for the loaded
 * model with one concept `name` whose memory latents hold `floats` values of `fill`.
 */
function exportFile({ name, floats, fill }) {
  const tensors = [
    [`adapter/text_encoder.concepts.${name}.embedding`, [4], new Float32Array(4).fill(0.25)],
    ['memory/0/memory.latents', [1, 1, 1, floats], new Float32Array(floats).fill(fill)],
  ];
  const meta = {
    format: 'lifelong-diffusion-concepts', schema: '1', model_id: window.ldApp.client.modelInfo.modelId,
    concepts: JSON.stringify([{ name, token: `<${name}>`, token_id: 49408, added_in: 1, meta: null }]),
    memories: JSON.stringify([{ concept: name, prompts: [`a <${name}>`] }]), lesson: 'null',
  };
  const header = { __metadata__: meta };
  let offset = 0;
  for (const [key, shape, data] of tensors) {
    header[key] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const [, , data] of tensors) { out.set(new Uint8Array(data.buffer), at); at += data.byteLength; }
  return out;
}

/** Imports a made-up export file in the page; resolves to the new concept list. */
function importMade(spec) {
  return page.evaluate(async ([source, spec]) => {
    const make = new Function(`return (${source})`)();
    return window.ldApp.concepts('import', { file: new Blob([make(spec)]) });
  }, [exportFile.toString(), spec]);
}

const list = () => page.evaluate(() => window.ldApp.concepts('list'));

/** The first memory value of the current version, read back through an export (checksums checked). */
function exportedFill() {
  return page.evaluate(async () => {
    const bytes = new Uint8Array(await (await window.ldApp.concepts('export')).arrayBuffer());
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    const [start, end] = header['memory/0/memory.latents'].data_offsets;
    return { fill: new DataView(bytes.buffer).getFloat32(8 + n + start, true), floats: (end - start) / 4 };
  });
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

test('the store belongs to the same model id as the CLI\'s, so export files move between them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ld-store-'));
  try {
    const out = execFileSync(binary(), ['concepts', 'list', '--store', dir], { encoding: 'utf8' });
    const cli = out.match(/\(model ([^)]+)\)/)[1];
    assert.equal(await page.evaluate(() => window.ldApp.client.modelInfo.modelId), cli);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('imports are checked and make versions; remove makes another', async () => {
  assert.deepEqual((await list()).concepts, []);
  const v1 = await importMade({ name: 'test-cat', floats: 16, fill: 1 });
  assert.equal(v1.current, 1);
  assert.deepEqual(v1.concepts.map((c) => c.token), ['<test-cat>']);
  const v2 = await importMade({ name: 'test-cat', floats: 16, fill: 2 });
  assert.equal(v2.current, 2);
  assert.deepEqual(await exportedFill(), { fill: 2, floats: 16 });
  // A file that is not an export, and a wrong name, are refused with typed errors; nothing changes.
  const refused = await page.evaluate(async () => {
    const errors = [];
    for (const file of [new Blob(['not a concept file']), new Blob([new Uint8Array(8)])]) {
      await window.ldApp.concepts('import', { file }).catch((e) => errors.push(`${e.name}: ${e.message}`));
    }
    await window.ldApp.concepts('remove', { name: 'nobody' }).catch((e) => errors.push(`${e.name}: ${e.message}`));
    return errors;
  });
  assert.equal(refused.length, 3, refused.join('\n'));
  assert.match(refused[0], /^StoreError: .*safetensors/);
  assert.match(refused[2], /^InvalidOptionsError: .*nobody/);
  assert.equal((await list()).current, 2);
});

/** Every key of the page's IndexedDB file store (opened beside the worker's connection). */
function fileKeys() {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('lifelong-diffusion');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const req = open.result.transaction('files').objectStore('files').getAllKeys();
      req.onsuccess = () => { open.result.close(); resolve(req.result.map(String).sort()); };
      req.onerror = () => reject(req.error);
    };
  }));
}

test('a full quota during a save is reported as QuotaError and changes nothing', async () => {
  const before = await list();
  const keys = await fileKeys();
  // The store lives in the worker: make its second put of the next save throw what a full
  // origin quota throws, after the first was issued (that one must not commit either).
  const [worker] = page.workers();
  await worker.evaluate(() => {
    const put = IDBObjectStore.prototype.put;
    let calls = 0;
    self.ldRealPut = put;
    IDBObjectStore.prototype.put = function (...args) {
      if (++calls >= 2) throw new DOMException('simulated full disk', 'QuotaExceededError');
      return put.apply(this, args);
    };
  });
  const error = await page.evaluate(async ([source]) => {
    const make = new Function(`return (${source})`)();
    try {
      await window.ldApp.concepts('import', { file: new Blob([make({ name: 'test-dog', floats: 16, fill: 5 })]) });
      return null;
    } catch (e) {
      return `${e.name}: ${e.message}`;
    }
  }, [exportFile.toString()]);
  await worker.evaluate(() => { IDBObjectStore.prototype.put = self.ldRealPut; });
  assert.match(error ?? 'no error', /^QuotaError: storage quota exceeded/);
  assert.deepEqual(await list(), before);
  assert.deepEqual(await fileKeys(), keys, 'no file of the refused version may stay behind');
  // With room again the same import goes through.
  assert.equal((await importMade({ name: 'test-dog', floats: 16, fill: 5 })).current, before.current + 1);
  await page.evaluate(() => window.ldApp.concepts('remove', { name: 'test-dog' }));
  await page.evaluate((v) => window.ldApp.concepts('restore', { version: v }), before.current);
});

test('a reload in the middle of a big save keeps a whole version', async () => {
  const start = await list();
  // 64 MB of memory: the save's transaction is still running when the page goes away.
  await page.evaluate(([source]) => {
    const make = new Function(`return (${source})`)();
    window.ldApp.concepts('import', { file: new Blob([make({ name: 'test-cat', floats: 16 * 1024 * 1024, fill: 3 })]) });
  }, [exportFile.toString()]);
  // The whole import takes ~0.9 s here (decode and checks, then the transaction): reload late in it.
  await page.waitForTimeout(650);
  await page.reload();
  await page.waitForFunction(() => document.querySelector('#concepts li'), null, { timeout: 120_000 });
  const { current } = await list();
  const saved = current !== start.current;
  assert.ok(!saved || current > Math.max(...start.versions.map((v) => v.version ?? v)), `version ${current} after ${start.current}`);
  assert.deepEqual(await exportedFill(), saved ? { fill: 3, floats: 16 * 1024 * 1024 } : { fill: 2, floats: 16 });
  console.log(`after a reload mid-save: version ${current} is whole`);
});

test('the store survives a browser restart; remove makes a new version, Restore an old one current', async () => {
  const before = await list();
  await close();
  await open();
  assert.deepEqual(await list(), before);
  await page.waitForSelector('#concepts li[data-name="test-cat"]');
  // The card's Remove: a new version without the concept.
  await page.click('#concepts li[data-name="test-cat"] button:text("Remove")');
  await page.waitForFunction(() => !document.querySelector('#concepts li[data-name="test-cat"]'));
  const removed = await list();
  assert.deepEqual(removed.concepts, []);
  // A new version is numbered after the newest version the manifest holds (Manifest::next_version),
  // which is not always the current one.
  const newest = Math.max(...before.versions.map((v) => v.version ?? v));
  assert.equal(removed.current, newest + 1, JSON.stringify(before));
  // Retention: the current version plus at most 4 earlier ones.
  assert.ok(removed.versions.length <= 5, JSON.stringify(removed.versions));
  // The page's Restore makes the version before the removal current again.
  await page.selectOption('#concept-versions', String(before.current));
  await page.click('#concept-restore');
  await page.waitForSelector('#concepts li[data-name="test-cat"]');
  assert.equal((await list()).current, before.current);
});
