import { readFixtureJson } from './fixtures.js';

export interface RefinerReferenceCase {
  id: string;
  dir: string;
  prompt: string;
  negative_prompt: string | null;
  seed: number;
  steps: number;
  guidance_scale: number;
  height: number;
  width: number;
  high_noise_frac: number;
  base_steps: number;
  refiner_steps: number;
  lora: { file: string; scale: number } | null;
}

export const REFINER_REFERENCE_CASES = readFixtureJson<{ cases: RefinerReferenceCase[] }>('reference-refiner', 'index.json').cases;
