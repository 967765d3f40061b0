import { readFileSync } from 'node:fs';
import path from 'node:path';
import { openSdxlModelFolder } from '../gpu/model-folder.js';
import { OnnxGraph } from '../gpu/onnx/onnx-graph.js';
import { DataType } from '../gpu/onnx/onnx-proto.js';
import { trainLora } from '../gpu/training/lora-trainer.js';
import { estimateTrainingMemory, formatTrainingMemory, readUnetArchitecture } from '../gpu/memory-estimate.js';
import type { TrainingProgress, TrainingRequest } from '../gpu/training/lora-training.js';
import { resolveRecipe, TRAINING_DEFAULTS, type RecipeOptions } from '../gpu/training/recipe.js';
import { readReplayCase } from '../gpu/training/replay-case.js';
import { listTrainingImages } from '../gpu/training/training-images.js';
import { deviceOption } from './device-option.js';
import { formatDuration, ProgressLine } from './progress-line.js';
import { modelOption, REPO_ALTERNATIVE } from './model-option.js';
import { integerOption, numberOption, parseOptions, required, UsageError, type OptionSpec } from './options.js';

export const TRAIN_USAGE = 'wrongbot train [--model DIR] --data DIR --out FILE.safetensors [--steps N] [--rank R] [--lr X] [--resolution R] '
  + '[--batch-size B] [--seed N] [--prompt TEXT] [--init-lora FILE] [--checkpoint-every N] [--resume FILE] '
  + '[--provider cpu|cuda[:N]|webgpu] [--gradient-checkpointing] [--dry-run]  |  wrongbot train [--model DIR] --replay CASE_DIR --out FILE.safetensors';

export const TRAIN_OPTIONS = {
  model: { type: 'string', value: 'DIR', description: `SDXL model folder (an fp32 export with vae_encoder/), ${REPO_ALTERNATIVE} (default: MODEL_DIR)` },
  data: { type: 'string', value: 'DIR', description: 'folder of PNG, JPEG and WebP images to train on (required unless --replay)' },
  out: { type: 'string', value: 'FILE.safetensors', description: 'where the LoRA is written (required)' },
  steps: { type: 'string', value: 'N', description: `training steps (default ${TRAINING_DEFAULTS.steps})` },
  rank: { type: 'string', value: 'R', description: `LoRA rank (default ${TRAINING_DEFAULTS.rank})` },
  lr: { type: 'string', value: 'X', description: `AdamW learning rate (default ${TRAINING_DEFAULTS.learningRate})` },
  resolution: { type: 'string', value: 'R', description: "side of the square training images (default: the model's own)" },
  'batch-size': { type: 'string', value: 'B', description: `images per step (default ${TRAINING_DEFAULTS.batchSize})` },
  seed: { type: 'string', value: 'N', description: `seed of every random draw; same seed, same data, same file (default ${TRAINING_DEFAULTS.seed})` },
  prompt: { type: 'string', value: 'TEXT', description: `instance prompt for every image (default "${TRAINING_DEFAULTS.prompt}")` },
  'init-lora': { type: 'string', value: 'FILE', description: 'continue from this LoRA (its rank must match)' },
  'checkpoint-every': { type: 'string', value: 'N', description: 'keep OUT.checkpoint.safetensors every N steps, for --resume' },
  resume: { type: 'string', value: 'FILE', description: 'continue a run exactly where its checkpoint left it' },
  provider: { type: 'string', value: 'cpu|cuda[:N]|webgpu', description: 'where training runs (default: WORKER_DEVICE, else cpu)' },
  replay: { type: 'string', value: 'CASE_DIR', description: "replay a recorded run of diffusers' script, printing each step's loss" },
  'gradient-checkpointing': { type: 'boolean', description: 'recompute activations in the backward pass: less memory, more time' },
  'dry-run': { type: 'boolean', description: "print the estimate of one step's memory and stop" },
} as const satisfies OptionSpec;

const PLAIN_PROGRESS_INTERVAL_MS = 1000;

/** `wrong-v2.safetensors` → `wrong-v2.checkpoint.safetensors`, beside it. */
function checkpointPath(out: string): string {
  return path.join(path.dirname(out), `${path.basename(out, '.safetensors')}.checkpoint.safetensors`);
}

function optional(name: string, value: string | undefined): number | undefined {
  return value === undefined ? undefined : integerOption(name, value);
}

function progressReporter(): { report: (progress: TrainingProgress) => void; finish: () => void } {
  const line = new ProgressLine(PLAIN_PROGRESS_INTERVAL_MS);
  return {
    report: ({ step, totalSteps, loss, secondsPerStep, etaMs }) => line.show(step / totalSteps,
      `step ${step}/${totalSteps}  loss ${loss.toFixed(4)}  ${secondsPerStep.toFixed(2)} s/step  ${formatDuration(etaMs)} left`, step === totalSteps),
    finish: () => line.finish(),
  };
}

