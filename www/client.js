// The page side of the GPU worker (worker.js): requests with ids, progress callbacks, and
// recovery. A lost GPU device or a crash kills the worker's wasm instance (burn keeps one device
// per instance), so the next call starts a fresh worker and reloads the last model from the cache.

const FATAL = new Set(['DeviceLostError', 'CrashedError']);

export class WorkerClient {
  /** `dbName`: another IndexedDB database for the concept store (the benchmark's scratch one). */
  constructor({ workerUrl = new URL('./worker.js', import.meta.url), onStatus = () => {}, dbName } = {}) {
    this.workerUrl = workerUrl;
    this.dbName = dbName;
    this.onStatus = onStatus;
    this.worker = null;
    this.pending = new Map();
    this.nextId = 1;
    this.ready = null; // Promise of the init result
    this.model = null; // the last model asked for, reloaded after a restart
    this.modelInfo = null;
    this.queue = Promise.resolve();
  }

  /** Starts the worker (once) and opens the GPU. Resolves to `{ adapter }`. */
  init() {
    if (!this.ready) {
      if (!this.worker) this.spawn();
      this.ready = this.call('init', {});
      // Without WebGPU the worker stays (the concept store works without it); a retry may succeed.
      this.ready.catch(() => { this.ready = null; });
    }
    return this.ready;
  }

  /** Loads `model` (`{ kind: 'url', base }` or `{ kind: 'files', name, files: [{ path, file }] }`).
   * Without WebGPU the model still loads for the concept store and lessons (CPU); generation is refused. */
  async load(model, onProgress) {
    await this.initForStore();
    this.model = model;
    this.modelInfo = await this.call('load', { model, dbName: this.dbName }, onProgress);
    return this.modelInfo;
  }

  /** init() that tolerates a missing WebGPU: the store and lessons do not need it. */
  async initForStore() {
    try {
      await this.init();
    } catch (e) {
      if (e.name !== 'NoWebGpuError') throw e;
    }
  }

  /**
   * Generates; resolves to `{ png: Blob, width, height, msPerStep, totalMs, warnings, regions, attention }`
   * (`regions`: for a composed prompt, two or more routed concepts or a relation of two plain objects on the
   * built-in model, the clause each region was drawn from).
   */
  generate(options, onProgress) {
    // One generation at a time, in call order: the worker would refuse a second one as busy.
    return this.serial(async () => {
      await this.ensureModel();
      return this.call('generate', { options }, onProgress);
    });
  }

  /** Teaches concept `name` from `files` (File/Blob pictures); resolves to `{ version, firstLoss,
   * lastLoss, seconds, concepts, versions }`. `onProgress({ phase, step, total, loss })`. */
  teach(name, files, options, onProgress) {
    return this.serial(async () => {
      await this.ensureLoaded();
      return this.call('teach', { name, files: Array.from(files), options }, onProgress);
    });
  }

  /** The concept store of the loaded model: `op` is list, remove (name), restore (version),
   * export (version?) -> Blob, or import (file). Changes resolve to the new list. */
  concepts(op, args = {}) {
    return this.serial(async () => {
      await this.ensureLoaded();
      return this.call('concepts', { op, ...args });
    });
  }

  /** Runs `task` after every earlier queued one: a lesson or a store change must not land in the
   * middle of a generation (the worker would refuse to swap the model as busy). */
  serial(task) {
    const run = this.queue.then(task);
    this.queue = run.catch(() => {});
    return run;
  }

  terminate() {
    if (this.worker) this.worker.terminate();
    this.fail(Object.assign(new Error('the generator was closed'), { name: 'ClosedError' }));
    this.worker = null;
    this.ready = null;
  }

  /** The model loaded in the worker (after a restart too), with or without WebGPU. */
  async ensureLoaded() {
    await this.initForStore();
    if (!this.model) throw Object.assign(new Error('no model is loaded; the concept store belongs to a model'), { name: 'NoModelError' });
    if (!this.modelInfo) this.modelInfo = await this.call('load', { model: this.model, dbName: this.dbName });
  }

  async ensureModel() {
    await this.init();
    if (!this.modelInfo && this.model) {
      this.onStatus({ kind: 'recovering', message: 'reloading the model on a fresh GPU device' });
      this.modelInfo = await this.call('load', { model: this.model, dbName: this.dbName });
    }
  }

  spawn() {
    this.worker = new Worker(this.workerUrl, { type: 'module' });
    this.worker.onmessage = ({ data }) => this.receive(data);
    this.worker.onerror = (event) => {
      const error = Object.assign(new Error(event.message || 'the GPU worker failed to start (is the web app built? run bash scripts/build-web.sh)'), { name: 'CrashedError' });
      this.onStatus({ kind: 'lost', message: error.message });
      this.restart(error);
    };
  }

  call(type, args, onProgress) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onProgress });
      this.worker.postMessage({ id, type, ...args });
    });
  }

  receive(data) {
    const entry = this.pending.get(data.id);
    if (!entry) return;
    if (data.type === 'progress') {
      if (entry.onProgress) entry.onProgress(data);
      return;
    }
    this.pending.delete(data.id);
    if (data.type === 'result') {
      entry.resolve(data.value);
      return;
    }
    const error = Object.assign(new Error(data.message), { name: data.name });
    entry.reject(error);
    if (FATAL.has(data.name)) {
      this.onStatus({ kind: 'lost', message: data.message });
      this.restart();
    }
  }

  /** Drops the dead worker; the next call starts a fresh one (and reloads the model). */
  restart(error = Object.assign(new Error('the GPU worker restarted'), { name: 'DeviceLostError' })) {
    if (this.worker) this.worker.terminate();
    this.worker = null;
    this.ready = null;
    this.modelInfo = null;
    this.fail(error);
  }

  fail(error) {
    for (const { reject } of this.pending.values()) reject(error);
    this.pending.clear();
  }
}
