import { execFile } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { comparePanels } from '../src/common/triptych.js';
import { decodeFloat16, fromFloat16Array, toFloat16Array } from '../src/gpu/float16.js';
import { ImageGenerator } from '../src/gpu/image-generator.js';
import {
  estimateInferenceMemory, parseUnetArchitecture, SDXL_BASE_UNET_CONFIG, type InferenceMemoryEstimate,
} from '../src/gpu/memory-estimate.js';
import type { GenerationRequest } from '../src/gpu/request.js';
import { NO_BATCH_LIMITS, type BatchLimits } from '../src/gpu/unet-batches.js';
import { peakResidentBytes } from './training.js';

// A triptych in UNet runs of fewer rows (WORKER_MAX_BATCH), on the tiny model: the time and the resident memory of
// each split. SDXL's memory at 1024², single and triptych, fp32 and fp16, from the estimate. And the host's cost of
// the float16 conversions an fp16 UNet export needs at SDXL's latent size, per step.

export interface SplitFigures {
  rowsPerRun: number;
  runsPerStep: number;
  triptychSeconds: number;
  peakResidentBytes: number;
}

export interface SdxlMemoryFigures {
  label: string;
  estimate: InferenceMemoryEstimate;
  /** Text encoders and VAE decoder beside the UNet (their ONNX files, per the Hub's listing in shared notes). */
  otherWeightBytes: number;
}

export interface Float16Figures {
  values: number;
  encodeMs: number;
  tableDecodeMs: number;
  arithmeticDecodeMs: number;
}

export const STEPS_PER_TRIPTYCH = 20;
const MEASURED_TRIPTYCHS = 3;
const MEMORY_SAMPLES = 3;
const TRIPTYCH_ROWS = 6;
const SPLITS = [6, 3, 2, 1] as const;
/** stabilityai/stable-diffusion-xl-base-1.0's text_encoder (0.49 GB), text_encoder_2 (2.78 GB) and vae_decoder (0.20 GB), fp32. */
const SDXL_OTHER_WEIGHT_BYTES_FP32 = 0.493e9 + 2.78e9 + 0.198e9;
const SDXL_SIDE_PX = 1024;
/** One step of a triptych's UNet at 1024²: the sample in, the prediction out, 6 rows of 4 × 128 × 128. */
const SDXL_STEP_VALUES = TRIPTYCH_ROWS * 4 * 128 * 128;
const FLOAT16_REPEATS = 20;

const THIS_FILE = fileURLToPath(import.meta.url);

function triptych(seed: number, loraPath: string): GenerationRequest {
  return {
    seed, steps: STEPS_PER_TRIPTYCH, width: 128, height: 128, loraPaths: [loraPath],
    panels: comparePanels(1).map((panel) => ({ prompt: 'a photo of a cat, highly detailed', negativePrompt: panel.negativePrompt, guidanceScale: 13, guidanceRescale: 0, loraStrength: panel.loraStrength })),
  };
}

function limitsFor(rowsPerRun: number): BatchLimits {
  return rowsPerRun >= TRIPTYCH_ROWS ? NO_BATCH_LIMITS : { maxRows: rowsPerRun, budgetBytes: null };
}

async function timeSplit(modelDir: string, loraPath: string, rowsPerRun: number): Promise<number> {
  const generator = await ImageGenerator.start(modelDir, { kind: 'cpu', index: 0 }, { loraSlots: 1, batchLimits: limitsFor(rowsPerRun) });
  try {
    await generator.generate(triptych(0, loraPath));
    const started = performance.now();
    for (let i = 1; i <= MEASURED_TRIPTYCHS; i++) await generator.generate(triptych(i, loraPath));
    return (performance.now() - started) / MEASURED_TRIPTYCHS / 1000;
  } finally {
    await generator.close();
  }
}

function median(values: number[]): number {
  return [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
}

async function childPeakBytes(modelDir: string, loraPath: string, rowsPerRun: number): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, [THIS_FILE, 'probe', modelDir, loraPath, String(rowsPerRun)]);
  return (JSON.parse(stdout.trim().split('\n').at(-1)!) as { peakResidentBytes: number }).peakResidentBytes;
}

export async function benchSplits(modelDir: string, loraPath: string): Promise<SplitFigures[]> {
  const figures: SplitFigures[] = [];
  for (const rowsPerRun of SPLITS) {
    const peaks: number[] = [];
    for (let i = 0; i < MEMORY_SAMPLES; i++) peaks.push(await childPeakBytes(modelDir, loraPath, rowsPerRun));
    figures.push({
      rowsPerRun, runsPerStep: Math.ceil(TRIPTYCH_ROWS / rowsPerRun),
      triptychSeconds: await timeSplit(modelDir, loraPath, rowsPerRun), peakResidentBytes: median(peaks),
    });
  }
  return figures;
}

export function sdxlMemory(): SdxlMemoryFigures[] {
  const unet = parseUnetArchitecture(SDXL_BASE_UNET_CONFIG, 'SDXL base');
  return [4, 2].flatMap((elementBytes) => [2, TRIPTYCH_ROWS].map((rows) => ({
    label: `${rows === 2 ? 'one image' : 'triptych'}, ${elementBytes === 4 ? 'fp32' : 'fp16'}`,
    estimate: estimateInferenceMemory(unet, { width: SDXL_SIDE_PX, height: SDXL_SIDE_PX, vaeScaleFactor: 8, rows, elementBytes }),
    otherWeightBytes: SDXL_OTHER_WEIGHT_BYTES_FP32 * (elementBytes / 4),
  })));
}

/** The per-value decode that the lookup table replaced, as the yardstick. */
function arithmeticDecode(bits: Uint16Array): Float32Array {
  return Float32Array.from(bits, decodeFloat16);
}

export function benchFloat16(): Float16Figures {
  const values = Float32Array.from({ length: SDXL_STEP_VALUES }, (_, i) => Math.sin(i) * 3);
  const time = (work: () => void) => {
    work();
    const samples: number[] = [];
    for (let i = 0; i < FLOAT16_REPEATS; i++) {
      const started = performance.now();
      work();
      samples.push(performance.now() - started);
    }
    return median(samples);
  };
  const bits = toFloat16Array(values);
  return {
    values: SDXL_STEP_VALUES,
    encodeMs: time(() => toFloat16Array(values)),
    tableDecodeMs: time(() => fromFloat16Array(bits)),
    arithmeticDecodeMs: time(() => arithmeticDecode(bits)),
  };
}

if (process.argv[1] === THIS_FILE && process.argv[2] === 'probe') {
  const [modelDir, loraPath, rowsPerRun] = process.argv.slice(3);
  const generator = await ImageGenerator.start(path.resolve(modelDir!), { kind: 'cpu', index: 0 }, { loraSlots: 1, batchLimits: limitsFor(Number(rowsPerRun)) });
  await generator.generate(triptych(1, loraPath!));
  await generator.close();
  console.log(JSON.stringify({ peakResidentBytes: peakResidentBytes() }));
}
