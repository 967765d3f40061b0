import type { LoraTarget } from '../lora/lora-types.js';
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
// x·downᵀ·(scale·upᵀ)·strength[b], whose weights are graph inputs and `strength` one more with a value per batch
// entry, so one session serves panels without LoRA (0) and with it (s) in the same batch, and any LoRA version fed.
// Only the small graph file is rewritten; weights kept in external data stay there.

/** The float32 input [batch] the rewritten graph adds: the LoRA strength of each batch entry (of slot 0). */
export const LORA_STRENGTH_INPUT = 'lora_strength';

/** The strength input of a slot: each batch entry's strength of the LoRA fed to that slot. */
export function loraStrengthInput(slot: number): string {
  return slot === 0 ? LORA_STRENGTH_INPUT : `${LORA_STRENGTH_INPUT}_${slot}`;
}

export class LoraGraphError extends Error {
  override name = 'LoraGraphError';
}

const PREFIX = 'lora';
/** Enough for a validation triptych: base, the served version and a candidate in one batch. */
export const MAX_LORA_SLOTS = 4;
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

/**
 * What the branches are for. Both take their weights as graph inputs `down_t` [in, rank] and `up_t` [rank, out] per
 * module (see `loraWeightInputs`), fed anew each run, so one session serves any LoRA of that rank or lower:
 * inference feeds a version's weights (in the UNet's own float type) and swaps versions without a rebuild; training
 * feeds the weights it is learning, and needs float32. Each of `slots` (default 1) is a branch of its own with its
 * own weights and strengths, so one batch can hold panels of different LoRA versions.
 */
export interface LoraBranchSpec {
  purpose: 'inference' | 'training';
  rank: number;
  modules: readonly string[];
  slots?: number;
}

/** The graph inputs that hold a module's Aᵀ and (scaled) Bᵀ in a slot. */
export function loraWeightInputs(module: string, slot = 0): { downT: string; upT: string } {
  const scope = slot === 0 ? `${PREFIX}/${module}` : `${PREFIX}/slot${slot}/${module}`;
  return { downT: `${scope}/down_t`, upT: `${scope}/up_t` };
}

function checkTarget(spec: LoraBranchSpec, module: string, target: GraphTarget | undefined): GraphTarget {
  if (target === undefined) throw new LoraGraphError(`LoRA module ${module} is not a projection of this UNet`);
  if (!BRANCH_DATA_TYPES.has(target.weightDataType)) {
    throw new LoraGraphError(`the UNet's weight for ${target.nodeName} is ${dataTypeName(target.weightDataType)}, only float32 and float16 are supported`);
  }
  if (spec.purpose === 'training' && target.weightDataType !== DataType.float) {
    throw new LoraGraphError(`the UNet's weight for ${target.nodeName} is ${dataTypeName(target.weightDataType)}: training needs a float32 UNet (export one with optimum without --dtype fp16)`);
  }
  return target;
}

/**
 * The model with a low-rank branch on each module's projection, its weight inputs (in the projection's float type)
 * and the float32 input `lora_strength` [batch]. Throws, naming the module, when a module is not a target of this
 * graph or its weights are of a type the purpose cannot take.
 */
