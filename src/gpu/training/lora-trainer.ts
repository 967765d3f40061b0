import { Worker } from 'node:worker_threads';
import type { TrainingOutcome, TrainingProgress, TrainingRequest } from './lora-training.js';
import type { TrainingRecipe } from './recipe.js';

// Training as callers use it (the CLI, the GPU worker): a promise that never blocks the caller's event loop, reports
// each step and stops between steps when its signal aborts.

export type ToTrainingThread = { type: 'abort' };

export type FromTrainingThread =
  | { type: 'prepared'; recipe: TrainingRecipe; images: number }
  | { type: 'progress'; progress: TrainingProgress }
  | { type: 'done'; outcome: TrainingOutcome }
  | { type: 'failed'; error: { name: string; message: string } };

export interface TrainCallbacks {
  signal?: AbortSignal;
  onPrepared?: (recipe: TrainingRecipe, images: number) => void;
  onProgress?: (progress: TrainingProgress) => void;
}

/** The error as the thread named it, so callers can tell bad input from a diverged run or a stop. */
function revive(error: { name: string; message: string }): Error {
  if (error.name === 'AbortError') return new DOMException(error.message, 'AbortError');
  const revived = new Error(error.message);
  revived.name = error.name;
  return revived;
}

export function trainLora(request: TrainingRequest, callbacks: TrainCallbacks = {}): Promise<TrainingOutcome> {
  const worker = new Worker(new URL('./training-thread.js', import.meta.url), { workerData: request });
  const abort = () => worker.postMessage({ type: 'abort' } satisfies ToTrainingThread);
  callbacks.signal?.addEventListener('abort', abort, { once: true });
  if (callbacks.signal?.aborted) abort();
  return new Promise<TrainingOutcome>((resolve, reject) => {
    let settled = false;
    const settle = (action: () => void) => {
      if (settled) return;
      settled = true;
      callbacks.signal?.removeEventListener('abort', abort);
      action();
    };
    worker.on('message', (message: FromTrainingThread) => {
      switch (message.type) {
        case 'prepared': callbacks.onPrepared?.(message.recipe, message.images); return;
        case 'progress': callbacks.onProgress?.(message.progress); return;
        case 'done': settle(() => resolve(message.outcome)); return;
        case 'failed': settle(() => reject(revive(message.error))); return;
      }
    });
    worker.once('error', (error) => settle(() => reject(error)));
    worker.once('exit', (code) => settle(() => reject(new Error(`the training thread exited with code ${code} before it finished`))));
  });
}
