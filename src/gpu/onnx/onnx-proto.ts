import {
  decodeMessage,
  fixed32FloatField,
  joinChunks,
  lengthDelimitedField,
  packedFloatField,
  packedVarintField,
  repeatedFloatValues,
  repeatedSignedVarintValues,
  repeatedVarintValues,
  signedVarintValue,
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

export const GraphField = { node: 1, name: 2, initializer: 5, input: 11, output: 12, valueInfo: 13 } as const;

export const NodeField = { input: 1, output: 2, name: 3, opType: 4, attribute: 5, domain: 7 } as const;

// raw_data is only ever written: weights already in the graph, inline or external (external_data 13, data_location 14),
// pass through unread.
export const TensorField = {
  dims: 1, dataType: 2, floatData: 4, int32Data: 5, int64Data: 7, name: 8, rawData: 9, doubleData: 10, dataLocation: 14,
} as const;

const ValueInfoField = { name: 1, type: 2 } as const;
const TypeField = { tensorType: 1 } as const;
const TensorTypeField = { elemType: 1, shape: 2 } as const;
const ShapeField = { dim: 1 } as const;
const DimensionField = { dimValue: 1, dimParam: 2 } as const;
const AttributeField = { name: 1, f: 2, i: 3, s: 4, t: 5, floats: 7, ints: 8, type: 20 } as const;
const AttributeType = { float: 1, int: 2, string: 3, tensor: 4, floats: 6, ints: 7 } as const;

/** TensorProto.DataType values this code writes or names. */
export const DataType = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7, bool: 9, float16: 10, double: 11 } as const;

const DATA_TYPE_NAMES: Record<number, string> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string', 9: 'bool',
  10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 16: 'bfloat16',
};

export function dataTypeName(dataType: number): string {
  return DATA_TYPE_NAMES[dataType] ?? `data type ${dataType}`;
}

/** A tensor small enough to hold as numbers: constants, shapes, axes. Float types widen to number. */
export interface ConstantTensor {
  dataType: number;
  dims: number[];
  values: number[];
}

/** An attribute as the graph code reads it; kinds it never reads (graphs, sparse tensors) are kept as `other`. */
export type AttributeValue =
  | { kind: 'int'; value: number }
  | { kind: 'float'; value: number }
  | { kind: 'ints'; value: readonly number[] }
  | { kind: 'floats'; value: readonly number[] }
  | { kind: 'string'; value: string }
  | { kind: 'tensor'; value: ConstantTensor }
  | { kind: 'other'; type: number };

export interface NodeView {
  name: string;
  opType: string;
  domain: string;
  input: string[];
  output: string[];
  attributes: Map<string, AttributeValue>;
}

export function readNode(payload: Uint8Array): NodeView {
  const node: NodeView = { name: '', opType: '', domain: '', input: [], output: [], attributes: new Map() };
  for (const field of decodeMessage(payload)) {
    switch (field.number) {
      case NodeField.input: node.input.push(stringValue(field)); break;
      case NodeField.output: node.output.push(stringValue(field)); break;
      case NodeField.name: node.name = stringValue(field); break;
      case NodeField.opType: node.opType = stringValue(field); break;
      case NodeField.domain: node.domain = stringValue(field); break;
      case NodeField.attribute: {
        const [name, value] = readAttribute(field.payload);
        node.attributes.set(name, value);
        break;
      }
    }
  }
  return node;
}

