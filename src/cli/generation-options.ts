import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import { ImageGenerator } from '../gpu/image-generator.js';
import { openSdxlModelFolder, openSdxlRefinerFolder } from '../gpu/model-folder.js';
import type { Device } from '../gpu/providers.js';
import type { WeightingSyntax } from '../common/generation-limits.js';
import { DEFAULT_DENOISING_END, DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, WEIGHTING_SYNTAXES } from '../common/generation-limits.js';
import { InvalidRequestError } from '../common/validation.js';
import { validateGenerationRequest, type GenerationRequest, type PanelSettings } from '../gpu/request.js';
import type { PipelineOptions } from '../gpu/sdxl-pipeline.js';
import type { EncodedResult } from '../gpu/thread-protocol.js';
import { deviceOption } from './device-option.js';
import { resolveLora, resolveModel, type ResolvedLora } from '../models/resolve.js';
import { modelOption, REPO_ALTERNATIVE } from './model-option.js';
import { integerOption, numberOption, parseOptions, UsageError, type OptionSpec, type OptionValues } from './options.js';

// The options `generate` and `compare` share, turned into a validated request and a loaded pipeline, so that both
// commands reject bad input the same way before a model loads.

export const DEFAULT_LORA_STRENGTH = 1;

export const GENERATION_OPTIONS = {
  model: { type: 'string', value: 'DIR', description: `SDXL model folder in optimum's ONNX layout, ${REPO_ALTERNATIVE} (default: MODEL_DIR)` },
  prompt: { type: 'string', value: 'TEXT', description: 'what to draw (required)' },
  seed: { type: 'string', value: 'N', description: 'the noise seed, as in diffusers (default: a random one, printed)' },
  steps: { type: 'string', value: 'N', description: `denoising steps (default ${DEFAULT_STEPS})` },
  guidance: { type: 'string', value: 'G', description: `classifier-free guidance scale; above 1 turns it on (default ${DEFAULT_GUIDANCE_SCALE})` },
  'guidance-rescale': { type: 'string', value: 'R', description: 'guidance rescale, against over-exposure at high guidance (default 0: off)' },
  width: { type: 'string', value: 'W', description: "image width in pixels, a multiple of 8 (default: the model's native size)" },
  height: { type: 'string', value: 'H', description: "image height in pixels, a multiple of 8 (default: the model's native size)" },
  weighting: { type: 'string', value: WEIGHTING_SYNTAXES.join('|'), description: 'prompt weighting syntax (default auto: recognised in the prompt)' },
  lora: { type: 'string', value: 'FILE', description: `a LoRA (.safetensors) applied to the UNet, ${REPO_ALTERNATIVE}` },
  strength: { type: 'string', value: 'S', description: `the LoRA's strength (default ${DEFAULT_LORA_STRENGTH}; needs --lora)` },
  refiner: { type: 'string', value: 'DIR', description: `SDXL refiner folder, ${REPO_ALTERNATIVE}: it runs the schedule's last timesteps` },
  'denoising-end': { type: 'string', value: 'H', description: `share of the schedule the base runs before the refiner (default ${DEFAULT_DENOISING_END}; needs --refiner)` },
  provider: { type: 'string', value: 'cpu|cuda[:N]|webgpu', description: 'where inference runs (default: WORKER_DEVICE, else cpu)' },
  out: { type: 'string', value: 'FILE.png', description: 'where the image is written (required)' },
} as const satisfies OptionSpec;

export const GENERATION_USAGE = '[--seed N] [--steps N] [--guidance G] [--guidance-rescale R] [--width W] [--height H] '
  + '[--weighting auto|compel|a1111|none] [--refiner DIR [--denoising-end H]] [--provider cpu|cuda[:N]|webgpu]';

const FLAG_BY_FIELD: Readonly<Record<string, string>> = {
  seed: '--seed', steps: '--steps', width: '--width', height: '--height', prompt: '--prompt',
  negativePrompt: '--negative', guidanceScale: '--guidance', guidanceRescale: '--guidance-rescale',
  weighting: '--weighting', denoisingEnd: '--denoising-end', loraStrength: '--strength',
};

/** Seeds users pick by hand fit in 32 bits, and torch only uses the low 32 bits of larger ones anyway. */
function randomSeed(): number {
  return randomInt(0, 2 ** 32);
}

export interface GenerationJob {
  modelDir: string;
  /** The LoRA and its version (a file's name, or a repo's), or null. */
  lora: ResolvedLora | null;
  device: Device;
  pipeline: PipelineOptions;
  request: GenerationRequest;
  out: string;
  loraStrength: number;
  guidanceScale: number;
  guidanceRescale: number;
}

type ParsedValues<Options extends OptionSpec> = OptionValues<typeof GENERATION_OPTIONS> & OptionValues<Options>;

