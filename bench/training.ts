import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import ort from 'onnxruntime-node';
import { OnnxModel, RunClock } from '../src/gpu/onnx-session.js';
import type { Device } from '../src/gpu/providers.js';
import { AdamW, clipGradNorm } from '../src/gpu/training/adamw.js';
import { gaussianLoraInit, namedTensors, type LoraParameters } from '../src/gpu/training/lora-parameters.js';
import {
  estimateTrainingMemory, parseUnetArchitecture, readUnetArchitecture, SDXL_BASE_UNET_CONFIG, type TrainingMemoryEstimate,
} from '../src/gpu/memory-estimate.js';
import { TRAINING_DEFAULTS } from '../src/gpu/training/recipe.js';
import { UnetTrainingStep, type TrainingBatch, type TrainingBatchShape } from '../src/gpu/training/unet-training-step.js';
import { HELD_OUT_EXPERIMENT, runHeldOutExperiment } from '../test/support/held-out.js';

// Training on the bundled tiny model on CPU: a whole optimizer step (forward, backward, clipping, AdamW) against one
// plain UNet forward over the same rows, with and without gradient checkpointing, the host's share of the step, the
// resident high-water mark of a process that trains against one that generates, the held-out loss before and after
// the 200-step training, and the paper estimate for the real SDXL UNet.
// Run as a script with `probe KIND MODEL_DIR SIDE BATCH`, this file is the fresh process of one memory sample.

export interface TrainingSpeedFigures {
  side: number;
  batchSize: number;
  stepSeconds: number;
  checkpointedStepSeconds: number;
  unetSeconds: number;
  /** Step ÷ UNet forward. */
  ratio: number;
  /** Time outside onnxruntime's run() (feeds, transposes, clipping, AdamW) over the whole step. */
  hostShare: number;
}

type ProbeKind = 'inference' | 'training' | 'training-checkpointed';
const PROBE_KINDS: readonly ProbeKind[] = ['inference', 'training', 'training-checkpointed'];

export interface TrainingMemoryFigures {
  side: number;
  batchSize: number;
  /** Median resident high-water mark of fresh processes, per kind of step. */
  peakBytes: Record<ProbeKind, number>;
  /** The paper estimate for the tiny UNet at this size (activations only; weights and runtime come on top). */
  estimate: TrainingMemoryEstimate;
}

export interface TrainingFigures {
  steps: number;
  speed: TrainingSpeedFigures[];
  /** Fresh processes per figure. */
  memorySamples: number;
  memory: TrainingMemoryFigures[];
  heldOut: { before: number; after: number; drop: number; triples: number };
  sdxl: TrainingMemoryEstimate[];
}

const CPU: Device = { kind: 'cpu', index: 0 };
const SIDES_PX = [128, 256];
const BATCH_SIZES = [1, 4];
/** The default size, and one where activations, not weights and runtime, make most of a training step's memory. */
const MEMORY_SHAPES = [{ side: 128, batchSize: 1 }, { side: 512, batchSize: 2 }] as const;
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

  const plain = await timeTrainingSteps(unetPath, shape, batch, false);
  const checkpointed = await timeTrainingSteps(unetPath, shape, batch, true);
  const stepSeconds = median(plain.stepMs) / 1000;
  const unetSeconds = median(unetMs) / 1000;
  const wallMs = plain.stepMs.reduce((a, b) => a + b, 0);
  return {
    side, batchSize, stepSeconds, checkpointedStepSeconds: median(checkpointed.stepMs) / 1000, unetSeconds,
    ratio: stepSeconds / unetSeconds, hostShare: 1 - plain.runMs / wallMs,
  };
}

/** Each measured step's wall time, and the time of those steps spent inside onnxruntime's run(). */
async function timeTrainingSteps(unetPath: string, shape: TrainingBatchShape, batch: TrainingBatch, gradientCheckpointing: boolean): Promise<{ stepMs: number[]; runMs: number }> {
  const clock = new RunClock();
  const step = await UnetTrainingStep.create(unetPath, CPU, clock, { rank: TRAINING_DEFAULTS.rank, shape, gradientCheckpointing });
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
  return { stepMs, runMs: clock.totalMs };
}

const THIS_FILE = fileURLToPath(import.meta.url);

async function childPeakBytes(kind: ProbeKind, modelDir: string, side: number, batchSize: number): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, [THIS_FILE, 'probe', kind, modelDir, String(side), String(batchSize)]);
  return (JSON.parse(stdout.trim().split('\n').at(-1)!) as { peakResidentBytes: number }).peakResidentBytes;
}

