import path from 'node:path';
import type ort from 'onnxruntime-node';
import { fail } from '../common/validation.js';
import { ClipTokenizer } from './tokenizer.js';
import { EulerDiscreteScheduler } from './scheduler.js';
import { OnnxModel, RunClock } from './onnx-session.js';
import {
  checkVaeDecoderPrecision, openSdxlModelFolder, openSdxlRefinerFolder, type SdxlModelFolder, type SdxlRefinerFolder,
} from './model-folder.js';
import { torchRandn } from './rng.js';
import { vaeOutputToRgb } from './image.js';
import { roundHalfEven } from './float32.js';
import { loraBranchValues, type BranchValues } from './lora/lora-feeds.js';
import { loadLora } from './lora/lora-file.js';
import type { LoadedLora, SkippedLoraKey } from './lora/lora-types.js';
import { buildLoraUnet, type LoraUnet } from './lora/lora-unet.js';
import { loraStrengthInput, loraWeightInputs } from './onnx/lora-graph.js';
import { readUnetArchitecture } from './memory-estimate.js';
import { modelFolderBytes, NO_BATCH_LIMITS, runsOf, UnetBatchPlanner, type BatchLimits } from './unet-batches.js';
import { encodeWeightedPrompt, type WeightedEncoding } from './weighted-encoding.js';
import { concatLastAxis, sdxlEncoderPasses } from './text-encoders.js';
import type { WeightingSyntax } from './prompt-weighting.js';
import type { Device } from './providers.js';
import {
  validateGenerationRequest, type GenerationRequest, type PipelineCapabilities, type ValidatedPanel,
} from './request.js';

// Stable Diffusion XL text-to-image on onnxruntime, step for step what diffusers' StableDiffusionXLPipeline does,
// with the refiner hand-off of its "ensemble of experts". A request holds one or more panels that share seed, size
// and step count but not prompts, guidance or LoRA strength: every panel starts from the same noise and all of them
// go through the UNet together, one batch per step.

const f32 = Math.fround;

// Prompt encodings kept between requests: "wrong" and the other usual negatives recur in nearly every job, and a
// real SDXL encoding is 77 × 2048 floats (630 kB), so a few dozen cost little memory.
const PROMPT_CACHE_ENTRIES = 32;

// diffusers' StableDiffusionXLImg2ImgPipeline defaults for the refiner's last time id.
const AESTHETIC_SCORE = 6.0;
const NEGATIVE_AESTHETIC_SCORE = 2.5;

/** The rank of the UNet's LoRA branches when no LoRA at load time says otherwise: what the "wrong" LoRA has. */
export const DEFAULT_LORA_BRANCH_RANK = 4;

export interface PipelineOptions {
  /** A LoRA for the base UNet, fed to slot 0; panels choose its strength, and a request may name others (`loraPaths`). */
  loraPath?: string | null;
  /** How many LoRAs one request may use at once (branch slots); default 1 with `loraPath`, else 0 (no branches). */
  loraSlots?: number;
  /** An SDXL refiner folder, for requests with `denoisingEnd`. */
  refinerDir?: string | null;
  /** How many UNet rows one run may hold (see unet-batches.ts); default: the whole batch in one run. */
  batchLimits?: BatchLimits;
}

export interface StepProgress {
  step: number;
  totalSteps: number;
  elapsedMs: number;
  etaMs: number;
}

export interface GeneratedPanel {
  width: number;
  height: number;
  /** Height × width × 3, 8-bit RGB. */
  rgb: Uint8Array;
  finalLatents: Float32Array;
}

export interface GenerationTimings {
  totalMs: number;
  onnxMs: number;
  onnxRuns: number;
  textEncodingMs: number;
  denoisingMs: number;
  decodingMs: number;
}

export interface GenerationResult {
  panels: GeneratedPanel[];
  timings: GenerationTimings;
  /** Things the user should know, e.g. words cut by the 77-token limit. */
  notices: string[];
}

/** What one UNet call received, for checking parity with diffusers' own UNet inputs. */
export interface UnetCall {
  model: 'base' | 'refiner';
  stepIndex: number;
  timestep: number;
  inputs: Readonly<Record<'sample' | 'encoder_hidden_states' | 'text_embeds' | 'time_ids', Float32Array>>;
}

