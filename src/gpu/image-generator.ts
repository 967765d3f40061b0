import { Worker } from 'node:worker_threads';
import type { Device } from './providers.js';
import type { GenerationRequest } from './request.js';
import type { PipelineOptions, StepProgress } from './sdxl-pipeline.js';
import type { EncodedResult, FromThread, LoadedPipeline, SerializedError, ThreadOptions, ToThread } from './thread-protocol.js';

// The pipeline as callers use it: the model lives in a worker thread, so generate() is a plain promise that never
// blocks the caller's event loop, reports each step and can be aborted between steps.

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

  private constructor(private readonly worker: Worker, readonly loaded: LoadedPipeline) {
    worker.on('message', (message: FromThread) => this.receive(message));
    worker.on('error', (error) => this.failAll(error));
    worker.on('exit', (code) => this.failAll(new Error(`the inference thread exited with code ${code}`)));
  }

  /** Resolves once every model is loaded, or rejects with the reason it could not be. */
  static start(modelDir: string, device: Device, pipeline: PipelineOptions = {}): Promise<ImageGenerator> {
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
          resolve(new ImageGenerator(worker, message.loaded));
        } else {
          void worker.terminate();
          reject(message.type === 'load-failed' ? revive(message.error) : new Error(`unexpected ${message.type} while loading`));
        }
      });
    });
  }

  generate(request: GenerationRequest, callbacks: GenerateCallbacks = {}): Promise<EncodedResult> {
    if (this.closed) return Promise.reject(new Error('the image generator is closed'));
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
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failAll(new Error('the image generator was closed'));
    await this.worker.terminate();
  }

  private send(message: ToThread): void {
    this.worker.postMessage(message);
  }

  private receive(message: FromThread): void {
    if (message.type === 'ready' || message.type === 'load-failed') return;
    const pending = this.pending.get(message.id);
    if (!pending) return;
    switch (message.type) {
      case 'progress':
        pending.onProgress?.(message.progress);
        return;
      case 'done':
        this.pending.delete(message.id);
        pending.resolve(message.result);
        return;
      case 'failed':
        this.pending.delete(message.id);
        pending.reject(revive(message.error));
        return;
    }
  }

  private failAll(error: Error): void {
    for (const pending of this.pending.values()) pending.reject(error);
    this.pending.clear();
  }
}
