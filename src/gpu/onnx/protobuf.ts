// The protobuf wire format, just enough to edit ONNX graphs without a protobuf dependency. A message is decoded into
// its fields in file order, each keeping the exact bytes it was read from, so fields we never interpret (and every
// field of a message we do not change) are written back byte for byte.

export const WireType = { varint: 0, fixed64: 1, lengthDelimited: 2, startGroup: 3, endGroup: 4, fixed32: 5 } as const;

export interface ProtoField {
  readonly number: number;
  readonly wireType: number;
  /** The field as it was encoded, tag included. */
  readonly encoded: Uint8Array;
  /** What follows the tag: the bytes inside a length-delimited field, the value bytes otherwise. */
  readonly payload: Uint8Array;
}

export class ProtobufError extends Error {
  override name = 'ProtobufError';
}

interface Cursor {
  pos: number;
}

// Lengths, field numbers and the ONNX values we read all fit a double exactly; anything larger is a corrupt file,
// not a number to round.
function readVarint(bytes: Uint8Array, cursor: Cursor): number {
  let value = 0;
  let scale = 1;
  for (;;) {
    if (cursor.pos >= bytes.length) throw new ProtobufError(`truncated varint at byte ${cursor.pos}`);
    const byte = bytes[cursor.pos++]!;
    value += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) break;
    scale *= 128;
    if (scale > 2 ** 63) throw new ProtobufError(`varint longer than 10 bytes at byte ${cursor.pos}`);
  }
  if (!Number.isSafeInteger(value)) throw new ProtobufError(`varint ${value} at byte ${cursor.pos} is beyond 2^53`);
  return value;
}

function skipVarint(bytes: Uint8Array, cursor: Cursor): void {
  const start = cursor.pos;
  while (cursor.pos < bytes.length && (bytes[cursor.pos]! & 0x80) !== 0) cursor.pos++;
  if (cursor.pos >= bytes.length || cursor.pos - start >= 10) throw new ProtobufError(`bad varint at byte ${start}`);
  cursor.pos++;
}

/** The fields of one message, in the order they appear; the field views share memory with `bytes`. */
export function decodeMessage(bytes: Uint8Array): ProtoField[] {
  const fields: ProtoField[] = [];
  const cursor: Cursor = { pos: 0 };
  while (cursor.pos < bytes.length) {
    const start = cursor.pos;
    const key = readVarint(bytes, cursor);
    const number = Math.floor(key / 8);
    const wireType = key % 8;
    if (number === 0) throw new ProtobufError(`field number 0 at byte ${start}`);
    let payloadStart = cursor.pos;
    switch (wireType) {
      case WireType.varint:
        skipVarint(bytes, cursor);
        break;
      case WireType.fixed64:
        cursor.pos += 8;
        break;
      case WireType.fixed32:
        cursor.pos += 4;
        break;
      case WireType.lengthDelimited: {
        const length = readVarint(bytes, cursor);
        payloadStart = cursor.pos;
        cursor.pos += length;
        break;
      }
      default:
        // Groups were deprecated before ONNX existed; no ONNX message declares one.
        throw new ProtobufError(`unsupported wire type ${wireType} for field ${number} at byte ${start}`);
    }
    if (cursor.pos > bytes.length) throw new ProtobufError(`field ${number} at byte ${start} runs past the end of its message`);
    fields.push({
      number,
      wireType,
      encoded: bytes.subarray(start, cursor.pos),
      payload: bytes.subarray(payloadStart, cursor.pos),
    });
  }
  return fields;
}

export function varintValue(field: ProtoField): number {
  if (field.wireType !== WireType.varint) throw new ProtobufError(`field ${field.number} is not a varint (wire type ${field.wireType})`);
  return readVarint(field.payload, { pos: 0 });
}

// int64 fields hold negative values (an axis of -1) as 10-byte two's complement varints.
function readSignedVarint(bytes: Uint8Array, cursor: Cursor): number {
  let value = 0n;
  let shift = 0n;
  for (;;) {
    if (cursor.pos >= bytes.length) throw new ProtobufError(`truncated varint at byte ${cursor.pos}`);
    const byte = bytes[cursor.pos++]!;
    value |= BigInt(byte & 0x7f) << shift;
    if ((byte & 0x80) === 0) break;
    shift += 7n;
    if (shift > 63n) throw new ProtobufError(`varint longer than 10 bytes at byte ${cursor.pos}`);
  }
  // Sentinels such as INT64_MAX (Slice's "to the end") only need to stay beyond any real dimension.
  return Number(BigInt.asIntN(64, value));
}

