import { readdirSync } from 'node:fs';
import { fixturePath, readFixtureJson } from './fixtures.js';

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

/** What a base case's case.json records besides its settings (the fields the tests read). */
export interface ReferenceCaseRecord {
  unet_calls: number;
  unet_step0_timestep: number;
}

/** diffusers with guidance_rescale: only the settings, final latents and image.png are kept. */
export interface RescaleReferenceCase extends Omit<ReferenceCase, 'lora'> {
  guidance_rescale: number;
}

// reference-rescale/ has no index.json: each folder is a case.
export const RESCALE_REFERENCE_CASES = readdirSync(fixturePath('reference-rescale'), { withFileTypes: true })
  .filter((entry) => entry.isDirectory())
  .map((entry) => entry.name)
  .sort()
  .map((dir) => ({ ...readFixtureJson<Omit<RescaleReferenceCase, 'dir'>>('reference-rescale', dir, 'case.json'), dir }));

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