export interface GenerateOptions {
  onProgress?: (progress: StepProgress) => void;
  onUnetCall?: (call: UnetCall) => void;
  signal?: AbortSignal;
}

/** Both text encoders' conditioning hidden states (one array each) and the second encoder's pooled output. */
type PromptEncoding = WeightedEncoding;

/** One row of a UNet batch. */
interface UnetRow {
  embeds: Float32Array;
  pooled: Float32Array;
  timeIds: readonly number[];
  loraStrength: number;
  loraSlot: number;
}

/** A run of consecutive steps on one UNet with conditioning that stays fixed over them. */
interface DenoisingStage {
  model: UnetCall['model'];
  unet: OnnxModel;
  firstStep: number;
  endStep: number;
  batchSize: number;
  /** Per panel: whether it has an unconditional row before its conditional one. */
  guided: boolean[];
  /** Each UNet run of a step: its rows [start, end) and the inputs that stay the same at every step. */
  runs: Array<{ start: number; end: number; fixedInputs: Record<string, ort.Tensor>; fixedArrays: Omit<UnetCall['inputs'], 'sample'> }>;
}

interface Refiner {
  folder: SdxlRefinerFolder;
  unet: OnnxModel;
}

interface LoraInfo {
  path: string;
  appliedModules: number;
}

/** The LoRA the branches are fed: its file, and its values as tensors of the UNet's input types. */
interface FedLora extends LoraInfo {
  feeds: Record<string, ort.Tensor>;
}

export class SdxlPipeline {
  private readonly promptCache = new Map<string, PromptEncoding>();

  private constructor(
    readonly folder: SdxlModelFolder,
    private readonly tokenizers: [ClipTokenizer, ClipTokenizer],
    private readonly textEncoders: [OnnxModel, OnnxModel],
    private readonly unet: OnnxModel,
    private readonly vaeDecoder: OnnxModel,
    private readonly scheduler: EulerDiscreteScheduler,
    private readonly clock: RunClock,
    private readonly refiner: Refiner | null,
    private readonly loraUnet: LoraUnet | null,
    private readonly batches: UnetBatchPlanner,
    /** What loading decided that the user should know, e.g. LoRA keys that were not applied. */
    readonly loadNotices: string[],
  ) {
    this.fedLoras = Array.from({ length: loraUnet?.slots ?? 0 }, () => null);
  }

  /** Per branch slot, the LoRA fed to it now. */
  private readonly fedLoras: (FedLora | null)[];
  private readonly zeroLoraFeeds = new Map<number, Record<string, ort.Tensor>>();

  /** The LoRA slot 0 is fed now, if any. */
  get lora(): LoraInfo | null {
    const fed = this.fedLoras[0] ?? null;
    return fed === null ? null : { path: fed.path, appliedModules: fed.appliedModules };
  }

