// Model files for the worker: a diffusers folder fetched from this origin (kept in the Cache API
// and revalidated with ETags, so a retrained model is picked up and an offline page still works),
// or picked from disk. Both end as a Map of relative path -> Uint8Array, which Rust takes.

export const CACHE_NAME = 'lifelong-diffusion-models-v1';

// What the loader reads (src/loader.rs); `null` entries are optional.
const CONFIGS = [
  'model_index.json', 'scheduler/scheduler_config.json', 'text_encoder/config.json',
  'unet/config.json', 'vae/config.json',
];
const TOKENIZER = [
  'tokenizer/tokenizer.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt',
  'tokenizer/tokenizer_config.json', 'tokenizer/special_tokens_map.json',
];
// Full precision first, then the .fp16 variant, as the loader prefers.
const WEIGHTS = [
  ['text_encoder/model.safetensors', 'text_encoder/model.fp16.safetensors'],
  ['unet/diffusion_pytorch_model.safetensors', 'unet/diffusion_pytorch_model.fp16.safetensors'],
  ['vae/diffusion_pytorch_model.safetensors', 'vae/diffusion_pytorch_model.fp16.safetensors'],
];

/** Every path a picked folder may contribute (for filtering a directory listing). */
export const MODEL_PATHS = new Set([...CONFIGS, ...TOKENIZER, ...WEIGHTS.flat()]);

function sameOrigin(base) {
  const url = new URL(base.endsWith('/') ? base : `${base}/`, self.location.href);
  if (url.origin !== self.location.origin) {
    throw Object.assign(new Error(`${base}: only models on this page's origin can be loaded (the page talks to no other server)`), { name: 'InvalidOptionsError' });
  }
  return url;
}

async function readBody(response, onBytes) {
  const total = Number(response.headers.get('Content-Length')) || 0;
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const chunks = [];
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    loaded += value.length;
    onBytes(loaded, total);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/** Bytes of `url`, from the cache when the server says it has not changed; `null` on 404. */
async function cachedFetch(cache, url, onBytes) {
  const cached = cache && (await cache.match(url));
  const etag = cached && cached.headers.get('ETag');
  let response;
  try {
    response = await fetch(url, { cache: 'no-store', headers: etag ? { 'If-None-Match': etag } : {} });
  } catch (e) {
    if (cached) return readBody(cached, onBytes); // offline: the cached copy is all there is
    throw e;
  }
  if (response.status === 304 && cached) return readBody(cached, onBytes);
  if (response.status === 404) return null;
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  const bytes = await readBody(response, onBytes);
  if (cache) {
    const headers = { 'Content-Type': response.headers.get('Content-Type') || 'application/octet-stream', 'Content-Length': String(bytes.length) };
    if (response.headers.get('ETag')) headers.ETag = response.headers.get('ETag');
    // A full quota only costs the cache; the model still loads.
    await cache.put(url, new Response(bytes, { headers })).catch(() => {});
  }
  return bytes;
}

/** Fetches the diffusers folder at `base` (same origin). `progress({ file, loaded, total, index, count })`. */
export async function fetchModel(base, progress) {
  const root = sameOrigin(base);
  const cache = 'caches' in self ? await caches.open(CACHE_NAME).catch(() => null) : null;
  const wanted = [...CONFIGS.map((p) => [p]), ...TOKENIZER.map((p) => [p]), ...WEIGHTS];
  const files = new Map();
  for (const [index, candidates] of wanted.entries()) {
    for (const path of candidates) {
      const onBytes = (loaded, total) => progress({ phase: 'fetch', file: path, loaded, total, index, count: wanted.length });
      const bytes = await cachedFetch(cache, new URL(path, root).href, onBytes);
      if (bytes) { files.set(path, bytes); break; }
    }
  }
  if (!files.has('model_index.json')) {
    throw Object.assign(new Error(`${base}: no model_index.json there; give the URL of a diffusers pipeline folder`), { name: 'ModelError' });
  }
  return files;
}

/** Reads picked files `[{ path, file }]` (paths relative to the pipeline folder). */
export async function readPicked(name, picked, progress) {
  const files = new Map();
  for (const [index, { path, file }] of picked.entries()) {
    if (!MODEL_PATHS.has(path)) continue;
    progress({ phase: 'read', file: path, loaded: 0, total: file.size, index, count: picked.length });
    files.set(path, new Uint8Array(await file.arrayBuffer()));
  }
  if (!files.has('model_index.json')) {
    throw Object.assign(new Error(`${name}: no model_index.json; pick the folder that holds model_index.json, unet/, vae/, text_encoder/, tokenizer/ and scheduler/`), { name: 'ModelError' });
  }
  return files;
}

/** Strips the picked folder's own name: `sd15/unet/config.json` -> `unet/config.json`. */
export function relativePaths(fileList) {
  const all = Array.from(fileList).map((file) => ({ file, path: file.webkitRelativePath || file.name }));
  const index = all.find((f) => f.path.endsWith('model_index.json'));
  const prefix = index ? index.path.slice(0, -'model_index.json'.length) : '';
  return all.filter((f) => f.path.startsWith(prefix)).map((f) => ({ file: f.file, path: f.path.slice(prefix.length) }));
}
