import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DataType } from '../src/gpu/onnx/onnx-proto.js';
import { SdxlPipeline } from '../src/gpu/sdxl-pipeline.js';
import { InvalidRequestError } from '../src/common/validation.js';
import type { GenerationRequest } from '../src/gpu/request.js';
import { fixturePath, readFloat32Fixture, readFixtureJson } from './support/fixtures.js';
import { encodeTestModel } from './support/onnx-model.js';
import { BASE_REFERENCE_CASES, type ReferenceCase } from './support/reference-cases.js';

// Intermediate results against diffusers' own arrays, so that a mistake shows where it happens, not only in pixels.

const pipeline = await SdxlPipeline.load(fixturePath('tiny-sdxl'), { kind: 'cpu', index: 0 });
test.after(() => pipeline.dispose());

function requestFor(c: ReferenceCase): GenerationRequest {
  return {
    seed: c.seed, steps: c.steps, width: c.width, height: c.height,
    panels: [{ prompt: c.prompt, negativePrompt: c.negative_prompt, guidanceScale: c.guidance_scale, guidanceRescale: 0 }],
  };
}

function maxAbsDifference(actual: Float32Array, expected: Float32Array): number {
  assert.equal(actual.length, expected.length, 'length');
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(actual[i]! - expected[i]!));
  return max;
}

for (const c of BASE_REFERENCE_CASES) {
  test(`${c.id}: final latents within 1e-3 and pixels within 1/255 of diffusers`, async () => {
    const result = await pipeline.generate(requestFor(c));
    const latentDifference = maxAbsDifference(result.panels[0]!.finalLatents, readFloat32Fixture('reference', c.dir, 'final_latents.bin'));
    assert.ok(latentDifference <= 1e-3, `final latents differ by ${latentDifference}`);
    const image = readFloat32Fixture('reference', c.dir, 'image.bin');
    const rgb = result.panels[0]!.rgb;
    let pixelDifference = 0;
    for (let i = 0; i < image.length; i++) pixelDifference = Math.max(pixelDifference, Math.abs(rgb[i]! - image[i]! * 255));
    assert.ok(pixelDifference <= 1, `pixels differ by ${pixelDifference}`);
  });
}

test('a prompt past 77 tokens is truncated as diffusers does, and the dropped words are reported', async () => {
  const c = BASE_REFERENCE_CASES.find((candidate) => candidate.id.includes('long_prompt'));
  assert.ok(c, 'the long-prompt reference case');
  const caseJson = readFixtureJson<{ token_ids: { prompt_tokenizer: number[] } }>('reference', c.dir, 'case.json');
  assert.equal(caseJson.token_ids.prompt_tokenizer.length, 77);
  const result = await pipeline.generate(requestFor(c));
  assert.equal(result.notices.length, 1);
  assert.match(result.notices[0]!, /prompt is longer than 77 tokens; dropped: ".+"/);
});

test('panels in one batch equal the same panels generated one by one', async () => {
  const base = { seed: 7, steps: 4, width: 64, height: 64 };
  const panels = [
    { prompt: 'a red cube', negativePrompt: null, guidanceScale: 7.5, guidanceRescale: 0 },
    { prompt: 'a red cube', negativePrompt: 'wrong', guidanceScale: 7.5, guidanceRescale: 0 },
    { prompt: 'a blue sphere', negativePrompt: null, guidanceScale: 1, guidanceRescale: 0 },
  ];
  const together = await pipeline.generate({ ...base, panels });
  assert.equal(together.panels.length, 3);
  for (const [index, panel] of panels.entries()) {
    const alone = await pipeline.generate({ ...base, panels: [panel] });
    const latentDifference = maxAbsDifference(together.panels[index]!.finalLatents, alone.panels[0]!.finalLatents);
    assert.ok(latentDifference <= 1e-3, `panel ${index + 1}: latents differ by ${latentDifference}`);
    const pixels = together.panels[index]!.rgb;
    let pixelDifference = 0;
    alone.panels[0]!.rgb.forEach((value, i) => { pixelDifference = Math.max(pixelDifference, Math.abs(value - pixels[i]!)); });
    assert.ok(pixelDifference <= 1, `panel ${index + 1}: pixels differ by ${pixelDifference}`);
  }
  assert.notDeepEqual(together.panels[0]!.rgb, together.panels[1]!.rgb, 'a negative prompt changes the image');
});

test('guidance_rescale changes a guided image and leaves it alone at 0', async () => {
  const panel = { prompt: 'a photo of a cat', negativePrompt: 'wrong', guidanceScale: 13, guidanceRescale: 0 };
  const request = { seed: 3, steps: 4, width: 64, height: 64 };
  const plain = await pipeline.generate({ ...request, panels: [panel] });
  const rescaled = await pipeline.generate({ ...request, panels: [{ ...panel, guidanceRescale: 0.7 }] });
  assert.ok(maxAbsDifference(plain.panels[0]!.finalLatents, rescaled.panels[0]!.finalLatents) > 1e-3);
});