/**
 * Parses a command's options (the shared ones plus its own); `panels` turns the shared per-panel settings into the
 * command's panels. The request is validated here, with the model's real constraints, before anything loads.
 */
export function parseGenerationJob<Options extends typeof GENERATION_OPTIONS>(
  argv: string[],
  options: Options,
  panels: (values: ParsedValues<Options>, shared: Pick<GenerationJob, 'guidanceScale' | 'guidanceRescale' | 'loraStrength'>) => PanelSettings[],
): { job: GenerationJob; values: ParsedValues<Options> } {
  const values: ParsedValues<Options> = parseOptions(argv, options);
  const modelDir = modelOption(values.model).path;
  const out = values.out;
  if (out === undefined || out === '') throw new UsageError('--out is required');
  if (values.prompt === undefined) throw new UsageError('--prompt is required');
  if (values.strength !== undefined && values.lora === undefined) throw new UsageError('--strength needs --lora FILE');
  if (values['denoising-end'] !== undefined && values.refiner === undefined) throw new UsageError('--denoising-end needs --refiner DIR');
  const device = deviceOption(values.provider);
  const folder = openSdxlModelFolder(modelDir);
  const lora = values.lora === undefined ? null : resolveLora(values.lora, '--lora');
  if (lora !== null && !existsSync(lora.path)) throw new UsageError(`--lora ${values.lora} does not exist`);
  const refinerDir = values.refiner === undefined ? null : resolveModel(values.refiner, '--refiner').path;
  if (refinerDir !== null) openSdxlRefinerFolder(refinerDir);
  const shared = {
    guidanceScale: numberOption('guidance', values.guidance, DEFAULT_GUIDANCE_SCALE),
    guidanceRescale: numberOption('guidance-rescale', values['guidance-rescale'], 0),
    loraStrength: values.lora === undefined ? 0 : numberOption('strength', values.strength, DEFAULT_LORA_STRENGTH),
  };
  const request: GenerationRequest = {
    seed: values.seed === undefined ? randomSeed() : integerOption('seed', values.seed),
    steps: integerOption('steps', values.steps, DEFAULT_STEPS),
    width: integerOption('width', values.width, folder.defaultImageSizePx),
    height: integerOption('height', values.height, folder.defaultImageSizePx),
    weighting: (values.weighting ?? 'auto') as WeightingSyntax,
    denoisingEnd: values.refiner === undefined ? null : numberOption('denoising-end', values['denoising-end'], DEFAULT_DENOISING_END),
    panels: panels(values, shared),
  };
  try {
    validateGenerationRequest(request, {
      multipleOf: folder.sizeMultiple,
      defaultSizePx: folder.defaultImageSizePx,
      loraSlots: values.lora === undefined ? 0 : 1,
      fedLoraSlots: values.lora === undefined ? [] : [true],
      hasRefiner: values.refiner !== undefined,
    });
  } catch (error) {
    if (error instanceof InvalidRequestError) {
      const field = error.field.replace(/^panels\[\d+\]\./, '');
      throw new UsageError(`${FLAG_BY_FIELD[field] ?? error.field} ${error.shownValue} ${error.rule}`);
    }
    throw error;
  }
  return {
    values,
    job: {
      modelDir, lora, device, out, request, ...shared,
      pipeline: { loraPath: lora?.path ?? null, refinerDir },
    },
  };
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** Loads the pipeline in its thread, runs the job with a progress line on terminals, prints notes and timings. */
export async function runGenerationJob(job: GenerationJob): Promise<EncodedResult> {
  console.log(`seed ${job.request.seed}`);
  const loadStarted = performance.now();
  const generator = await ImageGenerator.start(job.modelDir, job.device, job.pipeline);
  const loadMs = performance.now() - loadStarted;
  for (const notice of generator.loaded.notices) console.error(`note: ${notice}`);
  try {
    // A progress line that rewrites itself only makes sense on a terminal; logs get the summary alone.
    const showProgress = process.stderr.isTTY;
    const result = await generator.generate(job.request, {
      onProgress: ({ step, totalSteps, etaMs }) => {
        if (showProgress) process.stderr.write(`\rstep ${step}/${totalSteps}, ${(etaMs / 1000).toFixed(1)} s left `);
      },
    });
    if (showProgress) process.stderr.write('\n');
    for (const notice of result.notices) console.error(`note: ${notice}`);
    const { timings } = result;
    console.log(
      `timings: load ${seconds(loadMs)}, generate ${seconds(timings.totalMs)} `
      + `(text ${seconds(timings.textEncodingMs)}, denoise ${seconds(timings.denoisingMs)}, decode ${seconds(timings.decodingMs)}; `
      + `onnxruntime ${seconds(timings.onnxMs)} in ${timings.onnxRuns} runs)`,
    );
    return result;
  } finally {
    await generator.close();
  }
}

export async function writeOutput(file: string, data: Uint8Array): Promise<void> {
  await mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await writeFile(file, data);
}
