import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fma32, roundHalfEven } from './float32.js';

// diffusers' EulerDiscreteScheduler, reproduced in float32 the way torch computes it on a CPU, so that timesteps and
// sigmas equal the Python ones and a seed gives the same image in both.

const f32 = Math.fround;

type TimestepSpacing = 'leading' | 'trailing' | 'linspace';
type PredictionType = 'epsilon' | 'v_prediction';

export interface EulerConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: 'scaled_linear' | 'linear';
  timestepSpacing: TimestepSpacing;
  stepsOffset: number;
  predictionType: PredictionType;
}

// Keys that other schedulers' configs carry (SDXL's Euler config was written by a DDIM/PNDM-era diffusers) and that
// Euler ignores in diffusers too.
const KEYS_EULER_DOES_NOT_READ = new Set([
  '_class_name', '_diffusers_version', 'clip_sample', 'clip_sample_range', 'sample_max_value', 'set_alpha_to_one',
  'skip_prk_steps', 'thresholding', 'dynamic_thresholding_ratio',
]);

// Options with the value that this implementation follows; any other value would change the schedule.
const DEFAULTS_REQUIRED: Readonly<Record<string, unknown>> = {
  trained_betas: null,
  interpolation_type: 'linear',
  use_karras_sigmas: false,
  use_exponential_sigmas: false,
  use_beta_sigmas: false,
  sigma_min: null,
  sigma_max: null,
  timestep_type: 'discrete',
  rescale_betas_zero_snr: false,
  final_sigmas_type: 'zero',
};

const CHOICES = {
  beta_schedule: ['scaled_linear', 'linear'],
  timestep_spacing: ['leading', 'trailing', 'linspace'],
  prediction_type: ['epsilon', 'v_prediction'],
} as const;

export class SchedulerConfigError extends Error {
  override name = 'SchedulerConfigError';
}

export function parseEulerConfig(raw: unknown, source: string): EulerConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw new SchedulerConfigError(`${source}: expected a JSON object, got ${JSON.stringify(raw)}`);
  }
  const config = raw as Record<string, unknown>;
  const className = config['_class_name'];
  if (className !== undefined && className !== 'EulerDiscreteScheduler') {
    throw new SchedulerConfigError(`${source}: _class_name ${JSON.stringify(className)} is not supported; only EulerDiscreteScheduler is`);
  }
  const known = new Set([
    ...KEYS_EULER_DOES_NOT_READ, ...Object.keys(DEFAULTS_REQUIRED), ...Object.keys(CHOICES),
    'num_train_timesteps', 'beta_start', 'beta_end', 'steps_offset',
  ]);
  for (const [key, value] of Object.entries(config)) {
    if (!known.has(key)) {
      throw new SchedulerConfigError(`${source}: ${key} = ${JSON.stringify(value)} is not supported by this EulerDiscreteScheduler`);
    }
    if (key in DEFAULTS_REQUIRED && value !== DEFAULTS_REQUIRED[key]) {
      throw new SchedulerConfigError(`${source}: ${key} = ${JSON.stringify(value)} is not supported; only ${JSON.stringify(DEFAULTS_REQUIRED[key])}`);
    }
  }
  const choice = <K extends keyof typeof CHOICES>(key: K, fallback: (typeof CHOICES)[K][number]): (typeof CHOICES)[K][number] => {
    const value = config[key] ?? fallback;
    if (!(CHOICES[key] as readonly unknown[]).includes(value)) {
      throw new SchedulerConfigError(`${source}: ${key} = ${JSON.stringify(value)} is not supported; use one of ${CHOICES[key].join(', ')}`);
    }
    return value as (typeof CHOICES)[K][number];
  };
  const number = (key: string, fallback: number, valid: (n: number) => boolean, rule: string): number => {
    const value = config[key] ?? fallback;
    if (typeof value !== 'number' || !valid(value)) {
      throw new SchedulerConfigError(`${source}: ${key} = ${JSON.stringify(value)} must be ${rule}`);
    }
    return value;
  };
  const numTrainTimesteps = number('num_train_timesteps', 1000, (n) => Number.isInteger(n) && n >= 2, 'an integer ≥ 2');
  const betaStart = number('beta_start', 0.0001, (n) => n > 0 && n < 1, 'in (0, 1)');
  const betaEnd = number('beta_end', 0.02, (n) => n > 0 && n < 1, 'in (0, 1)');
  if (betaEnd < betaStart) {
    throw new SchedulerConfigError(`${source}: beta_end = ${betaEnd} is below beta_start = ${betaStart}`);
  }
  return {
    numTrainTimesteps,
    betaStart,
    betaEnd,
    betaSchedule: choice('beta_schedule', 'linear'),
    timestepSpacing: choice('timestep_spacing', 'linspace'),
    stepsOffset: number('steps_offset', 0, (n) => Number.isInteger(n) && n >= 0, 'a non-negative integer'),
    predictionType: choice('prediction_type', 'epsilon'),
  };
}

