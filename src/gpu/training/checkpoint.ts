import { writeFileAtomic } from '../../common/files.js';
import { SafetensorsFile } from '../lora/safetensors.js';
import { safetensorsBytes, type TensorToWrite } from '../lora/safetensors-writer.js';
import type { AdamWState } from './adamw.js';
import type { LoraParameters } from './lora-parameters.js';
import { loraKeys, namedTensors } from './lora-parameters.js';
import type { TrainingRecipe } from './recipe.js';

// A resumable point of a training: the weights under their LoRA keys (so the checkpoint also loads as a LoRA), the
// optimizer's moments beside them, and in the metadata the step reached, the recipe and the training set it belongs
// to. The next step's random draws follow from (seed, step), so nothing else is needed to continue exactly.

export class CheckpointError extends Error {
  override name = 'CheckpointError';
}

const FIRST_MOMENT = 'optimizer.exp_avg.';
const SECOND_MOMENT = 'optimizer.exp_avg_sq.';
const STATE_KEY = 'wrongbot.checkpoint';

export interface CheckpointState {
  /** Optimizer steps completed. */
  step: number;
  recipe: TrainingRecipe;
  trainingSetSha256: string;
  losses: number[];
}

export function writeCheckpoint(file: string, parameters: LoraParameters, optimizer: AdamWState, state: CheckpointState): void {
  const tensors: [string, TensorToWrite][] = [];
  for (const { module, rank, inFeatures, outFeatures, down, up } of parameters.modules) {
    const keys = loraKeys(module);
    tensors.push([keys.down, { dtype: 'F32', shape: [rank, inFeatures], data: down }]);
    tensors.push([keys.up, { dtype: 'F32', shape: [outFeatures, rank], data: up }]);
  }
  for (const { name, m, v } of optimizer.moments) {
    tensors.push([FIRST_MOMENT + name, { dtype: 'F32', shape: [m.length], data: m }]);
    tensors.push([SECOND_MOMENT + name, { dtype: 'F32', shape: [v.length], data: v }]);
  }
  writeFileAtomic(file, safetensorsBytes(tensors, { [STATE_KEY]: JSON.stringify(state) }));
}

/** Restores weights and optimizer moments into `parameters` (which fixes the layout) and returns the state. */
export async function readCheckpoint(file: string, parameters: LoraParameters): Promise<{ state: CheckpointState; optimizer: AdamWState }> {
  let checkpoint: SafetensorsFile;
  try {
    checkpoint = await SafetensorsFile.open(file);
  } catch (cause) {
    throw new CheckpointError(`--resume ${file}: ${(cause as Error).message}`);
  }
  try {
    const raw = checkpoint.metadata[STATE_KEY];
    if (raw === undefined) throw new CheckpointError(`--resume ${file} is not a wrongbot training checkpoint (no ${STATE_KEY} metadata)`);
    const state = JSON.parse(raw) as CheckpointState;
    const read = async (name: string, length: number): Promise<Float32Array> => {
      if (!checkpoint.entries.has(name)) throw new CheckpointError(`--resume ${file} has no tensor ${name}: it belongs to another model or rank`);
      const values = await checkpoint.readFloat32(name);
      if (values.length !== length) throw new CheckpointError(`--resume ${file}: ${name} has ${values.length} values, this training needs ${length}`);
      return values;
    };
    const moments: AdamWState['moments'] = [];
    for (const { name, values } of namedTensors(parameters)) {
      values.set(await read(name, values.length));
      if (state.step > 0) moments.push({ name, m: await read(FIRST_MOMENT + name, values.length), v: await read(SECOND_MOMENT + name, values.length) });
    }
    return { state, optimizer: { step: state.step, moments } };
  } finally {
    await checkpoint.close();
  }
}
