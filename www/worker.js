// The GPU worker: every bit of compute runs here so the page never freezes.
// Protocol (from client.js): { id, type, ...args } -> { id, type: 'result' | 'error' | 'progress', ... }.
// Rust takes bytes; this file fetches them (same origin only) and keeps them in the Cache API.
import init, { Generator, ConceptStore } from './pkg/lifelong_diffusion.js';
import { fetchModel, readPicked } from './models.js';

let generator = null;
const stores = new Map(); // dbName -> ConceptStore

async function adapterInfo() {
  if (!('gpu' in navigator)) return null;
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) return null;
  const info = adapter.info || {};
  return {
    vendor: info.vendor || '', architecture: info.architecture || '', description: info.description || '',
    fallback: Boolean(adapter.isFallbackAdapter || info.isFallbackAdapter),
    maxBufferSize: adapter.limits.maxBufferSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    shaderF16: adapter.features.has('shader-f16'),
  };
}

const handlers = {
  async init() {
    await init();
    const adapter = await adapterInfo();
    if (!adapter) {
      const err = new Error('WebGPU is not available in this browser (no navigator.gpu or no adapter). Use Chrome/Edge 113+ or another browser with WebGPU enabled.');
      err.name = 'NoWebGpuError';
      throw err;
    }
    generator = await Generator.create();
    return { adapter };
  },

  async load({ model }, progress) {
    if (!generator) throw Object.assign(new Error('the worker is not initialised'), { name: 'NoModelError' });
    const files = model.kind === 'url' ? await fetchModel(model.base, progress) : await readPicked(model.name, model.files, progress);
    const started = performance.now();
    const info = generator.load(model.name || model.base, files);
    return { ...info, loadMs: performance.now() - started };
  },

  async generate({ options }, progress) {
    if (!generator) throw Object.assign(new Error('no model is loaded'), { name: 'NoModelError' });
    const result = await generator.generate(JSON.stringify(options), (p) => {
      progress({ step: p.step, total: p.total, msPerStep: p.msPerStep, timestep: p.timestep,
        preview: p.preview, previewWidth: p.previewWidth, previewHeight: p.previewHeight });
    });
    return {
      png: new Blob([result.png], { type: 'image/png' }), width: result.width, height: result.height,
      warnings: Array.from(result.warnings), msPerStep: result.msPerStep, totalMs: result.totalMs,
      attention: result.attention || null,
    };
  },

  // The concept store; tests reach it through the page until teaching (issue 5) writes to it.
  async store({ op, dbName, name, meta, files }) {
    const key = dbName || '';
    if (op !== 'close' && !stores.has(key)) {
      await init();
      stores.set(key, await ConceptStore.open(dbName || undefined));
    }
    const store = stores.get(key);
    switch (op) {
      case 'put': return JSON.parse(await store.put(name, JSON.stringify(meta || {}), new Map(Object.entries(files))));
      case 'get': {
        const got = await store.get(name);
        return got && { manifest: JSON.parse(got.manifest), files: Object.fromEntries(got.files) };
      }
      case 'list': return (await store.list()).map((json) => JSON.parse(json));
      case 'remove': return store.remove(name);
      case 'close': if (store) { store.close(); stores.delete(key); } return true;
      default: throw new Error(`unknown store operation ${op}`);
    }
  },
};

self.onmessage = async ({ data }) => {
  const { id, type } = data;
  const progress = (p) => self.postMessage({ id, type: 'progress', ...p });
  try {
    const handler = handlers[type];
    if (!handler) throw new Error(`unknown request ${type}`);
    self.postMessage({ id, type: 'result', value: await handler(data, progress) });
  } catch (e) {
    // A wasm trap (RuntimeError) means a panic: this instance is dead, the client starts another.
    const name = e instanceof WebAssembly.RuntimeError ? 'CrashedError' : (e && e.name) || 'Error';
    self.postMessage({ id, type: 'error', name, message: (e && e.message) || String(e) });
  }
};
