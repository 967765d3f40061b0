import { readFixtureJson } from './fixtures.js';

export interface ReferenceCase {
  id: string;
  dir: string;
  prompt: string;
  negative_prompt: string | null;
  seed: number;
  steps: number;
  guidance_scale: number;
  height: number;
  width: number;
  lora: { file: string; scale: number } | null;
}

export const REFERENCE_CASES = readFixtureJson<{ cases: ReferenceCase[] }>('reference', 'index.json').cases;

/** diffusers' base → refiner hand-off cases: the base runs `base_steps`, the refiner the rest. */
export interface RefinerReferenceCase extends ReferenceCase {
  high_noise_frac: number;
  base_steps: number;
  refiner_steps: number;
}

export const REFINER_REFERENCE_CASES = readFixtureJson<{ cases: RefinerReferenceCase[] }>('reference-refiner', 'index.json').cases;

/** The cases the base pipeline alone reproduces (the others need a LoRA). */
export const BASE_REFERENCE_CASES = REFERENCE_CASES.filter((c) => c.lora === null);

/** The `wrongbot generate` arguments that reproduce a reference case; `extra` adds e.g. --lora or --refiner. */
export function generateArgs(
  c: Pick<ReferenceCase, 'prompt' | 'negative_prompt' | 'seed' | 'steps' | 'guidance_scale' | 'width' | 'height'>,
  model: string,
  out: string,
  extra: string[] = [],
): string[] {
  return [
    'generate', '--model', model, '--prompt', c.prompt,
    ...(c.negative_prompt === null ? [] : ['--negative', c.negative_prompt]),
    '--seed', String(c.seed), '--steps', String(c.steps), '--guidance', String(c.guidance_scale),
    '--width', String(c.width), '--height', String(c.height), ...extra, '--out', out,
  ];
}
