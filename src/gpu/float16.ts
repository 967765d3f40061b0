// IEEE half precision <-> float32 for fp16 ONNX exports: Node 20 has no Float16Array, and onnxruntime-node reads and
// writes float16 tensors as raw Uint16Array bits.

const floatView = new Float32Array(1);
const bitsView = new Uint32Array(floatView.buffer);

/** Round-to-nearest-even, as a GPU or numpy's astype(float16) converts; overflow gives ±Infinity. */
export function float32ToFloat16Bits(value: number): number {
  floatView[0] = value;
  const bits = bitsView[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa !== 0 ? 0x200 : 0);
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    const halfway = 1 << (shift - 1);
    const remainder = mantissa & ((1 << shift) - 1);
    let result = mantissa >>> shift;
    if (remainder > halfway || (remainder === halfway && (result & 1) === 1)) result += 1;
    return sign | result;
  }
  const remainder = mantissa & 0x1fff;
  let result = (halfExponent << 10) | (mantissa >>> 13);
  if (remainder > 0x1000 || (remainder === 0x1000 && (result & 1) === 1)) result += 1;
  return sign | result;
}

/** Every half's float32 value, made on first use: decoding a latent is then one lookup per value, not a power. */
let decodeTable: Float32Array | null = null;

function float16Table(): Float32Array {
  if (decodeTable === null) {
    decodeTable = new Float32Array(0x10000);
    for (let bits = 0; bits < 0x10000; bits++) decodeTable[bits] = decodeFloat16(bits);
  }
  return decodeTable;
}

export function float16BitsToFloat32(bits: number): number {
  return float16Table()[bits & 0xffff]!;
}

/** One half by arithmetic: what the table holds (and the benchmark's yardstick for it). */
export function decodeFloat16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >>> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Infinity : Number.NaN;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function toFloat16Array(values: Float32Array): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = float32ToFloat16Bits(values[i]!);
  return out;
}

export function fromFloat16Array(bits: Uint16Array): Float32Array {
  const table = float16Table();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!;
  return out;
}
