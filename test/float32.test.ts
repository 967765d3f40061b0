import { test } from 'node:test';
import assert from 'node:assert/strict';
import { float16BitsToFloat32, float32ToFloat16Bits, fromFloat16Array } from '../src/gpu/float16.js';
import { fma32, roundHalfEven } from '../src/gpu/float32.js';
import { Mt19937 } from '../src/gpu/rng.js';


/** Exact a·b + c for float32 inputs, rounded to nearest-even float32 with BigInt arithmetic. */
function referenceFma32(a: number, b: number, c: number): number {
  // Every float32 is an integer multiple of 2^-149, and scaling by a power of two is exact in a double.
  const scaled = (x: number): bigint => BigInt(x * 2 ** 149);
  const exact = scaled(a) * scaled(b) + scaled(c) * 2n ** 149n; // units of 2^-298
  if (exact === 0n) return Math.fround(a * b + c);
  const negative = exact < 0n;
  const magnitude = negative ? -exact : exact;
  const topBit = magnitude.toString(2).length - 1 - 298;
  const lsbExponent = Math.max(topBit - 23, -149);
  const drop = BigInt(lsbExponent + 298);
  let kept = magnitude >> drop;
  const remainder = magnitude - (kept << drop);
  const half = 1n << (drop - 1n);
  if (remainder > half || (remainder === half && (kept & 1n) === 1n)) kept += 1n;
  const result = Number(kept) * 2 ** lsbExponent;
  return negative ? -result : result;
}

test('fma32 rounds once, including where rounding the double sum would break a tie the wrong way', () => {
  const generator = new Mt19937(7);
  const random = (): number => generator.nextUint32() / 2 ** 32;
  const randomFloat = (minExponent: number, maxExponent: number): number => {
    const exponent = minExponent + Math.floor(random() * (maxExponent - minExponent + 1));
    return Math.fround((random() < 0.5 ? -1 : 1) * (1 + random()) * 2 ** exponent);
  };
  const triples: [number, number, number][] = [];
  for (let i = 0; i < 20000; i++) {
    const a = randomFloat(-30, 30);
    const b = randomFloat(-30, 30);
    triples.push([a, b, randomFloat(-60, 60)]);
    // Cancellation against the rounded product leaves only the product's low bits.
    triples.push([a, b, Math.fround(-a * b)]);
  }
  // (2^12 + i)(2^12 + j) for odd i, j has 25 significant bits ending in 1: a float32 midpoint. A c far below the
  // double's precision leaves the double sum on the midpoint, and only c's sign says which way the FMA rounds.
  let midpoints = 0;
  for (let i = 1; i < 2048; i += 26) {
    for (let j = 1; j < 1024; j += 42) {
      const a = (4096 + i) / 4096;
      const b = ((4096 + j) / 4096) * (j % 4 === 1 ? -1 : 1);
      const tiny = randomFloat(-90, -70);
      triples.push([a, b, tiny], [a * 2 ** 40, b * 2 ** -50, tiny * 2 ** -10]);
      midpoints += 2;
    }
  }
  let doubleRoundingCases = 0;
  for (const [a, b, c] of triples) {
    const want = referenceFma32(a, b, c);
    assert.ok(Object.is(fma32(a, b, c), want), `fma32(${a}, ${b}, ${c}) = ${fma32(a, b, c)}, want ${want}`);
    if (Math.fround(a * b + c) !== want) doubleRoundingCases++;
  }
  assert.ok(midpoints > 1000 && doubleRoundingCases > midpoints / 4, `${doubleRoundingCases} double-rounding cases`);
  assert.equal(fma32(1 + 2 ** -12, 1 + 2 ** -12, 2 ** -80), 1 + 2 ** -11 + 2 ** -23);
  assert.equal(fma32(1 + 2 ** -12, 1 + 2 ** -12, -(2 ** -80)), 1 + 2 ** -11);
});

test('roundHalfEven sends halves to the even neighbour, as numpy does', () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, -0, -2, 2, 3]);
});

test('float16: every one of the 65 536 halves decodes to the float32 that encodes back to it, and known values are exact', () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    const value = float16BitsToFloat32(bits);
    if (Number.isNaN(value)) {
      assert.ok((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0, `only NaN patterns decode to NaN (0x${bits.toString(16)})`);
      continue;
    }
    assert.equal(float32ToFloat16Bits(value), bits, `0x${bits.toString(16)} → ${value}`);
  }
  assert.deepEqual([0x3c00, 0xc000, 0x0001, 0x7bff, 0x7c00, 0xfc00, 0x8000].map(float16BitsToFloat32), [1, -2, 2 ** -24, 65504, Infinity, -Infinity, -0]);
  assert.deepEqual([...fromFloat16Array(Uint16Array.from([0x3555, 0x4248]))], [Math.fround(0.333251953125), 3.140625]);
});
