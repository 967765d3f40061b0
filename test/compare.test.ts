import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { composePanels } from '../src/gpu/compose.js';
import { decodeToRgb, encodePng } from '../src/gpu/image.js';
import { SdxlPipeline, type UnetCall } from '../src/gpu/sdxl-pipeline.js';
import { runCli } from './support/cli.js';
import { fixturePath } from './support/fixtures.js';
import { maxPixelDifference } from './support/pixels.js';

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-compare-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const MODEL = fixturePath('tiny-sdxl');
const LORA = fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_kohya.safetensors');
const SHARED = ['--model', MODEL, '--prompt', 'a lighthouse at dusk', '--seed', '77', '--steps', '6', '--guidance', '13', '--width', '64', '--height', '64'];

test('compare equals three separate generate runs within 1/255, and its composite holds them', async () => {
  const out = path.join(work, 'triptych.png');
  const panelsDir = path.join(work, 'panels');
  const compare = await runCli(['compare', ...SHARED, '--lora', LORA, '--strength', '0.8', '--out', out, '--panels-dir', panelsDir]);
  assert.equal(compare.code, 0, compare.stderr);
  assert.match(compare.stdout, /^seed 77$/m);

  const separate = [
    [],
    ['--negative', 'wrong'],
    ['--negative', 'wrong', '--lora', LORA, '--strength', '0.8'],
  ];
  for (const [index, extra] of separate.entries()) {
    const single = path.join(work, `single-${index + 1}.png`);
    const result = await runCli(['generate', ...SHARED, ...extra, '--out', single]);
    assert.equal(result.code, 0, result.stderr);
    const panel = path.join(panelsDir, `panel-${index + 1}.png`);
    const difference = await maxPixelDifference(panel, single);
    assert.ok(difference <= 1, `panel ${index + 1} differs from its own run by ${difference}`);
  }
  assert.ok(await maxPixelDifference(path.join(panelsDir, 'panel-1.png'), path.join(panelsDir, 'panel-3.png')) > 1, 'the LoRA panel differs');

  const composite = await decodeToRgb(out);
  const panel1 = await decodeToRgb(path.join(panelsDir, 'panel-1.png'));
  assert.ok(composite.width > 3 * 64 && composite.height > 64, `composite ${composite.width}x${composite.height}`);
  // The composite is lossless here, so the first panel sits in it unchanged.
  const left = 8;
  const top = 8;
  for (let y = 0; y < 64; y++) {
    for (let x = 0; x < 64; x++) {
      for (let c = 0; c < 3; c++) {
        assert.equal(composite.rgb[((top + y) * composite.width + left + x) * 3 + c], panel1.rgb[(y * 64 + x) * 3 + c]);
      }
    }
  }
});

test('compare needs a LoRA and says so', async () => {
  const result = await runCli(['compare', ...SHARED, '--out', path.join(work, 'no-lora.png')]);
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /--lora is required/);
});

test('a composite over the attachment limit falls back to a palette PNG, and one that cannot fit is an error', async () => {
  const noisy = new Uint8Array(256 * 256 * 3);
  for (let i = 0; i < noisy.length; i++) noisy[i] = (i * 2654435761) >>> 24;
  const png = new Uint8Array(await encodePng(noisy, 256, 256));
  const panels = [1, 2, 3].map((n) => ({ png, caption: `panel ${n} <&> "quoted"` }));
  const lossless = await composePanels(panels, 'seed 1 · footer');
  assert.equal(lossless.encoding, 'png');
  const limited = await composePanels(panels, 'seed 1 · footer', Math.floor(lossless.data.length * 0.8));
  assert.equal(limited.encoding, 'png-palette');
  assert.ok(limited.data.length <= lossless.data.length * 0.8);
  assert.equal((await sharp(limited.data).metadata()).format, 'png');
  await assert.rejects(composePanels(panels, 'footer', 1000), /the limit is 1000/);
  await assert.rejects(composePanels([], 'footer'), /at least one panel/);
  const small = new Uint8Array(await encodePng(noisy.subarray(0, 64 * 64 * 3), 64, 64));
  await assert.rejects(composePanels([panels[0]!, { png: small, caption: 'small' }], 'footer'), /panels differ in size: 256x256, 64x64/);
});

test('panels of two LoRA versions and the base share one UNet batch per step, each as its version draws it alone', async () => {
  const trained = fixturePath('training-reference', 'b1', 'final', 'pytorch_lora_weights.safetensors');
  const cpu = { kind: 'cpu', index: 0 } as const;
  const panel = { prompt: 'a lighthouse at dusk', negativePrompt: 'wrong', guidanceScale: 13, guidanceRescale: 0 };
  const request = { seed: 77, steps: 3, width: 64, height: 64 };
  const twoSlots = await SdxlPipeline.load(MODEL, cpu, { loraSlots: 2 });
  const calls: UnetCall[] = [];
  const together = await twoSlots.generate({
    ...request,
    loraPaths: [LORA, trained],
    panels: [{ ...panel, loraStrength: 0 }, { ...panel, loraSlot: 0, loraStrength: 1 }, { ...panel, loraSlot: 1, loraStrength: 1 }],
  }, { onUnetCall: (call) => calls.push(call) });
  await twoSlots.dispose();
  assert.deepEqual(calls.map((call) => call.stepIndex), [0, 1, 2], 'one UNet run per step');
  assert.equal(calls[0]!.inputs.sample.length, 3 * 2 * 4 * 8 * 8, 'all three guided panels in that run');

  for (const [index, loraPath] of [[0, null], [1, LORA], [2, trained]] as const) {
    const alone = await SdxlPipeline.load(MODEL, cpu, { loraPath });
    const single = await alone.generate({ ...request, panels: [{ ...panel, loraStrength: loraPath === null ? 0 : 1 }] });
    await alone.dispose();
    const [a, b] = [together.panels[index]!.rgb, single.panels[0]!.rgb];
    const difference = a.reduce((max, value, i) => Math.max(max, Math.abs(value - b[i]!)), 0);
    assert.ok(difference <= 1, `panel ${index + 1} differs from its version alone by ${difference}/255`);
  }
  assert.notDeepEqual(together.panels[1]!.rgb, together.panels[2]!.rgb, 'the two versions draw differently');
});
