import { readFile } from 'node:fs/promises';
import path from 'node:path';
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

export async function buildLoraUnet(unetPath: string, loraPath: string): Promise<LoraUnet> {
  const graph = new Uint8Array(await readFile(unetPath));
  const lora = await loadLora(loraPath, findLoraTargets(graph));
  return {
    source: { bytes: addLoraBranches(graph, lora.modules), externalDataDir: path.dirname(unetPath) },
    loraPath: path.resolve(loraPath),
    appliedModules: lora.modules.length,
    skipped: lora.skipped,
  };
}
