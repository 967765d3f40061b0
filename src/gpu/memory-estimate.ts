import { existsSync, readFileSync } from 'node:fs';
import { checkInteger, fail } from '../common/validation.js';
import { ModelLoadError } from './onnx-session.js';

// What one training step needs in device memory, on paper, from the UNet's diffusers config: the weights, the
// forward values the backward pass reads (onnxruntime frees every other value after its last use), the largest
// short-lived tensors of the backward pass, and the LoRA with its optimizer state. The walk mirrors the graph
// `buildTrainingGraph` makes: a frozen Conv or MatMul keeps no input (its weight takes no gradient), values computed
// before the first LoRA branch keep nothing (no gradient reaches them), and each rule of `gradient-rules.ts` keeps
// what it reads: Softmax its output, LayerNorm and GroupNorm their input, Mul both factors, the LoRA MatMuls x and
// x·Aᵀ. With gradient checkpointing (recompute.ts) the forward keeps only each resnet's and transformer block's input
// (and what lies outside them, the output head), and one segment at a time is recomputed beside them.
// test/memory-estimate.test.ts checks both figures against the tiny model's real training graphs.

/** The UNet2DConditionModel fields that decide its shapes, one entry per down block (up blocks mirror them). */
export interface UnetArchitecture {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number[];
  transformerLayersPerBlock: number[];
  /** Attention heads per down block (diffusers reads SDXL's attention_head_dim as this). */
  heads: number[];
  /** Width of the prompt embeddings each cross-attention reads. */
  crossAttentionDim: number;
  crossAttentionDown: boolean[];
  crossAttentionUp: boolean[];
  convInKernel: number;
  convOutKernel: number;
  timeEmbeddingDim: number;
  /** Input width of SDXL's add_embedding (pooled text + time ids), or null where the UNet has none. */
  additionEmbeddingInputDim: number | null;
}

export interface TrainingMemoryShape {
  /** Square side of the training images, in pixels. */
  resolution: number;
  /** Pixels per latent along a side (8 for SDXL's VAE). */
  vaeScaleFactor: number;
  batchSize: number;
  rank: number;
  /** Bytes per element of the UNet's weights (4 for float32, 2 for float16); its activations are of the same type. */
  elementBytes: number;
}

export interface TrainingMemoryEstimate {
  shape: TrainingMemoryShape;
  unetParameters: number;
  weightBytes: number;
  /** Forward values the backward pass reads, all kept from the forward pass until it does. */
  keptActivationBytes: number;
  /** With gradient checkpointing: the segment inputs (and values outside segments) held from the forward pass. */
  checkpointBytes: number;
  /** With gradient checkpointing: the largest segment's recomputed values and the gated copy of its input. */
  largestSegmentBytes: number;
  /** The part of `keptActivationBytes` that is attention probabilities (the Softmax outputs). */
  attentionProbabilityBytes: number;
  /** The largest attention score tensor of the batch, [batch, heads, tokens, tokens], and where it is. */
  largestScores: { bytes: number; channels: number; heads: number; tokens: number; layers: number };
  /** The largest set of tensors the backward pass makes and frees again within one operator's rule. */
  transientBytes: number;
  transientWhat: string;
  loraParameters: number;
  /** LoRA weights, their gradients and AdamW's two moments, all float32. */
  loraBytes: number;
  totalBytes: number;
  /** The total with gradient checkpointing, which holds checkpoint and one segment instead of every kept value. */
  checkpointedTotalBytes: number;
}

/** CLIP's context: the prompt embeddings every cross-attention reads. */
const TEXT_TOKENS = 77;
/** float32 weight, gradient, and AdamW's first and second moment per LoRA parameter. */
const LORA_BYTES_PER_PARAMETER = 16;
/** GEGLU's projection is twice the feed-forward's inner width of 4 × channels. */
const FEED_FORWARD_MULTIPLE = 4;
const KERNEL_3X3 = 9;
/** Memory of the cards the dry run compares with, in GiB: what a "24 GB" card holds. */
export const CARD_SIZES_GIB = [24, 16, 12] as const;

/** The shape-deciding fields of stabilityai/stable-diffusion-xl-base-1.0's unet/config.json, for estimates without it. */
export const SDXL_BASE_UNET_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  block_out_channels: [320, 640, 1280],
  layers_per_block: 2,
  transformer_layers_per_block: [1, 2, 10],
  attention_head_dim: [5, 10, 20],
  num_attention_heads: null,
  cross_attention_dim: 2048,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  mid_block_type: 'UNetMidBlock2DCrossAttn',
  in_channels: 4,
  out_channels: 4,
  addition_embed_type: 'text_time',
  projection_class_embeddings_input_dim: 2816,
});

