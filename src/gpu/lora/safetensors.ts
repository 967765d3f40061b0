import { open, type FileHandle } from 'node:fs/promises';
import { fromFloat16Array } from '../float16.js';

// LoRA files come from users, so the header is untrusted: every length and offset in it is checked against the file's
// real size before anything is read or allocated, and tensors are read one at a time at their offsets so that a
// 200 MB file never sits in memory whole.

/** The reference implementation's cap: no real header comes near it, so a larger one is a corrupt or hostile file. */
export const MAX_HEADER_BYTES = 100_000_000;

export const DTYPE_BYTES: ReadonlyMap<string, number> = new Map([
  ['BOOL', 1], ['U8', 1], ['I8', 1], ['F8_E5M2', 1], ['F8_E4M3', 1],
  ['I16', 2], ['U16', 2], ['F16', 2], ['BF16', 2],
  ['I32', 4], ['U32', 4], ['F32', 4],
  ['I64', 8], ['U64', 8], ['F64', 8],
]);

// Typed-array views use the host's byte order; safetensors is little-endian, as is every platform onnxruntime-node
// ships for. The bytes handed to these come from a fresh Uint8Array, so the views are aligned.
const FLOAT_DECODERS: ReadonlyMap<string, (bytes: Uint8Array<ArrayBuffer>) => Float32Array> = new Map([
  ['F32', (bytes) => new Float32Array(bytes.buffer)],
  ['F16', (bytes) => fromFloat16Array(new Uint16Array(bytes.buffer))],
  ['BF16', (bytes) => {
    // bfloat16 is the top half of a float32, so widening is exact.
    const halves = new Uint16Array(bytes.buffer);
    const bits = new Uint32Array(halves.length);
    for (let i = 0; i < halves.length; i++) bits[i] = halves[i]! << 16;
    return new Float32Array(bits.buffer);
  }],
  ['F64', (bytes) => Float32Array.from(new Float64Array(bytes.buffer))],
]);

// Trainers store a scalar such as a LoRA alpha as whatever torch.tensor(value) gave: an I64 when the value was an int.
const INTEGER_SCALAR_READERS: ReadonlyMap<string, (view: DataView) => number> = new Map([
  ['U8', (view) => view.getUint8(0)],
  ['I8', (view) => view.getInt8(0)],
  ['U16', (view) => view.getUint16(0, true)],
  ['I16', (view) => view.getInt16(0, true)],
  ['U32', (view) => view.getUint32(0, true)],
  ['I32', (view) => view.getInt32(0, true)],
  ['U64', (view) => Number(view.getBigUint64(0, true))],
  ['I64', (view) => Number(view.getBigInt64(0, true))],
]);

export class SafetensorsError extends Error {
  override name = 'SafetensorsError';
}

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  byteLength: number;
}

interface StoredEntry extends SafetensorsEntry {
  /** Absolute position of the tensor's first byte in the file. */
  position: number;
}

export class SafetensorsFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly stored: ReadonlyMap<string, StoredEntry>,
    readonly metadata: Readonly<Record<string, string>>,
  ) {}

  /** Opens and validates the header; throws SafetensorsError naming the file and the problem. */
  static async open(path: string): Promise<SafetensorsFile> {
    const handle = await open(path, 'r');
    try {
      const { entries, metadata } = await readHeader(path, handle);
      return new SafetensorsFile(path, handle, entries, metadata);
    } catch (error) {
      await handle.close();
      throw error;
    }
  }

  get entries(): ReadonlyMap<string, SafetensorsEntry> {
    return this.stored;
  }

  /** A float tensor (F32, F16, BF16 or F64) as float32 values, row-major. */
  async readFloat32(name: string): Promise<Float32Array> {
    const entry = this.entry(name);
    const decode = FLOAT_DECODERS.get(entry.dtype);
    if (decode === undefined) {
      this.fail(`tensor ${show(name)} has dtype ${entry.dtype}, not a float dtype (F32, F16, BF16 or F64)`);
    }
    return decode(await this.readBytes(entry));
  }

  /** A one-element tensor of any numeric dtype, e.g. a LoRA alpha. */
  async readScalar(name: string): Promise<number> {
    const entry = this.entry(name);
    if (elementCount(entry.shape) !== 1) {
      this.fail(`tensor ${show(name)} has shape ${show(entry.shape)}; expected a single value`);
    }
    const readInteger = INTEGER_SCALAR_READERS.get(entry.dtype);
    if (readInteger === undefined) return (await this.readFloat32(name))[0]!;
    return readInteger(new DataView((await this.readBytes(entry)).buffer));
  }

  async close(): Promise<void> {
    await this.handle.close();
  }

  private entry(name: string): StoredEntry {
    const entry = this.stored.get(name);
    if (entry === undefined) this.fail(`no tensor named ${show(name)}`);
    return entry;
  }

  private async readBytes(entry: StoredEntry): Promise<Uint8Array<ArrayBuffer>> {
    return readExactly(this.path, this.handle, entry.position, entry.byteLength);
  }

  private fail(problem: string): never {
    failIn(this.path, problem);
  }
}

