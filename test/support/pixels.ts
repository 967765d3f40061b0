import assert from 'node:assert/strict';
import { decodeToRgb } from '../../src/gpu/image.js';

/** The largest 8-bit difference between two images of the same size (files or encoded bytes). */
export async function maxPixelDifference(actual: string | Uint8Array, expected: string | Uint8Array): Promise<number> {
  const load = (image: string | Uint8Array) => decodeToRgb(typeof image === 'string' ? image : Buffer.from(image));
  const [a, b] = await Promise.all([load(actual), load(expected)]);
  assert.deepEqual([a.width, a.height], [b.width, b.height], 'image size');
  let max = 0;
  for (let i = 0; i < b.rgb.length; i++) max = Math.max(max, Math.abs(a.rgb[i]! - b.rgb[i]!));
  return max;
}

/** The largest element-wise difference between two float arrays of the same length. */
export function maxAbsDifference(actual: Float32Array, expected: Float32Array): number {
  assert.equal(actual.length, expected.length, 'length');
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(actual[i]! - expected[i]!));
  return max;
}

/** The largest difference, in 8-bit levels, between RGB bytes and a diffusers `output_type="np"` image in [0, 1]. */
export function maxRgbDifference(rgb: Uint8Array, image: Float32Array): number {
  assert.equal(rgb.length, image.length, 'length');
  let max = 0;
  for (let i = 0; i < image.length; i++) max = Math.max(max, Math.abs(rgb[i]! - image[i]! * 255));
  return max;
}
