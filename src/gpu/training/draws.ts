import { createHash } from 'node:crypto';
import { Mt19937, torchRandn } from '../rng.js';

// The random draws of one training step: which images, their timesteps, the VAE sample's noise and the noise the
// UNet must predict. Each step's draws are a function of (seed, step) alone, so a run resumed from a checkpoint
// draws exactly what the uninterrupted run would have, with no generator state to save. A replay feeds recorded
// draws through the same interface.

export interface StepDraw {
  imageIndices: number[];
  timesteps: number[];
  /** [batch, 4, h, w]: ε of `latent_dist.sample()`. */
  latentNoise: Float32Array;
  /** [batch, 4, h, w]: the epsilon target. */
  noise: Float32Array;
}

export interface DrawSource {
  draw(step: number): StepDraw;
}

/** A seed for one purpose, independent of every other purpose's: a hash, not seed + k, so streams never overlap. */
export function deriveSeed(seed: number, purpose: string, index: number): number {
  const digest = createHash('sha256').update(`${seed}/${purpose}/${index}`).digest();
  // 32 bits: what torch.manual_seed and mt19937 keep anyway.
  return digest.readUInt32LE(0);
}

export class SeededDraws implements DrawSource {
  private readonly permutations = new Map<number, number[]>();

  constructor(
    private readonly seed: number,
    private readonly imageCount: number,
    private readonly batchSize: number,
    private readonly latentShape: readonly [number, number, number],
    private readonly trainTimesteps: number,
  ) {}

  draw(step: number): StepDraw {
    const { batchSize } = this;
    // DataLoader(shuffle=True) visits every image once per epoch in a fresh order; batches run on across epochs.
    const imageIndices = Array.from({ length: batchSize }, (_, i) => {
      const position = step * batchSize + i;
      return this.permutation(Math.floor(position / this.imageCount))[position % this.imageCount]!;
    });
    const generator = new Mt19937(deriveSeed(this.seed, 'timesteps', step));
    const timesteps = Array.from({ length: batchSize }, () => Math.floor((generator.nextUint32() / 2 ** 32) * this.trainTimesteps));
    const shape = [batchSize, ...this.latentShape];
    return {
      imageIndices,
      timesteps,
      latentNoise: torchRandn(deriveSeed(this.seed, 'latent-noise', step), shape),
      noise: torchRandn(deriveSeed(this.seed, 'noise', step), shape),
    };
  }

  private permutation(epoch: number): number[] {
    const known = this.permutations.get(epoch);
    if (known) return known;
    const generator = new Mt19937(deriveSeed(this.seed, 'epoch', epoch));
    const order = Array.from({ length: this.imageCount }, (_, i) => i);
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor((generator.nextUint32() / 2 ** 32) * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    this.permutations.clear();
    this.permutations.set(epoch, order);
    return order;
  }
}