export function addLoraBranches(modelBytes: Uint8Array, spec: LoraBranchSpec): Uint8Array {
  const model = decodeModel(modelBytes);
  const { targets, names, inputNames } = indexGraph(model.graph);
  if (inputNames.has(LORA_STRENGTH_INPUT)) throw new LoraGraphError(`the model already has an input named ${LORA_STRENGTH_INPUT}: its LoRA branches were added before`);
  if (!Number.isInteger(spec.rank) || spec.rank < 1) throw new LoraGraphError(`LoRA rank ${spec.rank} must be a positive integer`);
  const slots = spec.slots ?? 1;
  if (!Number.isInteger(slots) || slots < 1 || slots > MAX_LORA_SLOTS) throw new LoraGraphError(`LoRA slots ${slots} must be an integer from 1 to ${MAX_LORA_SLOTS}`);

  const initializers: Chunks[] = [];
  const weightInputs: Chunks[] = [];
  const byField = new Map<number, { module: string; target: GraphTarget }>();
  for (const module of spec.modules) {
    const target = checkTarget(spec, module, targets.get(module));
    if (byField.has(target.fieldIndex)) throw new LoraGraphError(`LoRA module ${module} is listed twice`);
    byField.set(target.fieldIndex, { module, target });
  }

  const strengthInputs = Array.from({ length: slots }, (_, slot) => loraStrengthInput(slot));
  const newNames: string[] = [...strengthInputs];
  const claim = (name: string): string => {
    newNames.push(name);
    return name;
  };
  const preludeNodes: NodeSpec[] = [];
  // Attention projections see x as [batch, tokens, features]: strength [batch] broadcasts once reshaped to [batch, 1, 1].
  const strengths = new Map<string, string>();
  const strengthFor = (slot: number, dataType: number): string => {
    const perSample = `${STRENGTH_PER_SAMPLE}${slot === 0 ? '' : `_${slot}`}`;
    if (strengths.size === 0) initializers.push(encodeTensor(claim(STRENGTH_SHAPE), DataType.int64, [3], tensorRawData(DataType.int64, [-1, 1, 1])));
    if (!strengths.has(`${slot}|${DataType.float}`)) {
      preludeNodes.push({ name: claim(`${perSample}/reshape`), opType: 'Reshape', input: [strengthInputs[slot]!, STRENGTH_SHAPE], output: [claim(perSample)] });
      strengths.set(`${slot}|${DataType.float}`, perSample);
    }
    const key = `${slot}|${dataType}`;
    const known = strengths.get(key);
    if (known !== undefined) return known;
    const typeName = dataTypeName(dataType);
    const cast = claim(`${perSample}_${typeName}`);
    preludeNodes.push({ name: claim(`${perSample}/cast_${typeName}`), opType: 'Cast', input: [perSample], output: [cast], attributes: { to: { kind: 'int', value: dataType } } });
    strengths.set(key, cast);
    return cast;
  };

  const branchByField = new Map<number, Chunks>();
  for (const [fieldIndex, branch] of byField) {
    const prefix = `${PREFIX}/${branch.module}`;
    const { target } = branch;
    const x = target.node.input[0]!;
    const output = target.node.output[0]!;
    const base = claim(`${prefix}/base`);
    const nodes: NodeSpec[] = [];
    const deltas: string[] = [];
    for (let slot = 0; slot < slots; slot++) {
      const { downT, upT } = loraWeightInputs(branch.module, slot);
      const scope = downT.slice(0, -'/down_t'.length);
      weightInputs.push(lengthDelimitedField(GraphField.input, encodeTensorValueInfo(claim(downT), target.weightDataType, [target.inFeatures, spec.rank])));
      weightInputs.push(lengthDelimitedField(GraphField.input, encodeTensorValueInfo(claim(upT), target.weightDataType, [spec.rank, target.outFeatures])));
      const down = claim(`${scope}/down_out`);
      const scaled = claim(`${scope}/down_out_strength`);
      const delta = claim(`${scope}/delta`);
      nodes.push(
        { name: claim(`${scope}/down`), opType: 'MatMul', input: [x, downT], output: [down] },
        // Strength on the rank-r intermediate: the narrowest tensor of the branch.
        { name: claim(`${scope}/strength`), opType: 'Mul', input: [down, strengthFor(slot, target.weightDataType)], output: [scaled] },
        { name: claim(`${scope}/up`), opType: 'MatMul', input: [scaled, upT], output: [delta] },
      );
      deltas.push(delta);
    }
    // The sum takes over the projection's output name, so its consumers and any graph output need no rewiring.
    nodes.push({ name: claim(`${prefix}/add`), opType: slots === 1 ? 'Add' : 'Sum', input: [base, ...deltas], output: [output] });
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
    ...strengthInputs.flatMap((name) => lengthDelimitedField(GraphField.input, encodeTensorValueInfo(name, DataType.float, ['batch_size']))),
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
