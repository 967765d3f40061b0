import type { LoraModule, LoraTarget } from '../lora/lora-types.js';
import { float32ToFloat16Bits } from '../float16.js';
import {
  DataType,
  GraphField,
  dataTypeName,
  decodeModel,
  encodeModel,
  encodeNode,
  encodeTensor,
  encodeTensorValueInfo,
  readNode,
  readTensor,
  readValueInfoName,
  renameNodeValues,
  tensorRawData,
  type NodeSpec,
  type NodeView,
  type TensorView,
} from './onnx-proto.js';
import { lengthDelimitedField, type Chunks, type ProtoField } from './protobuf.js';

// onnxruntime-node has no LoRA adapter API, and a merged second copy of the UNet would double its memory. Instead the
// UNet graph is rewritten before its session is created: each targeted projection y = x·Wᵀ gains the low-rank branch
// x·downᵀ·(scale·upᵀ)·strength[b], and `strength` is a graph input with one value per batch entry, so one session
// serves panels without LoRA (0) and with it (s) in the same batch. Only the small graph file is rewritten; weights
// kept in external data stay there.

/** The float32 input [batch] the rewritten graph adds: the LoRA strength of each batch entry. */
export const LORA_STRENGTH_INPUT = 'lora_strength';

export class LoraGraphError extends Error {
  override name = 'LoraGraphError';
}

const PREFIX = 'lora';
const STRENGTH_SHAPE = `${PREFIX}/strength/shape`;
const STRENGTH_PER_SAMPLE = `${PREFIX}/strength/per_sample`;

const PROJECTION_NODE = /^\/(.+\/(?:to_q|to_k|to_v|to_out\.0))\/MatMul$/;
const BRANCH_DATA_TYPES = new Set<number>([DataType.float, DataType.float16]);

interface GraphTarget extends LoraTarget {
  /** Index of the MatMul node among the GraphProto's fields. */
  fieldIndex: number;
  node: NodeView;
  weightDataType: number;
}

interface GraphIndex {
  targets: Map<string, GraphTarget>;
  /** Every value, node and initializer name in the graph: new names must not shadow one. */
  names: Set<string>;
  inputNames: Set<string>;
}

function indexGraph(graph: readonly ProtoField[]): GraphIndex {
  const initializers = new Map<string, TensorView>();
  const inputNames = new Set<string>();
  const names = new Set<string>();
  const matMuls: { fieldIndex: number; node: NodeView }[] = [];
  graph.forEach((field, fieldIndex) => {
    if (field.number === GraphField.initializer) {
      const tensor = readTensor(field.payload);
      initializers.set(tensor.name, tensor);
      names.add(tensor.name);
    } else if (field.number === GraphField.input) {
      const name = readValueInfoName(field.payload);
      inputNames.add(name);
      names.add(name);
    } else if (field.number === GraphField.node) {
      const node = readNode(field.payload);
      names.add(node.name);
      for (const output of node.output) names.add(output);
      if (node.opType === 'MatMul' && node.domain === '') matMuls.push({ fieldIndex, node });
    }
  });
  const targets = new Map<string, GraphTarget>();
  for (const { fieldIndex, node } of matMuls) {
    const scope = PROJECTION_NODE.exec(node.name)?.[1];
    const weight = initializers.get(node.input[1] ?? '');
    if (scope === undefined || weight === undefined || weight.dims.length !== 2 || node.output.length !== 1) continue;
    const module = scope.replaceAll('/', '.');
    targets.set(module, {
      module,
      nodeName: node.name,
      inFeatures: weight.dims[0]!,
      outFeatures: weight.dims[1]!,
      fieldIndex,
      node,
      weightDataType: weight.dataType,
    });
  }
  return { targets, names, inputNames };
}

/**
 * The projections a LoRA may target: every attention to_q / to_k / to_v / to_out.0 MatMul whose weight (Wᵀ, [in, out])
 * is a 2-D initializer, named by its diffusers module path (node scope without the leading '/' and the trailing
 * '/MatMul', '/' → '.'), in graph order.
 */