function readAttribute(payload: Uint8Array): [string, AttributeValue] {
  let name = '';
  let type = 0;
  let f = 0;
  let i = 0;
  let s = '';
  let t: ConstantTensor | null = null;
  const floats: number[] = [];
  const ints: number[] = [];
  for (const field of decodeMessage(payload)) {
    switch (field.number) {
      case AttributeField.name: name = stringValue(field); break;
      case AttributeField.type: type = varintValue(field); break;
      case AttributeField.f: f = new DataView(field.payload.buffer, field.payload.byteOffset, 4).getFloat32(0, true); break;
      case AttributeField.i: i = signedVarintValue(field); break;
      case AttributeField.s: s = stringValue(field); break;
      case AttributeField.t: t = readConstantTensor(field.payload); break;
      case AttributeField.floats: floats.push(...repeatedFloatValues(field)); break;
      case AttributeField.ints: ints.push(...repeatedSignedVarintValues(field)); break;
    }
  }
  switch (type) {
    case AttributeType.int: return [name, { kind: 'int', value: i }];
    case AttributeType.float: return [name, { kind: 'float', value: f }];
    case AttributeType.ints: return [name, { kind: 'ints', value: ints }];
    case AttributeType.floats: return [name, { kind: 'floats', value: floats }];
    case AttributeType.string: return [name, { kind: 'string', value: s }];
    case AttributeType.tensor:
      if (t === null) throw new Error(`attribute ${name} is a tensor attribute without a tensor`);
      return [name, { kind: 'tensor', value: t }];
    default: return [name, { kind: 'other', type }];
  }
}

function encodeAttribute(name: string, attribute: AttributeValue): Chunks {
  const body: Chunks = [...stringField(AttributeField.name, name)];
  switch (attribute.kind) {
    case 'int': body.push(...varintField(AttributeField.i, attribute.value), ...varintField(AttributeField.type, AttributeType.int)); break;
    case 'float': body.push(...fixed32FloatField(AttributeField.f, attribute.value), ...varintField(AttributeField.type, AttributeType.float)); break;
    case 'ints': body.push(...packedVarintField(AttributeField.ints, attribute.value), ...varintField(AttributeField.type, AttributeType.ints)); break;
    case 'floats': body.push(...packedFloatField(AttributeField.floats, attribute.value), ...varintField(AttributeField.type, AttributeType.floats)); break;
    case 'string': body.push(...stringField(AttributeField.s, attribute.value), ...varintField(AttributeField.type, AttributeType.string)); break;
    case 'tensor': {
      const { dataType, dims, values } = attribute.value;
      body.push(...lengthDelimitedField(AttributeField.t, encodeTensor('', dataType, dims, tensorRawData(dataType, values))));
      body.push(...varintField(AttributeField.type, AttributeType.tensor));
      break;
    }
    case 'other': throw new Error(`attribute ${name}: cannot encode attribute type ${attribute.type}`);
  }
  return lengthDelimitedField(NodeField.attribute, body);
}

const RAW_READERS: Readonly<Record<number, { bytes: number; read: (view: DataView, offset: number) => number }>> = {
  [DataType.float]: { bytes: 4, read: (view, offset) => view.getFloat32(offset, true) },
  [DataType.double]: { bytes: 8, read: (view, offset) => view.getFloat64(offset, true) },
  [DataType.int64]: { bytes: 8, read: (view, offset) => Number(view.getBigInt64(offset, true)) },
  [DataType.int32]: { bytes: 4, read: (view, offset) => view.getInt32(offset, true) },
  [DataType.int8]: { bytes: 1, read: (view, offset) => view.getInt8(offset) },
  [DataType.uint8]: { bytes: 1, read: (view, offset) => view.getUint8(offset) },
  [DataType.bool]: { bytes: 1, read: (view, offset) => view.getUint8(offset) },
};

/** Little-endian raw_data of `values` as `dataType` (float32, float64, int64, int32, int8, uint8 or bool). */
export function tensorRawData(dataType: number, values: readonly number[]): Uint8Array {
  const reader = RAW_READERS[dataType];
  if (reader === undefined) throw new Error(`cannot write a constant of ${dataTypeName(dataType)}`);
  const raw = new Uint8Array(values.length * reader.bytes);
  const view = new DataView(raw.buffer);
  values.forEach((value, index) => {
    const offset = index * reader.bytes;
    switch (dataType) {
      case DataType.float: view.setFloat32(offset, value, true); break;
      case DataType.double: view.setFloat64(offset, value, true); break;
      case DataType.int64: view.setBigInt64(offset, BigInt(value), true); break;
      case DataType.int32: view.setInt32(offset, value, true); break;
      case DataType.int8: view.setInt8(offset, value); break;
      default: view.setUint8(offset, value);
    }
  });
  return raw;
}

/**
 * A tensor's values when they are stored inline (raw_data or the typed fields); null for external data or a type
 * read nowhere in this code.
 */
