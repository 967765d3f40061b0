import { fail } from '../../common/validation.js';
import { fma32 } from '../float32.js';

// The optimizer step of diffusers' train_dreambooth_lora_sdxl.py: torch's clip_grad_norm_ over all LoRA weights
// together, then torch's AdamW. The LoRA is a few million float32 values, so the step runs on the host. Each
// operation rounds to float32 in the order torch's CPU kernels do: replaying diffusers' recorded gradients this way
// lands within two float32 ulps of torch's weights (about one element in ten differs at all), where rounding only
// the stored results differs in three times as many.

const f32 = Math.fround;

/** torch adds this to the norm (in the norm's units) so that an all-zero gradient divides safely. */
const CLIP_NORM_EPSILON = 1e-6;

export interface NamedTensor {
  name: string;
  values: Float32Array;
}

export interface AdamWOptions {
  lr: number;
  betas: readonly [number, number];
  weightDecay: number;
  eps: number;
}

export interface AdamWMoments {
  name: string;
  m: Float32Array;
  v: Float32Array;
}

export interface AdamWState {
  /** Optimizer steps taken; the bias corrections depend on it, so a checkpoint without it resumes wrongly. */
  step: number;
  moments: AdamWMoments[];
}

/** Two lists that must hold the same tensors in the same order do not. */
export class TensorMismatchError extends Error {
  override name = 'TensorMismatchError';
}

/**
 * Scales all gradients together so that their global L2 norm is at most `maxNorm`, as torch's clip_grad_norm_ does,
 * and returns the norm before clipping. A non-finite norm (a NaN or infinite gradient) is returned with the
 * gradients left as they are: the caller must stop rather than step with them.
 */
export function clipGradNorm(grads: readonly NamedTensor[], maxNorm: number): number {
  if (!Number.isFinite(maxNorm) || maxNorm <= 0) fail('maxNorm', maxNorm, 'must be a finite number above 0');
  // Summed in float64: a float32 sum over millions of squares would lose the small ones.
  let sumOfSquares = 0;
  for (const { values } of grads) {
    for (let i = 0; i < values.length; i++) sumOfSquares += values[i]! * values[i]!;
  }
  const norm = Math.sqrt(sumOfSquares);
  if (!Number.isFinite(norm)) return norm;
  const scale = maxNorm / (norm + CLIP_NORM_EPSILON);
  if (scale < 1) {
    for (const { values } of grads) {
      for (let i = 0; i < values.length; i++) values[i] = values[i]! * scale;
    }
  }
  return norm;
}

/** torch.optim.AdamW (decoupled weight decay, bias-corrected moments), updating float32 parameters in place. */
export class AdamW {
  private readonly options: AdamWOptions;
  private stepCount = 0;
  /** Created on the first step from the parameters' names and lengths, as torch creates its state lazily. */
  private moments: AdamWMoments[] = [];

  constructor(options: AdamWOptions) {
    this.options = checkOptions(options);
  }

  /** An optimizer that continues from `state()` of another, e.g. one saved with a training checkpoint. */
  static fromState(options: AdamWOptions, state: AdamWState): AdamW {
    const { step, moments } = state;
    if (!Number.isSafeInteger(step) || step < 0) fail('state.step', step, 'must be a whole number of steps, 0 or more');
    if ((step === 0) !== (moments.length === 0)) {
      fail('state.moments', `${moments.length} tensors`, `do not fit step ${step}: moments exist exactly after a step`);
    }
    const names = new Set<string>();
    for (const { name, m, v } of moments) {
      if (names.has(name)) throw new TensorMismatchError(`state.moments: tensor ${JSON.stringify(name)} appears twice`);
      names.add(name);
      if (m.length !== v.length) {
        throw new TensorMismatchError(
          `state.moments: tensor ${JSON.stringify(name)} has ${m.length} first moments but ${v.length} second moments`);
      }
    }
    const optimizer = new AdamW(options);
    optimizer.stepCount = step;
    optimizer.moments = copyMoments(moments);
    return optimizer;
  }

  /** A copy, so that a checkpoint being written is not changed by the steps that follow. */
  state(): AdamWState {
    return { step: this.stepCount, moments: copyMoments(this.moments) };
  }