/** torch.linspace(start, end, steps, dtype=float32) on a CPU: its scalar kernel, with the multiply-add fused. */
function torchLinspace32(start: number, end: number, steps: number): Float32Array {
  const first = f32(start);
  const last = f32(end);
  const step = f32(f32(last - first) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  const out = new Float32Array(steps);
  for (let i = 0; i < steps; i++) {
    out[i] = i < halfway
      ? fma32(step, i, first)
      : fma32(-step, steps - i - 1, last);
  }
  return out;
}

/** σ(t) = √((1 − ᾱ_t) / ᾱ_t) for every training timestep, ᾱ accumulated in double as torch.cumprod does on CPU. */
function trainingAlphasCumprod(config: EulerConfig): Float32Array {
  const betas = config.betaSchedule === 'scaled_linear'
    ? torchLinspace32(Math.sqrt(config.betaStart), Math.sqrt(config.betaEnd), config.numTrainTimesteps).map((b) => f32(b * b))
    : torchLinspace32(config.betaStart, config.betaEnd, config.numTrainTimesteps);
  const alphasCumprod = new Float32Array(betas.length);
  let alphaCumprod = 1;
  for (let t = 0; t < betas.length; t++) {
    alphaCumprod *= f32(1 - betas[t]!);
    alphasCumprod[t] = alphaCumprod;
  }
  return alphasCumprod;
}

/** √(σ² + 1) in float32 operations. */
function noiseScale(sigma: number): number {
  return f32(Math.sqrt(f32(f32(sigma * sigma) + 1)));
}

export class EulerDiscreteScheduler {
  readonly config: EulerConfig;
  private readonly trainSigmas: Float32Array;
  timesteps: Float32Array = new Float32Array(0);
  /** One more than timesteps: the last is 0. */
  sigmas: Float32Array = new Float32Array(0);
  initNoiseSigma = 1;

  /** ᾱ_t for every training timestep: the one table behind both sampling (σ) and training (`addNoise`). */
  readonly alphasCumprod: Float32Array;

  constructor(config: EulerConfig) {
    this.config = config;
    this.alphasCumprod = trainingAlphasCumprod(config);
    this.trainSigmas = this.alphasCumprod.map((alphaBar) => f32(Math.sqrt(f32(f32(1 - alphaBar) / alphaBar))));
  }

  /**
   * DDPM's forward process as the training script applies it, per sample: √ᾱ_t·x₀ + √(1−ᾱ_t)·noise in float32.
   * `samples` and `noise` hold timesteps.length samples of equal size.
   */
  addNoise(samples: Float32Array, noise: Float32Array, timesteps: readonly number[]): Float32Array {
    if (noise.length !== samples.length || samples.length % timesteps.length !== 0) {
      throw new RangeError(`addNoise: ${samples.length} sample values, ${noise.length} noise values and ${timesteps.length} timesteps do not fit together`);
    }
    const size = samples.length / timesteps.length;
    const noisy = new Float32Array(samples.length);
    timesteps.forEach((t, sample) => {
      const alphaBar = this.alphasCumprod[t];
      if (!Number.isInteger(t) || alphaBar === undefined) throw new RangeError(`timestep ${t} must be an integer from 0 to ${this.alphasCumprod.length - 1}`);
      const signal = f32(Math.sqrt(alphaBar));
      const noiseScale = f32(Math.sqrt(f32(1 - alphaBar)));
      for (let i = sample * size; i < (sample + 1) * size; i++) noisy[i] = f32(f32(signal * samples[i]!) + f32(noiseScale * noise[i]!));
    });
    return noisy;
  }

  static async fromDirectory(schedulerDir: string): Promise<EulerDiscreteScheduler> {
    const file = path.join(schedulerDir, 'scheduler_config.json');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (cause) {
      throw new SchedulerConfigError(`cannot read scheduler config ${file}: ${(cause as Error).message}`);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (cause) {
      throw new SchedulerConfigError(`${file} is not valid JSON: ${(cause as Error).message}`);
    }
    return new EulerDiscreteScheduler(parseEulerConfig(raw, file));
  }

  setTimesteps(numInferenceSteps: number): void {
    const trainSteps = this.config.numTrainTimesteps;
    if (!Number.isInteger(numInferenceSteps) || numInferenceSteps < 1 || numInferenceSteps > trainSteps) {
      throw new RangeError(`steps = ${numInferenceSteps} must be an integer from 1 to ${trainSteps}`);
    }
    const timesteps = this.spacedTimesteps(numInferenceSteps);
    const sigmas = new Float32Array(numInferenceSteps + 1);
    for (let i = 0; i < numInferenceSteps; i++) sigmas[i] = this.interpolateSigma(timesteps[i]!);
    this.timesteps = timesteps;
    this.sigmas = sigmas;
    let maxSigma = 0;
    for (const sigma of sigmas) maxSigma = Math.max(maxSigma, sigma);
    this.initNoiseSigma = this.config.timestepSpacing === 'leading' ? noiseScale(maxSigma) : maxSigma;
  }

  private spacedTimesteps(n: number): Float32Array {
    const { numTrainTimesteps: trainSteps, stepsOffset } = this.config;
    const out = new Float32Array(n);
    switch (this.config.timestepSpacing) {
      case 'leading': {
        const ratio = Math.floor(trainSteps / n);
        for (let i = 0; i < n; i++) out[i] = (n - 1 - i) * ratio + stepsOffset;
        return out;
      }
      case 'trailing': {
        const ratio = trainSteps / n;
        for (let i = 0; i < n; i++) out[i] = roundHalfEven(trainSteps - i * ratio) - 1;
        return out;
      }
      case 'linspace': {
        // np.linspace(0, trainSteps - 1, n) reversed: k · step, with the end point set exactly.
        const span = trainSteps - 1;
        const step = n === 1 ? 0 : span / (n - 1);
        for (let i = 0; i < n; i++) out[i] = i === 0 && n > 1 ? span : (n - 1 - i) * step;
        return out;
      }
    }
  }

  /** np.interp over the training sigmas (float64), then stored as float32. */
  private interpolateSigma(timestep: number): number {
    const last = this.trainSigmas.length - 1;
    const t = Math.min(Math.max(timestep, 0), last);
    const low = Math.floor(t);
    const high = Math.min(low + 1, last);
    const fraction = t - low;
    const a = this.trainSigmas[low]!;
    return f32(fraction === 0 ? a : a + (this.trainSigmas[high]! - a) * fraction);
  }

  private checkStepIndex(stepIndex: number): number {
    if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex >= this.timesteps.length) {
      throw new RangeError(`stepIndex = ${stepIndex} is outside the ${this.timesteps.length} scheduled steps (call setTimesteps first)`);
    }
    return this.sigmas[stepIndex]!;
  }

  /** sample / √(σ² + 1): divided, not multiplied by a reciprocal, because that is what diffusers computes. */
  scaleModelInput(sample: Float32Array, stepIndex: number): Float32Array {
    const scale = noiseScale(this.checkStepIndex(stepIndex));
    return sample.map((x) => x / scale);
  }

  /** One Euler step from sigmas[stepIndex] to sigmas[stepIndex + 1], in torch's float32 operation order. */
  step(modelOutput: Float32Array, stepIndex: number, sample: Float32Array): Float32Array {
    if (modelOutput.length !== sample.length) {
      throw new RangeError(`modelOutput has ${modelOutput.length} values but sample has ${sample.length}`);
    }
    const sigma = this.checkStepIndex(stepIndex);
    const dt = f32(this.sigmas[stepIndex + 1]! - sigma);
    const scale = noiseScale(sigma);
    const scaleSquared = f32(f32(sigma * sigma) + 1);
    const vFactor = f32(-sigma / scale);
    const out = new Float32Array(sample.length);
    for (let i = 0; i < sample.length; i++) {
      const x = sample[i]!;
      const eps = modelOutput[i]!;
      const predictedOriginal = this.config.predictionType === 'epsilon'
        ? f32(x - f32(sigma * eps))
        : f32(f32(eps * vFactor) + f32(x / scaleSquared));
      const derivative = f32(f32(x - predictedOriginal) / sigma);
      out[i] = f32(x + f32(derivative * dt));
    }
    return out;
  }
}