const DOWN_BLOCKS: Readonly<Record<string, boolean>> = { DownBlock2D: false, CrossAttnDownBlock2D: true };
const UP_BLOCKS: Readonly<Record<string, boolean>> = { UpBlock2D: false, CrossAttnUpBlock2D: true };
const MID_BLOCK = 'UNetMidBlock2DCrossAttn';

/** The architecture in a diffusers `unet/config.json`; refuses configs whose blocks this estimate does not model. */
export function readUnetArchitecture(configFile: string): UnetArchitecture {
  if (!existsSync(configFile)) throw new ModelLoadError(`model file ${configFile} is missing: the memory estimate reads the UNet's shapes from it`);
  let config: unknown;
  try {
    config = JSON.parse(readFileSync(configFile, 'utf8'));
  } catch (cause) {
    throw new ModelLoadError(`model file ${configFile} is not valid JSON: ${(cause as Error).message}`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new ModelLoadError(`model file ${configFile} is not a JSON object`);
  return parseUnetArchitecture(config as Record<string, unknown>, configFile);
}

export function parseUnetArchitecture(config: Readonly<Record<string, unknown>>, source: string): UnetArchitecture {
  const bad = (key: string, rule: string): never => {
    throw new ModelLoadError(`${source}: ${key} = ${JSON.stringify(config[key])} ${rule}`);
  };
  const count = (key: string, fallback?: number): number => {
    const value = config[key] ?? fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) bad(key, 'must be a positive integer');
    return value as number;
  };
  const blockTypes = (key: string, known: Readonly<Record<string, boolean>>): boolean[] => {
    const value = config[key];
    if (!Array.isArray(value) || value.some((type) => typeof type !== 'string' || !Object.hasOwn(known, type))) bad(key, `must list only ${Object.keys(known).join(', ')}`);
    return (value as string[]).map((type) => known[type]!);
  };
  const blockOutChannels = config['block_out_channels'];
  if (!Array.isArray(blockOutChannels) || blockOutChannels.length === 0 || blockOutChannels.some((c) => !Number.isInteger(c) || c < 1)) {
    bad('block_out_channels', 'must be a non-empty list of positive integers');
  }
  const channels = blockOutChannels as number[];
  // diffusers takes a number for every block alike, or a list with one entry per down block.
  const perBlock = (key: string, value: unknown): number[] => {
    const list = Array.isArray(value) ? value : Array(channels.length).fill(value);
    if (list.length !== channels.length || list.some((n) => !Number.isInteger(n) || n < 1)) bad(key, `must be a positive integer or ${channels.length} of them`);
    return list as number[];
  };
  const crossAttentionDown = blockTypes('down_block_types', DOWN_BLOCKS);
  const crossAttentionUp = blockTypes('up_block_types', UP_BLOCKS);
  if (crossAttentionDown.length !== channels.length || crossAttentionUp.length !== channels.length) bad('down_block_types', 'and up_block_types must have one entry per block_out_channels');
  // diffusers writes null (or false) for the options SDXL does not use; each would change the shapes walked here.
  const given = (key: string) => config[key] ?? null;
  if (given('mid_block_type') !== null && given('mid_block_type') !== MID_BLOCK) bad('mid_block_type', `is not modelled; only ${MID_BLOCK} is`);
  for (const key of ['class_embed_type', 'encoder_hid_dim_type', 'time_cond_proj_dim', 'reverse_transformer_layers_per_block']) {
    if (given(key) !== null) bad(key, 'is not modelled; SDXL leaves it null');
  }
  for (const key of ['only_cross_attention', 'dual_cross_attention']) {
    if (given(key) !== null && given(key) !== false) bad(key, 'is not modelled; SDXL leaves it false');
  }
  const additionType = given('addition_embed_type');
  if (additionType !== null && additionType !== 'text_time') bad('addition_embed_type', 'is not modelled; only text_time (SDXL) and null are');
  const crossAttentionDim = config['cross_attention_dim'];
  if (!Number.isInteger(crossAttentionDim) || (crossAttentionDim as number) < 1) bad('cross_attention_dim', 'must be one positive integer');
  return {
    inChannels: count('in_channels', 4),
    outChannels: count('out_channels', 4),
    blockOutChannels: channels,
    layersPerBlock: perBlock('layers_per_block', config['layers_per_block'] ?? 2),
    transformerLayersPerBlock: perBlock('transformer_layers_per_block', config['transformer_layers_per_block'] ?? 1),
    // diffusers' own naming slip: without num_attention_heads, attention_head_dim is the number of heads.
    heads: given('num_attention_heads') !== null
      ? perBlock('num_attention_heads', config['num_attention_heads'])
      : perBlock('attention_head_dim', config['attention_head_dim'] ?? 8),
    crossAttentionDim: crossAttentionDim as number,
    crossAttentionDown,
    crossAttentionUp,
    convInKernel: count('conv_in_kernel', 3),
    convOutKernel: count('conv_out_kernel', 3),
    timeEmbeddingDim: given('time_embedding_dim') === null ? channels[0]! * 4 : count('time_embedding_dim'),
    additionEmbeddingInputDim: additionType === null ? null : count('projection_class_embeddings_input_dim'),
  };
}

/** Elements per sample; the batch multiplies them at the end. */
class StepTally {
  parameters = 0;
  loraParameters = 0;
  kept = 0;
  held = 0;
  largestSegment = 0;
  /** What the open segment's backward reads, or null between segments. */
  private segment: number | null = null;
  probabilities = 0;
  transient = { elements: 0, what: '' };
  scores = { elements: 0, channels: 0, heads: 0, tokens: 0, layers: 0 };
  /** Whether a gradient reaches this point: only values computed after the first LoRA branch depend on one. */
  private trained = false;

  constructor(private readonly arch: UnetArchitecture, private readonly rank: number) {}

  private linear(inFeatures: number, outFeatures: number, bias: boolean): void {
    this.parameters += inFeatures * outFeatures + (bias ? outFeatures : 0);
  }

  private conv(inChannels: number, outChannels: number, kernelArea: number): void {
    this.parameters += inChannels * outChannels * kernelArea + outChannels;
  }

  /** A forward value the backward pass reads, if a gradient reaches it. */
  private keep(elements: number): void {
    if (!this.trained) return;
    this.kept += elements;
    if (this.segment === null) this.held += elements;
    else this.segment += elements;
  }

  /** A resnet or a stretch of a transformer, which checkpointing recomputes from its input of `inputElements`. */
  private inSegment(inputElements: number, body: () => void): void {
    this.segment = 0;
    body();
    // Only a segment whose backward reads something of its own is recomputed; it then holds its input.
    if (this.segment > 0) {
      this.held += inputElements;
      this.largestSegment = Math.max(this.largestSegment, this.segment + inputElements);
    }
    this.segment = null;
  }

  private transientCandidate(elements: number, what: string): void {
    if (elements > this.transient.elements) this.transient = { elements, what };
  }

  /** GroupNorm (reshaped InstanceNormalization, which reads its input) and, with `silu`, x·sigmoid(x) after it. */
  private groupNorm(channels: number, pixels: number, silu: boolean): void {
    this.parameters += 2 * channels;
    this.keep(channels * pixels * (silu ? 3 : 1));
  }

  stem(): void {
    const { inChannels, blockOutChannels, convInKernel, timeEmbeddingDim, additionEmbeddingInputDim } = this.arch;
    this.conv(inChannels, blockOutChannels[0]!, convInKernel ** 2);
    this.linear(blockOutChannels[0]!, timeEmbeddingDim, true);
    this.linear(timeEmbeddingDim, timeEmbeddingDim, true);
    if (additionEmbeddingInputDim !== null) {
      this.linear(additionEmbeddingInputDim, timeEmbeddingDim, true);
      this.linear(timeEmbeddingDim, timeEmbeddingDim, true);
    }
  }

  resnet(inChannels: number, outChannels: number, pixels: number): void {
    this.inSegment(inChannels * pixels, () => {
      this.groupNorm(inChannels, pixels, true);
      this.conv(inChannels, outChannels, KERNEL_3X3);
      this.linear(this.arch.timeEmbeddingDim, outChannels, true);
      this.groupNorm(outChannels, pixels, true);
      this.conv(outChannels, outChannels, KERNEL_3X3);
      if (inChannels !== outChannels) this.conv(inChannels, outChannels, 1);
    });
  }

  resample(channels: number): void {
    this.conv(channels, channels, KERNEL_3X3);
  }

  /** norm and proj_in, each transformer block, then proj_out: each a segment of its own. */
  transformer(channels: number, layers: number, heads: number, tokens: number): void {
    const hidden = channels * tokens;
    this.inSegment(hidden, () => {
      this.groupNorm(channels, tokens, false);
      this.linear(channels, channels, true);
    });
    for (let layer = 0; layer < layers; layer++) {
      this.inSegment(hidden, () => {
        this.layerNorm(channels, tokens);
        this.attention(channels, heads, tokens, tokens, channels);
        this.layerNorm(channels, tokens);
        this.attention(channels, heads, tokens, TEXT_TOKENS, this.arch.crossAttentionDim);
        this.layerNorm(channels, tokens);
        this.feedForward(channels, tokens);
      });
    }
    this.inSegment(hidden, () => this.linear(channels, channels, true));
  }

  private layerNorm(channels: number, tokens: number): void {
    this.parameters += 2 * channels;
    this.keep(channels * tokens);
  }

  /**
   * q, k, v and out projections with their LoRA branches, and softmax(q·kᵀ)·v. The LoRA MatMuls keep x and x·Aᵀ; the
   * attention keeps the scaled q and k, v, the probabilities and the output fed to to_out; a rank-r branch on every
   * projection means all of them depend on a trained weight from the first branch on.
   */
  private attention(channels: number, heads: number, tokens: number, keyTokens: number, keyWidth: number): void {
    const { rank } = this;
    this.linear(channels, channels, false);
    this.linear(keyWidth, channels, false);
    this.linear(keyWidth, channels, false);
    this.linear(channels, channels, true);
    this.loraParameters += rank * (2 * channels + 2 * (keyWidth + channels) + 2 * channels);
    this.trained = true;
    const probabilities = heads * tokens * keyTokens;
    // x, the normed hidden states, is counted once for the branches of q, k and v; cross-attention's k and v
    // branches read the prompt embeddings instead, a graph input that is held anyway.
    this.keep(channels * tokens * 3 + channels * keyTokens * 2 + probabilities + rank * (2 * tokens + 2 * keyTokens));
    this.probabilities += probabilities;
    // Softmax's rule holds the gradient of the probabilities and of the scores at once.
    this.transientCandidate(2 * probabilities, `the score gradients of one ${heads}-head attention over ${tokens}×${keyTokens} tokens`);
    if (tokens === keyTokens) {
      if (probabilities > this.scores.elements) this.scores = { elements: probabilities, channels, heads, tokens, layers: 0 };
      if (probabilities === this.scores.elements) this.scores.layers += 1;
    }
  }

  /** GEGLU: hidden · gelu(gate), gelu as gate·(1 + erf(gate/√2))/2, each product keeping both of its factors. */
  private feedForward(channels: number, tokens: number): void {
    const inner = FEED_FORWARD_MULTIPLE * channels;
    this.linear(channels, 2 * inner, true);
    this.linear(inner, channels, true);
    // hidden, gate, gate/√2 (Erf's input), 1 + erf and gelu(gate)
    this.keep(5 * inner * tokens);
    // Each half's gradient is padded back to the projection's width and the two are summed.
    this.transientCandidate(3 * 2 * inner * tokens, `the GEGLU projection's gradients at ${channels} channels over ${tokens} tokens`);
  }

  head(pixels: number): void {
    const { blockOutChannels, outChannels, convOutKernel } = this.arch;
    this.groupNorm(blockOutChannels[0]!, pixels, true);
    this.conv(blockOutChannels[0]!, outChannels, convOutKernel ** 2);
    // The loss's seed reads prediction − target.
    this.keep(outChannels * pixels);
  }
}

/** Walks the UNet as diffusers' UNet2DConditionModel builds it: down blocks, the mid block, up blocks with skips. */
export function estimateTrainingMemory(unet: UnetArchitecture, shape: TrainingMemoryShape): TrainingMemoryEstimate {
  const { resolution, vaeScaleFactor, batchSize, rank, elementBytes } = shape;
  for (const [name, value] of Object.entries(shape)) checkInteger(name, value, 1, Number.MAX_SAFE_INTEGER);
  if (resolution % vaeScaleFactor !== 0) fail('resolution', resolution, `must be a multiple of the VAE's ${vaeScaleFactor} pixels per latent`);
  const { blockOutChannels: channels, layersPerBlock, transformerLayersPerBlock, heads, crossAttentionDown, crossAttentionUp } = unet;
  const last = channels.length - 1;
  const tally = new StepTally(unet, rank);

  let side = resolution / vaeScaleFactor;
  tally.stem();
  const skips: { channels: number; side: number }[] = [{ channels: channels[0]!, side }];
  channels.forEach((out, i) => {
    let inChannels = i === 0 ? channels[0]! : channels[i - 1]!;
    for (let j = 0; j < layersPerBlock[i]!; j++) {
      tally.resnet(inChannels, out, side * side);
      if (crossAttentionDown[i]) tally.transformer(out, transformerLayersPerBlock[i]!, heads[i]!, side * side);
      skips.push({ channels: out, side });
      inChannels = out;
    }
    if (i < last) {
      tally.resample(out);
      // A stride-2 convolution with padding 1 rounds an odd side up.
      side = Math.ceil(side / 2);
      skips.push({ channels: out, side });
    }
  });

  const deepest = channels[last]!;
  tally.resnet(deepest, deepest, side * side);
  tally.transformer(deepest, transformerLayersPerBlock[last]!, heads[last]!, side * side);
  tally.resnet(deepest, deepest, side * side);

  let previous = deepest;
  for (let i = 0; i <= last; i++) {
    const block = last - i;
    const out = channels[block]!;
    for (let j = 0; j <= layersPerBlock[block]!; j++) {
      const skip = skips.pop()!;
      side = skip.side;
      tally.resnet((j === 0 ? previous : out) + skip.channels, out, side * side);
      if (crossAttentionUp[i]) tally.transformer(out, transformerLayersPerBlock[block]!, heads[block]!, side * side);
    }
    if (i < last) tally.resample(out);
    previous = out;
  }
  tally.head(side * side);

  const perBatch = batchSize * elementBytes;
  const weightBytes = tally.parameters * elementBytes;
  const keptActivationBytes = tally.kept * perBatch;
  const checkpointBytes = tally.held * perBatch;
  const largestSegmentBytes = tally.largestSegment * perBatch;
  const transientBytes = tally.transient.elements * perBatch;
  const loraBytes = tally.loraParameters * LORA_BYTES_PER_PARAMETER;
  const { elements, ...where } = tally.scores;
  return {
    shape: { ...shape },
    unetParameters: tally.parameters,
    weightBytes,
    keptActivationBytes,
    checkpointBytes,
    largestSegmentBytes,
    attentionProbabilityBytes: tally.probabilities * perBatch,
    largestScores: { bytes: elements * perBatch, ...where },
    transientBytes,
    transientWhat: tally.transient.what,
    loraParameters: tally.loraParameters,
    loraBytes,
    totalBytes: weightBytes + keptActivationBytes + transientBytes + loraBytes,
    checkpointedTotalBytes: weightBytes + checkpointBytes + largestSegmentBytes + transientBytes + loraBytes,
  };
}

const GIB = 2 ** 30;

export function bytesText(bytes: number): string {
  return bytes >= 1e9 ? `${(bytes / 1e9).toFixed(1)} GB` : `${(bytes / 1e6).toFixed(0)} MB`;
}

/** The estimate as the few lines `wrongbot train --dry-run` prints. */
export function formatTrainingMemory(estimate: TrainingMemoryEstimate): string[] {
  const { shape, largestScores } = estimate;
  const dtype = shape.elementBytes === 4 ? 'float32' : shape.elementBytes === 2 ? 'float16' : `${shape.elementBytes}-byte`;
  const fits = (total: number) => CARD_SIZES_GIB.map((gib) => `${gib} GB: ${total <= gib * GIB ? 'yes' : 'no'}`).join('; ');
  return [
    `memory for one training step at ${shape.resolution}×${shape.resolution}, batch ${shape.batchSize}, rank ${shape.rank}, ${dtype} UNet (an estimate from the UNet's config):`,
    `  UNet weights: ${bytesText(estimate.weightBytes)} (${(estimate.unetParameters / 1e9).toFixed(2)} G parameters)`,
    `  activations kept for the backward pass: ${bytesText(estimate.keptActivationBytes)}, of which attention probabilities ${bytesText(estimate.attentionProbabilityBytes)}`
      + ` (${bytesText(largestScores.bytes)} in each of ${largestScores.layers} layers at ${largestScores.tokens} tokens)`,
    `  largest transient of the backward pass: ${bytesText(estimate.transientBytes)} (${estimate.transientWhat})`,
    `  LoRA weights, gradients and AdamW moments: ${bytesText(estimate.loraBytes)} (${(estimate.loraParameters / 1e6).toFixed(2)} M float32 parameters)`,
    `  total: ${bytesText(estimate.totalBytes)}; fits a card of ${fits(estimate.totalBytes)} (before the room onnxruntime and the driver take)`,
    `  with --gradient-checkpointing: ${bytesText(estimate.checkpointBytes)} held from the forward pass and ${bytesText(estimate.largestSegmentBytes)} for the largest segment recomputed,`
      + ` total ${bytesText(estimate.checkpointedTotalBytes)}; fits a card of ${fits(estimate.checkpointedTotalBytes)}`,
  ];
}

export interface InferenceMemoryShape {
  width: number;
  height: number;
  vaeScaleFactor: number;
  /** UNet rows of one run: two per guided panel (unconditional and text), so a triptych is six. */
  rows: number;
  /** Bytes per element of the UNet's weights and activations. */
  elementBytes: number;
}

export interface InferenceMemoryEstimate {
  shape: InferenceMemoryShape;
  unetParameters: number;
  weightBytes: number;
  /** What one row adds at its peak: the skip connections held for the up blocks, and the largest attention's scores. */
  perRowBytes: number;
  /** The largest self-attention score tensor of one row, [heads, tokens, tokens]. */
  largestScores: { bytes: number; channels: number; heads: number; tokens: number };
  totalBytes: number;
}

/**
 * Score tensors of one attention alive at once: Q·Kᵀ, its scaled copy and the softmax that reads it, before the
 * first is freed. What the SDXL export's graph keeps; the estimate rests on it.
 */
export const ATTENTION_SCORE_COPIES = 3;

/**
 * One UNet run of `rows` rows, forward only: the weights, plus per row the skip connections every down block holds
 * until its up block, and the largest transient, an attention's scores (which at 1024² dominate all else).
 */
export function estimateInferenceMemory(unet: UnetArchitecture, shape: InferenceMemoryShape): InferenceMemoryEstimate {
  const { width, height, vaeScaleFactor, rows, elementBytes } = shape;
  for (const [name, value] of Object.entries(shape)) checkInteger(name, value, 1, Number.MAX_SAFE_INTEGER);
  for (const [name, side] of [['width', width], ['height', height]] as const) {
    if (side % vaeScaleFactor !== 0) fail(name, side, `must be a multiple of the VAE's ${vaeScaleFactor} pixels per latent`);
  }
  const { blockOutChannels: channels, layersPerBlock, heads, crossAttentionDown } = unet;
  // The parameters do not depend on the size: the training walk counts them at any valid one.
  const { unetParameters } = estimateTrainingMemory(unet, { resolution: vaeScaleFactor, vaeScaleFactor, batchSize: 1, rank: 1, elementBytes });
  let [latentWidth, latentHeight] = [width / vaeScaleFactor, height / vaeScaleFactor];
  let skipElements = channels[0]! * latentWidth * latentHeight;
  let transient = 0;
  let largest = { elements: 0, channels: 0, heads: 0, tokens: 0 };
  channels.forEach((out, i) => {
    const tokens = latentWidth * latentHeight;
    skipElements += layersPerBlock[i]! * out * tokens;
    if (crossAttentionDown[i]) {
      const scores = heads[i]! * tokens * tokens;
      if (scores > largest.elements) largest = { elements: scores, channels: out, heads: heads[i]!, tokens };
    }
    // GEGLU's projection, twice four times the channels, is the largest value outside attention.
    transient = Math.max(transient, 2 * FEED_FORWARD_MULTIPLE * out * tokens);
    if (i < channels.length - 1) {
      latentWidth = Math.ceil(latentWidth / 2);
      latentHeight = Math.ceil(latentHeight / 2);
      skipElements += out * latentWidth * latentHeight;
    }
  });
  transient = Math.max(transient, ATTENTION_SCORE_COPIES * largest.elements);
  const perRowBytes = (skipElements + transient) * elementBytes;
  const weightBytes = unetParameters * elementBytes;
  const { elements, ...where } = largest;
  return {
    shape: { ...shape },
    unetParameters,
    weightBytes,
    perRowBytes,
    largestScores: { bytes: elements * elementBytes, ...where },
    totalBytes: weightBytes + rows * perRowBytes,
  };
}

/** The most rows one UNet run may hold within `budgetBytes` at this size; 0 when not even one fits. */
export function rowsWithin(budgetBytes: number, estimate: Pick<InferenceMemoryEstimate, 'weightBytes' | 'perRowBytes'>): number {
  return Math.max(0, Math.floor((budgetBytes - estimate.weightBytes) / estimate.perRowBytes));
}
