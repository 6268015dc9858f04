// ms per denoising step of the built-in model in this browser (see bench.html).
import { WorkerClient } from './client.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const steps = Math.max(1, Number(params.get('steps')) || 5);
const runs = Math.max(1, Number(params.get('runs')) || 3);
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
  const report = { adapter, steps, runs, loadMs, msPerStep: median(stepMs), totalMs: median(totalMs), userAgent: navigator.userAgent };
  $('step').textContent = `${report.msPerStep.toFixed(1)} ms`;
  $('total').textContent = `${report.totalMs.toFixed(0)} ms for ${steps} steps`;
  $('json').textContent = JSON.stringify(report, null, 2);
  $('status').textContent = 'done';
  $('status').dataset.state = 'done';
  client.terminate();
}

bench().catch((e) => {
  $('status').textContent = `${e.name}: ${e.message}`;
  $('status').dataset.state = 'error';
});
