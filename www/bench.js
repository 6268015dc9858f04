// ms per denoising step of the built-in model in this browser, and ms per lesson step (see bench.html).
import { WorkerClient } from './client.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const steps = Math.max(1, Number(params.get('steps')) || 5);
const runs = Math.max(1, Number(params.get('runs')) || 3);
const lessonSteps = Math.max(2, Number(params.get('lesson')) || 6);
// A scratch database: the benchmark's lesson never touches the page's concepts.
const BENCH_DB = 'lifelong-diffusion-bench';
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function bench() {
  const client = new WorkerClient();
  const { adapter } = await client.init();
  $('adapter').textContent = [adapter.vendor, adapter.architecture, adapter.description].filter(Boolean).join(' ') + (adapter.fallback ? ' (software fallback)' : '');
  const t0 = performance.now();
  await client.load({ kind: 'url', base: 'models/builtin/', name: 'built-in' });
  const loadMs = performance.now() - t0;
  $('load').textContent = `${loadMs.toFixed(0)} ms`;
  const options = { prompt: 'a red circle on the left of a blue square', steps, guidance: 7.5, seed: 0 };
  $('status').textContent = 'warming up (compiling shaders)…';
  await client.generate({ ...options, steps: 1 });
  const stepMs = [];
  const totalMs = [];
  for (let r = 0; r < runs; r++) {
    $('status').textContent = `run ${r + 1}/${runs}…`;
    const result = await client.generate(options, (p) => stepMs.push(p.msPerStep));
    totalMs.push(result.totalMs);
  }
  client.terminate();
  $('step').textContent = `${median(stepMs).toFixed(1)} ms`;
  $('total').textContent = `${median(totalMs).toFixed(0)} ms for ${steps} steps`;
  $('status').textContent = `lesson: ${lessonSteps} steps on the CPU…`;
  const lessonMs = await benchLesson();
  $('lesson').textContent = `${lessonMs.toFixed(0)} ms (CPU, batch 4 + replay)`;
  const report = { adapter, steps, runs, loadMs, msPerStep: median(stepMs), totalMs: median(totalMs), lessonSteps, msPerLessonStep: lessonMs, userAgent: navigator.userAgent };
  $('json').textContent = JSON.stringify(report, null, 2);
  $('status').textContent = 'done';
  $('status').dataset.state = 'done';
}

/** Median ms between lesson steps (the time to the first step also holds encoding the pictures). */
async function benchLesson() {
  const client = new WorkerClient({ dbName: BENCH_DB });
  try {
    await client.load({ kind: 'url', base: 'models/builtin/', name: 'built-in' });
    const pictures = [];
    for (const [x, y] of [[30, 30], [60, 40], [45, 25]]) {
      const canvas = new OffscreenCanvas(96, 72);
      const ctx = canvas.getContext('2d');
      ctx.fillStyle = '#3c3';
      ctx.fillRect(x - 12, y - 12, 24, 24);
      pictures.push(await canvas.convertToBlob({ type: 'image/png' }));
    }
    const at = [];
    const memory = { keep: 1, candidates: 1, refresh: 0, steps: 1, base: 1 };
    await client.teach('bench', pictures, { steps: lessonSteps, memory }, (p) => { if (p.phase === 'lesson') at.push(performance.now()); });
    return median(at.slice(1).map((t, i) => t - at[i]));
  } finally {
    client.terminate();
    indexedDB.deleteDatabase(BENCH_DB);
  }
}

bench().catch((e) => {
  $('status').textContent = `${e.name}: ${e.message}`;
  $('status').dataset.state = 'error';
});
