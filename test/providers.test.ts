import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EXECUTION_PROVIDERS, formatDevice, parseDevice } from '../src/gpu/providers.js';
import { float16BitsToFloat32, float32ToFloat16Bits, fromFloat16Array, toFloat16Array } from '../src/gpu/float16.js';

test('device names map to execution providers through one table', () => {
  assert.deepEqual(parseDevice('cpu'), { kind: 'cpu', index: 0 });
  assert.deepEqual(parseDevice('CUDA:2'), { kind: 'cuda', index: 2 });
  assert.deepEqual(parseDevice('webgpu'), { kind: 'webgpu', index: 0 });
  assert.equal(formatDevice(parseDevice('cuda')), 'cuda:0');
  assert.deepEqual(EXECUTION_PROVIDERS.cuda.executionProviders(2), [{ name: 'cuda', deviceId: 2 }]);
  assert.ok(Object.isFrozen(EXECUTION_PROVIDERS));
  for (const bad of ['tpu', 'cuda:x', 'webgpu:1', '', 'cuda:']) {
    assert.throws(() => parseDevice(bad), /choose one of cpu, cuda, cuda:N, webgpu/, bad);
  }
});

test('float16 conversion rounds to nearest even and round-trips every finite half', () => {
  for (let bits = 0; bits < 0x10000; bits++) {
    const exponent = (bits >>> 10) & 0x1f;
    if (exponent === 0x1f && (bits & 0x3ff) !== 0) continue;
    assert.equal(float32ToFloat16Bits(float16BitsToFloat32(bits)), bits, `bits 0x${bits.toString(16)}`);
  }
  assert.equal(float32ToFloat16Bits(1 + 2 ** -11), float32ToFloat16Bits(1), 'a tie rounds to the even neighbour');
  assert.equal(float32ToFloat16Bits(1 + 3 * 2 ** -11), float32ToFloat16Bits(1 + 2 ** -9), 'a tie rounds up to even');
  assert.equal(float32ToFloat16Bits(70000), 0x7c00, 'overflow is infinity');
  assert.ok(Number.isNaN(float16BitsToFloat32(float32ToFloat16Bits(Number.NaN))));
  assert.deepEqual(Array.from(fromFloat16Array(toFloat16Array(Float32Array.of(0.5, -2, 65504)))), [0.5, -2, 65504]);
});
