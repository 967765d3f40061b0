import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { DrawSource, StepDraw } from './draws.js';
import type { RecipeOptions } from './recipe.js';

// A recorded run of diffusers' train_dreambooth_lora_sdxl.py (the training-reference fixture format: case.json with
// the recipe and each step's draws, the images, lora_init.safetensors, steps/<k>/*.bin), replayed by wrongbot's own
// engine so every tensor can be compared with the script's.

export class ReplayCaseError extends Error {
  override name = 'ReplayCaseError';
}

interface RecordedArray {
  file: string;
  shape: number[];
}

interface CaseJson {
  prompt: string;
  resolution: number;
  rank: number;
  lora_alpha: number;
  batch_size: number;
  steps: number;
  optimizer: { lr: number; betas: [number, number]; weight_decay: number; eps: number; max_grad_norm: number };
  images: { file: string }[];
  lora_init: string;
  per_step: { image_indices: number[]; timesteps: number[]; latent_noise: RecordedArray; noise: RecordedArray }[];
}

export interface ReplayCase {
  dir: string;
  recipe: RecipeOptions;
  images: string[];
  initLora: string;
}

export function readReplayCase(dir: string): ReplayCase {
  const caseFile = path.join(dir, 'case.json');
  let json: CaseJson;
  try {
    json = JSON.parse(readFileSync(caseFile, 'utf8')) as CaseJson;
  } catch (cause) {
    throw new ReplayCaseError(`--replay ${dir}: cannot read ${caseFile}: ${(cause as Error).message}`);
  }
  if (json.lora_alpha !== json.rank) throw new ReplayCaseError(`--replay ${dir}: lora_alpha ${json.lora_alpha} differs from rank ${json.rank}; only alpha = rank is supported`);
  if (json.per_step.length < json.steps) throw new ReplayCaseError(`--replay ${dir}: case.json records ${json.per_step.length} steps of ${json.steps}`);
  return {
    dir,
    recipe: {
      prompt: json.prompt,
      resolution: json.resolution,
      rank: json.rank,
      steps: json.steps,
      batchSize: json.batch_size,
      learningRate: json.optimizer.lr,
      betas: json.optimizer.betas,
      weightDecay: json.optimizer.weight_decay,
      eps: json.optimizer.eps,
      maxGradNorm: json.optimizer.max_grad_norm,
    },
    images: json.images.map((image) => path.join(dir, 'images', image.file)),
    initLora: path.join(dir, json.lora_init),
  };
}

/** The recorded draws of each step, read when the step comes. */
export class RecordedDraws implements DrawSource {
  private readonly steps: CaseJson['per_step'];

  constructor(private readonly dir: string) {
    this.steps = (JSON.parse(readFileSync(path.join(dir, 'case.json'), 'utf8')) as CaseJson).per_step;
  }

  draw(step: number): StepDraw {
    const recorded = this.steps[step];
    if (recorded === undefined) throw new ReplayCaseError(`--replay ${this.dir} has no step ${step}`);
    return {
      imageIndices: recorded.image_indices,
      timesteps: recorded.timesteps,
      latentNoise: readStepArray(this.dir, step, recorded.latent_noise),
      noise: readStepArray(this.dir, step, recorded.noise),
    };
  }
}

export function readStepArray(dir: string, step: number, array: Pick<RecordedArray, 'file'>): Float32Array {
  const bytes = readFileSync(path.join(dir, 'steps', String(step), array.file));
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}