test('bad requests fail before any model runs, naming the field and its value', async () => {
  const valid = requestFor(BASE_REFERENCE_CASES[0]!);
  const cases: Array<[Partial<GenerationRequest> | { panels: GenerationRequest['panels'] }, RegExp]> = [
    [{ width: 100 }, /^width = 100 must be a multiple of 16$/],
    // 152 is a multiple of the VAE's 8 but not of the tiny UNet's 16: the up blocks would not meet the down blocks.
    [{ height: 152 }, /^height = 152 must be a multiple of 16$/],
    [{ steps: 0 }, /^steps = 0 must be an integer/],
    [{ seed: -1 }, /^seed = -1 must be an integer/],
    [{ panels: [{ ...valid.panels[0]!, guidanceScale: Number.NaN }] }, /^guidanceScale = NaN must be a number/],
    [{ panels: [{ ...valid.panels[0]!, prompt: 'x'.repeat(10_000) }] }, /^prompt = .* is 10000 characters/],
    [{ panels: [] }, /^panels = 0 must hold 1 to 8 panels$/],
  ];
  for (const [change, message] of cases) {
    await assert.rejects(pipeline.generate({ ...valid, ...change }), (error: Error) => {
      assert.ok(error instanceof InvalidRequestError, String(error));
      assert.match(error.message, message);
      return true;
    });
  }
});

test('an aborted generation stops between steps', async () => {
  const controller = new AbortController();
  const steps: number[] = [];
  await assert.rejects(
    pipeline.generate({ ...requestFor(BASE_REFERENCE_CASES[0]!), steps: 20 }, {
      signal: controller.signal,
      onProgress: ({ step }) => {
        steps.push(step);
        if (step === 2) controller.abort();
      },
    }),
    { name: 'AbortError' },
  );
  assert.deepEqual(steps, [1, 2]);
});

/**
 * A VAE decoder as an fp16 export declares it (float16 latents in, float16 image out); inside it only upsamples the
 * first three latent channels, which is all a load and one small image need.
 */
function float16VaeDecoder(): Uint8Array {
  return encodeTestModel({
    opset: 17,
    inputs: [{ name: 'latent_sample', dims: null, elemType: DataType.float16 }],
    initializers: [
      { name: 'first', dataType: DataType.int64, dims: [1], values: [0] },
      { name: 'third', dataType: DataType.int64, dims: [1], values: [3] },
      { name: 'channels', dataType: DataType.int64, dims: [1], values: [1] },
      { name: 'scales', dataType: DataType.float, dims: [4], values: [1, 1, 8, 8] },
    ],
    nodes: [
      { name: 'to_float', opType: 'Cast', input: ['latent_sample'], output: ['latents'], attributes: { to: { kind: 'int', value: DataType.float } } },
      { name: 'rgb', opType: 'Slice', input: ['latents', 'first', 'third', 'channels'], output: ['rgb'] },
      { name: 'upsample', opType: 'Resize', input: ['rgb', '', 'scales'], output: ['image'] },
      { name: 'to_half', opType: 'Cast', input: ['image'], output: ['sample'], attributes: { to: { kind: 'int', value: DataType.float16 } } },
    ],
    outputs: [{ name: 'sample', dims: null, elemType: DataType.float16 }],
  });
}

test('a float16 VAE decoder is refused at load unless its config says it does not overflow (force_upcast false)', async (t) => {
  const model = mkdtempSync(path.join(tmpdir(), 'wrongbot-fp16-vae-'));
  t.after(() => rmSync(model, { recursive: true, force: true }));
  cpSync(fixturePath('tiny-sdxl'), model, { recursive: true });
  const decoder = path.join(model, 'vae_decoder', 'model.onnx');
  const configFile = path.join(model, 'vae_decoder', 'config.json');
  writeFileSync(decoder, float16VaeDecoder());
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  assert.equal(config['force_upcast'], true, 'the stock SDXL VAE config asks for float32');

  for (const forceUpcast of [true, undefined]) {
    writeFileSync(configFile, JSON.stringify({ ...config, force_upcast: forceUpcast }));
    await assert.rejects(SdxlPipeline.load(model, { kind: 'cpu', index: 0 }), {
      name: 'ModelLoadError',
      message: `${decoder} computes in float16 and ${configFile} lacks "force_upcast": false: the stock SDXL VAE overflows in `
        + 'float16 (NaN, black images). Use an fp32 VAE, or madebyollin/sdxl-vae-fp16-fix with "force_upcast": false in its config.json',
    }, `force_upcast ${forceUpcast}`);
  }

  writeFileSync(configFile, JSON.stringify({ ...config, force_upcast: false }));
  const fixed = await SdxlPipeline.load(model, { kind: 'cpu', index: 0 });
  try {
    const result = await fixed.generate({ ...requestFor(BASE_REFERENCE_CASES[0]!), steps: 1, width: 64, height: 64 });
    assert.equal(result.panels[0]!.rgb.length, 64 * 64 * 3);
  } finally {
    await fixed.dispose();
  }
});
