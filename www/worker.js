// The GPU worker: every bit of compute runs here so the page never freezes.
// Protocol (from client.js): { id, type, ...args } -> { id, type: 'result' | 'error' | 'progress', ... }.
// Rust takes bytes; this file fetches them (same origin only) and keeps them in the Cache API.
// Lessons run here too, on the CPU (burn-flex + autodiff: see src/web/teach.rs for why not
// WebGPU); the pictures are decoded here and never leave this machine.
import init, { Generator, ConceptStore, teach } from './pkg/lifelong_diffusion.js';
import { fetchModel, readPicked } from './models.js';

let generator = null;
let model = null; // { name, files, id }: the loaded model's bytes, reused by lessons
let store = null; // the ConceptStore of that model
let installed = []; // the concept tokens the GPU model has now
let storeDb; // the IndexedDB database of `store` (undefined: the page's)

const named = (name, message) => Object.assign(new Error(message), { name });

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

/** The folder's name, which the store's model id starts with (as the CLI's `model_id`). */
function modelName(m) {
  if (m.kind !== 'url') return m.name || 'model';
  const parts = new URL(m.base, self.location.href).pathname.split('/').filter(Boolean);
  return parts[parts.length - 1] || 'model';
}

function requireModel() {
  if (!model || !store) throw named('NoModelError', 'no model is loaded; the concept store belongs to a model, load one first');
}

/** The current version's concepts and the kept versions, for cards and lists. */
async function conceptList() {
  const m = JSON.parse(await store.manifest());
  const current = m.versions.find((v) => v.version === m.current);
  return {
    modelId: m.model_id, current: m.current, installed,
    concepts: (current ? current.concepts : []).map((c) => ({
      name: c.name, token: c.token, addedIn: c.added_in, thumbnail: (c.meta && c.meta.thumbnail) || null,
    })),
    versions: m.versions.map((v) => ({ version: v.version, note: v.note, createdMs: v.created_ms, concepts: v.concepts.map((c) => c.name) })),
  };
}

/** Generation follows the store: after every change the GPU model gets the current version.
 * Returns the installed tokens (none without WebGPU). */
async function installConcepts() {
  installed = generator && generator.loaded ? Array.from(await generator.useConcepts(store)) : [];
  return installed;
}

/** A picked file -> { rgba, width, height }; anything the browser cannot decode is refused. */
async function decodePicture(file, index) {
  const label = file.name || `picture ${index + 1}`;
  const refuse = () => named('InvalidOptionsError', `${label} is not a picture this browser can read; use PNG, JPEG or WebP files`);
  if (file.type && !file.type.startsWith('image/')) throw refuse();
  let bitmap;
  try { bitmap = await createImageBitmap(file); } catch { throw refuse(); }
  // Huge photos are shrunk here first (the lesson crops and resizes to the model's size anyway).
  const scale = Math.min(1, 1024 / Math.min(bitmap.width, bitmap.height), 4096 / Math.max(bitmap.width, bitmap.height));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const ctx = new OffscreenCanvas(width, height).getContext('2d');
  ctx.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  return { rgba: ctx.getImageData(0, 0, width, height).data, width, height };
}

async function bytesOf(file) {
  if (file instanceof Uint8Array) return file;
  if (file instanceof ArrayBuffer) return new Uint8Array(file);
  if (file && typeof file.arrayBuffer === 'function') return new Uint8Array(await file.arrayBuffer());
  throw named('InvalidOptionsError', 'import takes a File, Blob, ArrayBuffer or Uint8Array');
}

const handlers = {
  async init() {
    await init();
    const adapter = await adapterInfo();
    if (!adapter) {
      // The worker stays useful without WebGPU: the concept store and lessons run on the CPU.
      throw named('NoWebGpuError', 'WebGPU is not available in this browser (no navigator.gpu or no adapter). Use Chrome/Edge 113+ or another browser with WebGPU enabled.');
    }
    if (!generator) generator = await Generator.create();
    return { adapter };
  },

  async load({ model: wanted, dbName }, progress) {
    await init();
    const name = modelName(wanted);
    const files = wanted.kind === 'url' ? await fetchModel(wanted.base, progress) : await readPicked(wanted.name, wanted.files, progress);
    const started = performance.now();
    const info = generator ? generator.load(name, files) : {};
    const id = ConceptStore.modelIdOf(name, files);
    if (!store || store.modelId !== id || storeDb !== dbName) {
      if (store) store.close();
      store = await ConceptStore.open(dbName || undefined, id);
      storeDb = dbName;
    }
    model = { name, files, id };
    await installConcepts();
    return { ...info, modelId: id, loadMs: performance.now() - started, gpu: Boolean(generator), installed };
  },

  async generate({ options }, progress) {
    if (!generator) throw named('NoModelError', 'no model is loaded');
    const result = await generator.generate(JSON.stringify(options), (p) => {
      progress({ step: p.step, total: p.total, msPerStep: p.msPerStep, timestep: p.timestep,
        preview: p.preview, previewWidth: p.previewWidth, previewHeight: p.previewHeight });
    });
    return {
      png: new Blob([result.png], { type: 'image/png' }), width: result.width, height: result.height,
      warnings: Array.from(result.warnings), regions: Array.from(result.regions || []),
      msPerStep: result.msPerStep, totalMs: result.totalMs,
      attention: result.attention || null,
    };
  },

  async teach({ name, files, options }, progress) {
    requireModel();
    if (!Array.isArray(files) || files.length === 0) throw named('InvalidOptionsError', 'pick 3-5 pictures of the concept');
    const pictures = await Promise.all(files.map(decodePicture));
    const result = await teach(store, model.name, model.files, name, pictures, JSON.stringify(options || {}), progress);
    await installConcepts();
    return { version: result.version, firstLoss: result.firstLoss, lastLoss: result.lastLoss, seconds: result.seconds, ...(await conceptList()) };
  },

  async concepts({ op, name, version, file }) {
    requireModel();
    switch (op) {
      case 'list': return conceptList();
      case 'remove': await store.remove(name); break;
      case 'restore': await store.restore(version); break;
      case 'export': {
        const bytes = await store.exportFile(version ?? undefined);
        return new Blob([bytes], { type: 'application/octet-stream' });
      }
      case 'import': return importFile(await bytesOf(file));
      default: throw new Error(`unknown concepts operation ${op}`);
    }
    await installConcepts();
    return conceptList();
  },
};

/** Imports, then installs; a file the model cannot use is undone (the previous version returns). */
async function importFile(bytes) {
  const before = JSON.parse(await store.manifest()).current;
  await store.importFile(bytes);
  try {
    await installConcepts();
  } catch (e) {
    if (before != null) await store.restore(before);
    throw named('StoreError', `the imported concepts do not fit this model (${e.message}); the store is back at its previous version`);
  }
  return conceptList();
}

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
