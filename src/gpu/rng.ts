// torch.randn on a CPU generator, reproduced bit for bit so that a seed gives the same initial latents as diffusers.
// PyTorch's x86 build fills float32 tensors of 16+ elements with a Box–Muller transform vectorised on AVX2, whose log
// and sincos are Cephes float32 polynomials compiled with FMA contraction; every float32 step below mirrors one
// rounding of that code (Math.fround for a plain op, fma32 where the compiler fused a multiply into an add).

import { fma32 } from './float32.js';

const f32 = Math.fround;

const TWO_POW_24 = 0x1000000;
const TWO_POW_32 = 0x100000000;
const TWO_POW_MINUS_24 = 2 ** -24;
const TWO_POW_MINUS_53 = 2 ** -53;
const MT_N = 624;
const MT_M = 397;

/** mt19937 as at::mt19937 seeds and runs it (identical to std::mt19937 for a 32-bit seed). */
export class Mt19937 {
  private readonly state = new Uint32Array(MT_N);
  private index = MT_N;

  /** Only the low 32 bits of `seed` are used, as torch's manual_seed does. */
  constructor(seed: number) {
    const state = this.state;
    state[0] = seed;
    for (let i = 1; i < MT_N; i++) {
      const previous = state[i - 1]!;
      state[i] = Math.imul(1812433253, previous ^ (previous >>> 30)) + i;
    }
  }

