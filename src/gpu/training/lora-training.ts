import { accessSync, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { WRONGBOT_VERSION } from '../../common/version.js';
import type { LoraTarget } from '../lora/lora-types.js';
import { writeDiffusersLora } from '../lora/lora-writer.js';
import { openSdxlModelFolder, openSdxlTrainingFiles, type SdxlModelFolder } from '../model-folder.js';
import { OnnxModel, RunClock } from '../onnx-session.js';
import type { Device } from '../providers.js';
import { EulerDiscreteScheduler } from '../scheduler.js';
import { concatLastAxis, sdxlEncoderPasses } from '../text-encoders.js';
import { ClipTokenizer } from '../tokenizer.js';
import { encodeWeightedPrompt } from '../weighted-encoding.js';
import { AdamW, clipGradNorm, type NamedTensor } from './adamw.js';
import { readCheckpoint, writeCheckpoint } from './checkpoint.js';
import { SeededDraws, type DrawSource, type StepDraw } from './draws.js';
import { gaussianLoraInit, loraFromFile, namedTensors, type LoraParameters } from './lora-parameters.js';
import { resolveRecipe, type RecipeOptions, type TrainingRecipe } from './recipe.js';
import { RecordedDraws } from './replay-case.js';
import { loadTrainingImage, trainingSetHash, TrainingDataError, type TrainingImage } from './training-images.js';
import { UnetTrainingStep } from './unet-training-step.js';
import { VaeEncoder, sampleLatents } from './vae-encoder.js';

// diffusers' train_dreambooth_lora_sdxl.py, step for step, on onnxruntime: `prepare` does what the script does once
// (images, the prompt's embeddings, the training graph, the starting weights), `computeStep` is one forward and
// backward pass, and `train` is the loop with the optimizer, progress and checkpoints.

export class TrainingDivergedError extends Error {
  override name = 'TrainingDivergedError';
}

export class TrainingOutputError extends Error {
  override name = 'TrainingOutputError';
}

/** Everything a training needs, as plain data: it crosses into the training thread. */
export interface TrainingRequest {
  modelDir: string;
  device: Device;
  /** Trades time for memory without changing a number of the result, so it is not part of the recipe. */
  gradientCheckpointing: boolean;
  recipe: RecipeOptions;
  /** The training images; a step's image indices refer to this order. */
  images: string[];
  /** Seeded draws from the recipe's seed, or the recorded draws of a replay case folder. */
  draws: { kind: 'seeded' } | { kind: 'recorded'; caseDir: string };
  start: { kind: 'fresh' } | { kind: 'lora'; path: string } | { kind: 'checkpoint'; path: string };
  outPath: string;
  checkpoint: { every: number; path: string } | null;
}

export interface TrainingProgress {
  /** Steps completed. */
  step: number;
  totalSteps: number;
  loss: number;
  secondsPerStep: number;
  etaMs: number;
}

export interface TrainingOutcome {
  loraPath: string;
  steps: number;
  finalLoss: number;
  losses: number[];
  trainingSetSha256: string;
  notes: string[];
}

export interface StepOutcome {
  draw: StepDraw;
  pixelValues: Float32Array;
  latentParameters: Float32Array;
  latents: Float32Array;
  noisyLatents: Float32Array;
  prediction: Float32Array;
  loss: number;
  gradients: NamedTensor[];
}

export interface TrainingCallbacks {
  signal?: AbortSignal;
  onProgress?: (progress: TrainingProgress) => void;
}

interface Prepared {
  image: TrainingImage;
  latentParameters: Float32Array;
}

/** The branch scale alpha / rank: the recipe keeps alpha = rank, as the script does. */
const LORA_SCALE = 1;
const PROGRESS_WINDOW_STEPS = 20;

export class LoraTrainingRun {
  private constructor(
    readonly request: TrainingRequest,
    readonly recipe: TrainingRecipe,
    private readonly folder: SdxlModelFolder,
    private readonly scheduler: EulerDiscreteScheduler,
    private readonly prepared: Prepared[],
    private readonly prompt: { embeds: Float32Array; pooled: Float32Array; tokens: number; width: number },
    private readonly unetStep: UnetTrainingStep,
    private readonly draws: DrawSource,
    readonly notes: string[],
  ) {}

  static async prepare(request: TrainingRequest): Promise<LoraTrainingRun> {
    // 1. The model folder, with the VAE encoder that inference does not need, and the recipe for this model.
    const folder = openSdxlModelFolder(request.modelDir);
    const trainingFiles = openSdxlTrainingFiles(folder);
    const recipe = resolveRecipe(request.recipe, { defaultResolution: folder.defaultImageSizePx, resolutionMultiple: folder.sizeMultiple });
    checkWritable(request.outPath, '--out');
    if (request.checkpoint) checkWritable(request.checkpoint.path, 'the checkpoint');
    if (request.images.length === 0) throw new TrainingDataError(request.modelDir, 'the training set has no images');
    const clock = new RunClock();
    const scheduler = await EulerDiscreteScheduler.fromDirectory(folder.paths.scheduler);

    // 2. Images, resized and cropped once, as the script's dataset does up front.
    const images: TrainingImage[] = [];
    for (const file of request.images) images.push(await loadTrainingImage(file, recipe.resolution));

    // 3. The instance prompt, encoded once by the frozen text encoders, which then leave memory.
    const prompt = await encodeInstancePrompt(folder, recipe.prompt, request.device, clock);

    // 4. Each image's latent distribution; every step samples it afresh, so only its parameters are kept.
    const vae = await VaeEncoder.load(trainingFiles.vaeEncoder, request.device, clock);
    const prepared: Prepared[] = [];
    try {
      for (const image of images) prepared.push({ image, latentParameters: await vae.encode(image.pixels, recipe.resolution) });
    } finally {
      await vae.dispose();
    }

    // 5. The training graph: the UNet with trainable LoRA branches, the loss and its backward pass.
    const latentSide = recipe.resolution / folder.vae.scaleFactor;
    const latent = [4, latentSide, latentSide] as const;
    const unetStep = await UnetTrainingStep.create(folder.paths.unet, request.device, clock, {
      rank: recipe.rank,
      gradientCheckpointing: request.gradientCheckpointing,
      shape: { batchSize: recipe.batchSize, latent, promptEmbeds: [prompt.tokens, prompt.width], pooledWidth: prompt.pooled.length, timeIdCount: 6 },
    });
    const draws = request.draws.kind === 'seeded'
      ? new SeededDraws(recipe.seed, images.length, recipe.batchSize, latent, scheduler.alphasCumprod.length)
      : new RecordedDraws(request.draws.caseDir);
    return new LoraTrainingRun(request, recipe, folder, scheduler, prepared, prompt, unetStep, draws, []);
  }

  /** The projections trained: every attention's to_q, to_k, to_v and to_out.0. */
  get targets(): readonly LoraTarget[] {
    return this.unetStep.targets;
  }

  get trainingSetSha256(): string {
    return trainingSetHash(this.prepared.map((entry) => entry.image));
  }

  /** The weights and optimizer a training starts from, and the steps already done (a resumed checkpoint's). */
  async start(): Promise<{ parameters: LoraParameters; optimizer: AdamW; firstStep: number; losses: number[] }> {
    const { recipe, request } = this;
    const fresh = gaussianLoraInit(this.unetStep.targets, recipe.rank, recipe.seed);
    const options = { lr: recipe.learningRate, betas: recipe.betas, weightDecay: recipe.weightDecay, eps: recipe.eps };
    switch (request.start.kind) {
      case 'fresh':
        return { parameters: fresh, optimizer: new AdamW(options), firstStep: 0, losses: [] };
      case 'lora': {
        const { parameters, notes } = await loraFromFile(request.start.path, this.unetStep.targets, fresh);
        this.notes.push(...notes);
        return { parameters, optimizer: new AdamW(options), firstStep: 0, losses: [] };
      }
      case 'checkpoint': {
        const { state, optimizer } = await readCheckpoint(request.start.path, fresh);
        const mismatch = (['resolution', 'rank', 'batchSize', 'seed', 'prompt', 'learningRate'] as const).find((key) => state.recipe[key] !== recipe[key]);
        if (mismatch) throw new TrainingDataError(request.start.path, `--resume ${request.start.path} was trained with ${mismatch} ${JSON.stringify(state.recipe[mismatch])}, this training has ${JSON.stringify(recipe[mismatch])}`);
        if (state.trainingSetSha256 !== this.trainingSetSha256) throw new TrainingDataError(request.start.path, `--resume ${request.start.path} was trained on another set of images`);
        if (state.step > recipe.steps) throw new TrainingDataError(request.start.path, `--resume ${request.start.path} is at step ${state.step}, past the ${recipe.steps} steps asked for`);
        return { parameters: fresh, optimizer: AdamW.fromState(options, optimizer), firstStep: state.step, losses: state.losses };
      }
    }
  }

  /** One step's forward and backward pass at the given weights, with every intermediate the script records. */
  async computeStep(step: number, parameters: LoraParameters, draws: DrawSource = this.draws): Promise<StepOutcome> {
    const { recipe } = this;
    const draw = draws.draw(step);
    const samples = draw.imageIndices.map((index) => {
      const entry = this.prepared[index];
      if (entry === undefined) throw new TrainingDataError(this.request.modelDir, `step ${step} draws image ${index}, but there are ${this.prepared.length}`);
      return entry;
    });
    const latentSize = draw.noise.length / samples.length;
    const latents = concat(samples.map((sample, i) =>
      sampleLatents(sample.latentParameters, draw.latentNoise.subarray(i * latentSize, (i + 1) * latentSize), this.folder.vae.scalingFactor)));
    const noisyLatents = this.scheduler.addNoise(latents, draw.noise, draw.timesteps);
    // time ids: original size, crop top-left, target size, as the script's compute_time_ids.
    const timeIds = Float32Array.from(samples.flatMap(({ image }) => [
      image.originalSize.height, image.originalSize.width, image.cropTopLeft.y, image.cropTopLeft.x, recipe.resolution, recipe.resolution,
    ]));
    const result = await this.unetStep.run({
      noisyLatents,
      timesteps: draw.timesteps,
      promptEmbeds: this.prompt.embeds,
      pooledPromptEmbeds: this.prompt.pooled,
      timeIds,
      target: draw.noise,
    }, parameters, LORA_SCALE);
    return {
      draw,
      pixelValues: concat(samples.map((sample) => sample.image.pixels)),
      latentParameters: concat(samples.map((sample) => sample.latentParameters)),
      latents,
      noisyLatents,
      ...result,
    };
  }

  /**
   * The mean loss over `draws` batches of (image, noise, timestep) drawn from `seed`, the same at any weights: a
   * measure of fit on draws the training (seeded by the recipe) does not make.
   */
  async heldOutLoss(parameters: LoraParameters, options: { seed: number; draws: number }): Promise<number> {
    const { recipe, unetStep, prepared, scheduler } = this;
    const heldOut = new SeededDraws(options.seed, prepared.length, recipe.batchSize, unetStep.shape.latent, scheduler.alphasCumprod.length);
    let sum = 0;
    for (let k = 0; k < options.draws; k++) sum += (await this.computeStep(k, parameters, heldOut)).loss;
    return sum / options.draws;
  }

  async train(callbacks: TrainingCallbacks = {}): Promise<TrainingOutcome> {
    const { recipe, request } = this;
    // 6. The starting weights: fresh, an earlier LoRA, or a checkpoint with its optimizer state.
    const { parameters, optimizer, firstStep, losses } = await this.start();
    const weights = namedTensors(parameters);
    const stepTimesMs: number[] = [];

    // 7. The loop: forward and backward, clip, AdamW, report, checkpoint.
    for (let step = firstStep; step < recipe.steps; step++) {
      if (callbacks.signal?.aborted) {
        if (request.checkpoint && step > firstStep) this.checkpoint(parameters, optimizer, step, losses);
        throw new DOMException(`training stopped after step ${step} of ${recipe.steps}${request.checkpoint ? `; checkpoint ${request.checkpoint.path} holds it` : ''}`, 'AbortError');
      }
      const started = performance.now();
      const { loss, gradients } = await this.computeStep(step, parameters);
      const norm = clipGradNorm(gradients, recipe.maxGradNorm);
      if (!Number.isFinite(loss) || !Number.isFinite(norm)) {
        throw new TrainingDivergedError(`the loss is ${loss} (gradient norm ${norm}) at step ${step}: training stopped and nothing was written; try a lower learning rate`);
      }
      optimizer.step(weights, gradients);
      losses.push(loss);
      stepTimesMs.push(performance.now() - started);
      if (stepTimesMs.length > PROGRESS_WINDOW_STEPS) stepTimesMs.shift();
      const msPerStep = stepTimesMs.reduce((a, b) => a + b, 0) / stepTimesMs.length;
      callbacks.onProgress?.({ step: step + 1, totalSteps: recipe.steps, loss, secondsPerStep: msPerStep / 1000, etaMs: msPerStep * (recipe.steps - step - 1) });
      if (request.checkpoint && (step + 1) % request.checkpoint.every === 0 && step + 1 < recipe.steps) {
        this.checkpoint(parameters, optimizer, step + 1, losses);
      }
    }

    // 8. The file diffusers' save_lora_weights writes, with the provenance in its metadata.
    const finalLoss = losses.at(-1) ?? Number.NaN;
    writeDiffusersLora(request.outPath, parameters.modules, {
      'wrongbot.version': WRONGBOT_VERSION,
      'wrongbot.base_model': path.basename(this.folder.root),
      'wrongbot.recipe': JSON.stringify(recipe),
      'wrongbot.steps': String(recipe.steps),
      'wrongbot.final_loss': String(finalLoss),
      'wrongbot.training_set_sha256': this.trainingSetSha256,
      'wrongbot.losses': JSON.stringify(losses),
    });
    return { loraPath: request.outPath, steps: recipe.steps, finalLoss, losses, trainingSetSha256: this.trainingSetSha256, notes: this.notes };
  }

  private checkpoint(parameters: LoraParameters, optimizer: AdamW, step: number, losses: number[]): void {
    writeCheckpoint(this.request.checkpoint!.path, parameters, optimizer.state(), { step, recipe: this.recipe, trainingSetSha256: this.trainingSetSha256, losses });
  }

  async dispose(): Promise<void> {
    await this.unetStep.dispose();
  }
}

async function encodeInstancePrompt(folder: SdxlModelFolder, prompt: string, device: Device, clock: RunClock) {
  const { paths } = folder;
  const tokenizers = [await ClipTokenizer.fromDirectory(paths.tokenizer), await ClipTokenizer.fromDirectory(paths.tokenizer2)] as const;
  const encoders = [await OnnxModel.load('text_encoder', paths.textEncoder, device, clock), await OnnxModel.load('text_encoder_2', paths.textEncoder2, device, clock)] as const;
  try {
    const encoding = await encodeWeightedPrompt(prompt, 'none', sdxlEncoderPasses(tokenizers, encoders));
    const tokens = tokenizers[0].maxLength;
    const embeds = concatLastAxis(encoding.hidden, tokens);
    return { embeds, pooled: encoding.pooled, tokens, width: embeds.length / tokens };
  } finally {
    await Promise.all(encoders.map((encoder) => encoder.dispose()));
  }
}

function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((total, part) => total + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Fails before hours of training, not after: the folder must exist and take a new file. */
function checkWritable(file: string, what: string): void {
  const folder = path.dirname(path.resolve(file));
  try {
    accessSync(folder, fsConstants.W_OK);
  } catch {
    throw new TrainingOutputError(`${what} ${file}: the folder ${folder} does not exist or cannot be written to`);
  }
}
