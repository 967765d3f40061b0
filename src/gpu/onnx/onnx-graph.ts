import {
  DataType,
  GraphField,
  dataTypeName,
  decodeModel,
  readConstantTensor,
  readNode,
  readTensor,
  readValueInfoElemType,
  readValueInfoName,
  type ConstantTensor,
  type DecodedModel,
  type NodeView,
} from './onnx-proto.js';
import { decodeMessage, stringValue, varintValue } from './protobuf.js';

// A read-only view of a whole ONNX graph for the code that derives new graphs from it (the training graph): every
// node with its attributes, the element type of every value, and the values of the small constants (shapes, axes,
// Slice bounds) that decide what a node does. Weights are never read: only their names, shapes and types.

export class OnnxGraphError extends Error {
  override name = 'OnnxGraphError';
}

export interface GraphNode extends NodeView {
  /** Index of the node's field among the GraphProto's fields, to re-emit or replace it. */
  fieldIndex: number;
}

export interface GraphInitializer {
  name: string;
  dims: number[];
  dataType: number;
}

const ModelField = { opsetImport: 8 } as const;
const OperatorSetField = { domain: 1, version: 2 } as const;

const BOOLEAN_OPS = new Set(['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'IsNaN', 'IsInf']);
const INT64_OPS = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin']);

export class OnnxGraph {
  readonly nodes: GraphNode[] = [];
  readonly initializers = new Map<string, GraphInitializer>();
  /** Graph inputs (initializers excluded) with their declared element types, in order. */
  readonly inputs = new Map<string, number>();
  readonly outputs: string[] = [];
  /** Every node, value and initializer name: names a derived graph adds must not shadow one. */
  readonly names = new Set<string>();
  private readonly producers = new Map<string, GraphNode>();
  private readonly constants = new Map<string, ConstantTensor>();
  private readonly elemTypes = new Map<string, number>();

  private constructor(readonly model: DecodedModel, readonly opset: number) {}

  static decode(modelBytes: Uint8Array): OnnxGraph {
    const model = decodeModel(modelBytes);
    const graph = new OnnxGraph(model, readDefaultOpset(model));
    graph.index();
    return graph;
  }

  private index(): void {
    this.model.graph.forEach((field, fieldIndex) => {
      switch (field.number) {
        case GraphField.initializer: {
          const tensor = readTensor(field.payload);
          this.initializers.set(tensor.name, tensor);
          this.elemTypes.set(tensor.name, tensor.dataType);
          this.names.add(tensor.name);
          // Shapes and axes are a few int64 values; weights (large, or external) are left unread.
          if (tensor.dataType !== DataType.float && tensor.dataType !== DataType.float16) {
            const constant = readConstantTensor(field.payload);
            if (constant !== null) this.constants.set(tensor.name, constant);
          }
          break;
        }
        case GraphField.input: {
          const name = readValueInfoName(field.payload);
          this.inputs.set(name, readValueInfoElemType(field.payload));
          this.names.add(name);
          break;
        }
        case GraphField.output:
          this.outputs.push(readValueInfoName(field.payload));
          break;
        case GraphField.node: {
          const node: GraphNode = { ...readNode(field.payload), fieldIndex };
          this.nodes.push(node);
          this.names.add(node.name);
          for (const output of node.output) {
            this.names.add(output);
            this.producers.set(output, node);
          }
          break;
        }
      }
    });
    for (const name of this.initializers.keys()) this.inputs.delete(name);
    for (const [name, type] of this.inputs) this.elemTypes.set(name, type);
    for (const node of this.nodes) this.inferTypes(node);
  }

  private inferTypes(node: GraphNode): void {
    if (node.domain !== '' && node.domain !== 'ai.onnx') {
      throw new OnnxGraphError(`node ${node.name} is ${node.domain}.${node.opType}, not a standard ONNX operator`);
    }
    let type: number;
    if (node.opType === 'Constant') {
      const value = node.attributes.get('value');
      if (value?.kind === 'tensor') {
        this.constants.set(node.output[0]!, value.value);
        type = value.value.dataType;
      } else if (value === undefined && node.attributes.get('value_ints')?.kind === 'ints') {
        const ints = node.attributes.get('value_ints') as { value: readonly number[] };
        this.constants.set(node.output[0]!, { dataType: DataType.int64, dims: [ints.value.length], values: [...ints.value] });
        type = DataType.int64;
      } else {
        throw new OnnxGraphError(`Constant node ${node.name}: only tensor and integer-list constants are supported`);
      }
    } else if (node.opType === 'Cast') {
      type = this.intAttribute(node, 'to');
    } else if (node.opType === 'ConstantOfShape') {
      const value = node.attributes.get('value');
      type = value?.kind === 'tensor' ? value.value.dataType : DataType.float;
    } else if (BOOLEAN_OPS.has(node.opType)) {
      type = DataType.bool;
    } else if (INT64_OPS.has(node.opType)) {
      type = DataType.int64;
    } else if (node.opType === 'Where') {
      type = this.elemType(node.input[1]!);
    } else {
      type = this.elemType(node.input[0]!);
    }
    for (const output of node.output) this.elemTypes.set(output, type);
  }

  elemType(name: string): number {
    const type = this.elemTypes.get(name);
    if (type === undefined) throw new OnnxGraphError(`value ${name} is used before any node produces it`);
    return type;
  }

  isFloat(name: string): boolean {
    const type = this.elemType(name);
    return type === DataType.float || type === DataType.float16 || type === DataType.double;
  }

  producer(name: string): GraphNode | undefined {
    return this.producers.get(name);
  }

  /** The values of a constant (an initializer stored inline, or a Constant node's output); null otherwise. */
  constant(name: string): ConstantTensor | null {
    return this.constants.get(name) ?? null;
  }

  intAttribute(node: NodeView, name: string, fallback?: number): number {
    const attribute = node.attributes.get(name);
    if (attribute === undefined && fallback !== undefined) return fallback;
    if (attribute?.kind !== 'int') throw new OnnxGraphError(`node ${node.name} (${node.opType}): attribute ${name} is ${attribute?.kind ?? 'missing'}, expected an integer`);
    return attribute.value;
  }

  intsAttribute(node: NodeView, name: string, fallback?: readonly number[]): readonly number[] {
    const attribute = node.attributes.get(name);
    if (attribute === undefined && fallback !== undefined) return fallback;
    if (attribute?.kind !== 'ints') throw new OnnxGraphError(`node ${node.name} (${node.opType}): attribute ${name} is ${attribute?.kind ?? 'missing'}, expected a list of integers`);
    return attribute.value;
  }

  floatAttribute(node: NodeView, name: string, fallback: number): number {
    const attribute = node.attributes.get(name);
    if (attribute === undefined) return fallback;
    if (attribute.kind !== 'float') throw new OnnxGraphError(`node ${node.name} (${node.opType}): attribute ${name} is ${attribute.kind}, expected a float`);
    return attribute.value;
  }

  stringAttribute(node: NodeView, name: string, fallback: string): string {
    const attribute = node.attributes.get(name);
    if (attribute === undefined) return fallback;
    if (attribute.kind !== 'string') throw new OnnxGraphError(`node ${node.name} (${node.opType}): attribute ${name} is ${attribute.kind}, expected a string`);
    return attribute.value;
  }

  describe(name: string): string {
    return `${name} (${dataTypeName(this.elemType(name))})`;
  }
}

function readDefaultOpset(model: DecodedModel): number {
  for (const field of model.fields) {
    if (field.number !== ModelField.opsetImport) continue;
    let domain = '';
    let version = 0;
    for (const inner of decodeMessage(field.payload)) {
      if (inner.number === OperatorSetField.domain) domain = stringValue(inner);
      if (inner.number === OperatorSetField.version) version = varintValue(inner);
    }
    if (domain === '' || domain === 'ai.onnx') return version;
  }
  throw new OnnxGraphError('the model imports no version of the standard ONNX operator set');
}
