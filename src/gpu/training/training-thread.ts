import { parentPort, workerData } from 'node:worker_threads';
import { LoraTrainingRun, type TrainingRequest } from './lora-training.js';
import type { FromTrainingThread, ToTrainingThread } from './lora-trainer.js';

// Runs one training inside a worker thread: onnxruntime-node's run() blocks the thread that calls it, and a training
// is thousands of runs, so the caller's event loop (a terminal's Ctrl-C, a queue's lock renewal) must stay elsewhere.

const port = parentPort!;
const controller = new AbortController();

function post(message: FromTrainingThread): void {
  port.postMessage(message);
}

port.on('message', (message: ToTrainingThread) => {
  if (message.type === 'abort') controller.abort();
});

async function main(): Promise<void> {
  let run: LoraTrainingRun | null = null;
  try {
    run = await LoraTrainingRun.prepare(workerData as TrainingRequest);
    post({ type: 'prepared', recipe: run.recipe, images: run.request.images.length });
    const outcome = await run.train({ signal: controller.signal, onProgress: (progress) => post({ type: 'progress', progress }) });
    post({ type: 'done', outcome });
  } catch (error) {
    post({ type: 'failed', error: error instanceof Error ? { name: error.name, message: error.message } : { name: 'Error', message: String(error) } });
  } finally {
    await run?.dispose();
    port.close();
  }
}

void main();
