import { writeFile } from 'node:fs/promises';
import { float32ToFloat16Bits } from '../../src/gpu/float16.js';

// Builds safetensors files for tests: well-formed ones from tensors, and hostile ones from a raw header.

export interface TensorToWrite {
  dtype: string;
  shape: number[];
  /** float32 values, stored as `dtype` (F32, F64, F16 or BF16); a Uint8Array is stored as-is, whatever the dtype. */
  data: Float32Array | Uint8Array;
}

export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  const header: Record<string, unknown> = metadata === undefined ? {} : { __metadata__: metadata };
  const chunks: Uint8Array[] = [];
  let offset = 0;
  for (const [name, { dtype, shape, data }] of Object.entries(tensors)) {
    const bytes = encode(dtype, data);
    header[name] = { dtype, shape, data_offsets: [offset, offset + bytes.byteLength] };
    chunks.push(bytes);
    offset += bytes.byteLength;
  }
  await writeFile(path, safetensorsBytes(header, Buffer.concat(chunks)));
}

/**
 * The bytes of a safetensors file with `header` as given (an object is JSON-encoded, a string written verbatim) and
 * `data` after it; `declaredHeaderLength` replaces the true header length in the 8-byte prefix.
 */
export function safetensorsBytes(
  header: object | string,
  data: Uint8Array = new Uint8Array(0),
  declaredHeaderLength?: bigint,
): Uint8Array {
  const headerBytes = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declaredHeaderLength ?? BigInt(headerBytes.byteLength));
  return Buffer.concat([prefix, headerBytes, data]);
}

function encode(dtype: string, data: Float32Array | Uint8Array): Uint8Array {
  if (data instanceof Uint8Array) return data;
  switch (dtype) {
    case 'F32': return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    case 'F64': return new Uint8Array(Float64Array.from(data).buffer);
    case 'F16': return new Uint8Array(Uint16Array.from(data, float32ToFloat16Bits).buffer);
    case 'BF16': {
      // Round to nearest even on the low 16 bits, as torch's .to(torch.bfloat16) does.
      const bits = new Uint32Array(Float32Array.from(data).buffer);
      return new Uint8Array(Uint16Array.from(bits, (word) => (word + 0x7fff + ((word >>> 16) & 1)) >>> 16).buffer);
    }
    default: throw new Error(`the test writer cannot encode float32 values as ${dtype}; pass the bytes`);
  }
}
