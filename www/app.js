// The main page: model choice, generation with progress and live preview, gallery, the
// per-word attention viewer, and the Teach panel with concept cards (teach.js). All compute runs
// in the worker (client.js).
import { WorkerClient } from './client.js';
import { relativePaths } from './models.js';
import { drawAttention } from './attention.js';
import { TeachPanel } from './teach.js';

const $ = (id) => document.getElementById(id);
const BUILTIN = { kind: 'url', base: 'models/builtin/', name: 'built-in' };
const client = new WorkerClient({ onStatus: ({ kind, message }) => {
  if (kind === 'lost') setStatus('lost', `The GPU device was lost (${message}). Press Generate again to recover on a fresh device.`);
  if (kind === 'recovering') setStatus('busy', 'Recovering: reloading the model on a fresh GPU device…');
} });
let adapter = null;
let modelReady = false;
const teach = new TeachPanel(client, {
  onPrompt: (token) => { $('prompt').value = `${$('prompt').value.trim()} ${token}`.trim(); $('prompt').focus(); },
});

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function describeAdapter(a) {
  const name = [a.vendor, a.architecture, a.description].filter(Boolean).join(' ') || 'unnamed adapter';
  return `WebGPU adapter: ${name}${a.fallback ? ' (software fallback: slow)' : ''}`;
}

async function start() {
  try {
    ({ adapter } = await client.init());
    setStatus('ready', describeAdapter(adapter));
  } catch (e) {
    const noGpu = e.name === 'NoWebGpuError';
    setStatus(noGpu ? 'no-webgpu' : 'error', noGpu
      ? 'This browser has no WebGPU, so images cannot be made here. Use a recent Chrome or Edge (113+), or turn WebGPU on in your browser\'s settings. Your concepts are still kept on this machine.'
      : `The GPU worker could not start: ${e.message}`);
    // Without WebGPU the model still loads for the concept store and lessons (on the CPU).
    if (noGpu) await loadModel(BUILTIN, { quiet: true });
    return;
  }
  await loadModel(BUILTIN);
}

async function loadModel(model, { quiet = false } = {}) {
  modelReady = false;
  $('generate').disabled = true;
  $('load-text').textContent = `loading ${model.name || model.base}…`;
  const started = performance.now();
  try {
    const info = await client.load(model, ({ file, loaded, total, index, count }) => {
      $('load-progress').value = (index + (total ? loaded / total : 0)) / count;
      $('load-text').textContent = `${file} ${(loaded / 1e6).toFixed(1)} MB`;
    });
    $('load-progress').value = 1;
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    $('load-text').textContent = info.gpu
      ? `${model.name || model.base}: ${info.width}×${info.height} images, ready in ${secs} s`
      : `${model.name || model.base}: loaded in ${secs} s for teaching and the concept store (generation needs WebGPU)`;
    modelReady = info.gpu;
    $('generate').disabled = !info.gpu;
    await teach.enable();
  } catch (e) {
    $('load-text').textContent = `could not load ${model.name || model.base}: ${e.message}`;
    if (!quiet) setStatus('error', `Model not loaded: ${e.message}`);
  }
}

function readOptions() {
  const int = (id, fallback) => { const v = parseInt($(id).value, 10); return Number.isFinite(v) ? v : fallback; };
  const guidance = parseFloat($('guidance').value);
  return {
    prompt: $('prompt').value, negative: $('negative').value,
    // Empty: the generator's default (7.5; 3 for a prompt naming concepts taught one block each).
    steps: int('steps', 20), guidance: Number.isFinite(guidance) ? guidance : undefined,
    seed: Math.max(0, int('seed', 0)), scheduler: $('scheduler').value, attention: true,
  };
}

function drawPreview({ preview, previewWidth: w, previewHeight: h }) {
  const canvas = $('preview');
  canvas.width = w; canvas.height = h;
  canvas.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(preview), w, h), 0, 0);
}

