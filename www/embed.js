// Embed lifelong-diffusion in any page of the same site, in two lines:
//   import { createGenerator } from './embed.js';
//   const gen = await createGenerator({ model: 'builtin', worker: true });
// or just the element: <script type="module" src="embed.js"></script>
//   <lifelong-diffusion prompt="a red circle" steps="20" seed="1"></lifelong-diffusion>
import { WorkerClient } from './client.js';

function modelFor(model) {
  if (!model || model === 'builtin') return { kind: 'url', base: new URL('./models/builtin/', import.meta.url).href, name: 'built-in' };
  if (typeof model === 'string') return { kind: 'url', base: new URL(model, document.baseURI).href, name: model };
  throw Object.assign(new TypeError("model must be 'builtin' or the URL of a diffusers folder on this site"), { name: 'InvalidOptionsError' });
}

/**
 * Opens the GPU (in a Web Worker) and loads `model`. Resolves to a generator:
 * `generate(prompt, { steps, guidance, seed, scheduler, negative, onProgress })` -> `{ png: Blob, width, height }`,
 * (`guidance` left out: 7.5, or 3 for a prompt naming concepts taught with method 'routed'),
 * `teach(name, files, { steps, method, onProgress })` (method: 'routed' or 'l2dm'; default: as the store holds, 'routed' when empty; steps: default 300 routed, 150 l2dm), `concepts.{ list, remove, export, import }`, `close()`.
 */
export async function createGenerator({ model = 'builtin', worker = true, onLoadProgress } = {}) {
  if (worker !== true) {
    throw Object.assign(new Error('worker: false is not supported: compute always runs in a Web Worker so the page never freezes'), { name: 'InvalidOptionsError' });
  }
  const client = new WorkerClient({ workerUrl: new URL('./worker.js', import.meta.url) });
  const { adapter } = await client.init();
  const info = await client.load(modelFor(model), onLoadProgress);
  return {
    adapter,
    width: info.width,
    height: info.height,
    async generate(prompt, { steps = 20, guidance, seed = 0, scheduler = '', negative = '', onProgress } = {}) {
      const r = await client.generate({ prompt, negative, steps, guidance, seed, scheduler }, onProgress);
      return { png: r.png, width: r.width, height: r.height, msPerStep: r.msPerStep };
    },
    // A lesson on this machine's CPU (in the worker); the pictures never leave it. Resolves to
    // `{ version, firstLoss, lastLoss, seconds, concepts }`; then `<name>` works in prompts.
    // Other options (seed, words, batch, memory) go to the lesson as they are.
    async teach(name, files, { steps = 100, onProgress, ...rest } = {}) {
      return client.teach(name, files, { steps, ...rest }, onProgress);
    },
    concepts: {
      /** `[{ name, token, addedIn, thumbnail }]` of the current version. */
      list: async () => (await client.concepts('list')).concepts,
      /** A new version without `name`; resolves to the remaining concepts. */
      remove: async (name) => (await client.concepts('remove', { name })).concepts,
      /** The current concepts as one portable file (a safetensors Blob, as the CLI's `concepts export`). */
      export: async () => client.concepts('export'),
      /** Replaces the concepts with an exported file's (checked first; the old version stays restorable). */
      import: async (file) => (await client.concepts('import', { file })).concepts,
    },
    close: () => client.terminate(),
  };
}

// One generator per model per page, shared by every <lifelong-diffusion> element.
const shared = new Map();
function sharedGenerator(model) {
  const key = model || 'builtin';
  if (!shared.has(key)) {
    const pending = createGenerator({ model: key });
    pending.catch(() => shared.delete(key));
    shared.set(key, pending);
  }
  return shared.get(key);
}

/** `<lifelong-diffusion prompt steps seed guidance scheduler model>`: renders its image into itself. */
class LifelongDiffusionElement extends HTMLElement {
  static get observedAttributes() { return ['prompt', 'steps', 'seed', 'guidance', 'scheduler', 'model']; }

  connectedCallback() { this.schedule(); }

  attributeChangedCallback() { if (this.isConnected) this.schedule(); }

  // Several attributes change at once (parsing, scripts): render once for all of them.
  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => { this.scheduled = false; this.render(); });
  }

  async render() {
    const run = (this.run = (this.run || 0) + 1);
    const status = document.createElement('span');
    status.className = 'ld-status';
    status.textContent = 'starting…';
    this.replaceChildren(status);
    this.dataset.state = 'working';
    try {
      const gen = await sharedGenerator(this.getAttribute('model'));
      const num = (name, fallback) => { const v = Number(this.getAttribute(name)); return this.hasAttribute(name) && Number.isFinite(v) ? v : fallback; };
      const result = await gen.generate(this.getAttribute('prompt') || '', {
        steps: num('steps', 20), seed: num('seed', 0), guidance: num('guidance', undefined),
        scheduler: this.getAttribute('scheduler') || '',
        onProgress: (p) => { status.textContent = `step ${p.step}/${p.total}`; },
      });
      if (run !== this.run) return; // attributes changed meanwhile; a newer render owns the element
      const img = document.createElement('img');
      img.src = URL.createObjectURL(result.png);
      img.alt = this.getAttribute('prompt') || '';
      img.width = result.width;
      img.height = result.height;
      this.replaceChildren(img);
      this.dataset.state = 'done';
      this.dispatchEvent(new CustomEvent('generated', { detail: result }));
    } catch (e) {
      if (run !== this.run) return;
      status.textContent = `${e.name}: ${e.message}`;
      this.dataset.state = 'error';
    }
  }
}

if (!customElements.get('lifelong-diffusion')) customElements.define('lifelong-diffusion', LifelongDiffusionElement);
