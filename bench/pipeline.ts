import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { ImageGenerator } from '../src/gpu/image-generator.js';
import { WORKER_LORA_SLOTS } from '../src/worker/gpu-worker.js';
import type { Device } from '../src/gpu/providers.js';
import type { GenerationRequest } from '../src/gpu/request.js';

// Seconds per image and host overhead for the bundled tiny model on CPU. The overhead ratio is the caller's wall
// time for a whole job (thread hop, tokenizing, scheduler and guidance arithmetic, PNG encoding) divided by the
// time spent inside onnxruntime's run(): what the TypeScript around the models costs.

export interface PipelineFigures {
  /** The warm-up image, so that devices can be compared pixel for pixel. */
  firstPng: Uint8Array;
  images: number;
  steps: number;
  size: string;
  secondsPerImage: number;
  onnxSecondsPerImage: number;
  overheadRatio: number;
  pipelineOverheadRatio: number;
}

const STEPS = 20;
const MEASURED_IMAGES = 8;

export async function benchPipeline(modelDir: string, device: Device): Promise<PipelineFigures> {
  const generator = await ImageGenerator.start(modelDir, device);
  try {
    const request = (seed: number): GenerationRequest => ({
      seed, steps: STEPS, width: 128, height: 128,
      panels: [{ prompt: 'a photo of a cat, highly detailed', negativePrompt: 'wrong', guidanceScale: 13, guidanceRescale: 0 }],
    });
    const warmUp = await generator.generate(request(0));
    let wallMs = 0;
    let onnxMs = 0;
    let pipelineMs = 0;
    for (let i = 1; i <= MEASURED_IMAGES; i++) {
      const started = performance.now();
      const result = await generator.generate(request(i));
      wallMs += performance.now() - started;
      onnxMs += result.timings.onnxMs;
      pipelineMs += result.timings.totalMs;
    }
    return {
      firstPng: warmUp.panels[0]!.png,
      images: MEASURED_IMAGES,
      steps: STEPS,
      size: '128x128',
      secondsPerImage: wallMs / MEASURED_IMAGES / 1000,
      onnxSecondsPerImage: onnxMs / MEASURED_IMAGES / 1000,
      overheadRatio: wallMs / onnxMs,
      pipelineOverheadRatio: pipelineMs / onnxMs,
    };
  } finally {
    await generator.close();
  }
}

export interface TriptychFigures {
  singleSeconds: number;
  triptychSeconds: number;
  ratio: number;
}

/** The /compare triptych (three panels, one UNet batch per step) against one image with the same settings. */
export async function benchTriptych(modelDir: string, loraPath: string): Promise<TriptychFigures> {
  const generator = await ImageGenerator.start(modelDir, { kind: 'cpu', index: 0 }, { loraPath });
  try {
    const panel = { prompt: 'a photo of a cat, highly detailed', guidanceScale: 13, guidanceRescale: 0 };
    const single = (seed: number): GenerationRequest => ({
      seed, steps: STEPS, width: 128, height: 128, panels: [{ ...panel, negativePrompt: 'wrong', loraStrength: 1 }],
    });
    const triptych = (seed: number): GenerationRequest => ({
      ...single(seed),
      panels: [
        { ...panel, negativePrompt: null, loraStrength: 0 },
        { ...panel, negativePrompt: 'wrong', loraStrength: 0 },
        { ...panel, negativePrompt: 'wrong', loraStrength: 1 },
      ],
    });
    const time = async (request: (seed: number) => GenerationRequest) => {
      await generator.generate(request(0));
      const started = performance.now();
      for (let i = 1; i <= MEASURED_IMAGES; i++) await generator.generate(request(i));
      return (performance.now() - started) / MEASURED_IMAGES / 1000;
    };
    const singleSeconds = await time(single);
    const triptychSeconds = await time(triptych);
    return { singleSeconds, triptychSeconds, ratio: triptychSeconds / singleSeconds };
  } finally {
    await generator.close();
  }
}

export interface MemoryFigures {
  withoutLoraBytes: number;
  withLoraBytes: number;
  ratio: number;
}

const MEMORY_PROBE = fileURLToPath(new URL('./memory-probe.js', import.meta.url));

async function residentBytes(modelDir: string, loraPath: string, loraSlots: number): Promise<number> {
  const { stdout } = await promisify(execFile)(process.execPath, [MEMORY_PROBE, modelDir, loraPath, String(loraSlots)]);
  return (JSON.parse(stdout.trim().split('\n').at(-1)!) as { rssBytes: number }).rssBytes;
}

// Resident memory of identical runs varies by several MiB (allocator and garbage-collector timing), so each side
// is the median of a few fresh processes, interleaved so that drift on the machine affects both alike.
const MEMORY_SAMPLES = 5;

/** Resident memory of a worker process with the LoRA branches in its UNet against one without. */
export interface LoraSwitchFigures {
  switches: number;
  /** A one-step 64x64 image whose request names the other LoRA version than the one before. */
  switchingSeconds: number;
  /** The same image when the version stays. */
  stayingSeconds: number;
}

const SWITCHES = 10;

/** What serving another LoRA version costs a running pipeline: the versions alternate, with no session rebuilt. */
export async function benchLoraSwitch(modelDir: string, loraPaths: readonly [string, string]): Promise<LoraSwitchFigures> {
  const generator = await ImageGenerator.start(modelDir, { kind: 'cpu', index: 0 }, { loraSlots: 1 });
  try {
    const image = (loraPath: string): GenerationRequest => ({
      seed: 1, steps: 1, width: 64, height: 64, loraPaths: [loraPath],
      panels: [{ prompt: 'a cat', negativePrompt: 'wrong', guidanceScale: 5, guidanceRescale: 0, loraStrength: 1 }],
    });
    const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
    const timed = async (loraPath: string) => {
      const started = performance.now();
      await generator.generate(image(loraPath));
      return (performance.now() - started) / 1000;
    };
    await timed(loraPaths[0]);
    const switching: number[] = [];
    const staying: number[] = [];
    for (let i = 1; i <= SWITCHES; i++) {
      switching.push(await timed(loraPaths[i % 2]!));
      staying.push(await timed(loraPaths[i % 2]!));
    }
    return { switches: SWITCHES, switchingSeconds: median(switching), stayingSeconds: median(staying) };
  } finally {
    await generator.close();
  }
}

export async function benchLoraMemory(modelDir: string, loraPath: string): Promise<MemoryFigures> {
  const without: number[] = [];
  const withLora: number[] = [];
  for (let i = 0; i < MEMORY_SAMPLES; i++) {
    without.push(await residentBytes(modelDir, '', 0));
    // As a worker loads it: every slot's branches, one LoRA fed.
    withLora.push(await residentBytes(modelDir, loraPath, WORKER_LORA_SLOTS));
  }
  const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const withoutLoraBytes = median(without);
  const withLoraBytes = median(withLora);
  return { withoutLoraBytes, withLoraBytes, ratio: withLoraBytes / withoutLoraBytes };
}
