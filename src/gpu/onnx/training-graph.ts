import { addBackwardPass, type ValueFacts } from './backward-graph.js';
import { attr, GraphBuilder, rewriteModel } from './graph-builder.js';
import { addLoraBranches, LORA_STRENGTH_INPUT, loraWeightInputs } from './lora-graph.js';
import { OnnxGraph, OnnxGraphError, type GraphNode } from './onnx-graph.js';
import { DataType, GraphField, readValueInfoName, renameNodeValues } from './onnx-proto.js';
import { lengthDelimitedField, type Chunks } from './protobuf.js';

// One LoRA training step of the UNet as an ordinary inference graph, built in two passes:
//   1. `buildTrainingForward`: the UNet with trainable LoRA branches (their weights are inputs), one timestep per
//      sample, and the loss mean((prediction − target)²);
//   2. `buildTrainingGraph`: that graph plus the backward pass, whose outputs are d loss / d every LoRA weight.
// Between the two, the caller runs `buildShapeProbe`'s graph once to learn every value's shape, which the gradient
// rules need to undo broadcasting; the step graph is therefore built for one batch size and resolution.

export const TRAINING_INPUTS = {
  sample: 'sample',
  /** [batch] float32: each sample's integer timestep. */
  timesteps: 'timesteps',
  encoderHiddenStates: 'encoder_hidden_states',
  textEmbeds: 'text_embeds',
  timeIds: 'time_ids',
  /** [batch] float32: alpha / rank for every sample. */
  loraScale: LORA_STRENGTH_INPUT,
  /** The noise the UNet should predict (epsilon target), shaped like `sample`. */
  target: 'target',
} as const;

export const TRAINING_OUTPUTS = { loss: 'loss', prediction: 'out_sample' } as const;

const PREFIX = 'train';
const DIFFERENCE = `${PREFIX}/difference`;

/** The graph outputs of a module's gradients, shaped like its inputs Aᵀ [in, rank] and Bᵀ [rank, out]. */
export function loraGradientOutputs(module: string): { downT: string; upT: string } {
  return { downT: `grad/${module}/down_t`, upT: `grad/${module}/up_t` };
}

/**
 * The scalar timestep input of current optimum exports is unsqueezed, cast and expanded to [batch] before anything
 * reads it (legacy exports expand their [1] input directly). The training graph takes that [batch] vector as its
 * input instead, so every sample of a batch has its own timestep in one pass.
 */
function findTimestepExpansion(graph: OnnxGraph): { chain: GraphNode[]; expand: GraphNode } {
  const input = 'timestep';
  if (!graph.inputs.has(input)) throw new OnnxGraphError(`the UNet has no input named ${input}`);
  const consumers = (value: string) => graph.nodes.filter((node) => node.input.includes(value));
  const chain: GraphNode[] = [];
  let value = input;
  for (;;) {
    const next = consumers(value);
    const node = next[0];
    if (next.length !== 1 || node === undefined) break;
    if (node.opType === 'Expand' && node.input[0] === value) return { chain, expand: node };
    if (!['Unsqueeze', 'Cast', 'Reshape', 'Identity'].includes(node.opType) || node.input[0] !== value) break;
    chain.push(node);
    value = node.output[0]!;
  }
  throw new OnnxGraphError(`cannot give the UNet one timestep per sample: its ${input} input does not reach an Expand through Unsqueeze, Cast or Reshape alone`);
}

/** Stage 1: the UNet with trainable LoRA branches on `modules`, [batch] timesteps and the loss. */
export function buildTrainingForward(unetBytes: Uint8Array, options: { rank: number; modules: readonly string[] }): Uint8Array {
  const graph = OnnxGraph.decode(addLoraBranches(unetBytes, { purpose: 'training', rank: options.rank, modules: options.modules }));
  if (!graph.outputs.includes(TRAINING_OUTPUTS.prediction)) throw new OnnxGraphError(`the UNet has no output named ${TRAINING_OUTPUTS.prediction}`);
  const { chain, expand } = findTimestepExpansion(graph);
  const drop = new Map<number, Chunks>([...chain, expand].map((node) => [node.fieldIndex, []]));
  graph.model.graph.forEach((field, index) => {
    if (field.number === GraphField.input && readValueInfoName(field.payload) === 'timestep') drop.set(index, []);
  });

  const prelude = new GraphBuilder(graph.names, graph.opset, `${PREFIX}/timesteps`);
  prelude.input(TRAINING_INPUTS.timesteps, DataType.float, ['batch_size']);
  prelude.op('Cast', [TRAINING_INPUTS.timesteps], { to: attr.int(graph.elemType(expand.output[0]!)) }, expand.output[0]!);

  const loss = new GraphBuilder(graph.names, graph.opset, `${PREFIX}/loss`);
  loss.input(TRAINING_INPUTS.target, DataType.float, ['batch_size', 'channels', 'height', 'width']);
  loss.op('Sub', [TRAINING_OUTPUTS.prediction, TRAINING_INPUTS.target], undefined, loss.claim(DIFFERENCE));
  // No axes: the mean over every element of the batch, as the script's F.mse_loss(reduction="mean").
  loss.op('ReduceMean', [loss.op('Mul', [DIFFERENCE, DIFFERENCE])], { keepdims: attr.int(0) }, loss.claim(TRAINING_OUTPUTS.loss));
  loss.output(TRAINING_OUTPUTS.loss, DataType.float, []);
  return rewriteModel(graph, loss, { prelude, replace: drop });
}

