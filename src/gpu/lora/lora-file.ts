import { SafetensorsFile, type SafetensorsEntry } from './safetensors.js';
import type { LoadedLora, LoraModule, LoraTarget, SkippedLoraKey } from './lora-types.js';

// Users bring LoRAs from every trainer of the last few years, and each names the same UNet projection differently.
// Each key is matched against names built from the graph's own targets instead of being parsed back into a module
// path: kohya's underscore names cannot be undone by rule (`to_out_0` is `to_out.0`, `attn1` is not `attn.1`).

export class LoraFileError extends Error {
  override name = 'LoraFileError';
}

export interface LoadLoraOptions {
  /**
   * The UNet's layers_per_block (2 for SDXL). Kohya's SGM block names count layers_per_block + 1 blocks per
   * resolution level, so this is what turns `input_blocks_4_1_…` into `down_blocks.1.attentions.0.…`.
   */
  layersPerBlock?: number;
}

type Role = 'down' | 'up' | 'alpha' | 'magnitude';

/** How a group of keys names its module: dotted keys name a diffusers path, kohya keys an underscore form. */
type ModuleName = { dotted: string } | { underscored: string };

interface ParsedKey {
  /** The key without its role suffix: the keys of one LoRA layer share it. */
  stem: string;
  module: ModuleName;
  role: Role;
}

interface KeyGroup {
  module: ModuleName;
  keys: Map<Role, string>;
}

const TEXT_ENCODER_KEY = /^(?:lora_te\d?_|text_encoder(?:_2)?\.|te\d?_)/;
const KOHYA_KEY = /^lora_unet_(.+)\.(lora_down\.weight|lora_up\.weight|alpha|dora_scale)$/;
const DOTTED_PREFIX = /^(?:unet\.)?(?:base_model\.model\.)?/;
/** The 2023 attention-processor form, e.g. `….attn1.processor.to_out_lora.up.weight`. */
const PROCESSOR_KEY = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;
const DOTTED_KEY = /^(.+)\.(lora\.down\.weight|lora\.up\.weight|lora_A\.weight|lora_B\.weight|alpha|lora_magnitude_vector(?:\.weight)?)$/;

const ROLE_OF_SUFFIX: ReadonlyMap<string, Role> = new Map([
  ['lora_down.weight', 'down'], ['lora.down.weight', 'down'], ['lora_A.weight', 'down'], ['down', 'down'],
  ['lora_up.weight', 'up'], ['lora.up.weight', 'up'], ['lora_B.weight', 'up'], ['up', 'up'],
  ['alpha', 'alpha'],
  ['dora_scale', 'magnitude'], ['lora_magnitude_vector', 'magnitude'], ['lora_magnitude_vector.weight', 'magnitude'],
]);

const CONVOLUTION_REASON = 'convolution LoRA (LoCon) is not supported: only linear projections are patched';

/** Where diffusers saves a PEFT adapter's config (lora_alpha, alpha_pattern) when it trains with alpha ≠ rank. */
const ADAPTER_METADATA_KEY = 'lora_adapter_metadata';

interface AdapterAlphas {
  /** lora_alpha of the UNet adapter; undefined when the file says nothing (alpha = rank then). */
  defaultAlpha: number | undefined;
  /** PEFT's alpha_pattern: module-name suffix → alpha, which wins over lora_alpha. */
  patterns: ReadonlyMap<string, number>;
}

/**
 * PEFT files carry no `.alpha` tensors; diffusers stores the adapter config as JSON in the metadata instead, its
 * keys prefixed `unet.` when saved from a pipeline. A malformed entry is an error: guessing alpha changes the image.
 */