export function readConstantTensor(payload: Uint8Array): ConstantTensor | null {
  const dims: number[] = [];
  let dataType = 0;
  let raw: Uint8Array | null = null;
  let external = false;
  const typed: number[] = [];
  for (const field of decodeMessage(payload)) {
    switch (field.number) {
      case TensorField.dims: dims.push(...repeatedVarintValues(field)); break;
      case TensorField.dataType: dataType = varintValue(field); break;
      case TensorField.rawData: raw = field.payload; break;
      case TensorField.dataLocation: external = varintValue(field) === 1; break;
      case TensorField.floatData: typed.push(...repeatedFloatValues(field)); break;
      case TensorField.int32Data:
      case TensorField.int64Data: typed.push(...repeatedSignedVarintValues(field)); break;
    }
  }
  if (external) return null;
  if (raw === null) return { dataType, dims, values: typed };
  const reader = RAW_READERS[dataType];
  if (reader === undefined) return null;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const values: number[] = [];
  for (let offset = 0; offset + reader.bytes <= raw.byteLength; offset += reader.bytes) values.push(reader.read(view, offset));
  return { dataType, dims, values };
}

/** The node with its inputs or its outputs renamed, every other field (attributes included) kept as it was. */
export function renameNodeValues(payload: Uint8Array, which: 'input' | 'output', names: readonly string[]): Chunks {
  const number = NodeField[which];
  const chunks: Chunks = [];
  let next = 0;
  for (const field of decodeMessage(payload)) {
    if (field.number !== number) {
      chunks.push(field.encoded);
      continue;
    }
    const name = names[next++];
    if (name === undefined) throw new Error(`renameNodeValues: the node has more ${which}s than the ${names.length} names given`);
    chunks.push(...stringField(number, name));
  }
  if (next !== names.length) throw new Error(`renameNodeValues: the node has ${next} ${which}s, ${names.length} names were given`);
  return chunks;
}

export interface NodeSpec {
  name: string;
  opType: string;
  input: readonly string[];
  output: readonly string[];
  attributes?: Readonly<Record<string, AttributeValue>>;
}

export function encodeNode(node: NodeSpec): Chunks {
  const chunks: Chunks = [];
  for (const name of node.input) chunks.push(...stringField(NodeField.input, name));
  for (const name of node.output) chunks.push(...stringField(NodeField.output, name));
  chunks.push(...stringField(NodeField.name, node.name));
  chunks.push(...stringField(NodeField.opType, node.opType));
  for (const [name, value] of Object.entries(node.attributes ?? {})) chunks.push(...encodeAttribute(name, value));
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

/** The element type a ValueInfoProto declares for its tensor; 0 when it declares none. */
export function readValueInfoElemType(payload: Uint8Array): number {
  const type = decodeMessage(payload).find((field) => field.number === ValueInfoField.type);
  const tensorType = type && decodeMessage(type.payload).find((field) => field.number === TypeField.tensorType);
  const elemType = tensorType && decodeMessage(tensorType.payload).find((field) => field.number === TensorTypeField.elemType);
  return elemType ? varintValue(elemType) : 0;
}

/**
 * A ValueInfoProto for a tensor; a string dimension is symbolic (dim_param), a number fixed (dim_value), and no dims
 * at all (null) leave the rank unknown.
 */
export function encodeTensorValueInfo(name: string, elemType: number, dims: readonly (number | string)[] | null): Chunks {
  const shape: Chunks = [];
  for (const dim of dims ?? []) {
    const dimension = typeof dim === 'number' ? varintField(DimensionField.dimValue, dim) : stringField(DimensionField.dimParam, dim);
    shape.push(...lengthDelimitedField(ShapeField.dim, dimension));
  }
  const tensorType = [
    ...varintField(TensorTypeField.elemType, elemType),
    ...(dims === null ? [] : lengthDelimitedField(TensorTypeField.shape, shape)),
  ];
  return [
    ...stringField(ValueInfoField.name, name),
    ...lengthDelimitedField(ValueInfoField.type, lengthDelimitedField(TypeField.tensorType, tensorType)),
  ];
}