  static async load(modelDir: string, device: Device, options: PipelineOptions = {}): Promise<SdxlPipeline> {
    const folder = openSdxlModelFolder(modelDir);
    const refinerFolder = options.refinerDir ? openSdxlRefinerFolder(options.refinerDir) : null;
    const clock = new RunClock();
    const { paths } = folder;
    const [tokenizer, tokenizer2, scheduler] = await Promise.all([
      ClipTokenizer.fromDirectory(paths.tokenizer),
      ClipTokenizer.fromDirectory(paths.tokenizer2),
      EulerDiscreteScheduler.fromDirectory(paths.scheduler),
    ]);
    // The VAE first: a float16 one that would overflow is refused in seconds, not after the UNet's minutes of loading.
    const vaeDecoder = await OnnxModel.load('vae_decoder', paths.vaeDecoder, device, clock);
    checkVaeDecoderPrecision(folder.vae, paths.vaeDecoder, [vaeDecoder.input('latent_sample').type, vaeDecoder.output('sample').type]);
    const slots = options.loraSlots ?? (options.loraPath ? 1 : 0);
    let loraUnet = slots > 0 ? await buildLoraUnet(paths.unet, DEFAULT_LORA_BRANCH_RANK, slots) : null;
    // A LoRA given at load time always fits: a higher rank than the default gets branches of its rank. Read once, it
    // is fed below; a rebuild at another rank keeps the same targets.
    const initialLora = options.loraPath && loraUnet ? await loadLora(path.resolve(options.loraPath), loraUnet.targets) : null;
    const initialRank = Math.max(0, ...(initialLora?.modules.map((module) => module.rank) ?? []));
    if (loraUnet && initialRank > loraUnet.rank) loraUnet = await buildLoraUnet(paths.unet, initialRank, slots);
    // One at a time: on a GPU the UNet alone can take most of the memory, and a failure should name its model.
    const textEncoder = await OnnxModel.load('text_encoder', paths.textEncoder, device, clock);
    const textEncoder2 = await OnnxModel.load('text_encoder_2', paths.textEncoder2, device, clock);
    const unet = await OnnxModel.load('unet', loraUnet?.source ?? paths.unet, device, clock);
    // The refiner shares text_encoder_2 and the VAE with the base, as diffusers' documented ensemble does.
    const refiner = refinerFolder
      ? { folder: refinerFolder, unet: await OnnxModel.load('refiner unet', refinerFolder.unet, device, clock) }
      : null;
    const limits = options.batchLimits ?? NO_BATCH_LIMITS;
    const loadedModels = [paths.textEncoder, paths.textEncoder2, paths.unet, paths.vaeDecoder, ...(refinerFolder ? [refinerFolder.unet] : [])];
    const batches = new UnetBatchPlanner(
      limits,
      limits.budgetBytes === null ? null : readUnetArchitecture(path.join(path.dirname(paths.unet), 'config.json')),
      folder.vae.scaleFactor,
      loadedModels.reduce((sum, file) => sum + modelFolderBytes(file), 0),
      unet.input('sample').type === 'float16' ? 2 : 4,
    );
    const pipeline = new SdxlPipeline(folder, [tokenizer, tokenizer2], [textEncoder, textEncoder2], unet, vaeDecoder, scheduler, clock, refiner, loraUnet, batches, []);
    pipeline.checkModelInterfaces();
    if (initialLora) pipeline.loadNotices.push(...pipeline.feedLora(initialLora, 0));
    return pipeline;
  }

  /** Zero weights, for the branches of a pipeline that has been given no LoRA yet (every strength is then 0). */
  private unfedLora(slot: number): Record<string, ort.Tensor> {
    const { targets, rank } = this.loraUnet!;
    let feeds = this.zeroLoraFeeds.get(slot);
    if (feeds === undefined) this.zeroLoraFeeds.set(slot, (feeds = this.branchFeeds(loraBranchValues([], targets, rank), slot)));
    return feeds;
  }

  /** A slot's branch values as tensors of the UNet's input types (float16 for an fp16 export). */
  private branchFeeds(values: ReadonlyMap<string, BranchValues>, slot: number): Record<string, ort.Tensor> {
    const { targets, rank } = this.loraUnet!;
    const feeds: Record<string, ort.Tensor> = {};
    for (const target of targets) {
      const names = loraWeightInputs(target.module, slot);
      const { downT, upT } = values.get(target.module)!;
      feeds[names.downT] = this.unet.floatInput(names.downT, downT, [target.inFeatures, rank]);
      feeds[names.upT] = this.unet.floatInput(names.upT, upT, [rank, target.outFeatures]);
    }
    return feeds;
  }

  /**
   * Feeds the branches this LoRA file's weights from now on: no session is rebuilt, so switching versions costs a
   * file read. Returns what the user should know (modules patched, keys not applied); nothing when it is fed already.
   */
  async useLora(loraPath: string, slot = 0): Promise<string[]> {
    const { loraUnet } = this;
    if (loraUnet === null || slot >= loraUnet.slots) fail('loraPath', loraPath, `needs a pipeline loaded with LoRA branch slot ${slot}`);
    const resolved = path.resolve(loraPath);
    if (this.fedLoras[slot]?.path === resolved) return [];
    return this.feedLora(await loadLora(resolved, loraUnet.targets), slot);
  }

  /** `lora`, read from its (absolute) path, as the slot's weights; what the user should know about it. */
  private feedLora(lora: LoadedLora, slot: number): string[] {
    const { targets, rank } = this.loraUnet!;
    const feeds = this.branchFeeds(loraBranchValues(lora.modules, targets, rank), slot);
    this.fedLoras[slot] = { path: lora.path, appliedModules: lora.modules.length, feeds };
    return describeLora(lora.path, lora.modules.length, lora.skipped);
  }

