import { loadLora } from '../lora/lora-file.js';
import type { LoraTarget } from '../lora/lora-types.js';
import type { LoraWeights } from '../lora/lora-writer.js';
import { torchRandn } from '../rng.js';
import type { NamedTensor } from './adamw.js';
import { deriveSeed } from './draws.js';

// The trained weights: A [rank, in] and B [out, rank] per attention projection, in diffusers' layout and under
// diffusers' keys, so the optimizer state, checkpoints and the final file all name them the same way.

export class LoraParametersError extends Error {
  override name = 'LoraParametersError';
}

export interface LoraParameters {
  rank: number;
  modules: LoraWeights[];
}

export function loraKeys(module: string): { down: string; up: string } {
  return { down: `unet.${module}.lora.down.weight`, up: `unet.${module}.lora.up.weight` };
}

/** Views of every A and B under their keys: updating a view updates the parameters. */
export function namedTensors(parameters: LoraParameters): NamedTensor[] {
  return parameters.modules.flatMap((module) => {
    const keys = loraKeys(module.module);
    return [{ name: keys.down, values: module.down }, { name: keys.up, values: module.up }];
  });
}

/** peft's "gaussian" init: A ~ N(0, 1/rank²), B = 0, so training starts from the base model exactly. */
export function gaussianLoraInit(targets: readonly LoraTarget[], rank: number, seed: number): LoraParameters {
  return {
    rank,
    modules: targets.map((target, index) => {
      const down = torchRandn(deriveSeed(seed, 'lora-init', index), [rank, target.inFeatures]);
      for (let i = 0; i < down.length; i++) down[i] = Math.fround(down[i]! / rank);
      return { module: target.module, rank, inFeatures: target.inFeatures, outFeatures: target.outFeatures, down, up: new Float32Array(target.outFeatures * rank) };
    }),
  };
}

/**
 * An earlier LoRA to continue from, in any format wrongbot reads. Its scale (alpha / rank) is folded into B, since
 * training keeps alpha = rank; projections the file does not cover start as `fresh` does.
 */
export async function loraFromFile(path: string, targets: readonly LoraTarget[], fresh: LoraParameters): Promise<{ parameters: LoraParameters; notes: string[] }> {
  const loaded = await loadLora(path, targets);
  const misfit = loaded.skipped.find(({ reason }) => reason.includes('do not fit'));
  // Training on from a LoRA with a layer silently left out would not continue that LoRA.
  if (misfit) throw new LoraParametersError(`--init-lora ${path}: ${misfit.key}: ${misfit.reason}`);
  const ranks = new Set(loaded.modules.map((module) => module.rank));
  if (ranks.size !== 1) throw new LoraParametersError(`--init-lora ${path}: its modules have ranks ${[...ranks].join(', ')}; training needs one rank`);
  const [rank] = ranks as unknown as [number];
  if (rank !== fresh.rank) throw new LoraParametersError(`--init-lora ${path} has rank ${rank}, but the training is set to rank ${fresh.rank}: leave --rank out or set it to ${rank}`);
  const byModule = new Map(loaded.modules.map((module) => [module.module, module]));
  const notes = loaded.skipped.map(({ key, reason }) => `--init-lora key ${key} not used: ${reason}`);
  const modules = fresh.modules.map((start) => {
    const found = byModule.get(start.module);
    if (found === undefined) {
      notes.push(`--init-lora has no weights for ${start.module}; it starts fresh`);
      return start;
    }
    return { ...start, down: Float32Array.from(found.down), up: found.up.map((value) => Math.fround(value * found.scale)) };
  });
  return { parameters: { rank, modules }, notes };
}

/** Aᵀ [in, rank] or Bᵀ [rank, out] as the graph takes them, and back. */
export function transposed(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  }
  return out;
}