  nextUint32(): number {
    if (this.index === MT_N) this.twist();
    let y = this.state[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  private twist(): void {
    const state = this.state;
    for (let i = 0; i < MT_N; i++) {
      const next = i + 1 === MT_N ? 0 : i + 1;
      const far = i + MT_M < MT_N ? i + MT_M : i + MT_M - MT_N;
      const mixed = (state[i]! & 0x80000000) | (state[next]! & 0x7fffffff);
      state[i] = state[far]! ^ (mixed >>> 1) ^ (mixed & 1 ? 0x9908b0df : 0);
    }
    this.index = 0;
  }
}

const bitsScratch = new Float32Array(1);
const bitsScratchInt = new Int32Array(bitsScratch.buffer);

const MIN_NORMAL_F32 = 2 ** -126;
const SQRT_HALF = f32(0.707106781186547524);
const LOG_P0 = f32(7.0376836292e-2);
const LOG_P1 = f32(-1.1514610310e-1);
const LOG_P2 = f32(1.1676998740e-1);
const LOG_P3 = f32(-1.2420140846e-1);
const LOG_P4 = f32(1.4249322787e-1);
const LOG_P5 = f32(-1.6668057665e-1);
const LOG_P6 = f32(2.0000714765e-1);
const LOG_P7 = f32(-2.4999993993e-1);
const LOG_P8 = f32(3.3333331174e-1);
const LOG_Q1 = f32(-2.12194440e-4);
const LOG_Q2 = 0.693359375;

/** One lane of avx_mathfun's log256_ps (Cephes logf) with torch's FMA contraction; NaN for x ≤ 0. */
export function cephesLog(x: number): number {
  if (!(x > 0)) return NaN;
  bitsScratch[0] = Math.max(x, MIN_NORMAL_F32);
  const bits = bitsScratchInt[0]!;
  let e = (bits >>> 23) - 126;
  bitsScratchInt[0] = (bits & ~0x7f800000) | 0x3f000000;
  const mantissa = bitsScratch[0]!;
  let m: number;
  if (mantissa < SQRT_HALF) {
    e -= 1;
    m = f32(f32(mantissa - 1) + mantissa);
  } else {
    m = f32(mantissa - 1);
  }
  const z = f32(m * m);
  let y = fma32(LOG_P0, m, LOG_P1);
  y = fma32(y, m, LOG_P2);
  y = fma32(y, m, LOG_P3);
  y = fma32(y, m, LOG_P4);
  y = fma32(y, m, LOG_P5);
  y = fma32(y, m, LOG_P6);
  y = fma32(y, m, LOG_P7);
  y = fma32(y, m, LOG_P8);
  y = f32(y * m);
  y = fma32(y, z, f32(e * LOG_Q1));
  y = fma32(z, -0.5, y);
  return fma32(e, LOG_Q2, f32(m + y));
}

const FOUR_OVER_PI = f32(1.27323954473516);
const DP1 = -0.78515625;
const DP2 = f32(-2.4187564849853515625e-4);
const DP3 = f32(-3.77489497744594108e-8);
const SIN_P0 = f32(-1.9515295891e-4);
const SIN_P1 = f32(8.3321608736e-3);
const SIN_P2 = f32(-1.6666654611e-1);
const COS_P0 = f32(2.443315711809948e-5);
const COS_P1 = f32(-1.388731625493765e-3);
const COS_P2 = f32(4.166664568298827e-2);

// The hot loop reads sincos's two results from here rather than from a fresh object per call.
let sinResult = 0;
let cosResult = 0;

function sincosInto(x: number): void {
  const negative = x < 0;
  const ax = Math.abs(x);
  let j = Math.trunc(f32(ax * FOUR_OVER_PI));
  j = (j + 1) & ~1;
  let r = fma32(j, DP1, ax);
  r = fma32(j, DP2, r);
  r = fma32(j, DP3, r);
  const z = f32(r * r);

  let c = fma32(COS_P0, z, COS_P1);
  c = fma32(c, z, COS_P2);
  c = f32(c * z);
  c = fma32(c, z, -f32(z * 0.5));
  c = f32(c + 1);

  let s = fma32(SIN_P0, z, SIN_P1);
  s = fma32(s, z, SIN_P2);
  s = f32(s * z);
  s = fma32(s, r, r);

  // j is the octant rounded up to even: bit 1 says which polynomial is the sine, bit 2 flips the signs.
  const sinFromSinPoly = (j & 2) === 0;
  const sinValue = sinFromSinPoly ? s : c;
  const cosValue = sinFromSinPoly ? c : s;
  sinResult = negative !== ((j & 4) !== 0) ? -sinValue : sinValue;
  cosResult = ((j - 2) & 4) === 0 ? -cosValue : cosValue;
}

/**
 * One lane of avx_mathfun's sincos256_ps (Cephes sinf/cosf) with torch's FMA contraction. Like the original it
 * is accurate for |x| < 8192 only.
 */
export function cephesSincos(x: number): { sin: number; cos: number } {
  sincosInto(x);
  return { sin: sinResult, cos: cosResult };
}

const TWO_PI_F32 = f32(2 * Math.PI);

/**
 * Box–Muller on 16 float32 uniforms at data[offset..offset+16), in place, as torch's normal_fill_16_AVX2:
 * slot j and j+8 become radius·cos θ and radius·sin θ of the pair (data[j], data[j+8]).
 */
export function boxMuller16(data: Float32Array, offset: number): void {
  for (let j = offset; j < offset + 8; j++) {
    // 1 − u is exact in float32 because u is a multiple of 2^-24 below 1.
    const radius = f32(Math.sqrt(f32(-2 * cephesLog(1 - data[j]!))));
    sincosInto(f32(TWO_PI_F32 * data[j + 8]!));
    // torch finishes with fmadd(n, std = 1, mean = +0), which turns a −0 (from log(1) = 0) into +0.
    data[j] = f32(radius * cosResult) + 0;
    data[j + 8] = f32(radius * sinResult) + 0;
  }
}

function fillUniform24(generator: Mt19937, data: Float32Array, start: number, end: number): void {
  for (let i = start; i < end; i++) {
    data[i] = (generator.nextUint32() & (TWO_POW_24 - 1)) * TWO_POW_MINUS_24;
  }
}

function uniform53(generator: Mt19937): number {
  const high = generator.nextUint32();
  const low = generator.nextUint32();
  return ((high & 0x1fffff) * TWO_POW_32 + low) * TWO_POW_MINUS_53;
}

function validateShape(shape: readonly number[]): number {
  if (!Array.isArray(shape) || shape.length === 0) {
    throw new Error(`shape must be a non-empty array of positive integers, got ${JSON.stringify(shape)}`);
  }
  let count = 1;
  for (let i = 0; i < shape.length; i++) {
    const dim = shape[i];
    if (!Number.isSafeInteger(dim) || dim! <= 0) {
      throw new Error(`shape[${i}] must be a positive integer, got ${String(dim)} (shape [${shape.join(', ')}])`);
    }
    count *= dim!;
  }
  if (!Number.isSafeInteger(count)) {
    throw new Error(`shape [${shape.join(', ')}] has too many elements (${count})`);
  }
  return count;
}

/**
 * torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed)) in float32, bit for bit as PyTorch
 * computes it on x86 CPUs with AVX2.
 */
export function torchRandn(seed: number, shape: readonly number[]): Float32Array {
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw new Error(`seed must be a non-negative safe integer, got ${String(seed)}`);
  }
  const count = validateShape(shape);
  // `>>> 0` reduces any safe integer modulo 2^32, which is the part of the seed mt19937 keeps.
  const generator = new Mt19937(seed >>> 0);
  const data = new Float32Array(count);

  if (count < 16) {
    // torch's serial path: at::normal_distribution<double>, which caches the sine half of each pair for the
    // next element. libm's and V8's double log1p/sin/cos may differ in the last bit, but that changes the float32
    // result only when a value lies within a double ulp of a float32 midpoint (about once in 2^28 values).
    for (let i = 0; i < count; i += 2) {
      const u1 = uniform53(generator);
      const u2 = uniform53(generator);
      const radius = Math.sqrt(-2 * Math.log1p(-u2));
      const theta = 2 * Math.PI * u1;
      // `+ 0` is the `x * std + mean` with mean +0 that torch applies, turning −0 into +0.
      data[i] = radius * Math.cos(theta) + 0;
      if (i + 1 < count) data[i + 1] = radius * Math.sin(theta) + 0;
    }
    return data;
  }

  fillUniform24(generator, data, 0, count);
  for (let offset = 0; offset + 16 <= count; offset += 16) boxMuller16(data, offset);
  if (count % 16 !== 0) {
    // torch redraws the tail as a whole block of 16 over the last slots, overwriting some finished values.
    fillUniform24(generator, data, count - 16, count);
    boxMuller16(data, count - 16);
  }
  return data;
}
