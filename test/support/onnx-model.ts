import { DataType, encodeNode, encodeTensor, encodeTensorValueInfo, GraphField, tensorRawData, type NodeSpec } from '../../src/gpu/onnx/onnx-proto.js';
import { joinChunks, lengthDelimitedField, stringField, varintField, type Chunks } from '../../src/gpu/onnx/protobuf.js';

// ONNX models of a few nodes, written from scratch, so graph code can be run in onnxruntime without a fixture file.

const ModelField = { irVersion: 1, graph: 7, opsetImport: 8 } as const;
const OperatorSetField = { domain: 1, version: 2 } as const;
/** ONNX 1.13's IR version: onnxruntime reads models of every opset up to 18 under it. */
const IR_VERSION = 8;

export interface ValueSpec {
  name: string;
  /** null: rank unknown, left for onnxruntime to infer. */
  dims: readonly number[] | null;
  elemType?: number;
}

export interface InitializerSpec {
  name: string;
  dataType: number;
  dims: readonly number[];
  /** bigint for int64 values beyond 2^53, such as Slice's INT64_MAX "to the end". */
  values: readonly number[] | readonly bigint[];
}

export interface ModelSpec {
  /** The version of the default ('') operator set. */
  opset: number;
  inputs: readonly ValueSpec[];
  initializers?: readonly InitializerSpec[];
  nodes: readonly NodeSpec[];
  outputs: readonly ValueSpec[];
}

function rawData({ dataType, values }: InitializerSpec): Uint8Array {
  if (dataType !== DataType.int64) return tensorRawData(dataType, values as readonly number[]);
  const wide = BigInt64Array.from(values as readonly (number | bigint)[], (value) => BigInt(value));
  return new Uint8Array(wide.buffer);
}

export function encodeTestModel(spec: ModelSpec): Uint8Array {
  const valueInfo = (field: number, { name, dims, elemType }: ValueSpec): Chunks =>
    lengthDelimitedField(field, encodeTensorValueInfo(name, elemType ?? DataType.float, dims));
  const graph: Chunks = [
    ...spec.nodes.flatMap((node) => lengthDelimitedField(GraphField.node, encodeNode(node))),
    ...stringField(GraphField.name, 'test'),
    ...(spec.initializers ?? []).flatMap((tensor) =>
      lengthDelimitedField(GraphField.initializer, encodeTensor(tensor.name, tensor.dataType, tensor.dims, rawData(tensor)))),
    ...spec.inputs.flatMap((input) => valueInfo(GraphField.input, input)),
    ...spec.outputs.flatMap((output) => valueInfo(GraphField.output, output)),
  ];
  const opset = [...stringField(OperatorSetField.domain, ''), ...varintField(OperatorSetField.version, spec.opset)];
  return joinChunks([
    ...varintField(ModelField.irVersion, IR_VERSION),
    ...lengthDelimitedField(ModelField.graph, graph),
    ...lengthDelimitedField(ModelField.opsetImport, opset),
  ]);
}
