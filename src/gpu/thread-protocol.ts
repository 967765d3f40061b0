import type { Device } from './providers.js';
import type { GenerationRequest, PipelineCapabilities } from './request.js';
import type { GenerationTimings, PipelineOptions, StepProgress } from './sdxl-pipeline.js';

// Messages between the caller's thread and the inference thread that owns the onnxruntime sessions.

export interface ThreadOptions {
  modelDir: string;
  device: Device;
  pipeline: PipelineOptions;
}

export interface LoadedPipeline {
  capabilities: PipelineCapabilities;
  notices: string[];
}

export interface EncodedPanel {
  width: number;
  height: number;
  png: Uint8Array;
  finalLatents: Float32Array;
}

export interface EncodedResult {
  panels: EncodedPanel[];
  timings: GenerationTimings;
  notices: string[];
}

export interface SerializedError {
  name: string;
  message: string;
}

export type ToThread =
  | { type: 'generate'; id: number; request: GenerationRequest }
  | { type: 'abort'; id: number };

export type FromThread =
  | { type: 'ready'; loaded: LoadedPipeline }
  | { type: 'load-failed'; error: SerializedError }
  | { type: 'progress'; id: number; progress: StepProgress }
  | { type: 'done'; id: number; result: EncodedResult }
  | { type: 'failed'; id: number; error: SerializedError };
