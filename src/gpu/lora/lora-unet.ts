import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { addLoraBranches, findLoraTargets } from '../onnx/lora-graph.js';
import type { ModelSource } from '../onnx-session.js';
import type { LoraTarget } from './lora-types.js';

// A UNet graph with low-rank branches on every attention projection, whose weights and per-sample strength are
// inputs: one session serves base and LoRA panels in the same batch and any LoRA version of up to its rank, and the
// 5–10 GB of base weights stay in their external-data file.

export interface LoraUnet {
  source: ModelSource;
  targets: LoraTarget[];
  rank: number;
  /** How many LoRAs the branches take at once (see LoraBranchSpec). */
  slots: number;
}

export interface RewriteRequest {
  unetPath: string;
  rank: number;
  slots: number;
}

export interface RewriteResult {
  bytes: Uint8Array;
  targets: LoraTarget[];
}

/** The rewrite itself; buildLoraUnet runs it in its own thread (lora-unet-thread.ts). */
export async function rewriteUnetWithLora({ unetPath, rank, slots }: RewriteRequest): Promise<RewriteResult> {
  const graph = new Uint8Array(await readFile(unetPath));
  const targets = findLoraTargets(graph);
  return { bytes: addLoraBranches(graph, { purpose: 'inference', rank, slots, modules: targets.map((target) => target.module) }), targets };
}

/**
 * Rewrites in a short-lived thread: decoding a real UNet graph leaves tens of MB of garbage, which a long-lived
 * heap would keep as resident memory; a thread's heap is returned whole when it ends.
 */
export async function buildLoraUnet(unetPath: string, rank: number, slots: number): Promise<LoraUnet> {
  const request: RewriteRequest = { unetPath, rank, slots };
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
  return { source: { bytes: result.bytes, externalDataDir: path.dirname(unetPath) }, targets: result.targets, rank, slots };
}
