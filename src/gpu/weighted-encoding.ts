import type { ClipTokenizer } from './tokenizer.js';
import { parseWeightedPrompt, type PromptFragment, type WeightingSyntax } from './prompt-weighting.js';

// Turns a weighted prompt into the conditioning the UNet sees, the way the library behind each syntax does it:
// compel (`embeddings_provider.py`) and AUTOMATIC1111 (`sd_hijack_clip.py` with the default "Original" emphasis).
// Both compute in float32, so intermediates are rounded to float32 where torch rounds them (means are summed in
// double: torch's reduction order is not reproducible bit for bit anyway).

export interface TextEncoderPass {
  tokenizer: ClipTokenizer;
  /** Runs one text encoder on maxLength ids: the conditioning hidden states (maxLength × width, row-major) and its pooled output, if it has one. */
  encode(inputIds: number[]): Promise<{ hidden: Float32Array; pooled: Float32Array | null }>;
}

export interface WeightedEncoding {
  hidden: Float32Array[] /* one per pass */;
  pooled: Float32Array;
  droppedText: string | null;
  syntax: 'compel' | 'a1111' | 'none';
}

// compel floors a downweight here so that weight 0 gives a huge but finite lerp weight (tan(π/2) is not).
const COMPEL_MIN_DOWNWEIGHT = 1e-5;

/**
 * Encodes `prompt` with each pass (SDXL: text_encoder, then text_encoder_2), weighting each pass on its own as
 * compel and A1111 do. Prompts longer than the window are cut as diffusers cuts them; `droppedText` is the cut
 * part, read through the first pass's tokenizer. The pooled output comes from the first pass that has one.
 *
 * compel downweights (w < 1) by blending towards the prompt encoded without that fragment. compel's default
 * (`DownweightMode.MASK`) hides the fragment with the attention mask, but ONNX exports of the CLIP encoders take
 * `input_ids` only, so this uses compel's other mode, `DownweightMode.REMOVE`: the fragment's tokens are taken out
 * of the sequence.
 */
export async function encodeWeightedPrompt(
  prompt: string,
  syntax: WeightingSyntax,
  passes: readonly TextEncoderPass[],
): Promise<WeightedEncoding> {
  if (passes.length === 0) throw new Error('encodeWeightedPrompt needs at least one text encoder pass');
  const parsed = parseWeightedPrompt(prompt, syntax);
  const runners = passes.map((pass, index) => new PassRunner(pass, index));
  const first = runners[0];

  // Passes run one after another: onnxruntime runs on the calling thread anyway, and order keeps runs reproducible.
  const outputs: EncoderOutput[] = [];
  if (parsed.syntax === 'none') {
    for (const runner of runners) outputs.push(await runner.run(runner.tokenizer.encodeForModel(prompt).inputIds));
    return {
      hidden: outputs.map((output) => output.hidden),
      pooled: firstPooled(outputs),
      droppedText: droppedText(first, first.tokenizer.encodeForModel(prompt).droppedIds),
      syntax: 'none',
    };
  }

  const { fragments } = parsed;
  const dropped = droppedText(first, fragments.flatMap((fragment) => first.body(fragment.text)).slice(first.room));
  const encode = parsed.syntax === 'a1111' ? encodeA1111 : encodeCompel;
  for (const runner of runners) outputs.push(await encode(runner, fragments));
  const hidden = outputs.map((output) => output.hidden);
  if (parsed.syntax === 'a1111') return { hidden, pooled: firstPooled(outputs), droppedText: dropped, syntax: 'a1111' };

  // compel pools the raw prompt string, weighting syntax and all, unweighted (damian0815/compel#96). Its ids end in
  // an extra eos after the padding, which cannot reach the pooled output: that is read at the first eos, and
  // attention is causal.
  const pooledRunner = runners.find((_, index) => outputs[index].pooled !== null);
  if (!pooledRunner) throw noPooledOutput();
  const raw = await pooledRunner.run(pooledRunner.tokenizer.encodeForModel(prompt).inputIds);
  return { hidden, pooled: firstPooled([raw]), droppedText: dropped, syntax: 'compel' };
}

