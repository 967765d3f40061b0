import { parentPort, workerData } from 'node:worker_threads';
import { rewriteUnetWithLora, type RewriteRequest } from './lora-unet.js';

// Entry point of the short-lived thread in which buildLoraUnet rewrites the UNet graph.

const port = parentPort!;
rewriteUnetWithLora(workerData as RewriteRequest).then(
  (result) => port.postMessage({ result }, [result.bytes.buffer as ArrayBuffer]),
  (error: Error) => port.postMessage({ error: { name: error.name, message: error.message } }),
);
