import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { comparePanels } from '../src/common/triptych.js';
import { InvalidRequestError } from '../src/common/validation.js';
import { composePanels } from '../src/gpu/compose.js';
import { estimateInferenceMemory, readUnetArchitecture } from '../src/gpu/memory-estimate.js';
import { modelFolderBytes, NO_BATCH_LIMITS, readBatchLimits, type BatchLimits } from '../src/gpu/unet-batches.js';
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

test('a triptych in UNet runs of fewer rows draws the same panels; a memory budget sets the rows per run, and refuses a size of which no row fits', async () => {
  const cpu = { kind: 'cpu', index: 0 } as const;
  const request = {
    seed: 77, steps: 3, width: 64, height: 64, loraPaths: [LORA],
    panels: comparePanels(0.8).map((panel) => ({ prompt: 'a lighthouse at dusk', negativePrompt: panel.negativePrompt, guidanceScale: 13, guidanceRescale: 0, loraStrength: panel.loraStrength })),
  };
  const drawn = async (batchLimits: BatchLimits) => {
    const pipeline = await SdxlPipeline.load(MODEL, cpu, { loraSlots: 1, batchLimits });
    const calls: UnetCall[] = [];
    try {
      const result = await pipeline.generate(request, { onUnetCall: (call) => calls.push(call) });
      return { panels: result.panels.map((panel) => panel.rgb), rowsPerRun: calls.map((call) => call.inputs.sample.length / (4 * 8 * 8)) };
    } finally {
      await pipeline.dispose();
    }
  };
  const whole = await drawn(NO_BATCH_LIMITS);
  assert.deepEqual(whole.rowsPerRun, [6, 6, 6], 'one run of six rows per step');
  for (const [maxRows, runs] of [[4, [4, 2]], [2, [2, 2, 2]], [1, [1, 1, 1, 1, 1, 1]]] as const) {
    const split = await drawn({ maxRows, budgetBytes: null });
    assert.deepEqual(split.rowsPerRun, [...runs, ...runs, ...runs], `WORKER_MAX_BATCH ${maxRows}`);
    split.panels.forEach((rgb, p) => {
      const difference = rgb.reduce((max, value, i) => Math.max(max, Math.abs(value - whole.panels[p]![i]!)), 0);
      assert.ok(difference <= 1, `panel ${p + 1} in runs of ${maxRows} differs by ${difference}/255`);
    });
  }

  // The budget: the loaded weights plus what the estimate gives each row; room for 2.5 rows means runs of two.
  const weights = ['text_encoder', 'text_encoder_2', 'unet', 'vae_decoder'].reduce((sum, folder) => sum + modelFolderBytes(path.join(MODEL, folder, 'model.onnx')), 0);
  const { perRowBytes } = estimateInferenceMemory(readUnetArchitecture(path.join(MODEL, 'unet', 'config.json')), { width: 64, height: 64, vaeScaleFactor: 8, rows: 1, elementBytes: 4 });
  const budgeted = await drawn({ maxRows: null, budgetBytes: weights + 2.5 * perRowBytes });
  assert.deepEqual(budgeted.rowsPerRun, [2, 2, 2, 2, 2, 2, 2, 2, 2]);
  const starved = await SdxlPipeline.load(MODEL, cpu, { loraSlots: 1, batchLimits: { maxRows: null, budgetBytes: weights + 0.5 * perRowBytes } });
  try {
    await assert.rejects(starved.generate(request), (error: Error) => error instanceof InvalidRequestError
      && /^size = "64x64" needs about [\d.]+ GB .* more than this worker's [\d.]+ GB \(WORKER_MEMORY_GB\); choose a smaller size$/.test(error.message));
  } finally {
    await starved.dispose();
  }
});

test('WORKER_MAX_BATCH and WORKER_MEMORY_GB: read with their bad values named', () => {
  assert.deepEqual(readBatchLimits({}), NO_BATCH_LIMITS);
  assert.deepEqual(readBatchLimits({ WORKER_MAX_BATCH: '2', WORKER_MEMORY_GB: '24' }), { maxRows: 2, budgetBytes: 24e9 });
  assert.throws(() => readBatchLimits({ WORKER_MEMORY_GB: '24GB' }), /^ConfigError: WORKER_MEMORY_GB = "24GB" must be a number of gigabytes/);
  assert.throws(() => readBatchLimits({ WORKER_MAX_BATCH: '0' }), /WORKER_MAX_BATCH = "0" must be an integer from 1 to 64/);
});
