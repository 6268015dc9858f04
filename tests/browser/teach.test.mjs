// Teaching in the page on SwiftShader: a lesson (few steps, the smallest memory settings) through
// the Teach panel; the concept is listed and changes what `<name>` draws; a reload mid-lesson
// leaves the previous version, listed and drawing the same; after a browser restart with the same
// profile it is listed and installed; export then import into a fresh profile round-trips; a routed
// lesson changes `<name>` and leaves plain prompts exactly as the base model draws them. No request leaves the origin. (Each generation in a fresh worker costs ~40 s on
// SwiftShader, so only the reload generates again.)
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { serve, launch, profileDir, comparePngs, ensureScreenshots } from './lib.mjs';

// Two lesson steps, one new example per step; one memory sample of one denoising step.
const LESSON = { batch: 1, memory: { keep: 1, candidates: 1, refresh: 0, steps: 1, base: 1 } };
const GEN = { prompt: 'a <ldtest> on the left', steps: 1, seed: 3, guidance: 7.5 };
const PROFILE = profileDir('teach', { fresh: true });

let server;
let browser;
let page;
let taught; // the PNG (base64) of GEN once <ldtest> is taught
let exported; // the export file, base64
const offOrigin = [];

async function open(profile = PROFILE) {
  browser = await launch(profile, server.origin);
  page = await browser.context.newPage();
  await page.goto(`${server.origin}/`);
  await ready();
}

/** The model is loaded and the concept list drawn. */
async function ready() {
  await page.waitForFunction(() => !document.getElementById('generate').disabled && document.querySelector('#concepts li'), null, { timeout: 300_000 });
  await page.evaluate((options) => { window.ldApp.teach.options = options; }, LESSON);
}

async function close() {
  offOrigin.push(...browser.offOrigin);
  if (browser.logs.some((l) => l.includes('panicked'))) console.log(browser.logs.join('\n'));
  await browser.context.close();
}

/** Generates GEN (or `prompt`) through the page's worker; resolves to the PNG as base64. */
function generate(prompt = GEN.prompt) {
  return page.evaluate(async (options) => {
    const r = await window.ldApp.client.generate(options);
    const bytes = new Uint8Array(await r.png.arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  }, { ...GEN, prompt });
}

/** Three 96x72 PNGs of a green ring at different places, drawn in the page. */
function pictures() {
  return page.evaluate(async () => {
    const out = [];
    for (const [x, y] of [[30, 30], [60, 40], [45, 25]]) {
      const canvas = new OffscreenCanvas(96, 72);
      const ctx = canvas.getContext('2d');
      ctx.fillStyle = '#223';
      ctx.fillRect(0, 0, 96, 72);
      ctx.strokeStyle = '#3c3';
      ctx.lineWidth = 6;
      ctx.beginPath();
      ctx.arc(x, y, 14, 0, 2 * Math.PI);
      ctx.stroke();
      const bytes = new Uint8Array(await (await canvas.convertToBlob({ type: 'image/png' })).arrayBuffer());
      let s = '';
      for (const b of bytes) s += String.fromCharCode(b);
      out.push(btoa(s));
    }
    return out;
  }).then((list) => list.map((b64, i) => ({ name: `ring-${i}.png`, mimeType: 'image/png', buffer: Buffer.from(b64, 'base64') })));
}

const list = () => page.evaluate(() => window.ldApp.concepts('list'));

/** A safetensors file (base64) -> its parsed header (JSON metadata values parsed, so key order does not matter) and data. */
function safetensors(b64) {
  const bytes = Buffer.from(b64, 'base64');
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
  const parse = (v) => { try { return JSON.parse(v); } catch { return v; } };
  for (const [k, v] of Object.entries(header.__metadata__)) header.__metadata__[k] = parse(v);
  return { header, data: bytes.subarray(8 + n) };
}

function exportBase64() {
  return page.evaluate(async () => {
    const bytes = new Uint8Array(await (await window.ldApp.concepts('export')).arrayBuffer());
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s);
  });
}

