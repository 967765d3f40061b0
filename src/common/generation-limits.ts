import { fail } from './validation.js';

// What any generation may ask for. The bot, the queue and the pipeline check against the same numbers.

export const DEFAULT_STEPS = 30;
export const DEFAULT_GUIDANCE_SCALE = 5;
export const MAX_STEPS = 500;
export const MAX_IMAGE_SIDE_PX = 4096;
export const MAX_PROMPT_CHARS = 4000;
export const MAX_PANELS = 8;
export const MAX_LORA_STRENGTH = 4;
export const DEFAULT_DENOISING_END = 0.8;
/** torch seeds its generator with the low 32 bits; larger safe integers are accepted and mean the same. */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

export const WEIGHTING_SYNTAXES = ['auto', 'compel', 'a1111', 'none'] as const;
export type WeightingSyntax = (typeof WEIGHTING_SYNTAXES)[number];

/** The refiner takes over after this share of the schedule: strictly between none and all of it. */
export function checkDenoisingEnd(field: string, value: unknown): number {
  if (typeof value !== 'number' || !(value > 0 && value < 1)) fail(field, value, 'must be a number between 0 and 1');
  return value;
}