  private checkModelInterfaces(): void {
    for (const unet of [this.unet, ...(this.refiner ? [this.refiner.unet] : [])]) {
      for (const name of ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids']) unet.input(name);
      unet.output('out_sample');
    }
    this.textEncoders.forEach((encoder) => encoder.input('input_ids'));
    this.textEncoders[1].output('text_embeds');
    this.vaeDecoder.input('latent_sample');
    this.vaeDecoder.output('sample');
  }

  get capabilities(): PipelineCapabilities {
    return {
      multipleOf: this.folder.sizeMultiple,
      defaultSizePx: this.folder.defaultImageSizePx,
      loraSlots: this.fedLoras.length,
      fedLoraSlots: this.fedLoras.map((fed) => fed !== null),
      hasRefiner: this.refiner !== null,
    };
  }

  async dispose(): Promise<void> {
    const models = [...this.textEncoders, this.unet, this.vaeDecoder, ...(this.refiner ? [this.refiner.unet] : [])];
    for (const model of models) await model.dispose();
  }

  async generate(rawRequest: GenerationRequest, options: GenerateOptions = {}): Promise<GenerationResult> {
    const started = performance.now();
    this.clock.reset();
    const { signal, onProgress } = options;

    // 1. Check the request against this pipeline before any work, and feed the LoRA it names.
    const request = validateGenerationRequest(rawRequest, this.capabilities);
    // Before any model runs: a size whose one row would not fit the worker's memory is refused at once.
    const rowsPerRun = this.batches.rowsPerRun(request.width, request.height);
    const { scaleFactor } = this.folder.vae;
    const latentShape = [1, 4, request.height / scaleFactor, request.width / scaleFactor];
    const notices: string[] = [];
    for (const [slot, loraPath] of request.loraPaths.entries()) if (loraPath !== null) notices.push(...await this.useLora(loraPath, slot));

    // 2. Encode every distinct prompt once (panels often share their negative prompt).
    const encodings: Array<{ positive: PromptEncoding; negative: PromptEncoding | null }> = [];
    const noted = new Set<string>();
    for (const [index, panel] of request.panels.entries()) {
      const label = request.panels.length > 1 ? `panel ${index + 1} ` : '';
      const positive = await this.encode(panel.prompt, request.weighting, `${label}prompt`, notices, noted);
      // A missing negative prompt still needs an encoding of "" when a model does not zero it (the refiner).
      const negative = panel.guidanceScale > 1
        ? await this.encode(panel.negativePrompt ?? '', request.weighting, `${label}negative prompt`, notices, noted)
        : null;
      encodings.push({ positive, negative });
      signal?.throwIfAborted();
    }
    const textEncodingDone = performance.now();

    // 3. Timesteps and sigmas, and where the base hands off to the refiner.
    this.scheduler.setTimesteps(request.steps);
    const totalSteps = this.scheduler.timesteps.length;
    const baseSteps = request.denoisingEnd === null ? totalSteps : this.baseStepCount(request.denoisingEnd);

    // 4. Initial latents: the seed's noise, scaled; the same for every panel.
    const noise = torchRandn(request.seed, latentShape);
    const initialLatents = noise.map((x) => x * this.scheduler.initNoiseSigma);
    let latents: Float32Array[] = request.panels.map(() => initialLatents.slice());

    // 5. The UNet batches: [negative, positive] per guided panel, [positive] otherwise, in runs of at most
    //    `rowsPerRun` rows.
    const stages: DenoisingStage[] = [
      this.baseStage(request.panels, encodings, request.width, request.height, baseSteps, rowsPerRun),
    ];
    if (baseSteps < totalSteps) {
      stages.push(this.refinerStage(request.panels, encodings, request.width, request.height, baseSteps, totalSteps, rowsPerRun));
    }

    // 6. Denoising loop.
    const loopStarted = performance.now();
    for (const stage of stages) {
      for (let i = stage.firstStep; i < stage.endStep; i++) {
        signal?.throwIfAborted();
        const noisePredictions = await this.predictNoise(stage, request.panels, latents, i, latentShape, options.onUnetCall);
        latents = latents.map((panelLatents, p) => this.scheduler.step(noisePredictions[p]!, i, panelLatents));
        const elapsedMs = performance.now() - loopStarted;
        onProgress?.({ step: i + 1, totalSteps, elapsedMs, etaMs: (elapsedMs / (i + 1)) * (totalSteps - i - 1) });
      }
    }
    const denoisingDone = performance.now();

    // 7. Decode each panel on its own: the VAE at full resolution is the largest activation of the pipeline.
    const panels: GeneratedPanel[] = [];
    for (const finalLatents of latents) {
      signal?.throwIfAborted();
      const rgb = await this.decode(finalLatents, latentShape, request.width, request.height);
      panels.push({ width: request.width, height: request.height, rgb, finalLatents });
    }
    const finished = performance.now();

    return {
      panels,
      notices,
      timings: {
        totalMs: finished - started,
        onnxMs: this.clock.totalMs,
        onnxRuns: this.clock.runs,
        textEncodingMs: textEncodingDone - started,
        denoisingMs: denoisingDone - loopStarted,
        decodingMs: finished - denoisingDone,
      },
    };
  }

  /** diffusers' rule: the base runs every timestep ≥ round(T − T·h), not round(n·h) steps. */
  private baseStepCount(denoisingEnd: number): number {
    const trainSteps = this.scheduler.config.numTrainTimesteps;
    const cutoff = roundHalfEven(trainSteps - denoisingEnd * trainSteps);
    return this.scheduler.timesteps.filter((t) => t >= cutoff).length;
  }

  /** `noted` holds the texts already reported on in this request, so that panels sharing a prompt say it once. */
  private async encode(
    text: string, weighting: WeightingSyntax, what: string, notices: string[], noted: Set<string>,
  ): Promise<PromptEncoding> {
    const key = `${weighting}\u0000${text}`;
    const cached = this.promptCache.get(key);
    const encoding = cached ?? await encodeWeightedPrompt(text, weighting, sdxlEncoderPasses(this.tokenizers, this.textEncoders));
    if (!noted.has(text)) {
      noted.add(text);
      if (encoding.droppedText !== null) {
        notices.push(`${what} is longer than ${this.tokenizers[0].maxLength} tokens; dropped: "${encoding.droppedText}"`);
      }
      if (encoding.syntax !== 'none') notices.push(`${what} uses ${encoding.syntax} weighting`);
    }
    // Re-inserting keeps the map in least-recently-used order.
    this.promptCache.delete(key);
    this.promptCache.set(key, encoding);
    if (this.promptCache.size > PROMPT_CACHE_ENTRIES) this.promptCache.delete(this.promptCache.keys().next().value!);
    return encoding;
  }

  private baseStage(
    panels: ValidatedPanel[],
    encodings: Array<{ positive: PromptEncoding; negative: PromptEncoding | null }>,
    width: number,
    height: number,
    endStep: number,
    rowsPerRun: number,
  ): DenoisingStage {
    // [original size, crop top-left, target size]: diffusers' defaults for an uncropped image of the asked size.
    const timeIds = [height, width, 0, 0, height, width];
    const sequenceLength = this.tokenizers[0].maxLength;
    const row = (encoding: PromptEncoding, zeroed: boolean, panel: ValidatedPanel): UnetRow => {
      const embeds = concatLastAxis(encoding.hidden, sequenceLength);
      const lora = { loraStrength: panel.loraStrength, loraSlot: panel.loraSlot };
      return zeroed
        ? { embeds: embeds.fill(0), pooled: new Float32Array(encoding.pooled.length), timeIds, ...lora }
        : { embeds, pooled: encoding.pooled, timeIds, ...lora };
    };
    const rows = panels.flatMap((panel, p) => {
      const { positive, negative } = encodings[p]!;
      const zeroNegative = panel.negativePrompt === null && this.folder.forceZerosForEmptyPrompt;
      return negative ? [row(negative, zeroNegative, panel), row(positive, false, panel)] : [row(positive, false, panel)];
    });
    return this.stage('base', this.unet, rows, panels, 0, endStep, rowsPerRun);
  }

  private refinerStage(
    panels: ValidatedPanel[],
    encodings: Array<{ positive: PromptEncoding; negative: PromptEncoding | null }>,
    width: number,
    height: number,
    firstStep: number,
    endStep: number,
    rowsPerRun: number,
  ): DenoisingStage {
    const refiner = this.refiner!;
    const timeIds = (aestheticScore: number) => refiner.folder.requiresAestheticsScore
      ? [height, width, 0, 0, aestheticScore]
      : [height, width, 0, 0, height, width];
    const row = (encoding: PromptEncoding, zeroed: boolean, aestheticScore: number): UnetRow => {
      const embeds = encoding.hidden[1]!;
      return {
        embeds: zeroed ? new Float32Array(embeds.length) : embeds,
        pooled: zeroed ? new Float32Array(encoding.pooled.length) : encoding.pooled,
        timeIds: timeIds(aestheticScore),
        loraStrength: 0,
        loraSlot: 0,
      };
    };
    const rows = panels.flatMap((panel, p) => {
      const { positive, negative } = encodings[p]!;
      const zeroNegative = panel.negativePrompt === null && refiner.folder.forceZerosForEmptyPrompt;
      return negative
        ? [row(negative, zeroNegative, NEGATIVE_AESTHETIC_SCORE), row(positive, false, AESTHETIC_SCORE)]
        : [row(positive, false, AESTHETIC_SCORE)];
    });
    return this.stage('refiner', refiner.unet, rows, panels, firstStep, endStep, rowsPerRun);
  }

  private stage(
    model: UnetCall['model'], unet: OnnxModel, rows: UnetRow[], panels: ValidatedPanel[], firstStep: number, endStep: number, rowsPerRun: number,
  ): DenoisingStage {
    const runs = runsOf(rows.length, rowsPerRun).map(([start, end]) => ({ start, end, ...this.runInputs(unet, rows.slice(start, end)) }));
    return { model, unet, firstStep, endStep, batchSize: rows.length, runs, guided: panels.map((panel) => panel.guidanceScale > 1) };
  }

  /** The inputs of one run over `rows` that stay the same at every step. */
  private runInputs(unet: OnnxModel, rows: UnetRow[]): Pick<DenoisingStage['runs'][number], 'fixedInputs' | 'fixedArrays'> {
    const sequenceLength = this.tokenizers[0].maxLength;
    const embedSize = rows[0]!.embeds.length;
    const pooledSize = rows[0]!.pooled.length;
    const timeIdCount = rows[0]!.timeIds.length;
    const batchSize = rows.length;
    const encoderHiddenStates = new Float32Array(batchSize * embedSize);
    const textEmbeds = new Float32Array(batchSize * pooledSize);
    const timeIds = new Float32Array(batchSize * timeIdCount);
    rows.forEach((row, r) => {
      encoderHiddenStates.set(row.embeds, r * embedSize);
      textEmbeds.set(row.pooled, r * pooledSize);
      timeIds.set(row.timeIds, r * timeIdCount);
    });
    const fixedInputs: Record<string, ort.Tensor> = {
      encoder_hidden_states: unet.floatInput('encoder_hidden_states', encoderHiddenStates, [batchSize, sequenceLength, embedSize / sequenceLength]),
      text_embeds: unet.floatInput('text_embeds', textEmbeds, [batchSize, pooledSize]),
      time_ids: unet.floatInput('time_ids', timeIds, [batchSize, timeIdCount]),
    };
    // The refiner has no LoRA branches; the base UNet's every slot takes weights and a strength per row.
    if (unet === this.unet) {
      this.fedLoras.forEach((fed, slot) => {
        const name = loraStrengthInput(slot);
        fixedInputs[name] = unet.floatInput(name, Float32Array.from(rows, (row) => (row.loraSlot === slot ? row.loraStrength : 0)), [batchSize]);
        Object.assign(fixedInputs, fed?.feeds ?? this.unfedLora(slot));
      });
    }
    return { fixedInputs, fixedArrays: { encoder_hidden_states: encoderHiddenStates, text_embeds: textEmbeds, time_ids: timeIds } };
  }

  private async predictNoise(
    stage: DenoisingStage,
    panels: ValidatedPanel[],
    latents: Float32Array[],
    stepIndex: number,
    latentShape: number[],
    onUnetCall: GenerateOptions['onUnetCall'],
  ): Promise<Float32Array[]> {
    const { unet, batchSize, guided } = stage;
    const panelSize = latents[0]!.length;
    const sample = new Float32Array(batchSize * panelSize);
    let row = 0;
    latents.forEach((panelLatents, p) => {
      const scaled = this.scheduler.scaleModelInput(panelLatents, stepIndex);
      for (let copy = 0; copy < (guided[p] ? 2 : 1); copy++) sample.set(scaled, (row++) * panelSize);
    });
    const timestep = this.scheduler.timesteps[stepIndex]!;
    const timestepIsScalar = unet.input('timestep').shape.length === 0;
    const output = new Float32Array(batchSize * panelSize);
    for (const run of stage.runs) {
      const rows = run.end - run.start;
      const runSample = sample.subarray(run.start * panelSize, run.end * panelSize);
      onUnetCall?.({ model: stage.model, stepIndex, timestep, inputs: { ...run.fixedArrays, sample: runSample } });
      const result = await unet.run({
        ...run.fixedInputs,
        sample: unet.floatInput('sample', runSample, [rows, ...latentShape.slice(1)]),
        timestep: timestepIsScalar
          ? unet.numberInput('timestep', [timestep], [])
          : unet.numberInput('timestep', new Array<number>(rows).fill(timestep), [rows]),
      }, ['out_sample']);
      output.set(result['out_sample']!, run.start * panelSize);
    }

    row = 0;
    return panels.map((panel, p) => {
      if (!guided[p]) return output.subarray((row++) * panelSize, row * panelSize);
      const unconditional = output.subarray((row++) * panelSize, row * panelSize);
      const text = output.subarray((row++) * panelSize, row * panelSize);
      return applyGuidance(unconditional, text, panel.guidanceScale, panel.guidanceRescale);
    });
  }

  private async decode(latents: Float32Array, latentShape: number[], width: number, height: number): Promise<Uint8Array> {
    const scalingFactor = f32(this.folder.vae.scalingFactor);
    const unscaled = latents.map((x) => x / scalingFactor);
    const result = await this.vaeDecoder.run(
      { latent_sample: this.vaeDecoder.floatInput('latent_sample', unscaled, latentShape) },
      ['sample'],
    );
    const sample = result['sample']!;
    // Overflow shows as NaN once a normalization meets it, or as ±inf that would clamp to a saturated image.
    if (!sample.every(Number.isFinite)) {
      throw new Error(
        'vae_decoder produced NaN or infinite values: the stock SDXL VAE overflows in float16; use an fp32 VAE or the '
        + 'sdxl-vae-fp16-fix VAE in vae_decoder/',
      );
    }
    return vaeOutputToRgb(sample, width, height);
  }
}

/** How many modules a LoRA patched, and its unapplied keys grouped by reason so a 700-key file stays readable. */
function describeLora(loraPath: string, appliedModules: number, skipped: readonly SkippedLoraKey[]): string[] {
  const byReason = new Map<string, string[]>();
  for (const { key, reason } of skipped) byReason.set(reason, [...(byReason.get(reason) ?? []), key]);
  return [
    `LoRA ${loraPath}: ${appliedModules} UNet projections patched`,
    ...[...byReason].map(([reason, keys]) => keys.length === 1
      ? `LoRA key ${keys[0]} not applied: ${reason}`
      : `${keys.length} LoRA keys not applied: ${reason} (e.g. ${keys.slice(0, 3).join(', ')})`),
  ];
}

/** uncond + g · (text − uncond) in float32, then diffusers' optional std rescale (guidance_rescale). */
function applyGuidance(unconditional: Float32Array, text: Float32Array, scale: number, rescale: number): Float32Array {
  const g = f32(scale);
  const guided = new Float32Array(text.length);
  for (let i = 0; i < text.length; i++) {
    guided[i] = f32(unconditional[i]! + f32(g * f32(text[i]! - unconditional[i]!)));
  }
  if (rescale <= 0) return guided;
  const factor = standardDeviation(text) / standardDeviation(guided);
  return guided.map((x) => rescale * (x * factor) + (1 - rescale) * x);
}

/** Unbiased, as torch.std. */
function standardDeviation(values: Float32Array): number {
  let mean = 0;
  for (const v of values) mean += v;
  mean /= values.length;
  let sum = 0;
  for (const v of values) sum += (v - mean) ** 2;
  return Math.sqrt(sum / (values.length - 1));
}