interface EncoderOutput {
  hidden: Float32Array;
  pooled: Float32Array | null;
}

/** One pass with its token layout, and its encoder runs remembered: weighting re-encodes sequences it has seen. */
class PassRunner {
  readonly tokenizer: ClipTokenizer;
  readonly room: number;
  private readonly bos: number;
  private readonly eos: number;
  private readonly runs = new Map<string, Promise<EncoderOutput>>();
  private width: number | undefined;

  constructor(
    private readonly pass: TextEncoderPass,
    readonly index: number,
  ) {
    this.tokenizer = pass.tokenizer;
    this.room = pass.tokenizer.maxLength - 2;
    [this.bos, this.eos] = pass.tokenizer.encode('');
  }

  /** Token ids of `text` without bos/eos, untruncated. */
  body(text: string): number[] {
    return this.tokenizer.encode(text).slice(1, -1);
  }

  /** bos, the body cut to the window, eos, then padding; bos, eos and padding have weight 1 (compel and A1111 alike). */
  window(body: readonly number[], weights: readonly number[]): { ids: number[]; weights: number[] } {
    const ids = [this.bos, ...body.slice(0, this.room), this.eos];
    const tokenWeights = [1, ...weights.slice(0, this.room), 1];
    while (ids.length < this.tokenizer.maxLength) {
      ids.push(this.tokenizer.padId);
      tokenWeights.push(1);
    }
    return { ids, weights: tokenWeights };
  }

  run(ids: number[]): Promise<EncoderOutput> {
    const key = ids.join(',');
    let output = this.runs.get(key);
    if (!output) {
      output = this.pass.encode(ids).then((result) => this.checked(result));
      this.runs.set(key, output);
    }
    return output;
  }

  widthOf(hidden: Float32Array): number {
    return hidden.length / this.tokenizer.maxLength;
  }

  private checked(output: EncoderOutput): EncoderOutput {
    const width = this.widthOf(output.hidden);
    if (!Number.isInteger(width) || width < 1 || (this.width !== undefined && width !== this.width)) {
      throw new Error(
        `Text encoder pass ${this.index} returned ${output.hidden.length} hidden values; expected ` +
          `${this.tokenizer.maxLength} tokens × ${this.width ?? 'a fixed width'}`,
      );
    }
    this.width = width;
    return output;
  }
}

async function encodeA1111(runner: PassRunner, fragments: readonly PromptFragment[]): Promise<EncoderOutput> {
  const body: number[] = [];
  const weights: number[] = [];
  for (const fragment of fragments) {
    const ids = runner.body(fragment.text);
    body.push(...ids);
    for (let i = 0; i < ids.length; i++) weights.push(fragment.weight);
  }
  const window = runner.window(body, weights);
  const { hidden, pooled } = await runner.run(window.ids);
  return { hidden: restoreMeanEmphasis(runner, hidden, window.weights), pooled };
}

/** A1111's "Original" emphasis: scale each token's row by its weight, then rescale so the overall mean is unchanged. */
function restoreMeanEmphasis(runner: PassRunner, hidden: Float32Array, weights: readonly number[]): Float32Array {
  // All-1 weights are the identity; returning early also spares a 0/0 when the mean happens to be exactly 0.
  if (weights.every((weight) => weight === 1)) return hidden;
  const width = runner.widthOf(hidden);
  const scaled = new Float32Array(hidden.length);
  for (let token = 0; token < weights.length; token++) {
    const weight = Math.fround(weights[token]);
    for (let i = token * width; i < (token + 1) * width; i++) scaled[i] = hidden[i] * weight;
  }
  const originalMean = mean(hidden);
  const weightedMean = mean(scaled);
  const ratio = Math.fround(originalMean / weightedMean);
  if (!Number.isFinite(ratio)) {
    throw new Error(
      `Prompt weights make the mean of text encoder pass ${runner.index}'s hidden states ${weightedMean}, ` +
        `so A1111 emphasis cannot restore the original mean ${originalMean}`,
    );
  }
  for (let i = 0; i < scaled.length; i++) scaled[i] *= ratio;
  return scaled;
}