function adapterAlphas(metadata: Readonly<Record<string, string>>, path: string): AdapterAlphas {
  const text = metadata[ADAPTER_METADATA_KEY];
  if (text === undefined) return { defaultAlpha: undefined, patterns: new Map() };
  let config: Record<string, unknown>;
  try {
    config = JSON.parse(text) as Record<string, unknown>;
    if (typeof config !== 'object' || config === null) throw new Error('not a JSON object');
  } catch (cause) {
    throw new LoraFileError(`${path}: metadata ${ADAPTER_METADATA_KEY} is not valid JSON: ${(cause as Error).message}`);
  }
  const value = (name: string): unknown => config[`unet.${name}`] ?? config[name];
  const alpha = value('lora_alpha');
  if (alpha !== undefined && (typeof alpha !== 'number' || !Number.isFinite(alpha))) {
    throw new LoraFileError(`${path}: metadata ${ADAPTER_METADATA_KEY} has lora_alpha ${JSON.stringify(alpha)}`);
  }
  const patterns = new Map<string, number>();
  const pattern = value('alpha_pattern') ?? {};
  for (const [suffix, patternAlpha] of Object.entries(pattern as Record<string, unknown>)) {
    if (typeof patternAlpha !== 'number' || !Number.isFinite(patternAlpha)) {
      throw new LoraFileError(`${path}: metadata ${ADAPTER_METADATA_KEY} has alpha_pattern ${suffix} = ${JSON.stringify(patternAlpha)}`);
    }
    patterns.set(suffix, patternAlpha);
  }
  return { defaultAlpha: alpha, patterns };
}

function alphaFromMetadata(alphas: AdapterAlphas, module: string): number | undefined {
  for (const [suffix, alpha] of alphas.patterns) {
    if (module === suffix || module.endsWith(`.${suffix}`)) return alpha;
  }
  return alphas.defaultAlpha;
}

/**
 * Reads a LoRA safetensors file and returns ΔW = scale · up · down for each of `targets` it covers. Keys that cannot
 * be applied are listed in `skipped` with the reason; a file that fits no target at all is a LoraFileError.
 */
export async function loadLora(
  path: string,
  targets: readonly LoraTarget[],
  options: LoadLoraOptions = {},
): Promise<LoadedLora> {
  const blocksPerLevel = (options.layersPerBlock ?? 2) + 1;
  const byDotted = new Map<string, LoraTarget>();
  const byUnderscored = new Map<string, LoraTarget>();
  for (const target of targets) {
    byDotted.set(target.module, target);
    byUnderscored.set(underscored(target.module), target);
    const sgm = sgmModulePath(target.module, blocksPerLevel);
    if (sgm !== undefined) byUnderscored.set(underscored(sgm), target);
  }
  const targetOf = (name: ModuleName): LoraTarget | undefined =>
    'dotted' in name ? byDotted.get(name.dotted) : byUnderscored.get(name.underscored);

  const file = await SafetensorsFile.open(path);
  try {
    const metadataAlphas = adapterAlphas(file.metadata, path);
    const skipped: SkippedLoraKey[] = [];
    const groups = new Map<string, KeyGroup>();
    for (const key of file.entries.keys()) {
      const parsed = parseKey(key);
      if (typeof parsed === 'string') {
        skipped.push({ key, reason: parsed });
        continue;
      }
      const group = groups.get(parsed.stem) ?? { module: parsed.module, keys: new Map() };
      groups.set(parsed.stem, group);
      const taken = group.keys.get(parsed.role);
      if (taken !== undefined) skipped.push({ key, reason: `repeats ${taken} for the same layer` });
      else group.keys.set(parsed.role, key);
    }

    const modules: LoraModule[] = [];
    const loadedFrom = new Map<string, string>();
    for (const group of groups.values()) {
      const skipGroup = (reason: string): void => {
        for (const key of group.keys.values()) skipped.push({ key, reason });
      };
      const target = targetOf(group.module);
      if (target === undefined) {
        const name = 'dotted' in group.module ? group.module.dotted : group.module.underscored;
        const shapes = [...group.keys.values()].map((key) => file.entries.get(key)!.shape);
        skipGroup(/conv/.test(name) || shapes.some((shape) => shape.length === 4)
          ? CONVOLUTION_REASON
          : `the UNet graph has no LoRA-patchable projection ${name}`);
        continue;
      }
      const earlier = loadedFrom.get(target.module);
      if (earlier !== undefined) {
        skipGroup(`module ${target.module} is already loaded from ${earlier}`);
        continue;
      }
      if (group.keys.has('magnitude')) {
        skipGroup(`DoRA (magnitude vector) is not supported; applying its low-rank part alone would be wrong`);
        continue;
      }
      const downKey = group.keys.get('down');
      const upKey = group.keys.get('up');
      if (downKey === undefined || upKey === undefined) {
        skipGroup(`module ${target.module} has no ${downKey === undefined ? 'down' : 'up'} weight to pair with`);
        continue;
      }
      const down = file.entries.get(downKey)!;
      const up = file.entries.get(upKey)!;
      const misfit = shapeProblem(down, up, target);
      if (misfit !== undefined) {
        skipGroup(misfit);
        continue;
      }
      const rank = down.shape[0]!;
      const alphaKey = group.keys.get('alpha');
      const alpha = alphaKey === undefined
        ? alphaFromMetadata(metadataAlphas, target.module) ?? rank
        : await file.readScalar(alphaKey);
      if (!Number.isFinite(alpha)) {
        skipGroup(`alpha is ${alpha}`);
        continue;
      }
      modules.push({
        module: target.module,
        rank,
        inFeatures: target.inFeatures,
        outFeatures: target.outFeatures,
        down: await file.readFloat32(downKey),
        up: await file.readFloat32(upKey),
        scale: alpha / rank,
      });
      loadedFrom.set(target.module, downKey);
    }

    if (modules.length === 0) {
      const examples = skipped.slice(0, 3).map(({ key, reason }) => `${JSON.stringify(key)} (${reason})`);
      throw new LoraFileError(
        `${path}: none of its ${file.entries.size} tensors is a LoRA weight for a projection of this UNet`
        + (examples.length > 0 ? `; e.g. ${examples.join('; ')}` : ''),
      );
    }
    return { path, modules, skipped };
  } finally {
    await file.close();
  }
}

