import ort from 'onnxruntime-node';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { findLoraTargets, loraWeightInputs } from '../onnx/lora-graph.js';
import { buildTrainingForward, buildTrainingGraph, loraGradientOutputs, TRAINING_INPUTS, TRAINING_OUTPUTS } from '../onnx/training-graph.js';
import type { LoraTarget } from '../lora/lora-types.js';
import { OnnxModel, type RunClock } from '../onnx-session.js';
import type { Device } from '../providers.js';
import type { NamedTensor } from './adamw.js';
import { loraKeys, transposed, type LoraParameters } from './lora-parameters.js';
import { probeValueFacts } from './value-facts.js';

// One forward and backward pass of the UNet with trainable LoRA branches, as one onnxruntime session: the inputs are
// a batch and the current LoRA weights, the outputs the loss, the prediction and d loss / d every A and B.

/** The only projections the script trains: peft's target_modules to_q, to_k, to_v, to_out.0 of every attention. */
export const TRAINED_PROJECTIONS = /\.(?:to_q|to_k|to_v|to_out\.0)$/;

export interface TrainingBatchShape {
  batchSize: number;
  /** [channels, height, width] of the latents. */
  latent: readonly [number, number, number];
  /** [tokens, width] of the prompt embeddings. */
  promptEmbeds: readonly [number, number];
  pooledWidth: number;
  timeIdCount: number;
}

export interface TrainingBatch {
  noisyLatents: Float32Array;
  timesteps: readonly number[];
  /** One sample's prompt embeddings, repeated for each sample of the batch. */
  promptEmbeds: Float32Array;
  pooledPromptEmbeds: Float32Array;
  /** batch × timeIdCount */
  timeIds: Float32Array;
  target: Float32Array;
}

export interface UnetTrainingStepOptions {
  rank: number;
  shape: TrainingBatchShape;
  /** Recompute activations during the backward pass instead of keeping them: less memory, about a third more time. */
  gradientCheckpointing: boolean;
}

export interface StepResult {
  loss: number;
  prediction: Float32Array;
  /** Under the parameters' keys, in their layout. */
  gradients: NamedTensor[];
}

/** The projections a training of this UNet trains, in graph order. */
export function trainedTargets(unetBytes: Uint8Array): LoraTarget[] {
  return findLoraTargets(unetBytes).filter((target) => TRAINED_PROJECTIONS.test(target.module));
}

export async function trainableTargets(unetPath: string): Promise<LoraTarget[]> {
  return trainedTargets(await readFile(unetPath));
}

export class UnetTrainingStep {
  private constructor(
    private readonly model: OnnxModel,
    readonly targets: readonly LoraTarget[],
    readonly rank: number,
    readonly shape: TrainingBatchShape,
  ) {}

  static async create(unetPath: string, device: Device, clock: RunClock, options: UnetTrainingStepOptions): Promise<UnetTrainingStep> {
    const { rank, shape, gradientCheckpointing } = options;
    const bytes = await readFile(unetPath);
    const targets = trainedTargets(bytes);
    const modules = targets.map((target) => target.module);
    const forward = buildTrainingForward(bytes, { rank, modules });
    const externalDataDir = path.dirname(unetPath);
    const facts = await probeValueFacts(forward, externalDataDir, inputShapes(targets, rank, shape), device);
    const graph = buildTrainingGraph(forward, facts, modules, { gradientCheckpointing });
    const model = await OnnxModel.load('unet training step', { bytes: graph, externalDataDir }, device, clock);
    return new UnetTrainingStep(model, targets, rank, shape);
  }

  async run(batch: TrainingBatch, parameters: LoraParameters, loraScale: number): Promise<StepResult> {
    const { batchSize, latent, promptEmbeds, pooledWidth, timeIdCount } = this.shape;
    const latentDims = [batchSize, ...latent];
    const tensor = (values: Float32Array, dims: readonly number[]) => new ort.Tensor('float32', values, dims);
    const feeds: Record<string, ort.Tensor> = {
      [TRAINING_INPUTS.sample]: tensor(batch.noisyLatents, latentDims),
      [TRAINING_INPUTS.timesteps]: tensor(Float32Array.from(batch.timesteps), [batchSize]),
      [TRAINING_INPUTS.encoderHiddenStates]: tensor(repeat(batch.promptEmbeds, batchSize), [batchSize, ...promptEmbeds]),
      [TRAINING_INPUTS.textEmbeds]: tensor(repeat(batch.pooledPromptEmbeds, batchSize), [batchSize, pooledWidth]),
      [TRAINING_INPUTS.timeIds]: tensor(batch.timeIds, [batchSize, timeIdCount]),
      [TRAINING_INPUTS.loraScale]: tensor(new Float32Array(batchSize).fill(loraScale), [batchSize]),
      [TRAINING_INPUTS.target]: tensor(batch.target, latentDims),
    };
    parameters.modules.forEach((module) => {
      const inputs = loraWeightInputs(module.module);
      feeds[inputs.downT] = tensor(transposed(module.down, module.rank, module.inFeatures), [module.inFeatures, module.rank]);
      feeds[inputs.upT] = tensor(transposed(module.up, module.outFeatures, module.rank), [module.rank, module.outFeatures]);
    });
    const outputs = [TRAINING_OUTPUTS.loss, TRAINING_OUTPUTS.prediction, ...this.targets.flatMap((target) => {
      const names = loraGradientOutputs(target.module);
      return [names.downT, names.upT];
    })];
    const results = await this.model.run(feeds, outputs);
    const gradients = parameters.modules.flatMap((module) => {
      const names = loraGradientOutputs(module.module);
      const keys = loraKeys(module.module);
      return [
        { name: keys.down, values: transposed(results[names.downT]!, module.inFeatures, module.rank) },
        { name: keys.up, values: transposed(results[names.upT]!, module.rank, module.outFeatures) },
      ];
    });
    return { loss: results[TRAINING_OUTPUTS.loss]![0]!, prediction: results[TRAINING_OUTPUTS.prediction]!, gradients };
  }

  async dispose(): Promise<void> {
    await this.model.dispose();
  }
}

function inputShapes(targets: readonly LoraTarget[], rank: number, shape: TrainingBatchShape): Record<string, readonly number[]> {
  const { batchSize, latent, promptEmbeds, pooledWidth, timeIdCount } = shape;
  const shapes: Record<string, readonly number[]> = {
    [TRAINING_INPUTS.sample]: [batchSize, ...latent],
    [TRAINING_INPUTS.timesteps]: [batchSize],
    [TRAINING_INPUTS.encoderHiddenStates]: [batchSize, ...promptEmbeds],
    [TRAINING_INPUTS.textEmbeds]: [batchSize, pooledWidth],
    [TRAINING_INPUTS.timeIds]: [batchSize, timeIdCount],
    [TRAINING_INPUTS.loraScale]: [batchSize],
    [TRAINING_INPUTS.target]: [batchSize, ...latent],
  };
  for (const target of targets) {
    const inputs = loraWeightInputs(target.module);
    shapes[inputs.downT] = [target.inFeatures, rank];
    shapes[inputs.upT] = [rank, target.outFeatures];
  }
  return shapes;
}

function repeat(values: Float32Array, times: number): Float32Array {
  const out = new Float32Array(values.length * times);
  for (let i = 0; i < times; i++) out.set(values, i * values.length);
  return out;
}
