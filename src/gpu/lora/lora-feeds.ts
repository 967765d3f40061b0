import type { LoraModule, LoraTarget } from './lora-types.js';

// A LoRA version as the values the UNet's LoRA inputs take (see addLoraBranches): per projection, Aᵀ [in, rank] and
// scale·Bᵀ [rank, out], where `rank` is what the session was built for. A LoRA of lower rank fills the first rows and
// columns and leaves zeros (x·Aᵀ·Bᵀ is unchanged); a projection it does not touch gets zeros.

export class LoraFeedError extends Error {
  override name = 'LoraFeedError';
}

export interface BranchValues {
  downT: Float32Array;
  upT: Float32Array;
}

export function loraBranchValues(modules: readonly LoraModule[], targets: readonly LoraTarget[], rank: number): Map<string, BranchValues> {
  const byModule = new Map(targets.map((target) => [target.module, target]));
  const values = new Map<string, BranchValues>(targets.map((target) => [target.module, {
    downT: new Float32Array(target.inFeatures * rank),
    upT: new Float32Array(rank * target.outFeatures),
  }]));
  const seen = new Set<string>();
  for (const lora of modules) {
    const { module } = lora;
    const target = byModule.get(module);
    if (target === undefined) {
      throw new LoraFeedError(`LoRA module ${module} is not a projection of this UNet: the graph has no to_q / to_k / to_v / to_out.0 MatMul of that scope with a 2-D weight initializer`);
    }
    if (seen.has(module)) throw new LoraFeedError(`LoRA module ${module} is listed twice`);
    seen.add(module);
    if (lora.inFeatures !== target.inFeatures || lora.outFeatures !== target.outFeatures) {
      throw new LoraFeedError(`LoRA module ${module} is ${lora.inFeatures}→${lora.outFeatures} but the UNet's ${target.nodeName} is ${target.inFeatures}→${target.outFeatures}`);
    }
    if (!Number.isInteger(lora.rank) || lora.rank < 1) throw new LoraFeedError(`LoRA module ${module} has rank ${lora.rank}`);
    if (lora.rank > rank) throw new LoraFeedError(`LoRA module ${module} has rank ${lora.rank}, more than the ${rank} this UNet's LoRA branches were built for`);
    if (lora.down.length !== lora.rank * lora.inFeatures) {
      throw new LoraFeedError(`LoRA module ${module}: down has ${lora.down.length} values, rank ${lora.rank} × in ${lora.inFeatures} needs ${lora.rank * lora.inFeatures}`);
    }
    if (lora.up.length !== lora.outFeatures * lora.rank) {
      throw new LoraFeedError(`LoRA module ${module}: up has ${lora.up.length} values, out ${lora.outFeatures} × rank ${lora.rank} needs ${lora.outFeatures * lora.rank}`);
    }
    if (!Number.isFinite(lora.scale)) throw new LoraFeedError(`LoRA module ${module} has scale ${lora.scale}`);
    const { downT, upT } = values.get(module)!;
    for (let k = 0; k < lora.rank; k++) {
      for (let i = 0; i < lora.inFeatures; i++) downT[i * rank + k] = lora.down[k * lora.inFeatures + i]!;
      // The scale folded into the values saves a Mul per projection per step.
      for (let o = 0; o < lora.outFeatures; o++) upT[k * lora.outFeatures + o] = lora.up[o * lora.rank + k]! * lora.scale;
    }
  }
  return values;
}
