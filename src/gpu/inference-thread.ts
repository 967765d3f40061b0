import { parentPort, workerData } from 'node:worker_threads';
import { SdxlPipeline } from './sdxl-pipeline.js';
import { encodePng } from './image.js';
import type { GenerationRequest } from './request.js';
import type { EncodedResult, FromThread, SerializedError, ThreadOptions, ToThread } from './thread-protocol.js';

// Runs inside a worker thread: onnxruntime-node's run() blocks the thread that calls it, so the sessions live here
// and the caller's event loop (Discord heartbeats, queue lock renewal) stays free.

const port = parentPort!;
const options = workerData as ThreadOptions;
const running = new Map<number, AbortController>();
// One generation at a time: two interleaved UNet loops would each run at half speed and double the memory.
let queue: Promise<void> = Promise.resolve();

function post(message: FromThread, transfer: ArrayBuffer[] = []): void {
  port.postMessage(message, transfer);
}

function serialize(error: unknown): SerializedError {
  return error instanceof Error ? { name: error.name, message: error.message } : { name: 'Error', message: String(error) };
}

async function main(): Promise<void> {
  let pipeline: SdxlPipeline;
  try {
    pipeline = await SdxlPipeline.load(options.modelDir, options.device, options.pipeline);
  } catch (error) {
    post({ type: 'load-failed', error: serialize(error) });
    return;
  }
  port.on('message', (message: ToThread) => {
    if (message.type === 'abort') {
      running.get(message.id)?.abort();
      return;
    }
    const controller = new AbortController();
    running.set(message.id, controller);
    queue = queue
      .then(() => generate(pipeline, message.id, message.request, controller.signal))
      .finally(() => running.delete(message.id));
  });
  post({ type: 'ready', loaded: { capabilities: pipeline.capabilities, notices: [...pipeline.loadNotices] } });
}

async function generate(pipeline: SdxlPipeline, id: number, request: GenerationRequest, signal: AbortSignal): Promise<void> {
  try {
    const result = await pipeline.generate(request, {
      signal,
      onProgress: (progress) => post({ type: 'progress', id, progress }),
    });
    const panels = await Promise.all(result.panels.map(async (panel) => ({
      width: panel.width,
      height: panel.height,
      png: new Uint8Array(await encodePng(panel.rgb, panel.width, panel.height)),
      finalLatents: panel.finalLatents,
    })));
    const encoded: EncodedResult = { panels, timings: result.timings, notices: result.notices };
    post({ type: 'done', id, result: encoded }, panels.flatMap((panel) => [panel.png.buffer as ArrayBuffer, panel.finalLatents.buffer as ArrayBuffer]));
  } catch (error) {
    post({ type: 'failed', id, error: serialize(error) });
  }
}

void main();
