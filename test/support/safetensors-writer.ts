import { writeFile } from 'node:fs/promises';
import { safetensorsBytes as encodeSafetensors, type TensorToWrite } from '../../src/gpu/lora/safetensors-writer.js';

// Writes safetensors files for tests: well-formed ones through the real writer, and hostile ones from a raw header.

export type { TensorToWrite };

export async function writeSafetensors(
  path: string,
  tensors: Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFile(path, encodeSafetensors(Object.entries(tensors), metadata));
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
