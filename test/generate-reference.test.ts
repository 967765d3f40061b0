import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeToRgb } from '../src/gpu/image.js';
import { runCli } from './support/cli.js';
import { fixturePath } from './support/fixtures.js';
import { BASE_REFERENCE_CASES, generateArgs } from './support/reference-cases.js';

// The acceptance bar: `wrongbot generate` gives diffusers' image within one 8-bit level, on both export styles.

const outDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-generate-'));
test.after(() => rmSync(outDir, { recursive: true, force: true }));

async function maxPixelDifference(actualPng: string, expectedPng: string): Promise<number> {
  const actual = await decodeToRgb(actualPng);
  const expected = await decodeToRgb(expectedPng);
  assert.deepEqual([actual.width, actual.height], [expected.width, expected.height], 'image size');
  let max = 0;
  for (let i = 0; i < expected.rgb.length; i++) max = Math.max(max, Math.abs(actual.rgb[i]! - expected.rgb[i]!));
  return max;
}

test('the reference set holds the base cases this test depends on', () => {
  assert.ok(BASE_REFERENCE_CASES.length >= 8, `only ${BASE_REFERENCE_CASES.length} base cases`);
});

for (const model of ['tiny-sdxl', 'tiny-sdxl-legacy-io']) {
  for (const c of BASE_REFERENCE_CASES) {
    test(`${model}: generate ${c.id} equals diffusers within 1/255`, async () => {
      const out = path.join(outDir, `${model}-${c.id}.png`);
      const result = await runCli(generateArgs(c, fixturePath(model), out));
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, new RegExp(`^seed ${c.seed}$`, 'm'));
      assert.match(result.stdout, /timings: .*onnxruntime [\d.]+ s/);
      const difference = await maxPixelDifference(out, fixturePath('reference', c.dir, 'image.png'));
      assert.ok(difference <= 1, `max 8-bit difference ${difference}`);
    });
  }
}
