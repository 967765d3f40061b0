import type { OnnxGraph } from './onnx-graph.js';
import {
  DataType,
  GraphField,
  encodeModel,
  encodeNode,
  encodeTensor,
  encodeTensorValueInfo,
  tensorRawData,
  type AttributeValue,
  type NodeSpec,
  type NodeView,
} from './onnx-proto.js';
import { lengthDelimitedField, type Chunks } from './protobuf.js';

// Collects the nodes, constants, inputs and outputs that a graph rewrite adds, under fresh names that cannot shadow
// anything the graph already holds, and spells the operators whose form changed between opsets.

export class GraphBuilderError extends Error {
  override name = 'GraphBuilderError';
}

export const attr = {
  int: (value: number): AttributeValue => ({ kind: 'int', value }),
  ints: (value: readonly number[]): AttributeValue => ({ kind: 'ints', value }),
  float: (value: number): AttributeValue => ({ kind: 'float', value }),
  string: (value: string): AttributeValue => ({ kind: 'string', value }),
};

export class GraphBuilder {
  readonly nodes: NodeSpec[] = [];
  private readonly initializers: Chunks[] = [];
  private readonly inputs: Chunks[] = [];
  private readonly outputs: Chunks[] = [];
  private readonly claimed = new Set<string>();
  private readonly constantCache = new Map<string, string>();
  private counter = 0;

  /** `taken`: the names already in the graph. `opset`: the model's ONNX opset, which decides how reductions are spelled. */
  constructor(private readonly taken: ReadonlySet<string>, readonly opset: number, private readonly prefix: string) {}

  claim(name: string): string {
    if (this.taken.has(name) || this.claimed.has(name)) throw new GraphBuilderError(`cannot add ${name}: the graph already has a value or node of that name`);
    this.claimed.add(name);
    return name;
  }

  private fresh(hint: string): string {
    for (;;) {
      const name = `${this.prefix}/${hint}_${this.counter++}`;
      if (!this.taken.has(name) && !this.claimed.has(name)) return this.claim(name);
    }
  }

  /** Adds one node and returns its (first) output's name. */
  op(opType: string, input: readonly string[], attributes?: Record<string, AttributeValue>, output?: string): string {
    const out = output ?? this.fresh(opType);
    this.nodes.push({ name: this.fresh(`${opType}_node`), opType, input, output: [out], ...(attributes ? { attributes } : {}) });
    return out;
  }

  /** Adds a node that computes what `node` of the graph does, from `input` into fresh values; returns their names. */
  copy(node: NodeView, input: readonly string[]): string[] {
    if (node.domain !== '') throw new GraphBuilderError(`cannot copy node ${node.name}: its operator ${node.domain}.${node.opType} is not a standard ONNX one`);
    const output = node.output.map((name) => (name === '' ? '' : this.fresh(node.opType)));
    this.nodes.push({ name: this.fresh(`${node.opType}_node`), opType: node.opType, input, output, attributes: Object.fromEntries(node.attributes) });
    return output;
  }

  input(name: string, elemType: number, dims: readonly (number | string)[]): string {
    this.inputs.push(lengthDelimitedField(GraphField.input, encodeTensorValueInfo(this.claim(name), elemType, dims)));
    return name;
  }

  output(name: string, elemType: number, dims: readonly number[] | null): void {
    this.outputs.push(lengthDelimitedField(GraphField.output, encodeTensorValueInfo(name, elemType, dims)));
  }

  /** A constant initializer; identical constants are shared. */
  constant(dataType: number, dims: readonly number[], values: readonly number[]): string {
    const key = `${dataType}|${dims.join(',')}|${values.join(',')}`;
    const known = this.constantCache.get(key);
    if (known !== undefined) return known;
    const name = this.fresh('const');
    this.initializers.push(lengthDelimitedField(GraphField.initializer, encodeTensor(name, dataType, dims, tensorRawData(dataType, values))));
    this.constantCache.set(key, name);
    return name;
  }

  int64s(values: readonly number[]): string {
    return this.constant(DataType.int64, [values.length], values);
  }

  scalar(value: number): string {
    return this.constant(DataType.float, [], [value]);
  }

  /** ReduceSum/ReduceMean over `axes`: an input from opset 13 (ReduceSum) or 18 (ReduceMean) on, an attribute before. */
  reduce(opType: 'ReduceSum' | 'ReduceMean', x: string, axes: readonly number[], keepdims: boolean): string {
    const axesAsInput = opType === 'ReduceSum' ? this.opset >= 13 : this.opset >= 18;
    const keep = { keepdims: attr.int(keepdims ? 1 : 0) };
    return axesAsInput
      ? this.op(opType, [x, this.int64s(axes)], keep)
      : this.op(opType, [x], { ...keep, axes: attr.ints(axes) });
  }

  reshape(x: string, shape: readonly number[]): string {
    return this.op('Reshape', [x, this.int64s(shape)]);
  }

  /** GraphProto fields for everything added, grouped so each lands beside its kind. */
  encoded(): { nodes: Chunks; initializers: Chunks; inputs: Chunks; outputs: Chunks } {
    return {
      nodes: this.nodes.flatMap((node) => lengthDelimitedField(GraphField.node, encodeNode(node))),
      initializers: this.initializers.flat(),
      inputs: this.inputs.flat(),
      outputs: this.outputs.flat(),
    };
  }
}

/**
 * The model with the builder's additions: `prelude` nodes before the first node (they may feed any node), the
 * builder's nodes after the last (they may read any value), its initializers, inputs and outputs beside the graph's
 * own, and the fields at the indices of `replace` (nodes, inputs, outputs) replaced by the encoded fields given there,
 * or left out where those are empty.
 */
export function rewriteModel(graph: OnnxGraph, builder: GraphBuilder, options: { prelude?: GraphBuilder; replace?: ReadonlyMap<number, Chunks> } = {}): Uint8Array {
  const fields = graph.model.graph;
  const added = builder.encoded();
  const prelude = options.prelude?.encoded();
  const replace = options.replace ?? new Map<number, Chunks>();
  const lastIndexOf = (number: number): number => fields.findLastIndex((field) => field.number === number);
  const firstNode = fields.findIndex((field) => field.number === GraphField.node);
  const lastNode = lastIndexOf(GraphField.node);
  const lastInitializer = lastIndexOf(GraphField.initializer);
  const lastInput = lastIndexOf(GraphField.input);
  const lastOutput = lastIndexOf(GraphField.output);
  const chunks: Chunks = fields.flatMap((field, index) => [
    ...(index === firstNode && prelude ? [...prelude.initializers, ...prelude.inputs, ...prelude.nodes] : []),
    ...(replace.get(index) ?? [field.encoded]),
    ...(index === lastNode ? added.nodes : []),
    ...(index === lastInitializer ? added.initializers : []),
    ...(index === lastInput ? added.inputs : []),
    ...(index === lastOutput ? added.outputs : []),
  ]);
  if (lastInitializer === -1) chunks.push(...added.initializers);
  if (lastInput === -1) chunks.push(...added.inputs);
  if (lastOutput === -1) chunks.push(...added.outputs);
  return encodeModel(graph.model, chunks);
}
