// Shared helpers of the browser tests: the app served by `lifelong-diffusion serve`, Debian's
// Chromium driven by playwright-core (never a downloaded browser), and a guard that fails the test
// when any request leaves the page's origin.
import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const HERE = join(REPO, 'tests/browser');
export const SCREENSHOTS = join(HERE, 'screenshots');
export const CHROMIUM = process.env.LD_CHROMIUM || '/usr/bin/chromium';

/** The CLI: $LD_BIN, else the debug build `cargo test` made, else the release build. */
export function binary() {
  if (process.env.LD_BIN) return process.env.LD_BIN;
  const target = process.env.CARGO_TARGET_DIR || join(homedir(), '.cache/ld-target');
  for (const profile of ['debug', 'release']) {
    const path = join(target, profile, 'lifelong-diffusion');
    if (existsSync(path)) return path;
  }
  throw new Error('no lifelong-diffusion binary: run `cargo build` (or set LD_BIN)');
}

/** Starts `serve --port 0` on www/; resolves to { origin, stop }. $LD_ORIGIN: use that server instead. */
export function serve() {
  if (process.env.LD_ORIGIN) return Promise.resolve({ origin: process.env.LD_ORIGIN, stop() {} });
  if (!existsSync(join(REPO, 'www/pkg/lifelong_diffusion.js'))) {
    throw new Error('www/pkg is missing: run `bash scripts/build-web.sh` first');
  }
  const child = spawn(binary(), ['serve', '--port', '0', '--root', join(REPO, 'www')], { stdio: ['ignore', 'ignore', 'pipe'] });
  return new Promise((resolvePromise, reject) => {
    let text = '';
    child.stderr.on('data', (chunk) => {
      text += chunk;
      const match = text.match(/on (http:\/\/127\.0\.0\.1:\d+)/);
      if (match) resolvePromise({ origin: match[1], stop: () => child.kill() });
    });
    child.on('exit', (code) => reject(new Error(`serve exited (${code}): ${text}`)));
  });
}

/** Chromium flags (DEVELOPERS.md explains each). */
export function chromiumArgs({ webgpu = true } = {}) {
  const args = [
    '--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic',
  ];
  // SwiftShader's Vulkan is WebGPU's only adapter on a machine without a GPU; without bounds
  // checks (our own shaders are trusted) it runs 2-3x faster.
  if (webgpu) args.push('--enable-unsafe-webgpu', '--enable-dawn-features=disable_robustness');
  return args;
}

/** A persistent profile `name` under tests/browser/.profiles; `fresh` deletes it first. */
export function profileDir(name, { fresh = false } = {}) {
  const dir = join(HERE, '.profiles', name);
  if (fresh) rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  return dir;
}

/**
 * Launches Chromium on `profile`; every request is checked: off-origin ones are aborted and
 * recorded in `offOrigin` (the test asserts it stays empty).
 */
export async function launch(profile, origin, options = {}) {
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: chromiumArgs(options),
    viewport: { width: 1100, height: 1400 },
  });
  const offOrigin = [];
  await context.route('**/*', (route) => {
    const url = new URL(route.request().url());
    if (url.origin === origin) return route.continue();
    offOrigin.push(url.href);
    return route.abort();
  });
  context.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(origin) && !url.startsWith('blob:') && !url.startsWith('data:')) offOrigin.push(url);
  });
  const logs = [];
  context.on('console', (m) => logs.push(`${m.type()}: ${m.text()}`));
  context.on('weberror', (e) => logs.push(`pageerror: ${e.error().message}`));
  return { context, offOrigin, logs };
}

/** Runs the CLI's `generate` on the CPU; resolves to the PNG bytes. */
export function nativePng({ prompt, steps, seed, guidance }, out) {
  execFileSync(binary(), ['generate', '--prompt', prompt, '--steps', String(steps), '--seed', String(seed),
    '--guidance', String(guidance), '--backend', 'cpu', '--out', out], { stdio: ['ignore', 'ignore', 'inherit'] });
  return out;
}

/** Decodes two PNGs (base64) in the page and compares them: { width, height, maxDiff, meanDiff }. */
export async function comparePngs(page, aBase64, bBase64) {
  return page.evaluate(async ([a, b]) => {
    const pixels = async (b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const bitmap = await createImageBitmap(new Blob([bytes], { type: 'image/png' }), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
      const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
      const ctx = canvas.getContext('2d');
      ctx.drawImage(bitmap, 0, 0);
      return { w: bitmap.width, h: bitmap.height, data: ctx.getImageData(0, 0, bitmap.width, bitmap.height).data };
    };
    const [x, y] = await Promise.all([pixels(a), pixels(b)]);
    if (x.w !== y.w || x.h !== y.h) return { width: x.w, height: x.h, otherWidth: y.w, otherHeight: y.h, maxDiff: 255, meanDiff: 255 };
    let max = 0;
    let sum = 0;
    let n = 0;
    for (let i = 0; i < x.data.length; i += 4) {
      for (let c = 0; c < 3; c++) {
        const d = Math.abs(x.data[i + c] - y.data[i + c]);
        max = Math.max(max, d);
        sum += d;
        n++;
      }
    }
    return { width: x.w, height: x.h, maxDiff: max, meanDiff: sum / n };
  }, [aBase64, bBase64]);
}

export function ensureScreenshots() {
  mkdirSync(SCREENSHOTS, { recursive: true });
  return SCREENSHOTS;
}