async function assertSame(png, what) {
  const diff = await comparePngs(page, png, taught);
  assert.ok(diff.maxDiff <= 2, `${what}: ${JSON.stringify(diff)}`);
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

test('a file that is not a picture is refused with a clear message', async () => {
  await page.setInputFiles('#teach-files', [{ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') }]);
  await page.fill('#teach-name', 'ldtest');
  await page.click('#teach-start');
  await page.waitForFunction(() => /InvalidOptionsError: notes\.txt is not a picture/.test(document.getElementById('teach-text').textContent));
});

test('a drawing made on the pad joins the lesson\'s pictures', async () => {
  await page.click('#teach-draw summary');
  await page.fill('#draw-color', '#3366cc');
  const box = await page.locator('#draw-canvas').boundingBox();
  await page.mouse.move(box.x + 60, box.y + 60);
  await page.mouse.down();
  await page.mouse.move(box.x + 200, box.y + 200, { steps: 8 });
  await page.mouse.up();
  // The stroke's middle is the brush colour; a corner keeps the background.
  const [mid, corner] = await page.evaluate(() => {
    const ctx = document.getElementById('draw-canvas').getContext('2d');
    return [Array.from(ctx.getImageData(130, 130, 1, 1).data), Array.from(ctx.getImageData(5, 250, 1, 1).data)];
  });
  assert.deepEqual(mid, [0x33, 0x66, 0xcc, 255]);
  assert.deepEqual(corner, [0xf0, 0xef, 0xe6, 255]);
  // Added to what was picked before (the refused text file of the test above).
  const before = await page.locator('#teach-picked img').count();
  await page.click('#draw-add');
  await page.waitForSelector('#teach-picked img[alt="drawing-1.png"]');
  assert.equal(await page.locator('#teach-picked img').count(), before + 1);
  assert.match(await page.locator('#teach-text').textContent(), new RegExp(`^${before + 1} pictures? \\(3-5 work best\\)`));
  await page.click('#draw-clear');
  await page.click('#teach-draw summary');
});

test('teaching a concept in the page lists it, and `<name>` then draws something else', async () => {
  let t = Date.now();
  const untaught = await generate();
  console.log(`first generation in a fresh worker: ${Date.now() - t} ms`);
  await page.setInputFiles('#teach-files', await pictures());
  await page.fill('#teach-name', 'ldtest');
  await page.fill('#teach-steps', '2');
  // The shared adapter, with its memory (the routed test below takes the default).
  await page.selectOption('#teach-method', 'l2dm');
  const started = Date.now();
  const losses = page.waitForFunction(() => /step \d+\/2 · loss \d/.test(document.getElementById('teach-text').textContent), null, { timeout: 600_000 });
  await page.click('#teach-start');
  await losses;
  await page.waitForSelector('#concepts li[data-name="ldtest"] img[src^="data:image/png"]', { timeout: 600_000 });
  const text = await page.locator('#teach-text').textContent();
  assert.match(text, /taught <ldtest> in .* \(loss .*\); version 1/);
  console.log(`lesson in the page: ${Date.now() - started} ms (${text})`);
  t = Date.now();
  taught = await generate();
  console.log(`generation with the concept: ${Date.now() - t} ms`);
  const diff = await comparePngs(page, untaught, taught);
  assert.ok(diff.maxDiff > 0, `<ldtest> draws the same before and after the lesson: ${JSON.stringify(diff)}`);
  await page.locator('#teach-panel').screenshot({ path: join(ensureScreenshots(), 'teach-panel.png') });
});

test('a reload in the middle of a lesson leaves the previous version, which generation still uses', async () => {
  await page.setInputFiles('#teach-files', await pictures());
  await page.fill('#teach-name', 'second');
  await page.fill('#teach-steps', '200');
  await page.click('#teach-start');
  await page.waitForFunction(() => /step 1\/200/.test(document.getElementById('teach-text').textContent), null, { timeout: 600_000 });
  await page.reload();
  await ready();
  const after = await list();
  assert.equal(after.current, 1);
  assert.deepEqual(after.concepts.map((c) => c.token), ['<ldtest>']);
  assert.deepEqual(after.installed, ['<ldtest>']);
  await assertSame(await generate(), 'after a reload');
});

test('the concept survives a browser restart with the same profile', async () => {
  await close();
  await open();
  const after = await list();
  assert.deepEqual(after.concepts.map((c) => c.token), ['<ldtest>']);
  // Installed into the GPU model at load (the reload test above generates with it).
  assert.deepEqual(after.installed, ['<ldtest>']);
  exported = await exportBase64();
});

test('export then import into a fresh profile round-trips', async () => {
  await close();
  await open(profileDir('teach-import', { fresh: true }));
  assert.deepEqual((await list()).concepts, []);
  await page.setInputFiles('#concept-import', [{ name: 'concepts-ldtest.safetensors', mimeType: 'application/octet-stream', buffer: Buffer.from(exported, 'base64') }]);
  await page.waitForSelector('#concepts li[data-name="ldtest"] img[src^="data:image/png"]', { timeout: 120_000 });
  assert.deepEqual((await list()).installed, ['<ldtest>']);
  // The same concepts, adapter, memories and lesson record: the file exports back the same.
  const [a, b] = [safetensors(await exportBase64()), safetensors(exported)];
  assert.deepEqual(a.header, b.header);
  assert.ok(a.data.equals(b.data), 'the tensors come back bit for bit');
});

test('embed.js: gen.concepts.list/export and gen.teach work for an embedding page', async () => {
  // A blank document of this origin (the stylesheet), importing the module as a page would.
  const embed = await browser.context.newPage();
  await embed.goto(`${server.origin}/style.css`);
  const result = await embed.evaluate(async () => {
    const { createGenerator } = await import('/embed.js');
    const gen = await createGenerator({ model: 'builtin' });
    const listed = (await gen.concepts.list()).map((c) => c.token);
    const exported = await gen.concepts.export();
    const refused = await gen.teach('other', [new File(['x'], 'x.txt', { type: 'text/plain' })], { steps: 1 })
      .then(() => 'taught', (e) => e.name);
    gen.close();
    return { listed, exportedBytes: exported.size, refused };
  });
  await embed.close();
  assert.deepEqual(result.listed, ['<ldtest>']);
  assert.equal(result.exportedBytes, Buffer.from(exported, 'base64').length);
  assert.equal(result.refused, 'InvalidOptionsError');
});

test('a routed lesson: `<name>` draws with its own block, plain prompts draw exactly what the base model draws', async () => {
  await close();
  await open(profileDir('teach-routed', { fresh: true }));
  const plain = 'a red circle on the left';
  const named = 'a <ldroute> on the left';
  const [plainBefore, namedBefore] = [await generate(plain), await generate(named)];
  await page.setInputFiles('#teach-files', await pictures());
  await page.fill('#teach-name', 'ldroute');
  await page.fill('#teach-steps', '2');
  // Method left as the page opens: an empty store's lesson is routed.
  assert.equal(await page.locator('#teach-method').inputValue(), '');
  await page.click('#teach-start');
  // A routed lesson keeps no memory: the card's picture is drawn for it.
  await page.waitForSelector('#concepts li[data-name="ldroute"] img[src^="data:image/png"]', { timeout: 600_000 });
  const namedAfter = await generate(named);
  const plainAfter = await generate(plain);
  const changed = await comparePngs(page, namedBefore, namedAfter);
  assert.ok(changed.maxDiff > 0, `<ldroute> draws the same before and after the lesson: ${JSON.stringify(changed)}`);
  const same = await comparePngs(page, plainBefore, plainAfter);
  assert.ok(same.maxDiff <= 2, `a plain prompt after a routed lesson (generated after a prompt that used the block): ${JSON.stringify(same)}`);
  // The store is routed now: a shared (L2DM) lesson is refused with the fix.
  await page.setInputFiles('#teach-files', await pictures());
  await page.fill('#teach-name', 'other');
  await page.selectOption('#teach-method', 'l2dm');
  await page.click('#teach-start');
  await page.waitForFunction(() => /--method routed|routed/.test(document.getElementById('teach-text').textContent) && /Error/.test(document.getElementById('teach-text').textContent), null, { timeout: 300_000 });
  assert.deepEqual((await list()).concepts.map((c) => c.token), ['<ldroute>']);
  // A second routed concept: a prompt naming both is composed by region on WebGPU, as the CLI does.
  await page.setInputFiles('#teach-files', await pictures());
  await page.fill('#teach-name', 'ldpair');
  await page.selectOption('#teach-method', '');
  await page.click('#teach-start');
  await page.waitForSelector('#concepts li[data-name="ldpair"] img[src^="data:image/png"]', { timeout: 600_000 });
  const regions = await page.evaluate(async (options) => {
    const pixels = async (png) => {
      const bitmap = await createImageBitmap(png);
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const ctx = canvas.getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      return ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
    };
    const first = await window.ldApp.client.generate(options);
    // The same prompt again reuses the planned composition: it must draw the same image (up to
    // a rounding step: GPU reductions need not add in the same order twice).
    const again = await window.ldApp.client.generate(options);
    const [a, b] = [await pixels(first.png), await pixels(again.png)];
    let gap = a.length === b.length ? 0 : 255;
    for (let i = 0; i < Math.min(a.length, b.length); i++) gap = Math.max(gap, Math.abs(a[i] - b[i]));
    return { regions: first.regions, again: again.regions, bytes: first.png.size, gap };
  }, { ...GEN, prompt: 'a <ldroute> above a <ldpair>' });
  assert.deepEqual(regions.regions, ['a large <ldroute> in the center on a gray background', 'a large <ldpair> in the center on a gray background']);
  assert.deepEqual(regions.again, regions.regions);
  assert.ok(regions.bytes > 0);
  assert.ok(regions.gap <= 2, `a reused plan draws what the first plan drew (largest pixel gap ${regions.gap})`);
});
