import { toFloat16Array } from '../float16.js';
import { DTYPE_BYTES } from './safetensors.js';

// Builds a safetensors file in memory, laid out as the reference implementation writes one, so that our reader and
// everyone else's (Python's safetensors, ComfyUI, A1111) take it. Inputs are checked here rather than left for a
// reader to refuse: a trained LoRA that does not load is found out long after the run that made it.

export class SafetensorsWriteError extends Error {
  override name = 'SafetensorsWriteError';
}

export interface TensorToWrite {
  /** A safetensors dtype name, e.g. F32. */
  dtype: string;
  shape: readonly number[];
  /** float32 values, stored as `dtype` (F32, F16, BF16 or F64); or the tensor's bytes already in `dtype`, as-is. */
  data: Float32Array | Uint8Array;
}

const METADATA_KEY = '__metadata__';

/** The reference pads the header with spaces to this, so the data section starts aligned for readers that map it. */
const HEADER_ALIGNMENT_BYTES = 8;

// Typed-array views use the host's byte order; safetensors is little-endian, as is every platform onnxruntime-node
// ships for.
const FLOAT32_ENCODERS: ReadonlyMap<string, (values: Float32Array) => Uint8Array> = new Map([
  ['F32', (values) => bytesOf(values)],
  ['F16', (values) => bytesOf(toFloat16Array(values))],
  ['BF16', (values) => bytesOf(Uint16Array.from(new Uint32Array(values.buffer, values.byteOffset, values.length), bfloat16Bits))],
  ['F64', (values) => bytesOf(Float64Array.from(values))],
]);

/**
 * The bytes of a safetensors file holding `tensors` in the order given, and `metadata` when given. Throws
 * SafetensorsWriteError naming the tensor or metadata key that is wrong.
 */
export function safetensorsBytes(
  tensors: Iterable<readonly [string, TensorToWrite]>,
  metadata?: Readonly<Record<string, string>>,
): Uint8Array {
  // Entries rather than an object built by assignment: a tensor named __proto__ must stay a tensor.
  const header: [string, unknown][] = metadata === undefined ? [] : [[METADATA_KEY, checkMetadata(metadata)]];
  const names = new Set<string>();
  const chunks: Uint8Array[] = [];
  let dataBytes = 0;
  for (const [name, tensor] of tensors) {
    if (name === METADATA_KEY) fail(`tensor name ${METADATA_KEY} is reserved for the file's metadata`);
    if (names.has(name)) fail(`tensor name ${JSON.stringify(name)} is given twice`);
    names.add(name);
    const bytes = tensorBytes(name, tensor);
    header.push([name, { dtype: tensor.dtype, shape: tensor.shape, data_offsets: [dataBytes, dataBytes + bytes.byteLength] }]);
    chunks.push(bytes);
    dataBytes += bytes.byteLength;
  }

  const json = new TextEncoder().encode(JSON.stringify(Object.fromEntries(header)));
  const headerBytes = Math.ceil(json.byteLength / HEADER_ALIGNMENT_BYTES) * HEADER_ALIGNMENT_BYTES;
  const file = new Uint8Array(8 + headerBytes + dataBytes);
  new DataView(file.buffer).setBigUint64(0, BigInt(headerBytes), true);
  file.set(json, 8);
  file.fill(' '.charCodeAt(0), 8 + json.byteLength, 8 + headerBytes);
  let position = 8 + headerBytes;
  for (const chunk of chunks) {
    file.set(chunk, position);
    position += chunk.byteLength;
  }
  return file;
}

function checkMetadata(metadata: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
  for (const [key, value] of Object.entries(metadata)) {
    if (typeof value !== 'string') {
      fail(`metadata ${JSON.stringify(key)} is ${String(value)} (${typeof value}); metadata values must be strings`);
    }
  }
  return metadata;
}

function tensorBytes(name: string, { dtype, shape, data }: TensorToWrite): Uint8Array {
  const tensor = `tensor ${JSON.stringify(name)}`;
  const shown = `[${shape.join(',')}]`;
  const dtypeBytes = DTYPE_BYTES.get(dtype);
  if (dtypeBytes === undefined) fail(`${tensor}: dtype ${JSON.stringify(dtype)} is not a safetensors dtype`);
  if (!shape.every((size) => Number.isSafeInteger(size) && size >= 0)) {
    fail(`${tensor}: shape ${shown} is not a list of non-negative integers`);
  }
  const count = shape.reduce((product, size) => product * size, 1);
  if (data instanceof Uint8Array) {
    if (data.byteLength !== count * dtypeBytes) {
      fail(`${tensor}: shape ${shown} of ${dtype} needs ${count * dtypeBytes} bytes but data has ${data.byteLength}`);
    }
    return data;
  }
  const encode = FLOAT32_ENCODERS.get(dtype);
  if (encode === undefined) fail(`${tensor}: float32 values cannot be stored as ${dtype}; pass its bytes instead`);
  if (data.length !== count) fail(`${tensor}: shape ${shown} holds ${count} values but data has ${data.length}`);
  return encode(data);
}

/** Rounds to nearest even on the dropped half, as torch's .to(torch.bfloat16) does, and keeps NaN a NaN as torch does. */
function bfloat16Bits(float32Bits: number): number {
  if ((float32Bits & 0x7fffffff) > 0x7f800000) return 0x7fc0;
  return (float32Bits + 0x7fff + ((float32Bits >>> 16) & 1)) >>> 16;
}

function bytesOf(values: Float32Array | Float64Array | Uint16Array): Uint8Array {
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

function fail(problem: string): never {
  throw new SafetensorsWriteError(problem);
}
