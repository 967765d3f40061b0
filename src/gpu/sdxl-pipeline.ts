import { ClipTokenizer } from './tokenizer.js';
import { EulerDiscreteScheduler } from './scheduler.js';
import { OnnxModel, RunClock } from './onnx-session.js';
import { openSdxlModelFolder, type SdxlModelFolder } from './model-folder.js';
import { torchRandn } from './rng.js';
import { vaeOutputToRgb } from './image.js';
import type { Device } from './providers.js';
import { validateGenerationRequest, type GenerationRequest, type PanelSettings } from './request.js';

// Stable Diffusion XL text-to-image on onnxruntime, step for step what diffusers' StableDiffusionXLPipeline does.
// A request holds one or more panels that share seed, size and step count but not prompts or guidance: every panel
// starts from the same noise and all of them go through the UNet together, one batch per step.

const f32 = Math.fround;

// Prompt encodings kept between requests: "wrong" and the other usual negatives recur in nearly every job, and a
// real SDXL encoding is 77 × 2048 floats (630 kB), so a few dozen cost little memory.
const PROMPT_CACHE_ENTRIES = 32;

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

export interface GenerateOptions {
  onProgress?: (progress: StepProgress) => void;
  signal?: AbortSignal;
}

interface PromptEncoding {
  embeds: Float32Array;
  pooled: Float32Array;
}

interface PanelConditioning {
  settings: PanelSettings;
  guided: boolean;
  positive: PromptEncoding;
  negative: PromptEncoding | null;
}

export class SdxlPipeline {
  private constructor(
    readonly folder: SdxlModelFolder,
    private readonly tokenizers: [ClipTokenizer, ClipTokenizer],
    private readonly textEncoders: [OnnxModel, OnnxModel],
    private readonly unet: OnnxModel,
    private readonly vaeDecoder: OnnxModel,
    private readonly scheduler: EulerDiscreteScheduler,
    private readonly clock: RunClock,
  ) {}

  private readonly promptCache = new Map<string | null, PromptEncoding>();

  static async load(modelDir: string, device: Device): Promise<SdxlPipeline> {
    const folder = openSdxlModelFolder(modelDir);
    const clock = new RunClock();
    const { paths } = folder;
    const [tokenizer, tokenizer2, scheduler] = await Promise.all([
      ClipTokenizer.fromDirectory(paths.tokenizer),
      ClipTokenizer.fromDirectory(paths.tokenizer2),
      EulerDiscreteScheduler.fromDirectory(paths.scheduler),
    ]);
    // One at a time: on a GPU the UNet alone can take most of the memory, and a failure should name its model.
    const textEncoder = await OnnxModel.load('text_encoder', paths.textEncoder, device, clock);
    const textEncoder2 = await OnnxModel.load('text_encoder_2', paths.textEncoder2, device, clock);
    const unet = await OnnxModel.load('unet', paths.unet, device, clock);
    const vaeDecoder = await OnnxModel.load('vae_decoder', paths.vaeDecoder, device, clock);
    const pipeline = new SdxlPipeline(
      folder, [tokenizer, tokenizer2], [textEncoder, textEncoder2], unet, vaeDecoder, scheduler, clock,
    );
    pipeline.checkModelInterfaces();
    return pipeline;
  }

