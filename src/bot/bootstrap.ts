import type { ImageSettings } from '../queue/contracts.js';

// Synthetic "wrong" images for a server with no votes yet, made as Woolf made his training set: SDXL itself, asked
// for one failure at a time and hard, with compel's `(keyword)++++` weighting, at guidance spread over 8–13.

/** The failures, one per image (the README lists them). */
export const FAILURE_KEYWORDS = Object.freeze([
  'blurry', 'bad hands', 'extra fingers', 'distorted', 'deformed face', 'bad anatomy',
  'low resolution', 'jpeg artifacts', 'oversaturated', 'watermark', 'cropped', 'out of focus',
]);

/** Ordinary subjects the failures are pushed onto, so the images differ in more than the failure. */
const SUBJECTS = Object.freeze([
  'a portrait of a woman', 'a man waving', 'a dog in a park', 'a city street at noon', 'a bowl of fruit on a table',
  'a mountain lake', 'a child holding a balloon', 'a red car', 'a cat on a sofa', 'a lighthouse at dusk',
]);

const GUIDANCE_RANGE = [8, 13] as const;

export type SyntheticSettings = Omit<ImageSettings, 'seed'>;

/** The i-th of `count` images: keywords in turn, subjects in turn, guidance evenly over the range. */
export function syntheticImageSettings(count: number, size: { width: number; height: number }, steps: number): SyntheticSettings[] {
  const [low, high] = GUIDANCE_RANGE;
  return Array.from({ length: count }, (_, i) => ({
    prompt: `${SUBJECTS[i % SUBJECTS.length]}, (${FAILURE_KEYWORDS[i % FAILURE_KEYWORDS.length]})++++`,
    negativePrompt: null,
    steps,
    guidanceScale: count === 1 ? low : Math.round((low + ((high - low) * i) / (count - 1)) * 100) / 100,
    width: size.width,
    height: size.height,
    weighting: 'compel',
  }));
}