function mean(values: Float32Array): number {
  let sum = 0;
  for (const value of values) sum += value;
  return Math.fround(sum / values.length);
}

async function encodeCompel(runner: PassRunner, fragments: readonly PromptFragment[]): Promise<EncoderOutput> {
  const fragmentIds = fragments.map((fragment) => runner.body(fragment.text));
  const empty = await runner.run(runner.window([], []).ids);

  const weightedWith = async (included: readonly number[]): Promise<EncoderOutput> => {
    const body = included.flatMap((i) => fragmentIds[i]);
    const weights = included.flatMap((i) => fragmentIds[i].map(() => fragments[i].weight));
    const window = runner.window(body, weights);
    const { hidden, pooled } = await runner.run(window.ids);
    return { hidden: scaleFromEmpty(runner, hidden, empty.hidden, window.weights), pooled };
  };

  const all = fragments.map((_, index) => index);
  const base = await weightedWith(all);
  const blend = [{ hidden: base.hidden, weight: 1 }];
  for (let i = 0; i < reachableFragmentCount(fragmentIds, runner.tokenizer.maxLength); i++) {
    const weight = fragments[i].weight;
    if (weight >= 1) continue;
    const without = await weightedWith(all.filter((index) => index !== i));
    // tan maps weight 1 → 0 (no pull), 0.5 → 1 (halfway), towards 0 → ∞ (the prompt without the fragment).
    const lerp = Math.tan(((1 - Math.max(COMPEL_MIN_DOWNWEIGHT, weight)) * Math.PI) / 2);
    blend.push({ hidden: without.hidden, weight: lerp });
  }
  return { hidden: normalizedBlend(blend), pooled: base.pooled };
}

/** compel's per-token weighting: `z_empty + (z − z_empty) · w`, w applied to every token, above or below 1. */
function scaleFromEmpty(runner: PassRunner, hidden: Float32Array, empty: Float32Array, weights: readonly number[]): Float32Array {
  const width = runner.widthOf(hidden);
  const out = new Float32Array(hidden.length);
  for (let token = 0; token < weights.length; token++) {
    const weight = Math.fround(weights[token]);
    for (let i = token * width; i < (token + 1) * width; i++) {
      out[i] = empty[i] + Math.fround(Math.fround(hidden[i] - empty[i]) * weight);
    }
  }
  return out;
}

/**
 * How many leading fragments compel considers for downweighting. Its fragment-to-token matching stops at the first
 * fragment with tokens that starts at or after the window's last position (where eos sits once the body is
 * full), so a downweighted fragment that was cut off entirely is left alone.
 */
function reachableFragmentCount(fragmentIds: readonly number[][], maxLength: number): number {
  let position = 1;
  for (let i = 0; i < fragmentIds.length; i++) {
    if (fragmentIds[i].length === 0) continue;
    if (position >= maxLength - 1) return i;
    position += fragmentIds[i].length;
  }
  return fragmentIds.length;
}

/** compel's apply_embedding_weights with normalize=True: a weighted mean, in float32. */
function normalizedBlend(blend: readonly { hidden: Float32Array; weight: number }[]): Float32Array {
  let total = 0;
  for (const { weight } of blend) total = Math.fround(total + Math.fround(weight));
  const out = Float32Array.from(blend[0].hidden, (value) => value * Math.fround(Math.fround(blend[0].weight) / total));
  for (const { hidden, weight } of blend.slice(1)) {
    const share = Math.fround(Math.fround(weight) / total);
    for (let i = 0; i < out.length; i++) out[i] += Math.fround(hidden[i] * share);
  }
  return out;
}

function firstPooled(outputs: readonly EncoderOutput[]): Float32Array {
  const pooled = outputs.find((output) => output.pooled !== null)?.pooled;
  if (!pooled) throw noPooledOutput();
  return pooled;
}

function noPooledOutput(): Error {
  return new Error('No text encoder pass returned a pooled output (SDXL takes it from text_encoder_2\'s text_embeds)');
}

function droppedText(runner: PassRunner, droppedIds: readonly number[]): string | null {
  return droppedIds.length === 0 ? null : runner.tokenizer.decode(droppedIds);
}