  private checkModelInterfaces(): void {
    for (const name of ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids']) this.unet.input(name);
    this.unet.output('out_sample');
    this.textEncoders.forEach((encoder) => encoder.input('input_ids'));
    this.textEncoders[1].output('text_embeds');
    this.vaeDecoder.input('latent_sample');
    this.vaeDecoder.output('sample');
  }

  async dispose(): Promise<void> {
    for (const model of [...this.textEncoders, this.unet, this.vaeDecoder]) await model.dispose();
  }

  async generate(rawRequest: GenerationRequest, options: GenerateOptions = {}): Promise<GenerationResult> {
    const started = performance.now();
    this.clock.reset();
    const { signal, onProgress } = options;

    // 1. Check the request against this model before any work.
    const request = validateGenerationRequest(rawRequest, this.folder.vae.scaleFactor);
    const latentHeight = request.height / this.folder.vae.scaleFactor;
    const latentWidth = request.width / this.folder.vae.scaleFactor;
    const latentShape = [1, 4, latentHeight, latentWidth];
    const notices: string[] = [];

    // 2. Encode every distinct prompt once; panels often share their negative prompt.
    const conditioning: PanelConditioning[] = [];
    for (const [index, settings] of request.panels.entries()) {
      const label = request.panels.length > 1 ? `panel ${index + 1} ` : '';
      const guided = settings.guidanceScale > 1;
      const positive = await this.cachedEncoding(settings.prompt, `${label}prompt`, notices);
      const negative = guided
        ? await this.cachedEncoding(this.negativeText(settings.negativePrompt), `${label}negative prompt`, notices)
        : null;
      conditioning.push({ settings, guided, positive, negative });
      signal?.throwIfAborted();
    }
    const textEncodingDone = performance.now();

    // 3. Timesteps and sigmas.
    this.scheduler.setTimesteps(request.steps);
    const { timesteps } = this.scheduler;

    // 4. Initial latents: the seed's noise, scaled; the same for every panel.
    const noise = torchRandn(request.seed, latentShape);
    const initialLatents = noise.map((x) => x * this.scheduler.initNoiseSigma);
    let latents: Float32Array[] = conditioning.map(() => initialLatents.slice());

    // 5. The UNet batch that stays fixed over the steps: [negative, positive] per guided panel, [positive] otherwise.
    const batch = this.buildUnetConditioning(conditioning, request.width, request.height);

    // 6. Denoising loop.
    const loopStarted = performance.now();
    for (let i = 0; i < timesteps.length; i++) {
      signal?.throwIfAborted();
      const noisePredictions = await this.predictNoise(latents, conditioning, batch, i, latentShape);
      latents = latents.map((panelLatents, p) => this.scheduler.step(noisePredictions[p]!, i, panelLatents));
      const elapsedMs = performance.now() - loopStarted;
      onProgress?.({
        step: i + 1,
        totalSteps: timesteps.length,
        elapsedMs,
        etaMs: (elapsedMs / (i + 1)) * (timesteps.length - i - 1),
      });
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

  private async cachedEncoding(text: string | null, what: string, notices: string[]): Promise<PromptEncoding> {
    if (text !== null) this.noteTruncation(text, what, notices);
    const cached = this.promptCache.get(text);
    if (cached) {
      // Re-inserting keeps the map in least-recently-used order.
      this.promptCache.delete(text);
      this.promptCache.set(text, cached);
      return cached;
    }
    const encoding = await this.encodePrompt(text);
    this.promptCache.set(text, encoding);
    if (this.promptCache.size > PROMPT_CACHE_ENTRIES) this.promptCache.delete(this.promptCache.keys().next().value!);
    return encoding;
  }

  private noteTruncation(text: string, what: string, notices: string[]): void {
    const tokenizer = this.tokenizers[0];
    const { droppedIds } = tokenizer.encodeForModel(text);
    if (droppedIds.length > 0) {
      notices.push(`${what} is longer than ${tokenizer.maxLength} tokens; dropped: "${tokenizer.decode(droppedIds)}"`);
    }
  }

  /** diffusers zeroes a missing negative prompt only when the model asks for it; otherwise "" is encoded. */
  private negativeText(negativePrompt: string | null): string | null {
    return negativePrompt === null && !this.folder.forceZerosForEmptyPrompt ? '' : negativePrompt;
  }

  /**
   * Penultimate hidden states of both encoders, concatenated per token, and the second encoder's pooled output.
   * `null` is the all-zero conditioning of `force_zeros_for_empty_prompt`.
   */
  private async encodePrompt(text: string | null): Promise<PromptEncoding> {
    const hidden: Float32Array[] = [];
    let pooled: Float32Array | null = null;
    for (const [index, encoder] of this.textEncoders.entries()) {
      const tokenizer = this.tokenizers[index]!;
      const { inputIds } = tokenizer.encodeForModel(text ?? '');
      const hiddenName = penultimateHiddenState(encoder);
      const outputs = [hiddenName, ...(index === 1 ? ['text_embeds'] : [])];
      const result = await encoder.run(
        { input_ids: encoder.numberInput('input_ids', inputIds, [1, inputIds.length]) },
        outputs,
      );
      hidden.push(result[hiddenName]!);
      if (index === 1) pooled = result['text_embeds']!;
    }
    const sequenceLength = this.tokenizers[0].maxLength;
    const embeds = concatLastAxis(hidden, sequenceLength);
    if (text === null) return { embeds: embeds.fill(0), pooled: pooled!.fill(0) };
    return { embeds, pooled: pooled! };
  }

  private buildUnetConditioning(conditioning: PanelConditioning[], width: number, height: number) {
    const rows: PromptEncoding[] = conditioning.flatMap((panel) => panel.guided ? [panel.negative!, panel.positive] : [panel.positive]);
    const embedSize = rows[0]!.embeds.length;
    const pooledSize = rows[0]!.pooled.length;
    const encoderHiddenStates = new Float32Array(rows.length * embedSize);
    const textEmbeds = new Float32Array(rows.length * pooledSize);
    // [original size, crop top-left, target size]: diffusers' defaults for an uncropped image of the asked size.
    const timeIdsRow = [height, width, 0, 0, height, width];
    const timeIds = new Float32Array(rows.length * timeIdsRow.length);
    rows.forEach((row, r) => {
      encoderHiddenStates.set(row.embeds, r * embedSize);
      textEmbeds.set(row.pooled, r * pooledSize);
      timeIds.set(timeIdsRow, r * timeIdsRow.length);
    });
    const batchSize = rows.length;
    const sequenceLength = this.tokenizers[0].maxLength;
    return {
      batchSize,
      encoderHiddenStates: this.unet.floatInput('encoder_hidden_states', encoderHiddenStates, [batchSize, sequenceLength, embedSize / sequenceLength]),
      textEmbeds: this.unet.floatInput('text_embeds', textEmbeds, [batchSize, pooledSize]),
      timeIds: this.unet.floatInput('time_ids', timeIds, [batchSize, timeIdsRow.length]),
    };
  }

  private async predictNoise(
    latents: Float32Array[],
    conditioning: PanelConditioning[],
    batch: ReturnType<SdxlPipeline['buildUnetConditioning']>,
    stepIndex: number,
    latentShape: number[],
  ): Promise<Float32Array[]> {
    const panelSize = latents[0]!.length;
    const sample = new Float32Array(batch.batchSize * panelSize);
    let row = 0;
    conditioning.forEach((panel, p) => {
      const scaled = this.scheduler.scaleModelInput(latents[p]!, stepIndex);
      for (let copy = 0; copy < (panel.guided ? 2 : 1); copy++) sample.set(scaled, (row++) * panelSize);
    });
    const timestep = this.scheduler.timesteps[stepIndex]!;
    const timestepRank = this.unet.input('timestep').shape.length;
    const result = await this.unet.run({
      sample: this.unet.floatInput('sample', sample, [batch.batchSize, ...latentShape.slice(1)]),
      timestep: this.unet.numberInput('timestep', timestepRank === 0 ? [timestep] : new Array<number>(batch.batchSize).fill(timestep), timestepRank === 0 ? [] : [batch.batchSize]),
      encoder_hidden_states: batch.encoderHiddenStates,
      text_embeds: batch.textEmbeds,
      time_ids: batch.timeIds,
    }, ['out_sample']);
    const output = result['out_sample']!;

    row = 0;
    return conditioning.map((panel) => {
      if (!panel.guided) return output.subarray((row++) * panelSize, row * panelSize);
      const unconditional = output.subarray((row++) * panelSize, row * panelSize);
      const text = output.subarray((row++) * panelSize, row * panelSize);
      return applyGuidance(unconditional, text, panel.settings.guidanceScale, panel.settings.guidanceRescale);
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
    if (sample.some(Number.isNaN)) {
      throw new Error(
        'vae_decoder produced NaN values: the stock SDXL VAE overflows in float16; use an fp32 VAE or the '
        + 'sdxl-vae-fp16-fix VAE in vae_decoder/',
      );
    }
    return vaeOutputToRgb(sample, width, height);
  }
}

/** hidden_states[-2]: the outputs are named hidden_states.0 … hidden_states.N. */
function penultimateHiddenState(encoder: OnnxModel): string {
  const layers = encoder.outputNames
    .map((name) => /^hidden_states\.(\d+)$/.exec(name)?.[1])
    .filter((index): index is string => index !== undefined)
    .map(Number);
  if (layers.length < 2) {
    throw new Error(`${encoder.label} exposes no hidden_states.N outputs; export it with output_hidden_states`);
  }
  return `hidden_states.${Math.max(...layers) - 1}`;
}

function concatLastAxis(parts: Float32Array[], rows: number): Float32Array {
  const widths = parts.map((part) => part.length / rows);
  const total = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(rows * total);
  for (let r = 0; r < rows; r++) {
    let offset = r * total;
    parts.forEach((part, i) => {
      out.set(part.subarray(r * widths[i]!, (r + 1) * widths[i]!), offset);
      offset += widths[i]!;
    });
  }
  return out;
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