export function findLoraTargets(modelBytes: Uint8Array): LoraTarget[] {
  const { targets } = indexGraph(decodeModel(modelBytes).graph);
  return [...targets.values()].map(({ module, nodeName, inFeatures, outFeatures }) => ({ module, nodeName, inFeatures, outFeatures }));
}

function checkModule(lora: LoraModule, target: GraphTarget | undefined): GraphTarget {
  const { module } = lora;
  if (target === undefined) {
    throw new LoraGraphError(`LoRA module ${module} is not a projection of this UNet: the graph has no to_q / to_k / to_v / to_out.0 MatMul of that scope with a 2-D weight initializer`);
  }
  if (lora.inFeatures !== target.inFeatures || lora.outFeatures !== target.outFeatures) {
    throw new LoraGraphError(`LoRA module ${module} is ${lora.inFeatures}→${lora.outFeatures} but the UNet's ${target.nodeName} is ${target.inFeatures}→${target.outFeatures}`);
  }
  if (!Number.isInteger(lora.rank) || lora.rank < 1) throw new LoraGraphError(`LoRA module ${module} has rank ${lora.rank}`);
  if (lora.down.length !== lora.rank * lora.inFeatures) {
    throw new LoraGraphError(`LoRA module ${module}: down has ${lora.down.length} values, rank ${lora.rank} × in ${lora.inFeatures} needs ${lora.rank * lora.inFeatures}`);
  }
  if (lora.up.length !== lora.outFeatures * lora.rank) {
    throw new LoraGraphError(`LoRA module ${module}: up has ${lora.up.length} values, out ${lora.outFeatures} × rank ${lora.rank} needs ${lora.outFeatures * lora.rank}`);
  }
  if (!Number.isFinite(lora.scale)) throw new LoraGraphError(`LoRA module ${module} has scale ${lora.scale}`);
  if (!BRANCH_DATA_TYPES.has(target.weightDataType)) {
    throw new LoraGraphError(`LoRA module ${module}: the UNet's weight for ${target.nodeName} is ${dataTypeName(target.weightDataType)}, only float32 and float16 are supported`);
  }
  return target;
}

/** Row-major [rows, cols] → [cols, rows], times `scale`, as little-endian raw_data of `dataType`. */
function transposedRawData(values: Float32Array, rows: number, cols: number, scale: number, dataType: number): Uint8Array {
  const bytesPerValue = dataType === DataType.float16 ? 2 : 4;
  const raw = new Uint8Array(values.length * bytesPerValue);
  const view = new DataView(raw.buffer);
  for (let c = 0; c < cols; c++) {
    for (let r = 0; r < rows; r++) {
      const value = values[r * cols + c]! * scale;
      const offset = (c * rows + r) * bytesPerValue;
      if (dataType === DataType.float16) view.setUint16(offset, float32ToFloat16Bits(value), true);
      else view.setFloat32(offset, value, true);
    }
  }
  return raw;
}

/**
 * Where the branches' weights come from: baked into the graph (inference), or graph inputs `down_t` [in, rank] and
 * `up_t` [rank, out] per module (see `trainableLoraInputs`) that a trainer feeds anew each step, with alpha / rank fed
 * as the strength.
 */
export type LoraBranchWeights =
  | { kind: 'constant'; modules: readonly LoraModule[] }
  | { kind: 'trainable'; rank: number; modules: readonly string[] };

/** The graph inputs that hold a trainable module's Aᵀ and Bᵀ. */
export function trainableLoraInputs(module: string): { downT: string; upT: string } {
  return { downT: `${PREFIX}/${module}/down_t`, upT: `${PREFIX}/${module}/up_t` };
}

interface Branch {
  module: string;
  target: GraphTarget;
  /** Adds the branch's weights to the graph and returns the names of Aᵀ and (scaled) Bᵀ. */
  weights(claim: (name: string) => string): { downT: string; upT: string };
}