async function readHeader(
  path: string,
  handle: FileHandle,
): Promise<{ entries: Map<string, StoredEntry>; metadata: Record<string, string> }> {
  const fail: (problem: string) => never = (problem) => failIn(path, problem);
  const stats = await handle.stat();
  if (!stats.isFile()) fail('not a regular file');
  const fileBytes = stats.size;
  if (fileBytes < 8) fail(`file is ${fileBytes} bytes, shorter than the 8-byte safetensors header length`);

  const declared = new DataView((await readExactly(path, handle, 0, 8)).buffer).getBigUint64(0, true);
  if (declared > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${declared} bytes is over the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  }
  const headerBytes = Number(declared);
  if (8 + headerBytes > fileBytes) {
    fail(`header length ${headerBytes} bytes runs past the end of the file (${fileBytes} bytes)`);
  }

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await readExactly(path, handle, 8, headerBytes)));
  } catch (cause) {
    fail(`header is not valid UTF-8 JSON (${(cause as Error).message})`);
  }
  if (!isObject(header)) fail(`header is ${show(header)}, not a JSON object`);

  const dataStart = 8 + headerBytes;
  const dataBytes = fileBytes - dataStart;
  const entries = new Map<string, StoredEntry>();
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') {
      if (!isObject(value) || !Object.values(value).every((item) => typeof item === 'string')) {
        fail(`__metadata__ is ${show(value)}, not an object of strings`);
      }
      metadata = value as Record<string, string>;
      continue;
    }
    const tensor = `tensor ${show(name)}`;
    if (!isObject(value)) fail(`${tensor}: ${show(value)} is not an object`);
    const { dtype, shape, data_offsets: offsets } = value;
    const dtypeBytes = typeof dtype === 'string' ? DTYPE_BYTES.get(dtype) : undefined;
    if (dtypeBytes === undefined) fail(`${tensor}: unknown dtype ${show(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isCount)) {
      fail(`${tensor}: shape ${show(shape)} is not a list of non-negative integers`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      fail(`${tensor}: data_offsets ${show(offsets)} is not two non-negative integers [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (end < begin) fail(`${tensor}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end > dataBytes) {
      fail(`${tensor}: data_offsets [${begin}, ${end}] run past the end of the data (${dataBytes} bytes)`);
    }
    const needed = elementCount(shape as number[]) * dtypeBytes!;
    if (needed !== end - begin) {
      fail(`${tensor}: shape ${show(shape)} of ${dtype as string} needs ${needed} bytes `
        + `but data_offsets [${begin}, ${end}] hold ${end - begin}`);
    }
    entries.set(name, {
      name, dtype: dtype as string, shape: shape as number[], byteLength: end - begin, position: dataStart + begin,
    });
  }

  const byPosition = [...entries.values()].filter((entry) => entry.byteLength > 0)
    .sort((a, b) => a.position - b.position);
  for (let i = 1; i < byPosition.length; i++) {
    const previous = byPosition[i - 1]!;
    const current = byPosition[i]!;
    if (current.position < previous.position + previous.byteLength) {
      fail(`tensors ${show(previous.name)} and ${show(current.name)} overlap in the data section`);
    }
  }
  return { entries, metadata };
}

/** Reads exactly `length` bytes at `position`: a file that shrank since it was opened is an error, not short data. */
async function readExactly(
  path: string,
  handle: FileHandle,
  position: number,
  length: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const bytes = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(bytes, done, length - done, position + done);
    if (bytesRead === 0) {
      failIn(path, `file ended at byte ${position + done} while reading ${length} bytes at ${position}`);
    }
    done += bytesRead;
  }
  return bytes;
}

function failIn(path: string, problem: string): never {
  throw new SafetensorsError(`${path}: ${problem}`);
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, size) => product * size, 1);
}

function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A hostile header can hold megabyte-long names or values: messages quote at most a line of each. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 120 ? `${text.slice(0, 120)}…` : text;
}