  /** One AdamW step of `params` (updated in place) with `grads`, the same tensors in the same order. */
  step(params: readonly NamedTensor[], grads: readonly NamedTensor[]): void {
    checkParallel('grads', grads, params);
    if (this.stepCount === 0) {
      this.moments = params.map(({ name, values }) => ({
        name, m: new Float32Array(values.length), v: new Float32Array(values.length),
      }));
    }
    checkParallel('optimizer state', this.moments.map(({ name, m }) => ({ name, values: m })), params);

    this.stepCount += 1;
    const { lr, betas: [beta1, beta2], weightDecay, eps } = this.options;
    // torch computes these in Python float64 and its kernels round each to float32 before use. For the decay that
    // means no decay at all once lr·weightDecay is under 2^-25 (the recipe's 1e-4 · 1e-4 is), as in torch.
    const decay = f32(1 - lr * weightDecay);
    const firstWeight = f32(1 - beta1);
    const secondDecay = f32(beta2);
    const secondWeight = f32(1 - beta2);
    const correction2Sqrt = f32(Math.sqrt(1 - beta2 ** this.stepCount));
    const negativeStepSize = f32(-lr / (1 - beta1 ** this.stepCount));
    const epsilon = f32(eps);

    for (let t = 0; t < params.length; t++) {
      const w = params[t]!.values;
      const g = grads[t]!.values;
      const { m, v } = this.moments[t]!;
      for (let i = 0; i < w.length; i++) {
        const grad = g[i]!;
        // torch's order and roundings: decay the weight, lerp m towards g, scale v and addcmul g² into it (its
        // vectorised lerp and addcmul end in a fused multiply-add), divide, add eps, then addcdiv.
        const decayed = f32(w[i]! * decay);
        const first = fma32(firstWeight, f32(grad - m[i]!), m[i]!);
        const second = fma32(f32(secondWeight * grad), grad, f32(v[i]! * secondDecay));
        const denom = f32(f32(f32(Math.sqrt(second)) / correction2Sqrt) + epsilon);
        m[i] = first;
        v[i] = second;
        w[i] = decayed + f32(f32(negativeStepSize * first) / denom);
      }
    }
  }
}

function checkOptions(options: AdamWOptions): AdamWOptions {
  const { lr, betas, weightDecay, eps } = options;
  if (!Number.isFinite(lr) || lr <= 0) fail('lr', lr, 'must be a finite number above 0');
  if (!Array.isArray(betas) || betas.length !== 2) fail('betas', betas, 'must be two numbers [beta1, beta2]');
  betas.forEach((beta, index) => {
    if (!Number.isFinite(beta) || beta < 0 || beta >= 1) fail(`betas[${index}]`, beta, 'must be at least 0 and below 1');
  });
  if (!Number.isFinite(weightDecay) || weightDecay < 0) fail('weightDecay', weightDecay, 'must be a finite number, 0 or more');
  if (!Number.isFinite(eps) || eps <= 0) fail('eps', eps, 'must be a finite number above 0');
  return { lr, betas: [betas[0], betas[1]], weightDecay, eps };
}

/** `actual` must name the same tensors as `params`, in the same order and with the same lengths. */
function checkParallel(what: string, actual: readonly NamedTensor[], params: readonly NamedTensor[]): void {
  if (actual.length !== params.length) {
    throw new TensorMismatchError(`${what} hold ${actual.length} tensors but the parameters ${params.length}`);
  }
  params.forEach((param, index) => {
    const { name, values } = actual[index]!;
    if (name !== param.name) {
      throw new TensorMismatchError(
        `${what}[${index}] is tensor ${JSON.stringify(name)} where the parameters have ${JSON.stringify(param.name)}`);
    }
    if (values.length !== param.values.length) {
      throw new TensorMismatchError(
        `${what}: tensor ${JSON.stringify(name)} has ${values.length} values but the parameter ${param.values.length}`);
    }
  });
}

function copyMoments(moments: readonly AdamWMoments[]): AdamWMoments[] {
  return moments.map(({ name, m, v }) => ({ name, m: m.slice(), v: v.slice() }));
}
