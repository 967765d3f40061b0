import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { loraWeightInputs } from '../src/gpu/onnx/lora-graph.js';
import { OnnxGraph } from '../src/gpu/onnx/onnx-graph.js';
import { DataType } from '../src/gpu/onnx/onnx-proto.js';
import { buildTrainingForward, buildTrainingGraph, TRAINING_INPUTS } from '../src/gpu/onnx/training-graph.js';
import { ModelLoadError } from '../src/gpu/onnx-session.js';
import {
  estimateTrainingMemory, formatTrainingMemory, parseUnetArchitecture, readUnetArchitecture, SDXL_BASE_UNET_CONFIG, type TrainingMemoryShape,
} from '../src/gpu/memory-estimate.js';
import { trainableTargets } from '../src/gpu/training/unet-training-step.js';
import { probeValueFacts } from '../src/gpu/training/value-facts.js';
import { fixturePath } from './support/fixtures.js';

// The paper estimate against the graphs it describes: the tiny UNet's real training graph for the activations its
// backward pass keeps and for the weights, and the notes' figures for SDXL.

const TINY_UNET = fixturePath('tiny-sdxl', 'unet', 'model.onnx');
const TINY_CONFIG = fixturePath('tiny-sdxl', 'unet', 'config.json');
const CPU = { kind: 'cpu', index: 0 } as const;
const RANK = 4;
const FLOAT32_BYTES = 4;

/** diffusers' UNet2DConditionModel.from_pretrained(…, subfolder="unet").num_parameters() for SDXL base. */
const SDXL_UNET_PARAMETERS = 2_567_463_684;

const sdxl = () => parseUnetArchitecture(SDXL_BASE_UNET_CONFIG, 'SDXL');
const shapeAt = (resolution: number, batchSize: number, elementBytes = FLOAT32_BYTES): TrainingMemoryShape =>
  ({ resolution, vaeScaleFactor: 8, batchSize, rank: RANK, elementBytes });

/**
 * Bytes of the forward values that the backward nodes (and, with checkpointing, the recomputing nodes) of the tiny
 * UNet's training graph read, from the graph's own probed shapes: what onnxruntime must hold from the forward pass
 * until the backward pass has used it.
 */
async function graphKeptBytes(batchSize: number, latentSide: number, gradientCheckpointing: boolean): Promise<number> {
  const bytes = await readFile(TINY_UNET);
  const targets = await trainableTargets(TINY_UNET);
  const modules = targets.map((target) => target.module);
  const forward = buildTrainingForward(bytes, { rank: RANK, modules });
  const latent = [batchSize, 4, latentSide, latentSide];
  const shapes: Record<string, readonly number[]> = {
    [TRAINING_INPUTS.sample]: latent,
    [TRAINING_INPUTS.timesteps]: [batchSize],
    [TRAINING_INPUTS.encoderHiddenStates]: [batchSize, 77, 64],
    [TRAINING_INPUTS.textEmbeds]: [batchSize, 32],
    [TRAINING_INPUTS.timeIds]: [batchSize, 6],
    [TRAINING_INPUTS.loraScale]: [batchSize],
    [TRAINING_INPUTS.target]: latent,
  };
  for (const target of targets) {
    const inputs = loraWeightInputs(target.module);
    shapes[inputs.downT] = [target.inFeatures, RANK];
    shapes[inputs.upT] = [RANK, target.outFeatures];
  }
  const facts = await probeValueFacts(forward, path.dirname(TINY_UNET), shapes, CPU);
  const graph = OnnxGraph.decode(buildTrainingGraph(forward, facts, modules, { gradientCheckpointing }));
  const isBackward = (name: string) => name.startsWith('grad/');
  // Activations: what the forward nodes compute from the graph's inputs. The exporter also routes weights (norm
  // scales, scalars) through Identity and Constant nodes; the estimate counts those as weights.
  const activations = new Set(graph.inputs.keys());
  for (const node of graph.nodes) {
    if (!isBackward(node.name) && node.input.some((input) => activations.has(input))) for (const output of node.output) activations.add(output);
  }
  const forwardValues = new Set(graph.nodes.filter((node) => !isBackward(node.name)).flatMap((node) => node.output).filter((value) => activations.has(value)));
  const kept = new Set(graph.nodes.filter((node) => isBackward(node.name)).flatMap((node) => node.input.filter((input) => forwardValues.has(input))));
  let total = 0;
  for (const value of kept) {
    // Integer values are Reshape targets and Slice bounds, a few bytes each, not activations.
    if (!graph.isFloat(value)) continue;
    assert.equal(graph.elemType(value), DataType.float, `${value} is not float32`);
    total += facts.shape(value).reduce((product, dim) => product * dim, 1) * FLOAT32_BYTES;
  }
  return total;
}

// What the estimate leaves out is a few vectors per batch (the time embedding's activation, the LoRA strength): under
// 0.1 % of either figure. Anything a gradient rule or the recomputation keeps beyond that (or no longer keeps) is a
// whole activation map, and moves the figure by far more than 1 %.
const KEPT_RELATIVE_TOLERANCE = 0.01;

const HELD_FIGURES = [
  { gradientCheckpointing: false, figure: 'keptActivationBytes', what: 'the activations kept for the backward pass' },
  { gradientCheckpointing: true, figure: 'checkpointBytes', what: 'with gradient checkpointing, the values held from the forward pass' },
] as const;

