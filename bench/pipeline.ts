import { ImageGenerator } from '../src/gpu/image-generator.js';
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