/** An int64 field, sign included. */
export function signedVarintValue(field: ProtoField): number {
  if (field.wireType !== WireType.varint) throw new ProtobufError(`field ${field.number} is not a varint (wire type ${field.wireType})`);
  return readSignedVarint(field.payload, { pos: 0 });
}

/** A `repeated int64` field, packed or not, sign included. */
export function repeatedSignedVarintValues(field: ProtoField): number[] {
  if (field.wireType === WireType.varint) return [signedVarintValue(field)];
  if (field.wireType !== WireType.lengthDelimited) throw new ProtobufError(`field ${field.number} is not a repeated varint`);
  const values: number[] = [];
  const cursor: Cursor = { pos: 0 };
  while (cursor.pos < field.payload.length) values.push(readSignedVarint(field.payload, cursor));
  return values;
}

/** A `repeated float` field, packed or not. */
export function repeatedFloatValues(field: ProtoField): number[] {
  const view = new DataView(field.payload.buffer, field.payload.byteOffset, field.payload.byteLength);
  if (field.wireType === WireType.fixed32) return [view.getFloat32(0, true)];
  if (field.wireType !== WireType.lengthDelimited) throw new ProtobufError(`field ${field.number} is not a repeated float`);
  const values: number[] = [];
  for (let offset = 0; offset + 4 <= field.payload.length; offset += 4) values.push(view.getFloat32(offset, true));
  return values;
}

/** A `repeated` integer field may be written one value per field or packed into one length-delimited field. */
export function repeatedVarintValues(field: ProtoField): number[] {
  if (field.wireType === WireType.varint) return [varintValue(field)];
  if (field.wireType !== WireType.lengthDelimited) throw new ProtobufError(`field ${field.number} is not a repeated varint`);
  const values: number[] = [];
  const cursor: Cursor = { pos: 0 };
  while (cursor.pos < field.payload.length) values.push(readVarint(field.payload, cursor));
  return values;
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

export function stringValue(field: ProtoField): string {
  if (field.wireType !== WireType.lengthDelimited) throw new ProtobufError(`field ${field.number} is not a string (wire type ${field.wireType})`);
  return utf8Decoder.decode(field.payload);
}

function encodeVarint(value: number): Uint8Array {
  if (Number.isSafeInteger(value) && value < 0) return encodeNegativeVarint(value);
  if (!Number.isSafeInteger(value)) throw new ProtobufError(`cannot encode ${value} as a varint`);
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest % 0x80) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return Uint8Array.from(bytes);
}

function encodeNegativeVarint(value: number): Uint8Array {
  let rest = BigInt.asUintN(64, BigInt(value));
  const bytes: number[] = [];
  while (rest >= 0x80n) {
    bytes.push(Number(rest & 0x7fn) | 0x80);
    rest >>= 7n;
  }
  bytes.push(Number(rest));
  return Uint8Array.from(bytes);
}

function key(number: number, wireType: number): Uint8Array {
  return encodeVarint(number * 8 + wireType);
}

/**
 * An encoded message as a list of byte chunks: nested messages are framed without copying their contents, and the
 * whole model is joined once at the end.
 */
export type Chunks = Uint8Array[];

function chunksLength(chunks: readonly Uint8Array[]): number {
  let length = 0;
  for (const chunk of chunks) length += chunk.length;
  return length;
}

export function joinChunks(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunksLength(chunks));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

export function varintField(number: number, value: number): Chunks {
  return [key(number, WireType.varint), encodeVarint(value)];
}

export function lengthDelimitedField(number: number, payload: readonly Uint8Array[]): Chunks {
  return [key(number, WireType.lengthDelimited), encodeVarint(chunksLength(payload)), ...payload];
}

export function stringField(number: number, value: string): Chunks {
  return lengthDelimitedField(number, [utf8Encoder.encode(value)]);
}

export function fixed32FloatField(number: number, value: number): Chunks {
  const bytes = new Uint8Array(4);
  new DataView(bytes.buffer).setFloat32(0, value, true);
  return [key(number, WireType.fixed32), bytes];
}

export function packedVarintField(number: number, values: readonly number[]): Chunks {
  return lengthDelimitedField(number, values.map(encodeVarint));
}

export function packedFloatField(number: number, values: readonly number[]): Chunks {
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  values.forEach((value, index) => view.setFloat32(index * 4, value, true));
  return lengthDelimitedField(number, [bytes]);
}
