import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { ModelLoadError } from './onnx-session.js';

// An SDXL model folder in Hugging Face optimum's ONNX layout, checked before any session is created so that a
// missing file is one clear line rather than an onnxruntime stack trace minutes into loading.

export interface SdxlModelFolder {
  root: string;
  forceZerosForEmptyPrompt: boolean;
  /** The size the UNet was trained at (1024 px for SDXL), used when a request names none. */
  defaultImageSizePx: number;
  /**
   * Every image side must be a multiple of this: the VAE factor × 2^(UNet down blocks − 1), as each down block but
   * the last halves the latent side and the up blocks must meet them again (32 px for SDXL).
   */
  sizeMultiple: number;
  vae: VaeConfig;
  paths: {
    scheduler: string;
    tokenizer: string;
    tokenizer2: string;
    textEncoder: string;
    textEncoder2: string;
    unet: string;
    vaeDecoder: string;
  };
}

export interface VaeConfig {
  /** vae_decoder/config.json, named in errors about it. */
  file: string;
  scalingFactor: number;
  scaleFactor: number;
  /**
   * diffusers runs the VAE in float32 whatever the pipeline's dtype unless the config says `force_upcast: false`,
   * which only VAEs that do not overflow in float16 (madebyollin/sdxl-vae-fp16-fix) say.
   */
  forceUpcast: boolean;
}

const SDXL_IMAGE_SIZE_PX = 1024;
const SDXL_DOWN_BLOCKS = 3;
const SUPPORTED_PIPELINES = ['StableDiffusionXLPipeline', 'ORTStableDiffusionXLPipeline'];
const SUPPORTED_REFINERS = ['StableDiffusionXLImg2ImgPipeline', 'ORTStableDiffusionXLImg2ImgPipeline'];

/** The refiner of diffusers' "ensemble of experts": its own UNet, conditioned on text_encoder_2 alone. */
export interface SdxlRefinerFolder {
  root: string;
  unet: string;
  /** A missing negative prompt is encoded as "" unless this is set (it is not, for SDXL's refiner). */
  forceZerosForEmptyPrompt: boolean;
  /** time ids end in an aesthetic score (5 ids) instead of the target size (6 ids). */
  requiresAestheticsScore: boolean;
}