for (const { gradientCheckpointing, figure, what } of HELD_FIGURES) {
  test(`${what} match what the tiny UNet's training graph holds`, async () => {
    const batchSize = 2;
    const latentSide = 16;
    const estimate = estimateTrainingMemory(readUnetArchitecture(TINY_CONFIG), shapeAt(latentSide * 8, batchSize));
    const fromGraph = await graphKeptBytes(batchSize, latentSide, gradientCheckpointing);
    const ratio = estimate[figure] / fromGraph;
    assert.ok(Math.abs(ratio - 1) <= KEPT_RELATIVE_TOLERANCE, `estimate ${estimate[figure]} B, graph ${fromGraph} B (ratio ${ratio.toFixed(4)})`);
    if (gradientCheckpointing) assert.ok(fromGraph < estimate.keptActivationBytes / 5, 'checkpoints are a small part of what the step keeps without them');
  });
}

test('the weights and the LoRA are counted exactly: the tiny UNet\'s graph and SDXL\'s published figures', async () => {
  const tiny = estimateTrainingMemory(readUnetArchitecture(TINY_CONFIG), shapeAt(128, 1));
  const graph = OnnxGraph.decode(await readFile(TINY_UNET));
  const elements = (name: string) => graph.initializers.get(name)!.dims.reduce((product, dim) => product * dim, 1);
  const floatInitializers = [...graph.initializers.values()].filter((tensor) => tensor.dataType === DataType.float);
  // The exporter stores a weight equal to another once and hands the copy out through an Identity node.
  const shared = graph.nodes.filter((node) => node.opType === 'Identity' && graph.initializers.get(node.input[0]!)?.dataType === DataType.float);
  const graphParameters = floatInitializers.reduce((sum, tensor) => sum + elements(tensor.name), 0) + shared.reduce((sum, node) => sum + elements(node.input[0]!), 0);
  assert.equal(tiny.unetParameters, graphParameters);
  const targets = await trainableTargets(TINY_UNET);
  assert.equal(tiny.loraParameters, targets.reduce((sum, target) => sum + RANK * (target.inFeatures + target.outFeatures), 0));

  const real = estimateTrainingMemory(sdxl(), shapeAt(1024, 1));
  assert.equal(real.unetParameters, SDXL_UNET_PARAMETERS);
  assert.equal(real.weightBytes, SDXL_UNET_PARAMETERS * FLOAT32_BYTES);
  // The notes: 560 projections at rank 4, about 5.8 M parameters.
  assert.equal(real.loraParameters, 5_806_080);
});

test('SDXL at 1024² keeps the notes\' 671 MB of attention scores per sample in each 640-channel layer', () => {
  const estimate = estimateTrainingMemory(sdxl(), shapeAt(1024, 1));
  assert.deepEqual(estimate.largestScores, { bytes: 10 * 4096 * 4096 * FLOAT32_BYTES, channels: 640, heads: 10, tokens: 4096, layers: 10 });
  assert.ok(estimate.attentionProbabilityBytes >= 10 * estimate.largestScores.bytes);
  assert.equal(estimateTrainingMemory(sdxl(), shapeAt(1024, 2)).largestScores.bytes, 2 * estimate.largestScores.bytes);
});

test('a larger resolution or batch never needs less memory', () => {
  const figures = (resolution: number, batchSize: number) => {
    const estimate = estimateTrainingMemory(sdxl(), shapeAt(resolution, batchSize));
    return [
      estimate.keptActivationBytes, estimate.attentionProbabilityBytes, estimate.transientBytes, estimate.totalBytes,
      estimate.checkpointBytes, estimate.largestSegmentBytes, estimate.checkpointedTotalBytes,
    ];
  };
  const resolutions = [512, 768, 1024, 1536];
  const batches = [1, 2, 4];
  for (const [r, resolution] of resolutions.entries()) {
    for (const [b, batchSize] of batches.entries()) {
      const here = figures(resolution, batchSize);
      const neighbours = [resolutions[r + 1] && figures(resolutions[r + 1]!, batchSize), batches[b + 1] && figures(resolution, batches[b + 1]!)];
      for (const larger of neighbours) {
        if (!larger) continue;
        here.forEach((value, i) => assert.ok(larger[i]! >= value, `figure ${i} shrinks past ${resolution}² batch ${batchSize}: ${value} → ${larger[i]}`));
      }
    }
  }
});

test('the dry run says which cards the step fits', () => {
  const lines = (resolution: number, elementBytes: number) => formatTrainingMemory(estimateTrainingMemory(sdxl(), shapeAt(resolution, 1, elementBytes)));
  const full = lines(1024, FLOAT32_BYTES);
  assert.match(full.at(-2)!, /total: 38\.4 GB; fits a card of 24 GB: no/);
  // The notes: SDXL at 1024² trains on a 24 GB card only with checkpointing (or at a lower resolution).
  assert.match(full.at(-1)!, /with --gradient-checkpointing: .* total 13\.6 GB; fits a card of 24 GB: yes; 16 GB: yes; 12 GB: no/);
  assert.match(full.join('\n'), /10\.3 GB \(2\.57 G parameters\)/);
  assert.match(lines(768, 2).at(-2)!, /24 GB: yes; 16 GB: yes; 12 GB: yes/);
});

test('a UNet config with blocks the estimate does not model is refused, naming the field', () => {
  assert.throws(() => parseUnetArchitecture({ ...SDXL_BASE_UNET_CONFIG, down_block_types: ['DownBlock2D', 'AttnDownBlock2D', 'CrossAttnDownBlock2D'] }, 'unet/config.json'),
    (error: unknown) => error instanceof ModelLoadError && /down_block_types/.test(error.message));
  assert.throws(() => parseUnetArchitecture({ ...SDXL_BASE_UNET_CONFIG, transformer_layers_per_block: [1, 2] }, 'unet/config.json'), /transformer_layers_per_block/);
});
