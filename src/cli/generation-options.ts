import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import { ImageGenerator } from '../gpu/image-generator.js';
import { openSdxlModelFolder, openSdxlRefinerFolder } from '../gpu/model-folder.js';
import type { Device } from '../gpu/providers.js';
import type { WeightingSyntax } from '../common/generation-limits.js';
import { DEFAULT_DENOISING_END, DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS } from '../common/generation-limits.js';
import { InvalidRequestError } from '../common/validation.js';
import { validateGenerationRequest, type GenerationRequest, type PanelSettings } from '../gpu/request.js';
import type { PipelineOptions } from '../gpu/sdxl-pipeline.js';
import type { EncodedResult } from '../gpu/thread-protocol.js';
import { deviceOption } from './device-option.js';
import { integerOption, numberOption, optionOrEnvironment, parseOptions, UsageError, type OptionSpec, type OptionValues } from './options.js';

// The options `generate` and `compare` share, turned into a validated request and a loaded pipeline, so that both
// commands reject bad input the same way before a model loads.

export const GENERATION_OPTIONS = {
  model: { type: 'string' },
  prompt: { type: 'string' },
  seed: { type: 'string' },
  steps: { type: 'string' },
  guidance: { type: 'string' },
  'guidance-rescale': { type: 'string' },
  width: { type: 'string' },
  height: { type: 'string' },
  weighting: { type: 'string' },
  lora: { type: 'string' },
  strength: { type: 'string' },
  refiner: { type: 'string' },
  'denoising-end': { type: 'string' },
  provider: { type: 'string' },
  out: { type: 'string' },
} as const satisfies OptionSpec;

export const GENERATION_USAGE = '[--seed N] [--steps N] [--guidance G] [--guidance-rescale R] [--width W] [--height H] '
  + '[--weighting auto|compel|a1111|none] [--refiner DIR [--denoising-end H]] [--provider cpu|cuda[:N]|webgpu]';

const FLAG_BY_FIELD: Readonly<Record<string, string>> = {
  seed: '--seed', steps: '--steps', width: '--width', height: '--height', prompt: '--prompt',
  negativePrompt: '--negative', guidanceScale: '--guidance', guidanceRescale: '--guidance-rescale',
  weighting: '--weighting', denoisingEnd: '--denoising-end', loraStrength: '--strength',
};

export const DEFAULT_LORA_STRENGTH = 1;

/** Seeds users pick by hand fit in 32 bits, and torch only uses the low 32 bits of larger ones anyway. */
function randomSeed(): number {
  return randomInt(0, 2 ** 32);
}

export interface GenerationJob {
  modelDir: string;
  device: Device;
  pipeline: PipelineOptions;
  request: GenerationRequest;
  out: string;
  loraStrength: number;
  guidanceScale: number;
  guidanceRescale: number;
}

type ParsedValues<Extra extends OptionSpec> = OptionValues<typeof GENERATION_OPTIONS> & OptionValues<Extra>;

/**
 * Parses the shared options plus a command's own; `panels` turns the shared per-panel settings into the command's
 * panels. The request is validated here, with the model's real constraints, before anything loads.
 */
export function parseGenerationJob<Extra extends OptionSpec>(
  argv: string[],
  extra: Extra,
  panels: (values: ParsedValues<Extra>, shared: Pick<GenerationJob, 'guidanceScale' | 'guidanceRescale' | 'loraStrength'>) => PanelSettings[],
): { job: GenerationJob; values: ParsedValues<Extra> } {
  const values: ParsedValues<Extra> = parseOptions(argv, { ...GENERATION_OPTIONS, ...extra });
  const modelDir = optionOrEnvironment('model', values.model, 'MODEL_DIR');
  const out = values.out;
  if (out === undefined || out === '') throw new UsageError('--out is required');
  if (values.prompt === undefined) throw new UsageError('--prompt is required');
  if (values.strength !== undefined && values.lora === undefined) throw new UsageError('--strength needs --lora FILE');
  if (values['denoising-end'] !== undefined && values.refiner === undefined) throw new UsageError('--denoising-end needs --refiner DIR');
  const device = deviceOption(values.provider);
  const folder = openSdxlModelFolder(modelDir);
  if (values.lora !== undefined && !existsSync(values.lora)) throw new UsageError(`--lora ${values.lora} does not exist`);
  if (values.refiner !== undefined) openSdxlRefinerFolder(values.refiner);
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
      modelDir, device, out, request, ...shared,
      pipeline: { loraPath: values.lora ?? null, refinerDir: values.refiner ?? null },
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
