import ort from 'onnxruntime-node';
import { OnnxModel, type RunClock } from '../onnx-session.js';
import type { Device } from '../providers.js';

// Images to latents as the training script makes them: optimum's vae_encoder gives latent_dist's parameters
// (4 mean and 4 log-variance channels), and every step samples them afresh with new noise.

const f32 = Math.fround;
const LOGVAR_MIN = -30;
const LOGVAR_MAX = 20;

export class VaeEncoder {
  private constructor(private readonly model: OnnxModel) {}

  static async load(modelPath: string, device: Device, clock: RunClock): Promise<VaeEncoder> {
    const model = await OnnxModel.load('vae_encoder', modelPath, device, clock);
    model.input('sample');
    model.output('latent_parameters');
    return new VaeEncoder(model);
  }

  /** [3, R, R] pixels in [-1, 1] → [8, R/f, R/f] latent parameters. */
  async encode(pixels: Float32Array, resolution: number): Promise<Float32Array> {
    const sample = new ort.Tensor('float32', pixels, [1, 3, resolution, resolution]);
    return (await this.model.run({ sample }, ['latent_parameters']))['latent_parameters']!;
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}

/**
 * `latent_dist.sample() × scaling_factor` for one sample: (mean + exp(½·clamp(logvar))·ε)·s, rounded to float32 where
 * torch rounds.
 */
export function sampleLatents(parameters: Float32Array, noise: Float32Array, scalingFactor: number): Float32Array {
  const size = parameters.length / 2;
  if (noise.length !== size) throw new RangeError(`sampleLatents: ${noise.length} noise values for ${size} latent values`);
  const latents = new Float32Array(size);
  const scale = f32(scalingFactor);
  for (let i = 0; i < size; i++) {
    const logvar = Math.min(Math.max(parameters[size + i]!, LOGVAR_MIN), LOGVAR_MAX);
    const std = f32(Math.exp(f32(0.5 * logvar)));
    latents[i] = f32(f32(parameters[i]! + f32(std * noise[i]!)) * scale);
  }
  return latents;
}