/** The resident high-water mark of this process. */
export function peakResidentBytes(): number {
  // Linux keeps maxRSS across fork and exec, so a child of the (large) bench process would report at least the
  // parent's size; VmHWM belongs to this process image alone. Elsewhere maxRSS is all there is.
  const status = existsSync('/proc/self/status') ? /^VmHWM:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8')) : null;
  const kib = status ? Number(status[1]) : process.resourceUsage().maxRSS;
  return kib * 1024;
}

/** The child's side: load, take one step of the given kind and size, report the process's high-water mark. */
async function probe(kind: string, modelDir: string, side: number, batchSize: number): Promise<void> {
  const unetPath = path.join(modelDir, 'unet', 'model.onnx');
  const shape = batchShape(side, batchSize);
  const batch = batchOf(shape);
  if (kind === 'training' || kind === 'training-checkpointed') {
    const gradientCheckpointing = kind === 'training-checkpointed';
    const step = await UnetTrainingStep.create(unetPath, CPU, new RunClock(), { rank: TRAINING_DEFAULTS.rank, shape, gradientCheckpointing });
    await trainingStep(step, batch, gaussianLoraInit(step.targets, TRAINING_DEFAULTS.rank, TRAINING_DEFAULTS.seed), newOptimizer());
    await step.dispose();
  } else if (kind === 'inference') {
    const unet = await OnnxModel.load('unet', unetPath, CPU, new RunClock());
    await unet.run(unetFeeds(unet, shape, batch), ['out_sample']);
    await unet.dispose();
  } else {
    throw new Error(`probe ${kind}: expected one of ${PROBE_KINDS.join(', ')}`);
  }
  console.log(JSON.stringify({ peakResidentBytes: peakResidentBytes() }));
}

async function benchMemory(modelDir: string, side: number, batchSize: number): Promise<TrainingMemoryFigures> {
  // Interleaved, so that drift on the machine affects every kind alike.
  const samples = new Map<ProbeKind, number[]>(PROBE_KINDS.map((kind) => [kind, []]));
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    for (const kind of PROBE_KINDS) samples.get(kind)!.push(await childPeakBytes(kind, modelDir, side, batchSize));
  }
  const peakBytes = Object.fromEntries(PROBE_KINDS.map((kind) => [kind, median(samples.get(kind)!)])) as Record<ProbeKind, number>;
  const estimate = estimateTrainingMemory(readUnetArchitecture(path.join(modelDir, 'unet', 'config.json')), {
    resolution: side, vaeScaleFactor: VAE_SCALE_FACTOR, batchSize, rank: TRAINING_DEFAULTS.rank, elementBytes: FLOAT32_BYTES,
  });
  return { side, batchSize, peakBytes, estimate };
}

export async function benchTraining(modelDir: string): Promise<TrainingFigures> {
  const unetPath = path.join(modelDir, 'unet', 'model.onnx');
  const speed: TrainingSpeedFigures[] = [];
  for (const side of SIDES_PX) {
    for (const batchSize of BATCH_SIZES) speed.push(await benchShape(unetPath, side, batchSize));
  }
  const memory: TrainingMemoryFigures[] = [];
  for (const { side, batchSize } of MEMORY_SHAPES) memory.push(await benchMemory(modelDir, side, batchSize));

  const scratch = mkdtempSync(path.join(tmpdir(), 'wrongbot-bench-train-'));
  let heldOut: TrainingFigures['heldOut'];
  try {
    const { before, after, drop } = await runHeldOutExperiment(path.join(scratch, 'held-out.safetensors'));
    heldOut = { before, after, drop, triples: HELD_OUT_EXPERIMENT.triples };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }

  const sdxl = parseUnetArchitecture(SDXL_BASE_UNET_CONFIG, 'SDXL base');
  const estimates = SDXL_RESOLUTIONS_PX.map((resolution) => estimateTrainingMemory(sdxl, {
    resolution, vaeScaleFactor: VAE_SCALE_FACTOR, batchSize: 1, rank: TRAINING_DEFAULTS.rank, elementBytes: FLOAT32_BYTES,
  }));
  return { steps: MEASURED_STEPS, speed, memorySamples: MEMORY_SAMPLES, memory, heldOut, sdxl: estimates };
}

if (process.argv[1] === THIS_FILE && process.argv[2] === 'probe') {
  const [kind, modelDir, side, batchSize] = process.argv.slice(3);
  await probe(kind!, modelDir!, Number(side), Number(batchSize));
}
