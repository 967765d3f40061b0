import { Worker } from 'node:worker_threads';
import type { Device } from './providers.js';
import type { GenerationRequest } from './request.js';
import type { PipelineOptions, StepProgress } from './sdxl-pipeline.js';
import type { EncodedResult, FromThread, LoadedPipeline, SerializedError, ThreadOptions, ToThread } from './thread-protocol.js';

// The pipeline as callers use it: the model lives in a worker thread, so generate() is a plain promise that never
// blocks the caller's event loop, reports each step and can be aborted between steps. A thread that dies, or goes
// silent for longer than a step may take, fails the call that was waiting and every later one, so a caller never
// waits on a thread that will not answer.
//
// A busy thread is never terminated: stopping a thread while it is inside onnxruntime's run() aborts the whole
// process (onnxruntime-node throws a C++ exception nothing catches). A silent thread is asked to abort instead, and
// stopped once it has answered, if it ever does.

/**
 * How long the thread may go without a word (a step, the text encoders, the VAE decoder) while a generation runs.
 * Generous: one step of SDXL's compare batch at 1024² takes minutes on a CPU.
 */
export const DEFAULT_STEP_TIMEOUT_MS = 15 * 60_000;

/** The inference thread is gone (it crashed, exited or hung): this generator will not answer again. */
export class InferenceThreadError extends Error {
  override name = 'InferenceThreadError';
}

export interface GeneratorOptions {
  stepTimeoutMs?: number;
}

export interface GenerateCallbacks {
  onProgress?: (progress: StepProgress) => void;
  signal?: AbortSignal;
}

interface Pending {
  resolve: (result: EncodedResult) => void;
  reject: (error: Error) => void;
  onProgress: ((progress: StepProgress) => void) | undefined;
}

const ERROR_CLASSES_BY_NAME = new Map<string, ErrorConstructor>([['RangeError', RangeError], ['TypeError', TypeError]]);

function revive(error: SerializedError): Error {
  if (error.name === 'AbortError') return new DOMException(error.message, 'AbortError');
  const revived = new (ERROR_CLASSES_BY_NAME.get(error.name) ?? Error)(error.message);
  revived.name = error.name;
  return revived;
}

export class ImageGenerator {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private failure: InferenceThreadError | null = null;
  private watchdog: NodeJS.Timeout | undefined;
  /** Requests failed by the watchdog that the thread has not answered yet: it is busy until they are all answered. */
  private readonly abandoned = new Set<number>();
  private readonly stepTimeoutMs: number;
  private reportDeath!: (error: InferenceThreadError) => void;
  /** Settles when the thread dies on its own, never after close(): the owner's cue that this generator is lost. */
  readonly died = new Promise<InferenceThreadError>((resolve) => { this.reportDeath = resolve; });
  /** Resolves once the thread has stopped; a thread stuck in native code never does. */
  readonly exited: Promise<void>;

  private constructor(private readonly worker: Worker, readonly loaded: LoadedPipeline, options: GeneratorOptions) {
    this.stepTimeoutMs = options.stepTimeoutMs ?? DEFAULT_STEP_TIMEOUT_MS;
    this.exited = new Promise((resolve) => worker.once('exit', () => resolve()));
    worker.on('message', (message: FromThread) => this.receive(message));
    worker.on('error', (error) => this.die(`the inference thread crashed: ${error.message}`));
    worker.on('exit', (code) => this.die(`the inference thread exited with code ${code}`));
  }

  /** Resolves once every model is loaded, or rejects with the reason it could not be. */
  static start(modelDir: string, device: Device, pipeline: PipelineOptions = {}, options: GeneratorOptions = {}): Promise<ImageGenerator> {
    const workerData: ThreadOptions = { modelDir, device, pipeline };
    const worker = new Worker(new URL('./inference-thread.js', import.meta.url), { workerData });
    return new Promise((resolve, reject) => {
      const onExit = (code: number) => reject(new Error(`the inference thread exited with code ${code} while loading`));
      worker.once('error', reject);
      worker.once('exit', onExit);
      worker.once('message', (message: FromThread) => {
        worker.off('error', reject);
        worker.off('exit', onExit);
        if (message.type === 'ready') {
          resolve(new ImageGenerator(worker, message.loaded, options));
        } else {
          void worker.terminate();
          reject(message.type === 'load-failed' ? revive(message.error) : new Error(`unexpected ${message.type} while loading`));
        }
      });
    });
  }

  generate(request: GenerationRequest, callbacks: GenerateCallbacks = {}): Promise<EncodedResult> {
    if (this.closed) return Promise.reject(new Error('the image generator is closed'));
    if (this.failure !== null) return Promise.reject(this.failure);
    const { signal, onProgress } = callbacks;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.nextId++;
    return new Promise<EncodedResult>((resolve, reject) => {
      const abort = () => this.send({ type: 'abort', id });
      signal?.addEventListener('abort', abort, { once: true });
      const settle = () => signal?.removeEventListener('abort', abort);
      this.pending.set(id, {
        onProgress,
        resolve: (result) => { settle(); resolve(result); },
        reject: (error) => { settle(); reject(error); },
      });
      this.send({ type: 'generate', id, request });
      this.armWatchdog();
    });
  }

  /** Stops the thread, which must be idle; a dead one stops by itself once it is idle, if it ever is. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new Error('the image generator was closed'));
    if (this.failure === null) await this.worker.terminate();
  }

  /** While a generation is pending, the thread must say something within the step timeout. */
  private armWatchdog(): void {
    clearTimeout(this.watchdog);
    if (this.pending.size === 0) return;
    this.watchdog = setTimeout(() => {
      for (const id of this.pending.keys()) {
        this.abandoned.add(id);
        this.send({ type: 'abort', id });
      }
      this.die(`the inference thread sent nothing for ${this.stepTimeoutMs} ms (a step that never returns?); it is given up`);
    }, this.stepTimeoutMs);
  }

  private die(reason: string): void {
    if (this.closed || this.failure !== null) return;
    this.failure = new InferenceThreadError(reason);
    this.failAll(this.failure);
    this.reportDeath(this.failure);
  }

  private send(message: ToThread): void {
    this.worker.postMessage(message);
  }

  private receive(message: FromThread): void {
    if (message.type === 'ready' || message.type === 'load-failed') return;
    if (message.type !== 'progress' && this.abandoned.delete(message.id) && this.abandoned.size === 0) {
      void this.worker.terminate();
      return;
    }
    const pending = this.pending.get(message.id);
    if (!pending) return;
    switch (message.type) {
      case 'progress':
        pending.onProgress?.(message.progress);
        break;
      case 'done':
        this.pending.delete(message.id);
        pending.resolve(message.result);
        break;
      case 'failed':
        this.pending.delete(message.id);
        pending.reject(revive(message.error));
        break;
    }
    this.armWatchdog();
  }

  private failAll(error: Error): void {
    clearTimeout(this.watchdog);
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }
}
