import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { torchRandn } from '../gpu/rng.js';
import { validateSeed } from '../gpu/request.js';
import { integerOption, parseOptions, required, UsageError, type OptionSpec } from './options.js';

export const NOISE_USAGE = 'wrongbot noise --seed N --shape 1,4,128,128 --out FILE';
export const NOISE_OPTIONS = {
  seed: { type: 'string', value: 'N', description: 'the seed torch.randn is given (required)' },
  shape: { type: 'string', value: 'DIMS', description: 'the tensor shape, comma-separated, e.g. 1,4,128,128 (required)' },
  out: { type: 'string', value: 'FILE', description: 'where the values go, raw float32 little-endian (required)' },
} as const satisfies OptionSpec;

export async function runNoise(argv: string[]): Promise<void> {
  const values = parseOptions(argv, NOISE_OPTIONS);
  const seed = integerOption('seed', values.seed);
  try {
    validateSeed(seed);
  } catch {
    throw new UsageError(`--seed ${seed} must be an integer from 0 to ${Number.MAX_SAFE_INTEGER}`);
  }
  const shapeText = required('shape', values.shape);
  const shape = shapeText.split(',').map((dim) => dim.trim());
  if (shape.some((dim) => !/^\d+$/.test(dim) || Number(dim) === 0)) {
    throw new UsageError(`--shape ${JSON.stringify(shapeText)} must be positive integers separated by commas`);
  }
  const out = required('out', values.out);
  const noise = torchRandn(seed, shape.map(Number));
  await mkdir(path.dirname(path.resolve(out)), { recursive: true });
  // Float32Array is in the host's byte order; every platform Node supports is little-endian.
  await writeFile(out, new Uint8Array(noise.buffer, noise.byteOffset, noise.byteLength));
  console.log(`wrote ${noise.length} float32 values to ${out}`);
}