/** Where the probe graph reports each value: its shape, and for integer values the values themselves. */
export interface ShapeProbe {
  bytes: Uint8Array;
  shapeOutputs: Map<string, string>;
  valueOutputs: Map<string, string>;
}

const INTEGER_TYPES = new Set<number>([DataType.int64, DataType.int32]);

/**
 * Stage 1's graph with the shape of every value, and every integer value, as extra outputs. Each value's consumers
 * read it through Reshape(value, Shape(value)), which onnxruntime can only run after the Shape: otherwise it may put
 * every Shape last and hold every activation of the pass at once, more memory than the training step itself.
 */
export function buildShapeProbe(forwardBytes: Uint8Array): ShapeProbe {
  const graph = OnnxGraph.decode(forwardBytes);
  const builder = new GraphBuilder(graph.names, graph.opset, 'probe');
  const shapeOutputs = new Map<string, string>();
  const valueOutputs = new Map<string, string>();
  const afterShape = new Map<string, string>();
  const existing = new Set(graph.outputs);
  for (const node of graph.nodes) {
    for (const value of node.output) {
      if (value === '') continue;
      const shape = builder.op('Shape', [value]);
      builder.output(shape, DataType.int64, null);
      shapeOutputs.set(value, shape);
      afterShape.set(value, builder.op('Reshape', [value, shape]));
      if (INTEGER_TYPES.has(graph.elemType(value)) && !existing.has(value)) {
        builder.output(value, graph.elemType(value), null);
        valueOutputs.set(value, value);
      }
    }
  }
  const replace = new Map<number, Chunks>();
  for (const node of graph.nodes) {
    if (!node.input.some((input) => afterShape.has(input))) continue;
    const input = node.input.map((value) => afterShape.get(value) ?? value);
    replace.set(node.fieldIndex, lengthDelimitedField(GraphField.node, renameNodeValues(graph.model.graph[node.fieldIndex]!.payload, 'input', input)));
  }
  return { bytes: rewriteModel(graph, builder, { replace }), shapeOutputs, valueOutputs };
}

// A resnet, a transformer block, or what of an attention lies outside its blocks (norm, proj_in; proj_out), read from
// the exporter's node scopes (/down_blocks.1/attentions.0/transformer_blocks.0/attn1/to_q/MatMul) and the module paths
// of the LoRA branches (lora/down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q/down) alike.
const UNET_SEGMENT = /(?:^|\.)((?:down_blocks|up_blocks)\.\d+\.(?:resnets|attentions|downsamplers|upsamplers)\.\d+|mid_block\.(?:resnets|attentions)\.\d+)(\.transformer_blocks\.\d+)?\./;

/** The segments gradient checkpointing recomputes: those diffusers' UNet checkpoints, its resnets and transformer blocks. */
export function unetSegment(node: GraphNode): string | undefined {
  const match = UNET_SEGMENT.exec(node.name.replaceAll('/', '.'));
  return match ? match[1]! + (match[2] ?? '') : undefined;
}

export interface TrainingGraphOptions {
  /** Recompute each UNet segment's forward values for its backward pass instead of keeping them (see recompute.ts). */
  gradientCheckpointing: boolean;
}

/** Stage 2: stage 1 plus the backward pass, with each module's gradients as outputs (see `loraGradientOutputs`). */
export function buildTrainingGraph(forwardBytes: Uint8Array, facts: ValueFacts, modules: readonly string[], options: TrainingGraphOptions): Uint8Array {
  const graph = OnnxGraph.decode(forwardBytes);
  if (options.gradientCheckpointing && !graph.nodes.some((node) => unetSegment(node) !== undefined)) {
    throw new OnnxGraphError('gradient checkpointing needs the UNet\'s node names to carry their module scopes (/down_blocks.0/resnets.0/…), and this export\'s carry none');
  }
  const builder = new GraphBuilder(graph.names, graph.opset, 'grad');
  const count = facts.shape(TRAINING_OUTPUTS.prediction).reduce((product, dim) => product * dim, 1);
  // d mean((p − t)²) / dp = 2(p − t) / N
  const seed = builder.op('Mul', [DIFFERENCE, builder.scalar(2 / count)]);
  const wrt = modules.flatMap((module) => {
    const { downT, upT } = loraWeightInputs(module);
    return [downT, upT];
  });
  const gradients = addBackwardPass(graph, builder, facts, {
    wrt,
    seeds: new Map([[TRAINING_OUTPUTS.prediction, seed]]),
    ...(options.gradientCheckpointing ? { segmentOf: unetSegment } : {}),
  });
  for (const module of modules) {
    const inputs = loraWeightInputs(module);
    const outputs = loraGradientOutputs(module);
    for (const part of ['downT', 'upT'] as const) {
      builder.op('Identity', [gradients.get(inputs[part])!], undefined, builder.claim(outputs[part]));
      builder.output(outputs[part], DataType.float, facts.shape(inputs[part]));
    }
  }
  return rewriteModel(graph, builder);
}
