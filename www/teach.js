// The page's Teach panel and concept cards. Pictures go to the worker as File objects (a copy in
// this browser, never a request); the lesson runs there on the CPU and saves a new version of the
// concept store (IndexedDB), which generation then uses.
import { DrawingPad } from './draw.js';

const $ = (id) => document.getElementById(id);
const NAME = /^[a-z0-9_-]{1,48}$/;
const PHASES = {
  'base-memory': 'remembering what the model draws without concepts (first lesson only)…',
  memory: 'building the concept\'s memory…',
  saving: 'saving…',
};

export class TeachPanel {
  /** `client`: the WorkerClient; `onPrompt(token)`: puts a concept's token into the prompt. */
  constructor(client, { onPrompt = () => {}, onChange = () => {} } = {}) {
    this.client = client;
    this.onPrompt = onPrompt;
    this.onChange = onChange;
    this.picked = [];
    this.ready = false; // a model is loaded (the store belongs to it)
    this.busy = false;
    this.options = {}; // extra lesson options (tests set small memory settings here)
    this.pad = new DrawingPad((file) => this.add(file));
    this.wire();
  }

  wire() {
    $('teach-files').addEventListener('change', (e) => this.pick(e.target.files));
    const drop = $('teach-drop');
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('over'));
    drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); this.pick(e.dataTransfer.files); });
    $('teach-name').addEventListener('input', () => this.update());
    $('teach-start').addEventListener('click', () => this.teach());
    $('concept-restore').addEventListener('click', () => {
      const version = Number($('concept-versions').value);
      if (version) this.change(() => this.client.concepts('restore', { version }), `restored version ${version}`);
    });
    $('concept-import').addEventListener('change', (e) => { const f = e.target.files[0]; e.target.value = ''; if (f) this.importFile(f); });
  }

  /** Called once the model is loaded: the store of that model can be listed and taught. */
  enable() {
    this.ready = true;
    this.update();
    return this.refresh();
  }

  pick(files) {
    this.picked = Array.from(files).slice(0, 8);
    this.show();
  }

  /** Adds one picture (a drawing) to those picked, up to eight. */
  add(file) {
    this.picked = [...this.picked, file].slice(-8);
    this.show();
  }

  show() {
    const shown = this.picked.map((file) => {
      const img = document.createElement('img');
      img.src = URL.createObjectURL(file); // a local blob: URL, read by this page only
      img.alt = file.name;
      img.title = file.name;
      return img;
    });
    $('teach-picked').replaceChildren(...shown);
    const n = this.picked.length;
    $('teach-text').textContent = n ? `${n} picture${n > 1 ? 's' : ''}${n < 3 ? ' (3-5 work best)' : ''}` : '';
    this.update();
  }

  update() {
    const name = $('teach-name').value.trim();
    const ok = this.ready && !this.busy && this.picked.length > 0 && NAME.test(name);
    $('teach-start').disabled = !ok;
    $('teach-name').setCustomValidity(name && !NAME.test(name) ? 'use a-z, 0-9, _ and - (up to 48)' : '');
  }

  async teach() {
    const name = $('teach-name').value.trim();
    // Left empty: the method's own default (300 steps routed, 150 L2DM).
    const steps = parseInt($('teach-steps').value, 10);
    const method = $('teach-method').value;
    this.busy = true;
    this.update();
    $('teach-progress').value = 0;
    $('teach-text').textContent = 'reading the pictures…';
    const started = performance.now();
    try {
      const result = await this.client.teach(name, this.picked, { ...(steps > 0 ? { steps } : {}), ...(method ? { method } : {}), ...this.options }, (p) => this.progress(p));
      $('teach-progress').value = 1;
      const secs = ((performance.now() - started) / 1000).toFixed(1);
      $('teach-text').textContent = `taught <${name}> in ${secs} s (loss ${result.firstLoss.toFixed(4)} → ${result.lastLoss.toFixed(4)}); version ${result.version}`;
      this.render(result);
      this.onChange(result);
    } catch (e) {
      $('teach-text').textContent = `${e.name}: ${e.message}`;
    } finally {
      this.busy = false;
      this.update();
    }
  }

  progress({ phase, step, total, loss }) {
    if (phase === 'lesson') {
      // Time left from the steps after the first (the first also encodes the pictures).
      if (step === 1) this.firstStep = performance.now();
      const perStep = step > 1 ? (performance.now() - this.firstStep) / (step - 1) : 0;
      const left = perStep ? ` · about ${Math.ceil((perStep * (total - step)) / 1000)} s left` : '';
      $('teach-progress').value = step / total;
      $('teach-text').textContent = `step ${step}/${total} · loss ${loss.toFixed(4)}${left}`;
    } else if (PHASES[phase]) {
      $('teach-text').textContent = PHASES[phase];
    }
  }

  async refresh() {
    if (!this.ready) return null;
    try {
      const list = await this.client.concepts('list');
      this.render(list);
      return list;
    } catch (e) {
      $('concepts-text').textContent = `The concept store is unavailable: ${e.name}: ${e.message}`;
      return null;
    }
  }

  render({ concepts, current, versions }) {
    $('concepts-text').textContent = current ? `store version ${current}` : '';
    // Every kept version but the current one can be made current again.
    const older = versions.filter((v) => v.version !== current).reverse().map((v) => {
      const option = document.createElement('option');
      option.value = v.version;
      option.textContent = `v${v.version}: ${v.note} (${new Date(v.createdMs).toLocaleString()})`;
      return option;
    });
    $('concept-versions').replaceChildren(...older);
    $('concept-restore').disabled = !older.length;
    if (!concepts.length) {
      const li = document.createElement('li');
      li.textContent = 'none yet';
      $('concepts').replaceChildren(li);
      return;
    }
    $('concepts').replaceChildren(...concepts.map((c) => this.card(c)));
  }

  card(c) {
    const li = document.createElement('li');
    li.className = 'concept';
    li.dataset.name = c.name;
    const img = document.createElement('img');
    img.alt = `what the model draws for ${c.token}`;
    if (c.thumbnail) img.src = c.thumbnail;
    const token = document.createElement('code');
    token.textContent = c.token;
    const button = (label, action) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = label;
      b.addEventListener('click', action);
      return b;
    };
    li.append(img, token,
      button('Use', () => this.onPrompt(c.token)),
      button('Export', () => this.exportFile(c)),
      button('Remove', () => this.change(() => this.client.concepts('remove', { name: c.name }), `removed ${c.token}`)));
    return li;
  }

  async exportFile(c) {
    try {
      const blob = await this.client.concepts('export');
      const a = document.createElement('a');
      a.href = URL.createObjectURL(blob);
      // The file holds every current concept (they share one adapter), named after this one.
      a.download = `concepts-${c.name}.safetensors`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(a.href), 60_000);
    } catch (e) {
      $('concepts-text').textContent = `export failed: ${e.name}: ${e.message}`;
    }
  }

  importFile(file) {
    return this.change(() => this.client.concepts('import', { file }), `imported ${file.name}`);
  }

  async change(action, done) {
    try {
      const list = await action();
      this.render(list);
      $('concepts-text').textContent = `${done}; store version ${list.current}`;
      this.onChange(list);
    } catch (e) {
      $('concepts-text').textContent = `${e.name}: ${e.message}`;
    }
  }
}
