import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ort from 'onnxruntime-node';
import { OnnxModel, RunClock } from '../src/gpu/onnx-session.js';
import type { Device } from '../src/gpu/providers.js';
import { AdamW, clipGradNorm } from '../src/gpu/training/adamw.js';
import { gaussianLoraInit, namedTensors, type LoraParameters } from '../src/gpu/training/lora-parameters.js';
import {
  estimateTrainingMemory, parseUnetArchitecture, SDXL_BASE_UNET_CONFIG, type TrainingMemoryEstimate,
} from '../src/gpu/training/memory-estimate.js';
import { TRAINING_DEFAULTS } from '../src/gpu/training/recipe.js';
import { UnetTrainingStep, type TrainingBatch, type TrainingBatchShape } from '../src/gpu/training/unet-training-step.js';

// Training on the bundled tiny model on CPU: a whole optimizer step (forward, backward, clipping, AdamW) against one
// plain UNet forward over the same rows, the host's share of the step, the resident high-water mark of a process
// that trains against one that generates, and the paper estimate for the real SDXL UNet.
// Run as a script with `probe training|inference MODEL_DIR`, this file is the fresh process of one memory sample.

export interface TrainingSpeedFigures {
  side: number;
  batchSize: number;
  stepSeconds: number;
  unetSeconds: number;
  /** Step ÷ UNet forward. */
  ratio: number;
  /** Time outside onnxruntime's run() (feeds, transposes, clipping, AdamW) over the whole step. */
  hostShare: number;
}

export interface TrainingMemoryFigures {
  /** Fresh processes per side; each figure is their median. */
  samples: number;
  side: number;
  trainingBytes: number;
  inferenceBytes: number;
  ratio: number;
}

export interface TrainingFigures {
  steps: number;
  speed: TrainingSpeedFigures[];
  memory: TrainingMemoryFigures;
  sdxl: TrainingMemoryEstimate[];
}

const CPU: Device = { kind: 'cpu', index: 0 };
const SIDES_PX = [128, 256];
const BATCH_SIZES = [1, 4];
const MEMORY_SIDE_PX = 128;
/** The tiny UNet's conditioning: 77 prompt tokens of 64 features, 32 pooled features, 6 time ids. */
const TINY_PROMPT = { tokens: 77, width: 64, pooledWidth: 32, timeIdCount: 6 } as const;
const VAE_SCALE_FACTOR = 8;
const LATENT_CHANNELS = 4;
// Session creation of a training graph takes seconds; the steps themselves are tens of milliseconds, so a few
// warm-ups and a median over a modest number settle the figure.
const WARM_UP_STEPS = 2;
const MEASURED_STEPS = 15;
/** Resident memory of identical runs varies by several MiB; each side is the median of this many fresh processes. */
const MEMORY_SAMPLES = 3;
const SDXL_RESOLUTIONS_PX = [1024, 768];
const FLOAT32_BYTES = 4;

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Deterministic values in [-1, 1): the figures must not depend on the data, only on the shapes. */
function filled(length: number, seed: number): Float32Array {
  const values = new Float32Array(length);
  let state = seed >>> 0;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    values[i] = state / 2 ** 31 - 1;
  }
  return values;
}

function batchShape(side: number, batchSize: number): TrainingBatchShape {
  const latentSide = side / VAE_SCALE_FACTOR;
  return {
    batchSize,
    latent: [LATENT_CHANNELS, latentSide, latentSide],
    promptEmbeds: [TINY_PROMPT.tokens, TINY_PROMPT.width],
    pooledWidth: TINY_PROMPT.pooledWidth,
    timeIdCount: TINY_PROMPT.timeIdCount,
  };
}

function batchOf(shape: TrainingBatchShape): TrainingBatch {
  const latentLength = shape.batchSize * shape.latent.reduce((a, b) => a * b, 1);
  const side = shape.latent[1] * VAE_SCALE_FACTOR;
  return {
    noisyLatents: filled(latentLength, 1),
    timesteps: Array.from({ length: shape.batchSize }, (_, i) => 100 + 200 * i),
    promptEmbeds: filled(TINY_PROMPT.tokens * TINY_PROMPT.width, 2),
    pooledPromptEmbeds: filled(TINY_PROMPT.pooledWidth, 3),
    timeIds: Float32Array.from({ length: shape.batchSize * TINY_PROMPT.timeIdCount }, (_, i) => [side, side, 0, 0, side, side][i % 6]!),
    target: filled(latentLength, 4),
  };
}

/** The inference UNet as the pipeline runs it: one scalar timestep for the whole batch. */
function unetFeeds(unet: OnnxModel, shape: TrainingBatchShape, batch: TrainingBatch): Record<string, ort.Tensor> {
  const { batchSize, latent } = shape;
  const repeated = (values: Float32Array) => {
    const out = new Float32Array(values.length * batchSize);
    for (let i = 0; i < batchSize; i++) out.set(values, i * values.length);
    return out;
  };
  return {
    sample: unet.floatInput('sample', batch.noisyLatents, [batchSize, ...latent]),
    timestep: unet.numberInput('timestep', [batch.timesteps[0]!], []),
    encoder_hidden_states: unet.floatInput('encoder_hidden_states', repeated(batch.promptEmbeds), [batchSize, TINY_PROMPT.tokens, TINY_PROMPT.width]),
    text_embeds: unet.floatInput('text_embeds', repeated(batch.pooledPromptEmbeds), [batchSize, TINY_PROMPT.pooledWidth]),
    time_ids: unet.floatInput('time_ids', batch.timeIds, [batchSize, TINY_PROMPT.timeIdCount]),
  };
}

