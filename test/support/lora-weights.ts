import assert from 'node:assert/strict';
import { SafetensorsFile } from '../../src/gpu/lora/safetensors.js';

/**
 * The free-running tolerance of the fixture README: AdamW divides by √v, so an element whose gradient is within
 * rounding of zero can move by up to lr per step either way.
 */
export async function assertWeightsMatch(file: string, reference: string, lr: number, steps: number): Promise<void> {
  const [mine, theirs] = await Promise.all([SafetensorsFile.open(file), SafetensorsFile.open(reference)]);
  try {
    assert.deepEqual([...mine.entries.keys()].sort(), [...theirs.entries.keys()].sort(), 'the same diffusers keys');
    let count = 0;
    let close = 0;
    let worst = 0;
    for (const key of theirs.entries.keys()) {
      assert.deepEqual(mine.entries.get(key)!.shape, theirs.entries.get(key)!.shape, `${key} shape`);
      const a = await mine.readFloat32(key);
      const b = await theirs.readFloat32(key);
      for (let i = 0; i < a.length; i++) {
        const difference = Math.abs(a[i]! - b[i]!);
        count++;
        if (difference <= lr / 100) close++;
        worst = Math.max(worst, difference);
      }
    }
    assert.ok(close / count >= 0.99, `${((100 * close) / count).toFixed(3)} % of weights within lr/100 (need 99 %)`);
    assert.ok(worst <= 2 * lr * steps, `worst weight difference ${worst} within 2·lr·steps = ${2 * lr * steps}`);
  } finally {
    await Promise.all([mine.close(), theirs.close()]);
  }
}