async function generate() {
  if (!modelReady && !client.model) return;
  const options = readOptions();
  $('generate').disabled = true;
  $('gen-progress').value = 0;
  $('gen-text').textContent = 'encoding the prompt…';
  try {
    const result = await client.generate(options, (p) => {
      $('gen-progress').value = p.step / p.total;
      $('gen-text').textContent = `step ${p.step}/${p.total} · ${p.msPerStep.toFixed(0)} ms/step`;
      drawPreview(p);
    });
    $('gen-text').textContent = `done: ${options.steps} steps, ${result.msPerStep.toFixed(0)} ms/step, ${(result.totalMs / 1000).toFixed(1)} s in all`;
    if (result.warnings.length) $('gen-text').textContent += ` (${result.warnings.join('; ')})`;
    if (result.regions.length) $('gen-text').textContent += ` · composed by region: ${result.regions.join(' | ')}`;
    if (adapter) setStatus('ready', describeAdapter(adapter));
    addToGallery(result, options);
  } catch (e) {
    $('gen-text').textContent = `failed: ${e.message}`;
    if (e.name !== 'DeviceLostError' && e.name !== 'CrashedError') setStatus('error', `${e.name}: ${e.message}`);
  } finally {
    $('generate').disabled = false;
  }
}

function addToGallery(result, options) {
  const url = URL.createObjectURL(result.png);
  const card = document.createElement('figure');
  card.className = 'card';
  const img = document.createElement('img');
  img.src = url;
  img.alt = options.prompt;
  img.addEventListener('click', () => showAttention(result, options, img));
  const caption = document.createElement('p');
  caption.textContent = `${options.prompt} — seed ${options.seed}, ${options.steps} steps, ${result.msPerStep.toFixed(0)} ms/step`;
  const download = document.createElement('a');
  download.href = url;
  download.download = `lifelong-diffusion-seed${options.seed}-steps${options.steps}.png`;
  download.textContent = 'Download PNG';
  card.append(img, caption, download);
  $('gallery').prepend(card);
  ldApp.last = { result, options };
}

// The viewer reads `result.attention` = { tokens: [string], width, height, maps: Float32Array
// [tokens * height * width] }. The runtime fills it once the attention kernels export maps.
function showAttention(result, options, img) {
  const words = $('attention-words');
  words.replaceChildren();
  const canvas = $('attention-canvas');
  if (!result.attention) {
    $('attention-note').textContent = 'Per-word attention maps arrive with the attention kernels; this model run did not export them.';
    canvas.getContext('2d').drawImage(img, 0, 0, canvas.width, canvas.height);
    return;
  }
  $('attention-note').textContent = `“${options.prompt}”: click a word.`;
  result.attention.tokens.forEach((token, i) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = token;
    b.addEventListener('click', () => {
      for (const other of words.children) other.classList.toggle('active', other === b);
      drawAttention(canvas, img, result.attention, i);
    });
    words.append(b);
  });
}

function wireModelPanel() {
  const select = $('model-select');
  select.addEventListener('change', () => {
    $('model-url').hidden = select.value !== 'url';
    $('model-folder').hidden = select.value !== 'folder';
    $('model-load').hidden = select.value !== 'url';
    if (select.value === 'builtin') loadModel(BUILTIN);
  });
  $('model-load').addEventListener('click', () => loadModel({ kind: 'url', base: $('model-url').value.trim(), name: $('model-url').value.trim() }));
  $('model-folder').addEventListener('change', (event) => {
    const files = relativePaths(event.target.files);
    const name = (event.target.files[0]?.webkitRelativePath || 'local model').split('/')[0];
    loadModel({ kind: 'files', name, files });
  });
}

// For tests and the curious: the page's client and a one-call generate.
// `teach.options` adds lesson options (tests: small memory settings).
const ldApp = { client, teach, generate, last: null, refreshConcepts: () => teach.refresh(), concepts: (op, args) => client.concepts(op, args) };
window.ldApp = ldApp;

$('generate').addEventListener('click', generate);
$('seed-random').addEventListener('click', () => { $('seed').value = Math.floor(Math.random() * 2 ** 31); });
wireModelPanel();
start();
