import { writeFileAtomic } from '../../common/files.js';
import type { LoraModule } from './lora-types.js';
import { safetensorsBytes, type TensorToWrite } from './safetensors-writer.js';

// A trained LoRA is saved as diffusers' save_lora_weights saves an SDXL UNet adapter, so that diffusers, ComfyUI and
// A1111 load it as well as we do. No alpha is stored: every loader then takes alpha = rank, a scale of 1.

/** One module's trained factors; the file holds no alpha, so there is no scale to give. */
export type LoraWeights = Omit<LoraModule, 'scale'>;

export class LoraWriteError extends Error {
  override name = 'LoraWriteError';
}

/** What diffusers' save function hands safetensors.torch.save_file; callers' keys are added to it. */
const DIFFUSERS_METADATA: Readonly<Record<string, string>> = { format: 'pt' };

/** The file's bytes: F32 `unet.<module>.lora.down.weight` [rank, in] and `….lora.up.weight` [out, rank], by key. */
export function diffusersLoraBytes(
  modules: readonly LoraWeights[],
  metadata: Readonly<Record<string, string>>,
): Uint8Array {
  if (modules.length === 0) throw new LoraWriteError('modules is empty: a LoRA file needs at least one module');
  const tensors: [string, TensorToWrite][] = [];
  for (const { module, rank, inFeatures, outFeatures, down, up } of modules) {
    // A rank of 0 would make a valid file whose every module a loader skips.
    if (!Number.isSafeInteger(rank) || rank < 1) throw new LoraWriteError(`module ${module}: rank ${rank} is not a positive integer`);
    tensors.push([`unet.${module}.lora.down.weight`, { dtype: 'F32', shape: [rank, inFeatures], data: down }]);
    tensors.push([`unet.${module}.lora.up.weight`, { dtype: 'F32', shape: [outFeatures, rank], data: up }]);
  }
  // save_file orders tensors by name within a dtype; doing the same makes the bytes independent of training's order.
  tensors.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return safetensorsBytes(tensors, { ...DIFFUSERS_METADATA, ...metadata });
}

/** Writes atomically: a failed write leaves the file that was there, if any, and nothing else. */
export function writeDiffusersLora(
  filePath: string,
  modules: readonly LoraWeights[],
  metadata: Readonly<Record<string, string>>,
): void {
  writeFileAtomic(filePath, diffusersLoraBytes(modules, metadata));
}
