import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { addLoraBranches, findLoraTargets } from '../onnx/lora-graph.js';
import type { ModelSource } from '../onnx-session.js';
import { loadLora } from './lora-file.js';
import type { SkippedLoraKey } from './lora-types.js';

// A UNet graph with a LoRA's low-rank branches added, whose strength is a per-sample input: one session serves
// base and LoRA panels in the same batch, and the 5–10 GB of base weights stay in their external-data file.

export interface LoraUnet {
  source: ModelSource;
  loraPath: string;
  appliedModules: number;
  skipped: SkippedLoraKey[];
}

export interface RewriteRequest {
  unetPath: string;
  loraPath: string;
}

export interface RewriteResult {
  bytes: Uint8Array;
  appliedModules: number;
  skipped: SkippedLoraKey[];
}

/** The rewrite itself; buildLoraUnet runs it in its own thread (lora-unet-thread.ts). */
export async function rewriteUnetWithLora({ unetPath, loraPath }: RewriteRequest): Promise<RewriteResult> {
  const graph = new Uint8Array(await readFile(unetPath));
  const lora = await loadLora(loraPath, findLoraTargets(graph));
  return { bytes: addLoraBranches(graph, { kind: 'constant', modules: lora.modules }), appliedModules: lora.modules.length, skipped: lora.skipped };
}

/**
 * Rewrites in a short-lived thread: decoding a real UNet graph leaves tens of MB of garbage, which a long-lived
 * heap would keep as resident memory; a thread's heap is returned whole when it ends.
 */
export async function buildLoraUnet(unetPath: string, loraPath: string): Promise<LoraUnet> {
  const request: RewriteRequest = { unetPath, loraPath };
  const result = await new Promise<RewriteResult>((resolve, reject) => {
    const thread = new Worker(new URL('./lora-unet-thread.js', import.meta.url), { workerData: request });
    thread.once('message', (message: { result: RewriteResult } | { error: { name: string; message: string } }) => {
      if ('result' in message) {
        resolve(message.result);
      } else {
        const error = new Error(message.error.message);
        error.name = message.error.name;
        reject(error);
      }
    });
    thread.once('error', reject);
    thread.once('exit', (code) => reject(new Error(`the LoRA rewrite thread exited with code ${code}`)));
  });
  return {
    source: { bytes: result.bytes, externalDataDir: path.dirname(unetPath) },
    loraPath: path.resolve(loraPath),
    appliedModules: result.appliedModules,
    skipped: result.skipped,
  };
}
