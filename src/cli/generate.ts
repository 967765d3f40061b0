import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import { ImageGenerator } from '../gpu/image-generator.js';
import { openSdxlModelFolder } from '../gpu/model-folder.js';
import {
  DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, InvalidRequestError, validateGenerationRequest, type GenerationRequest,
} from '../gpu/request.js';
import {
  deviceOption, integerOption, numberOption, optionOrEnvironment, parseOptions, required, UsageError,
} from './options.js';

const FLAG_BY_FIELD: Readonly<Record<string, string>> = {
  seed: '--seed', steps: '--steps', width: '--width', height: '--height', prompt: '--prompt',
  negativePrompt: '--negative', guidanceScale: '--guidance', guidanceRescale: '--guidance-rescale',
};

export const GENERATE_USAGE = 'wrongbot generate [--model DIR] --prompt TEXT [--negative TEXT] [--seed N] [--steps N] '
  + '[--guidance G] [--guidance-rescale R] [--width W] [--height H] [--provider cpu|cuda[:N]|webgpu] --out FILE.png';

/** Seeds users pick by hand fit in 32 bits, and torch only uses the low 32 bits of larger ones anyway. */
function randomSeed(): number {
  return randomInt(0, 2 ** 32);
}

export async function runGenerate(argv: string[]): Promise<void> {
  const values = parseOptions(argv, {
    model: { type: 'string' },
    prompt: { type: 'string' },
    negative: { type: 'string' },
    seed: { type: 'string' },
    steps: { type: 'string' },
    guidance: { type: 'string' },
    'guidance-rescale': { type: 'string' },
    width: { type: 'string' },
    height: { type: 'string' },
    provider: { type: 'string' },
    out: { type: 'string' },
  });
  const modelDir = optionOrEnvironment('model', values.model, 'MODEL_DIR');
  const out = required('out', values.out);
  if (values.prompt === undefined) throw new UsageError('--prompt is required');
  const device = deviceOption(values.provider);
  const folder = openSdxlModelFolder(modelDir);
  const request: GenerationRequest = {
    seed: values.seed === undefined ? randomSeed() : integerOption('seed', values.seed),
    steps: integerOption('steps', values.steps, DEFAULT_STEPS),
    width: integerOption('width', values.width, folder.defaultImageSizePx),
    height: integerOption('height', values.height, folder.defaultImageSizePx),
    panels: [{
      prompt: values.prompt,
      negativePrompt: values.negative ?? null,
      guidanceScale: numberOption('guidance', values.guidance, DEFAULT_GUIDANCE_SCALE),
      guidanceRescale: numberOption('guidance-rescale', values['guidance-rescale'], 0),
    }],
  };
  try {
    validateGenerationRequest(request, folder.vae.scaleFactor);
  } catch (error) {
    if (error instanceof InvalidRequestError) {
      throw new UsageError(`${FLAG_BY_FIELD[error.field] ?? error.field} ${error.shownValue} ${error.rule}`);
    }
    throw error;
  }

  console.log(`seed ${request.seed}`);
  const loadStarted = performance.now();
  const generator = await ImageGenerator.start(modelDir, device);
  const loadMs = performance.now() - loadStarted;
  try {
    // A progress line that rewrites itself only makes sense on a terminal; logs get the summary alone.
    const showProgress = process.stderr.isTTY;
    const result = await generator.generate(request, {
      onProgress: ({ step, totalSteps, etaMs }) => {
        if (showProgress) process.stderr.write(`\rstep ${step}/${totalSteps}, ${(etaMs / 1000).toFixed(1)} s left `);
      },
    });
    if (showProgress) process.stderr.write('\n');
    for (const notice of result.notices) console.error(`note: ${notice}`);
    await mkdir(path.dirname(path.resolve(out)), { recursive: true });
    await writeFile(out, result.panels[0]!.png);
    const { timings } = result;
    const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
    console.log(`wrote ${out} (${request.width}x${request.height}, ${request.steps} steps)`);
    console.log(
      `timings: load ${seconds(loadMs)}, generate ${seconds(timings.totalMs)} `
      + `(text ${seconds(timings.textEncodingMs)}, denoise ${seconds(timings.denoisingMs)}, decode ${seconds(timings.decodingMs)}; `
      + `onnxruntime ${seconds(timings.onnxMs)} in ${timings.onnxRuns} runs)`,
    );
  } finally {
    await generator.close();
  }
}