/** 2 for an fp16 export, 4 for fp32: what most of the UNet's weights are stored as (read from the graph, not the weights). */
function readOnnxElementBytes(unetPath: string): number {
  const types = [...OnnxGraph.decode(readFileSync(unetPath)).initializers.values()].map((initializer) => initializer.dataType);
  const half = types.filter((type) => type === DataType.float16).length;
  return half > types.filter((type) => type === DataType.float).length ? 2 : 4;
}

/** The estimate alone: no data, no session, so it answers for a 10 GB model on a machine that could not load it. */
function printMemoryEstimate(modelDir: string, options: RecipeOptions): void {
  const folder = openSdxlModelFolder(modelDir);
  const recipe = resolveRecipe(options, { defaultResolution: folder.defaultImageSizePx, resolutionMultiple: folder.sizeMultiple });
  const architecture = readUnetArchitecture(path.join(folder.root, 'unet', 'config.json'));
  const elementBytes = readOnnxElementBytes(folder.paths.unet);
  const estimate = estimateTrainingMemory(architecture, {
    resolution: recipe.resolution, vaeScaleFactor: folder.vae.scaleFactor, batchSize: recipe.batchSize, rank: recipe.rank, elementBytes,
  });
  for (const line of formatTrainingMemory(estimate)) console.log(line);
}

export async function runTrain(argv: string[]): Promise<void> {
  const values = parseOptions(argv, TRAIN_OPTIONS);
  const modelDir = modelOption(values.model).path;
  const device = deviceOption(values.provider);
  const gradientCheckpointing = values['gradient-checkpointing'] === true;
  const replay = values.replay;
  if (replay !== undefined) {
    const clashing = (['data', 'init-lora', 'resume', 'steps', 'rank', 'lr', 'resolution', 'batch-size', 'prompt'] as const).find((name) => values[name] !== undefined);
    if (clashing) throw new UsageError(`--${clashing} cannot be combined with --replay: the case sets it`);
  }

  const recipe: RecipeOptions = {
    steps: optional('steps', values.steps),
    rank: optional('rank', values.rank),
    resolution: optional('resolution', values.resolution),
    batchSize: optional('batch-size', values['batch-size']),
    seed: optional('seed', values.seed),
    ...(values.lr === undefined ? {} : { learningRate: numberOption('lr', values.lr, 0) }),
    ...(values.prompt === undefined ? {} : { prompt: values.prompt }),
  };
  for (const key of Object.keys(recipe) as (keyof RecipeOptions)[]) if (recipe[key] === undefined) delete recipe[key];
  const every = optional('checkpoint-every', values['checkpoint-every']);
  if (every !== undefined && every < 1) throw new UsageError(`--checkpoint-every ${every} must be at least 1`);
  if (values['init-lora'] !== undefined && values.resume !== undefined) throw new UsageError('--init-lora and --resume cannot be combined: a checkpoint holds its own weights');

  if (values['dry-run'] === true) {
    printMemoryEstimate(modelDir, recipe);
    return;
  }

  const out = required('out', values.out);
  let request: TrainingRequest;
  if (replay !== undefined) {
    const recorded = readReplayCase(replay);
    request = {
      modelDir, device, gradientCheckpointing, recipe: { ...recorded.recipe, ...recipe }, images: recorded.images, draws: { kind: 'recorded', caseDir: replay },
      start: { kind: 'lora', path: recorded.initLora }, outPath: out, checkpoint: null,
    };
  } else {
    const data = required('data', values.data);
    const listed = await listTrainingImages(data);
    for (const file of listed.skipped) process.stderr.write(`skipping ${file}: not a PNG, JPEG or WebP image\n`);
    request = {
      modelDir, device, gradientCheckpointing, recipe, images: listed.images, draws: { kind: 'seeded' },
      start: values.resume !== undefined ? { kind: 'checkpoint', path: values.resume }
        : values['init-lora'] !== undefined ? { kind: 'lora', path: values['init-lora'] } : { kind: 'fresh' },
      outPath: out,
      checkpoint: every === undefined ? null : { every, path: checkpointPath(out) },
    };
  }

  const progress = progressReporter();
  const controller = new AbortController();
  const onSignal = () => {
    process.stderr.write('\nstopping after the current step…\n');
    controller.abort();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const started = performance.now();
  try {
    const outcome = await trainLora(request, {
      signal: controller.signal,
      onPrepared: (resolved, images) => process.stderr.write(
        `training ${resolved.steps} steps on ${images} images at ${resolved.resolution}², rank ${resolved.rank}, batch ${resolved.batchSize}, lr ${resolved.learningRate}, seed ${resolved.seed}\n`),
      onProgress: (step) => {
        // A replay's stdout is its per-step losses and nothing else, for a script to read.
        if (replay !== undefined) process.stdout.write(`${JSON.stringify({ step: step.step - 1, loss: step.loss })}\n`);
        progress.report(step);
      },
    });
    for (const note of outcome.notes) process.stderr.write(`note: ${note}\n`);
    progress.finish();
    process.stderr.write(`wrote ${outcome.loraPath} (${outcome.steps} steps, final loss ${outcome.finalLoss.toFixed(4)}, ${formatDuration(performance.now() - started)})\n`);
  } catch (error) {
    progress.finish();
    throw error;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