function constantBranches(modules: readonly LoraModule[], targets: ReadonlyMap<string, GraphTarget>, initializers: Chunks[]): Branch[] {
  return modules.map((lora) => {
    const target = checkModule(lora, targets.get(lora.module));
    const dataType = target.weightDataType;
    return {
      module: lora.module,
      target,
      weights: (claim) => {
        const downT = claim(`${PREFIX}/${lora.module}/down_t`);
        const upT = claim(`${PREFIX}/${lora.module}/up_t_scaled`);
        initializers.push(encodeTensor(downT, dataType, [lora.inFeatures, lora.rank], transposedRawData(lora.down, lora.rank, lora.inFeatures, 1, dataType)));
        // scale folded into the constant saves a Mul per projection per step.
        initializers.push(encodeTensor(upT, dataType, [lora.rank, lora.outFeatures], transposedRawData(lora.up, lora.outFeatures, lora.rank, lora.scale, dataType)));
        return { downT, upT };
      },
    };
  });
}

function trainableBranches(rank: number, modules: readonly string[], targets: ReadonlyMap<string, GraphTarget>, inputs: Chunks[]): Branch[] {
  if (!Number.isInteger(rank) || rank < 1) throw new LoraGraphError(`LoRA rank ${rank} must be a positive integer`);
  return modules.map((module) => {
    const target = targets.get(module);
    if (target === undefined) throw new LoraGraphError(`LoRA module ${module} is not a projection of this UNet`);
    if (target.weightDataType !== DataType.float) {
      throw new LoraGraphError(`the UNet's weight for ${target.nodeName} is ${dataTypeName(target.weightDataType)}: training needs a float32 UNet (export one with optimum without --dtype fp16)`);
    }
    return {
      module,
      target,
      weights: (claim) => {
        const names = trainableLoraInputs(module);
        inputs.push(lengthDelimitedField(GraphField.input, encodeTensorValueInfo(claim(names.downT), DataType.float, [target.inFeatures, rank])));
        inputs.push(lengthDelimitedField(GraphField.input, encodeTensorValueInfo(claim(names.upT), DataType.float, [rank, target.outFeatures])));
        return names;
      },
    };
  });
}

/**
 * The model with a low-rank branch on each module's projection and the float32 input `lora_strength` [batch].
 * Throws, naming the module, when a module is not a target of this graph or its shapes do not fit.
 */
