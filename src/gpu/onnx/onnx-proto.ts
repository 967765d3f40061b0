import {
  decodeMessage,
  joinChunks,
  lengthDelimitedField,
  repeatedVarintValues,
  stringField,
  stringValue,
  varintField,
  varintValue,
  type Chunks,
  type ProtoField,
} from './protobuf.js';

// The few ONNX messages a graph rewrite reads or writes, with field numbers from onnx/onnx.proto. Reading gives plain
// views of the fields we need; the messages themselves stay as protobuf fields so the rest passes through untouched.

export const ModelField = { graph: 7 } as const;

export interface DecodedModel {
  /** ModelProto's fields, the graph among them. */
  fields: ProtoField[];
  graphIndex: number;
  /** GraphProto's fields. */
  graph: ProtoField[];
}

export function decodeModel(bytes: Uint8Array): DecodedModel {
  const fields = decodeMessage(bytes);
  const graphIndices = fields.flatMap((field, index) => (field.number === ModelField.graph ? [index] : []));
  // Protobuf would merge repeated copies of a singular message; no exporter writes them, so refuse rather than merge.
  if (graphIndices.length !== 1) throw new Error(`not an ONNX model: expected one graph, found ${graphIndices.length}`);
  const graphIndex = graphIndices[0]!;
  return { fields, graphIndex, graph: decodeMessage(fields[graphIndex]!.payload) };
}

/** The model with its graph replaced by `graph` (GraphProto fields, encoded); every other field as it was read. */
export function encodeModel(model: DecodedModel, graph: Chunks): Uint8Array {
  // flatMap, not push(...chunks): a large graph has more chunks than a call may take arguments.
  return joinChunks(model.fields.flatMap((field, index) => (index === model.graphIndex ? lengthDelimitedField(ModelField.graph, graph) : [field.encoded])));
}

export const GraphField = { node: 1, name: 2, initializer: 5, input: 11, output: 12 } as const;

export const NodeField = { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 } as const;

// raw_data is only ever written: weights already in the graph, inline or external (external_data 13, data_location 14),
// pass through unread.
export const TensorField = { dims: 1, dataType: 2, name: 8, rawData: 9 } as const;

const ValueInfoField = { name: 1, type: 2 } as const;
const TypeField = { tensorType: 1 } as const;
const TensorTypeField = { elemType: 1, shape: 2 } as const;
const ShapeField = { dim: 1 } as const;
const DimensionField = { dimValue: 1, dimParam: 2 } as const;
const AttributeField = { name: 1, i: 3, type: 20 } as const;
const AttributeType = { int: 2 } as const;

/** TensorProto.DataType values this code writes or names. */
export const DataType = { float: 1, int64: 7, float16: 10 } as const;

const DATA_TYPE_NAMES: Record<number, string> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string', 9: 'bool',
  10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 16: 'bfloat16',
};

export function dataTypeName(dataType: number): string {
  return DATA_TYPE_NAMES[dataType] ?? `data type ${dataType}`;
}

export interface NodeView {
  name: string;
  opType: string;
  domain: string;
  input: string[];
  output: string[];
}

export function readNode(payload: Uint8Array): NodeView {
  const node: NodeView = { name: '', opType: '', domain: '', input: [], output: [] };
  for (const field of decodeMessage(payload)) {
    switch (field.number) {
      case NodeField.input: node.input.push(stringValue(field)); break;
      case NodeField.output: node.output.push(stringValue(field)); break;
      case NodeField.name: node.name = stringValue(field); break;
      case NodeField.opType: node.opType = stringValue(field); break;
      case NodeField.domain: node.domain = stringValue(field); break;
    }
  }
  return node;
}

/** The node with its outputs renamed, every other field (attributes included) kept as it was. */
export function renameNodeOutputs(payload: Uint8Array, outputs: readonly string[]): Chunks {
  const chunks: Chunks = [];
  let next = 0;
  for (const field of decodeMessage(payload)) {
    if (field.number !== NodeField.output) {
      chunks.push(field.encoded);
      continue;
    }
    const name = outputs[next++];
    if (name === undefined) throw new Error(`renameNodeOutputs: the node has more outputs than the ${outputs.length} names given`);
    chunks.push(...stringField(NodeField.output, name));
  }
  if (next !== outputs.length) throw new Error(`renameNodeOutputs: the node has ${next} outputs, ${outputs.length} names were given`);
  return chunks;
}

export interface NodeSpec {
  name: string;
  opType: string;
  input: readonly string[];
  output: readonly string[];
  intAttributes?: Readonly<Record<string, number>>;
}

export function encodeNode(node: NodeSpec): Chunks {
  const chunks: Chunks = [];
  for (const name of node.input) chunks.push(...stringField(NodeField.input, name));
  for (const name of node.output) chunks.push(...stringField(NodeField.output, name));
  chunks.push(...stringField(NodeField.name, node.name));
  chunks.push(...stringField(NodeField.opType, node.opType));
  for (const [name, value] of Object.entries(node.intAttributes ?? {})) {
    chunks.push(...lengthDelimitedField(NodeField.attribute, [
      ...stringField(AttributeField.name, name),
      ...varintField(AttributeField.i, value),
      ...varintField(AttributeField.type, AttributeType.int),
    ]));
  }
  return chunks;
}

export interface TensorView {
  name: string;
  dims: number[];
  dataType: number;
}

/** Name, shape and type only: the data (inline or external) is never read. */
export function readTensor(payload: Uint8Array): TensorView {
  const tensor: TensorView = { name: '', dims: [], dataType: 0 };
  for (const field of decodeMessage(payload)) {
    switch (field.number) {
      case TensorField.dims: tensor.dims.push(...repeatedVarintValues(field)); break;
      case TensorField.dataType: tensor.dataType = varintValue(field); break;
      case TensorField.name: tensor.name = stringValue(field); break;
    }
  }
  return tensor;
}

export function encodeTensor(name: string, dataType: number, dims: readonly number[], rawData: Uint8Array): Chunks {
  const chunks: Chunks = [];
  for (const dim of dims) chunks.push(...varintField(TensorField.dims, dim));
  chunks.push(...varintField(TensorField.dataType, dataType));
  chunks.push(...stringField(TensorField.name, name));
  chunks.push(...lengthDelimitedField(TensorField.rawData, [rawData]));
  return chunks;
}

export function readValueInfoName(payload: Uint8Array): string {
  const nameField = decodeMessage(payload).find((field) => field.number === ValueInfoField.name);
  return nameField ? stringValue(nameField) : '';
}

/** A ValueInfoProto for a tensor; a string dimension is symbolic (dim_param), a number fixed (dim_value). */
export function encodeTensorValueInfo(name: string, elemType: number, dims: readonly (number | string)[]): Chunks {
  const shape: Chunks = [];
  for (const dim of dims) {
    const dimension = typeof dim === 'number' ? varintField(DimensionField.dimValue, dim) : stringField(DimensionField.dimParam, dim);
    shape.push(...lengthDelimitedField(ShapeField.dim, dimension));
  }
  const tensorType = [...varintField(TensorTypeField.elemType, elemType), ...lengthDelimitedField(TensorTypeField.shape, shape)];
  return [
    ...stringField(ValueInfoField.name, name),
    ...lengthDelimitedField(ValueInfoField.type, lengthDelimitedField(TypeField.tensorType, tensorType)),
  ];
}
