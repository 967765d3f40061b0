import { checkInteger, checkNumber, checkText, fail } from '../../common/validation.js';

// What one training does, as diffusers' train_dreambooth_lora_sdxl.py does it with Woolf's settings (instance
// prompt "wrong", the script's defaults otherwise). Every field is recorded in the LoRA file it produces.

export interface TrainingRecipe {
  prompt: string;
  /** Square side in pixels: shorter side resized to it, then centre-cropped. */
  resolution: number;
  rank: number;
  /** peft's lora_alpha; the script sets it to the rank, so the branch scale alpha / rank is 1. */
  loraAlpha: number;
  steps: number;
  batchSize: number;
  learningRate: number;
  betas: [number, number];
  weightDecay: number;
  eps: number;
  maxGradNorm: number;
  seed: number;
}

export const TRAINING_DEFAULTS = {
  prompt: 'wrong',
  rank: 4,
  steps: 500,
  batchSize: 1,
  learningRate: 1e-4,
  betas: [0.9, 0.999] as [number, number],
  weightDecay: 1e-4,
  eps: 1e-8,
  maxGradNorm: 1,
  seed: 0,
} as const;

export const MAX_TRAINING_STEPS = 100_000;
export const MAX_LORA_RANK = 256;
export const MAX_TRAINING_BATCH = 64;
const MAX_PROMPT_CHARS = 1000;

/** The options a user may set; the rest come from TRAINING_DEFAULTS and the model (its native resolution). */
export type RecipeOptions = Partial<Omit<TrainingRecipe, 'loraAlpha'>>;

/**
 * The full recipe: defaults filled in, every value checked. `resolutionMultiple` is what the model needs the side
 * to divide by (VAE factor × the UNet's downsampling).
 */
export function resolveRecipe(options: RecipeOptions, model: { defaultResolution: number; resolutionMultiple: number }): TrainingRecipe {
  const rank = checkInteger('rank', options.rank ?? TRAINING_DEFAULTS.rank, 1, MAX_LORA_RANK);
  const resolution = checkInteger('resolution', options.resolution ?? model.defaultResolution, model.resolutionMultiple, 8192);
  if (resolution % model.resolutionMultiple !== 0) fail('resolution', resolution, `must be a multiple of ${model.resolutionMultiple} for this model`);
  const prompt = checkText('prompt', options.prompt ?? TRAINING_DEFAULTS.prompt, MAX_PROMPT_CHARS);
  if (prompt.trim() === '') fail('prompt', prompt, 'must not be empty');
  const betas = options.betas ?? TRAINING_DEFAULTS.betas;
  return {
    prompt,
    resolution,
    rank,
    loraAlpha: rank,
    steps: checkInteger('steps', options.steps ?? TRAINING_DEFAULTS.steps, 1, MAX_TRAINING_STEPS),
    batchSize: checkInteger('batch size', options.batchSize ?? TRAINING_DEFAULTS.batchSize, 1, MAX_TRAINING_BATCH),
    learningRate: positive('learning rate', options.learningRate ?? TRAINING_DEFAULTS.learningRate, 1),
    betas: [checkNumber('beta1', betas[0], 0, 0.999999), checkNumber('beta2', betas[1], 0, 0.999999)],
    weightDecay: checkNumber('weight decay', options.weightDecay ?? TRAINING_DEFAULTS.weightDecay, 0, 1),
    eps: positive('eps', options.eps ?? TRAINING_DEFAULTS.eps, 1),
    maxGradNorm: positive('max grad norm', options.maxGradNorm ?? TRAINING_DEFAULTS.maxGradNorm, 1e6),
    seed: checkInteger('seed', options.seed ?? TRAINING_DEFAULTS.seed, 0, Number.MAX_SAFE_INTEGER),
  };
}

function positive(field: string, value: number, max: number): number {
  if (!Number.isFinite(value) || value <= 0 || value > max) fail(field, value, `must be a number above 0 and at most ${max}`);
  return value;
}