/** Splits a key into its layer and its role, or says why it is not a UNet LoRA key. */
function parseKey(key: string): ParsedKey | string {
  if (TEXT_ENCODER_KEY.test(key)) return 'text-encoder LoRA is not supported: only the UNet is patched';
  const kohya = KOHYA_KEY.exec(key);
  if (kohya !== null) {
    return { stem: `lora_unet_${kohya[1]!}`, module: { underscored: kohya[1]! }, role: ROLE_OF_SUFFIX.get(kohya[2]!)! };
  }
  const dotted = key.replace(DOTTED_PREFIX, '');
  const processor = PROCESSOR_KEY.exec(dotted);
  if (processor !== null) {
    const projection = processor[2] === 'to_out' ? 'to_out.0' : processor[2]!;
    const module = `${processor[1]!}.${projection}`;
    return { stem: `${module}#processor`, module: { dotted: module }, role: ROLE_OF_SUFFIX.get(processor[3]!)! };
  }
  const plain = DOTTED_KEY.exec(dotted);
  if (plain !== null) return { stem: plain[1]!, module: { dotted: plain[1]! }, role: ROLE_OF_SUFFIX.get(plain[2]!)! };
  return 'not a LoRA down/up/alpha key in any known format (diffusers, PEFT, kohya)';
}

/** Why a down/up pair cannot patch `target`, or undefined when it fits: down must be [rank, in] and up [out, rank]. */
function shapeProblem(down: SafetensorsEntry, up: SafetensorsEntry, target: LoraTarget): string | undefined {
  if (down.shape.length === 4 || up.shape.length === 4) return CONVOLUTION_REASON;
  const [rank, inFeatures] = down.shape;
  const fits = down.shape.length === 2 && up.shape.length === 2 && rank! > 0
    && inFeatures === target.inFeatures && up.shape[0] === target.outFeatures && up.shape[1] === rank;
  if (fits) return undefined;
  return `down ${JSON.stringify(down.shape)} and up ${JSON.stringify(up.shape)} do not fit ${target.module} `
    + `(expected down [rank, ${target.inFeatures}] and up [${target.outFeatures}, rank])`;
}

function underscored(module: string): string {
  return module.replaceAll('.', '_');
}

/**
 * The same module in Stability's SGM layout, which kohya's SDXL trainer names its keys after: input_blocks.0 is
 * conv_in, then each down level has layers_per_block (resnet, attention) blocks and a downsampler; each up level has
 * layers_per_block + 1 blocks. Only attention modules get an alias: they are the linear projections LoRA targets.
 */
function sgmModulePath(module: string, blocksPerLevel: number): string | undefined {
  const down = /^down_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$/.exec(module);
  if (down !== null) return `input_blocks.${1 + Number(down[1]) * blocksPerLevel + Number(down[2])}.1.${down[3]!}`;
  const mid = /^mid_block\.attentions\.0\.(.+)$/.exec(module);
  if (mid !== null) return `middle_block.1.${mid[1]!}`;
  const up = /^up_blocks\.(\d+)\.attentions\.(\d+)\.(.+)$/.exec(module);
  if (up !== null) return `output_blocks.${Number(up[1]) * blocksPerLevel + Number(up[2])}.1.${up[3]!}`;
  return undefined;
}