function readJson(file: string): Record<string, unknown> {
  if (!existsSync(file)) throw new ModelLoadError(`model file ${file} is missing`);
  try {
    const value: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (cause) {
    throw new ModelLoadError(`model file ${file} is not valid: ${(cause as Error).message}`);
  }
}

function openPipelineIndex(root: string, supported: readonly string[], what: string) {
  const dir = path.resolve(root);
  if (!existsSync(dir)) throw new ModelLoadError(`${what} folder ${dir} does not exist`);
  const indexFile = path.join(dir, 'model_index.json');
  const index = readJson(indexFile);
  const pipelineClass = index['_class_name'];
  if (typeof pipelineClass !== 'string' || !supported.includes(pipelineClass)) {
    throw new ModelLoadError(
      `${indexFile}: _class_name ${JSON.stringify(pipelineClass)} is not an SDXL ${what} (expected ${supported.join(' or ')})`,
    );
  }
  return { dir, index };
}

export function openSdxlRefinerFolder(root: string): SdxlRefinerFolder {
  const { dir, index } = openPipelineIndex(root, SUPPORTED_REFINERS, 'refiner');
  const unet = path.join(dir, 'unet', 'model.onnx');
  if (!existsSync(unet)) throw new ModelLoadError(`model file ${unet} is missing`);
  return {
    root: dir,
    unet,
    forceZerosForEmptyPrompt: index['force_zeros_for_empty_prompt'] === true,
    requiresAestheticsScore: index['requires_aesthetics_score'] !== false,
  };
}

export function openSdxlModelFolder(root: string): SdxlModelFolder {
  const { dir, index } = openPipelineIndex(root, SUPPORTED_PIPELINES, 'model');
  const paths = {
    scheduler: path.join(dir, 'scheduler'),
    tokenizer: path.join(dir, 'tokenizer'),
    tokenizer2: path.join(dir, 'tokenizer_2'),
    textEncoder: path.join(dir, 'text_encoder', 'model.onnx'),
    textEncoder2: path.join(dir, 'text_encoder_2', 'model.onnx'),
    unet: path.join(dir, 'unet', 'model.onnx'),
    vaeDecoder: path.join(dir, 'vae_decoder', 'model.onnx'),
  };
  for (const file of Object.values(paths)) {
    if (!existsSync(file)) throw new ModelLoadError(`model file ${file} is missing`);
  }
  const vaeConfigFile = path.join(dir, 'vae_decoder', 'config.json');
  const vae = readVaeConfig(readJson(vaeConfigFile), vaeConfigFile);
  const unetConfigFile = path.join(dir, 'unet', 'config.json');
  const unetConfig = existsSync(unetConfigFile) ? readJson(unetConfigFile) : {};
  const sampleSize = unetConfig['sample_size'];
  const blocks = unetConfig['block_out_channels'];
  const downBlocks = Array.isArray(blocks) && blocks.length > 0 ? blocks.length : SDXL_DOWN_BLOCKS;
  return {
    root: dir,
    forceZerosForEmptyPrompt: index['force_zeros_for_empty_prompt'] !== false,
    defaultImageSizePx: typeof sampleSize === 'number' ? sampleSize * vae.scaleFactor : SDXL_IMAGE_SIZE_PX,
    sizeMultiple: vae.scaleFactor * 2 ** (downBlocks - 1),
    vae,
    paths,
  };
}

function readVaeConfig(config: Record<string, unknown>, file: string): VaeConfig {
  // diffusers' AutoencoderKL defaults, used when an export omits them.
  const scalingFactor = config['scaling_factor'] ?? 0.18215;
  if (typeof scalingFactor !== 'number' || !(scalingFactor > 0)) {
    throw new ModelLoadError(`${file}: scaling_factor = ${JSON.stringify(scalingFactor)} must be a positive number`);
  }
  const shiftFactor = config['shift_factor'];
  if (shiftFactor !== undefined && shiftFactor !== null && shiftFactor !== 0) {
    throw new ModelLoadError(`${file}: shift_factor = ${JSON.stringify(shiftFactor)} is not supported (SDXL VAEs have none)`);
  }
  const blocks = config['block_out_channels'] ?? [128, 256, 512, 512];
  if (!Array.isArray(blocks) || blocks.length === 0) {
    throw new ModelLoadError(`${file}: block_out_channels = ${JSON.stringify(blocks)} must be a non-empty list`);
  }
  return { file, scalingFactor, scaleFactor: 2 ** (blocks.length - 1), forceUpcast: config['force_upcast'] !== false };
}

/**
 * An ONNX graph cannot be upcast as diffusers upcasts the VAE, so a float16 decoder must be one that does not
 * overflow: refused here, at load, rather than after a whole denoise ends in NaN.
 */
export function checkVaeDecoderPrecision(vae: VaeConfig, decoderFile: string, dtypes: readonly string[]): void {
  if (!dtypes.includes('float16') || !vae.forceUpcast) return;
  throw new ModelLoadError(
    `${decoderFile} computes in float16 and ${vae.file} lacks "force_upcast": false: the stock SDXL VAE overflows in `
    + 'float16 (NaN, black images). Use an fp32 VAE, or madebyollin/sdxl-vae-fp16-fix with "force_upcast": false in its config.json',
  );
}

/** What training needs beyond generation: the VAE encoder. */
export interface SdxlTrainingFiles {
  vaeEncoder: string;
}

export function openSdxlTrainingFiles(folder: SdxlModelFolder): SdxlTrainingFiles {
  const vaeEncoder = path.join(folder.root, 'vae_encoder', 'model.onnx');
  if (!existsSync(vaeEncoder)) {
    throw new ModelLoadError(`model folder ${folder.root} has no vae_encoder/model.onnx: training encodes its images with it (optimum exports it with the rest of the pipeline)`);
  }
  return { vaeEncoder };
}