/** One optimizer step as LoraTrainingRun.train takes it, less the data preparation the recipe does before. */
async function trainingStep(step: UnetTrainingStep, batch: TrainingBatch, parameters: LoraParameters, optimizer: AdamW): Promise<void> {
  const { gradients } = await step.run(batch, parameters, 1);
  clipGradNorm(gradients, TRAINING_DEFAULTS.maxGradNorm);
  optimizer.step(namedTensors(parameters), gradients);
}

function newOptimizer(): AdamW {
  const { learningRate: lr, betas, weightDecay, eps } = TRAINING_DEFAULTS;
  return new AdamW({ lr, betas, weightDecay, eps });
}

async function benchShape(unetPath: string, side: number, batchSize: number): Promise<TrainingSpeedFigures> {
  const shape = batchShape(side, batchSize);
  const batch = batchOf(shape);

  const unet = await OnnxModel.load('unet', unetPath, CPU, new RunClock());
  const unetMs: number[] = [];
  try {
    const feeds = unetFeeds(unet, shape, batch);
    for (let i = 0; i < WARM_UP_STEPS + MEASURED_STEPS; i++) {
      const started = performance.now();
      await unet.run(feeds, ['out_sample']);
      if (i >= WARM_UP_STEPS) unetMs.push(performance.now() - started);
    }
  } finally {
    await unet.dispose();
  }

  const clock = new RunClock();
  const step = await UnetTrainingStep.create(unetPath, CPU, clock, { rank: TRAINING_DEFAULTS.rank, shape });
  const stepMs: number[] = [];
  try {
    const parameters = gaussianLoraInit(step.targets, TRAINING_DEFAULTS.rank, TRAINING_DEFAULTS.seed);
    const optimizer = newOptimizer();
    for (let i = 0; i < WARM_UP_STEPS + MEASURED_STEPS; i++) {
      if (i === WARM_UP_STEPS) clock.reset();
      const started = performance.now();
      await trainingStep(step, batch, parameters, optimizer);
      if (i >= WARM_UP_STEPS) stepMs.push(performance.now() - started);
    }
  } finally {
    await step.dispose();
  }
  const stepSeconds = median(stepMs) / 1000;
  const unetSeconds = median(unetMs) / 1000;
  const wallMs = stepMs.reduce((a, b) => a + b, 0);
  return { side, batchSize, stepSeconds, unetSeconds, ratio: stepSeconds / unetSeconds, hostShare: 1 - clock.totalMs / wallMs };
}

const THIS_FILE = fileURLToPath(import.meta.url);

async function childPeakBytes(kind: 'training' | 'inference', modelDir: string): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, [THIS_FILE, 'probe', kind, modelDir]);
  return (JSON.parse(stdout.trim().split('\n').at(-1)!) as { peakResidentBytes: number }).peakResidentBytes;
}

/** The resident high-water mark of this process. */
function peakResidentBytes(): number {
  // Linux keeps maxRSS across fork and exec, so a child of the (large) bench process would report at least the
  // parent's size; VmHWM belongs to this process image alone. Elsewhere maxRSS is all there is.
  const status = existsSync('/proc/self/status') ? /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8')) : null;
  const kib = status ? Number(status[1]) : process.resourceUsage().maxRSS;
  return kib * 1024;
}

/** The child's side: load, take one step of the given kind at 128², report the process's high-water mark. */
async function probe(kind: string, modelDir: string): Promise<void> {
  const unetPath = path.join(modelDir, 'unet', 'model.onnx');
  const shape = batchShape(MEMORY_SIDE_PX, 1);
  const batch = batchOf(shape);
  if (kind === 'training') {
    const step = await UnetTrainingStep.create(unetPath, CPU, new RunClock(), { rank: TRAINING_DEFAULTS.rank, shape });
    await trainingStep(step, batch, gaussianLoraInit(step.targets, TRAINING_DEFAULTS.rank, TRAINING_DEFAULTS.seed), newOptimizer());
    await step.dispose();
  } else if (kind === 'inference') {
    const unet = await OnnxModel.load('unet', unetPath, CPU, new RunClock());
    await unet.run(unetFeeds(unet, shape, batch), ['out_sample']);
    await unet.dispose();
  } else {
    throw new Error(`probe ${kind}: expected training or inference`);
  }
  console.log(JSON.stringify({ peakResidentBytes: peakResidentBytes() }));
}

export async function benchTraining(modelDir: string): Promise<TrainingFigures> {
  const unetPath = path.join(modelDir, 'unet', 'model.onnx');
  const speed: TrainingSpeedFigures[] = [];
  for (const side of SIDES_PX) {
    for (const batchSize of BATCH_SIZES) speed.push(await benchShape(unetPath, side, batchSize));
  }

  // Interleaved, so that drift on the machine affects both sides alike.
  const training: number[] = [];
  const inference: number[] = [];
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    training.push(await childPeakBytes('training', modelDir));
    inference.push(await childPeakBytes('inference', modelDir));
  }
  const trainingBytes = median(training);
  const inferenceBytes = median(inference);

  const sdxl = parseUnetArchitecture(SDXL_BASE_UNET_CONFIG, 'SDXL base');
  const estimates = SDXL_RESOLUTIONS_PX.map((resolution) => estimateTrainingMemory(sdxl, {
    resolution, vaeScaleFactor: VAE_SCALE_FACTOR, batchSize: 1, rank: TRAINING_DEFAULTS.rank, elementBytes: FLOAT32_BYTES,
  }));
  return {
    steps: MEASURED_STEPS,
    speed,
    memory: { samples: MEMORY_SAMPLES, side: MEMORY_SIDE_PX, trainingBytes, inferenceBytes, ratio: trainingBytes / inferenceBytes },
    sdxl: estimates,
  };
}

if (process.argv[1] === THIS_FILE && process.argv[2] === 'probe') await probe(process.argv[3]!, process.argv[4]!);