export function addLoraBranches(modelBytes: Uint8Array, weights: LoraBranchWeights): Uint8Array {
  const model = decodeModel(modelBytes);
  const { targets, names, inputNames } = indexGraph(model.graph);
  if (inputNames.has(LORA_STRENGTH_INPUT)) throw new LoraGraphError(`the model already has an input named ${LORA_STRENGTH_INPUT}: its LoRA branches were added before`);

  const initializers: Chunks[] = [];
  const weightInputs: Chunks[] = [];
  const branches = weights.kind === 'constant'
    ? constantBranches(weights.modules, targets, initializers)
    : trainableBranches(weights.rank, weights.modules, targets, weightInputs);
  const byField = new Map<number, Branch>();
  for (const branch of branches) {
    if (byField.has(branch.target.fieldIndex)) throw new LoraGraphError(`LoRA module ${branch.module} is listed twice`);
    byField.set(branch.target.fieldIndex, branch);
  }

  const newNames: string[] = [LORA_STRENGTH_INPUT];
  const claim = (name: string): string => {
    newNames.push(name);
    return name;
  };
  const preludeNodes: NodeSpec[] = [];
  // Attention projections see x as [batch, tokens, features]: strength [batch] broadcasts once reshaped to [batch, 1, 1].
  const strengthByDataType = new Map<number, string>();
  const strengthFor = (dataType: number): string => {
    if (strengthByDataType.size === 0) {
      initializers.push(encodeTensor(claim(STRENGTH_SHAPE), DataType.int64, [3], tensorRawData(DataType.int64, [-1, 1, 1])));
      preludeNodes.push({ name: claim(`${PREFIX}/strength/reshape`), opType: 'Reshape', input: [LORA_STRENGTH_INPUT, STRENGTH_SHAPE], output: [claim(STRENGTH_PER_SAMPLE)] });
      strengthByDataType.set(DataType.float, STRENGTH_PER_SAMPLE);
    }
    const known = strengthByDataType.get(dataType);
    if (known !== undefined) return known;
    const typeName = dataTypeName(dataType);
    const cast = claim(`${STRENGTH_PER_SAMPLE}_${typeName}`);
    preludeNodes.push({ name: claim(`${PREFIX}/strength/cast_${typeName}`), opType: 'Cast', input: [STRENGTH_PER_SAMPLE], output: [cast], attributes: { to: { kind: 'int', value: dataType } } });
    strengthByDataType.set(dataType, cast);
    return cast;
  };

  const branchByField = new Map<number, Chunks>();
  for (const [fieldIndex, branch] of byField) {
    const prefix = `${PREFIX}/${branch.module}`;
    const { target } = branch;
    const x = target.node.input[0]!;
    const output = target.node.output[0]!;
    const base = claim(`${prefix}/base`);
    const { downT, upT } = branch.weights(claim);
    const strength = strengthFor(target.weightDataType);
    const down = claim(`${prefix}/down_out`);
    const scaled = claim(`${prefix}/down_out_strength`);
    const delta = claim(`${prefix}/delta`);
    const nodes: NodeSpec[] = [
      { name: claim(`${prefix}/down`), opType: 'MatMul', input: [x, downT], output: [down] },
      // Strength on the rank-r intermediate: the narrowest tensor of the branch.
      { name: claim(`${prefix}/strength`), opType: 'Mul', input: [down, strength], output: [scaled] },
      { name: claim(`${prefix}/up`), opType: 'MatMul', input: [scaled, upT], output: [delta] },
      // The sum takes over the projection's output name, so its consumers and any graph output need no rewiring.
      { name: claim(`${prefix}/add`), opType: 'Add', input: [base, delta], output: [output] },
    ];
    branchByField.set(fieldIndex, [
      ...lengthDelimitedField(GraphField.node, renameNodeValues(model.graph[fieldIndex]!.payload, 'output', [base])),
      ...nodes.flatMap((node) => lengthDelimitedField(GraphField.node, encodeNode(node))),
    ]);
  }

  const seen = new Set<string>();
  for (const name of newNames) {
    if (names.has(name) || seen.has(name)) throw new LoraGraphError(`cannot add ${name}: the graph already has a value or node of that name`);
    seen.add(name);
  }

  const newInputs = [
    ...lengthDelimitedField(GraphField.input, encodeTensorValueInfo(LORA_STRENGTH_INPUT, DataType.float, ['batch_size'])),
    ...weightInputs.flat(),
  ];
  const newInitializers = initializers.flatMap((tensor) => lengthDelimitedField(GraphField.initializer, tensor));
  const lastIndexOf = (number: number): number => model.graph.findLastIndex((field) => field.number === number);
  const firstNode = model.graph.findIndex((field) => field.number === GraphField.node);
  const lastInitializer = lastIndexOf(GraphField.initializer);
  const lastInput = lastIndexOf(GraphField.input);
  const prelude = preludeNodes.flatMap((node) => lengthDelimitedField(GraphField.node, encodeNode(node)));
  // Array spreads, not push(...chunks): a large LoRA has more chunks than a call may take arguments.
  const graph: Chunks = model.graph.flatMap((field, index) => [
    // Nodes stay in topological order: the strength prelude first, each branch right after the MatMul it extends.
    ...(index === firstNode ? prelude : []),
    ...(branchByField.get(index) ?? [field.encoded]),
    ...(index === lastInitializer ? newInitializers : []),
    ...(index === lastInput ? newInputs : []),
  ]);
  if (lastInput === -1) graph.push(...newInputs);
  return encodeModel(model, graph);
}
