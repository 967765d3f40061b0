import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DataType } from '../src/gpu/onnx/onnx-proto.js';
import { encodePng } from '../src/gpu/image.js';
import { SdxlPipeline, type UnetCall } from '../src/gpu/sdxl-pipeline.js';
import { InvalidRequestError } from '../src/common/validation.js';
import { WEIGHTING_SYNTAXES } from '../src/common/generation-limits.js';
import type { GenerationRequest } from '../src/gpu/request.js';
import { fixturePath, readFloat32Fixture, readFixtureJson } from './support/fixtures.js';
import { encodeTestModel } from './support/onnx-model.js';
import { maxAbsDifference, maxPixelDifference, maxRgbDifference } from './support/pixels.js';
import {
  BASE_REFERENCE_CASES, RESCALE_REFERENCE_CASES, type ReferenceCase, type ReferenceCaseRecord,
} from './support/reference-cases.js';

// Intermediate results against diffusers' own arrays, so that a mistake shows where it happens, not only in pixels.

const CPU = { kind: 'cpu', index: 0 } as const;
// Both export styles in one process: a load costs far more than generating a reference case.
const MODELS = ['tiny-sdxl', 'tiny-sdxl-legacy-io'] as const;
const pipelines = new Map<string, SdxlPipeline>();
for (const model of MODELS) pipelines.set(model, await SdxlPipeline.load(fixturePath(model), CPU));
const pipeline = pipelines.get('tiny-sdxl')!;
test.after(async () => {
  for (const loaded of pipelines.values()) await loaded.dispose();
});

function requestFor(c: Omit<ReferenceCase, 'id' | 'dir' | 'lora'>, guidanceRescale = 0): GenerationRequest {
  return {
    seed: c.seed, steps: c.steps, width: c.width, height: c.height,
    panels: [{ prompt: c.prompt, negativePrompt: c.negative_prompt, guidanceScale: c.guidance_scale, guidanceRescale }],
  };
}

/** Fails unless `actual` is within `tolerance` of the case's array `name`. */
function assertClose(actual: Float32Array, c: ReferenceCase, name: string, tolerance: number): void {
  const difference = maxAbsDifference(actual, readFloat32Fixture('reference', c.dir, `${name}.bin`));
  assert.ok(difference <= tolerance, `${name} differs by ${difference}`);
}

// Tolerances from fixtures/README.md: an independent onnxruntime loop reaches embeddings within 8e-7, final latents
// within 8.6e-5 and images within 2.8e-6 of torch.
for (const model of MODELS) {
  for (const c of BASE_REFERENCE_CASES) {
    test(`${model} ${c.id}: text embeddings, step-0 UNet inputs, final latents and pixels match diffusers`, async () => {
      const calls: UnetCall[] = [];
      const result = await pipelines.get(model)!.generate(requestFor(c), { onUnetCall: (call) => calls.push(call) });
      const record = readFixtureJson<ReferenceCaseRecord>('reference', c.dir, 'case.json');
      assert.equal(calls.length, record.unet_calls, 'UNet calls');
      const step0 = calls[0]!;
      assert.equal(step0.timestep, record.unet_step0_timestep, 'step-0 timestep');

      // The UNet's rows are [negative, positive] with guidance, [positive] without: each against encode_prompt's output.
      const rows = c.guidance_scale > 1 ? ['negative_', ''] : [''];
      const { encoder_hidden_states: hidden, text_embeds: pooled, time_ids: timeIds, sample } = step0.inputs;
      rows.forEach((prefix, row) => {
        const rowOf = (values: Float32Array) => values.subarray(row * values.length / rows.length, (row + 1) * values.length / rows.length);
        assertClose(rowOf(hidden), c, `${prefix}prompt_embeds`, 1e-5);
        assertClose(rowOf(pooled), c, `${prefix}pooled_prompt_embeds`, 1e-5);
      });
      assert.deepEqual(Array.from(timeIds), Array.from(readFloat32Fixture('reference', c.dir, 'unet_step0_time_ids.bin')), 'time_ids');
      assertClose(sample, c, 'unet_step0_sample', 1e-5);
      assertClose(hidden, c, 'unet_step0_encoder_hidden_states', 1e-5);
      assertClose(pooled, c, 'unet_step0_text_embeds', 1e-5);

      assertClose(result.panels[0]!.finalLatents, c, 'final_latents', 1e-3);
      const pixelDifference = maxRgbDifference(result.panels[0]!.rgb, readFloat32Fixture('reference', c.dir, 'image.bin'));
      assert.ok(pixelDifference <= 1, `pixels differ by ${pixelDifference}`);
    });
  }
}

test('a prompt without weighting syntax gives diffusers\' result in every weighting mode', async () => {
  // Forced compel or A1111 weighting runs its own arithmetic at weight 1, which must come back to the plain encoding.
  const c = BASE_REFERENCE_CASES.find((candidate) => candidate.negative_prompt !== null && candidate.negative_prompt !== '')!;
  for (const weighting of WEIGHTING_SYNTAXES) {
    const result = await pipeline.generate({ ...requestFor(c), weighting });
    const latentDifference = maxAbsDifference(result.panels[0]!.finalLatents, readFloat32Fixture('reference', c.dir, 'final_latents.bin'));
    assert.ok(latentDifference <= 1e-3, `${weighting}: final latents differ by ${latentDifference}`);
  }
});

test('a prompt past 77 tokens: the notice names the tokens transformers\' tokenizer puts past the window', async () => {
  interface ClipCase { text: string; tokens: string[] }
  const long = readFixtureJson<{ cases: ClipCase[] }>('clip-tokens.json').cases.filter((c) => c.tokens.length > 77);
  assert.ok(long.length >= 2, 'clip-tokens.json has long cases');
  for (const c of long) {
    // bos and 75 tokens fit; the dropped words are the rest up to eos, as the byte-level BPE spells them (ASCII here).
    const dropped = c.tokens.slice(76, -1).join('').replaceAll('</w>', ' ').trim();
    const result = await pipeline.generate({
      seed: 0, steps: 1, width: 64, height: 64,
      panels: [{ prompt: c.text, negativePrompt: null, guidanceScale: 1, guidanceRescale: 0 }],
    });
    assert.deepEqual(result.notices, [`prompt is longer than 77 tokens; dropped: "${dropped}"`]);
  }
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

for (const c of RESCALE_REFERENCE_CASES) {
  test(`${c.dir}: guidance_rescale ${c.guidance_rescale} gives diffusers' final latents and image`, async () => {
    const result = await pipeline.generate(requestFor(c, c.guidance_rescale));
    const latentDifference = maxAbsDifference(result.panels[0]!.finalLatents, readFloat32Fixture('reference-rescale', c.dir, 'final_latents.bin'));
    assert.ok(latentDifference <= 1e-3, `final latents differ by ${latentDifference}`);
    // Only image.png was kept of this set: within one level, as every PNG comparison (rounding at .5).
    const png = await encodePng(result.panels[0]!.rgb, c.width, c.height);
    const pixelDifference = await maxPixelDifference(png, fixturePath('reference-rescale', c.dir, 'image.png'));
    assert.ok(pixelDifference <= 1, `pixels differ by ${pixelDifference}`);
  });
}

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
 * A VAE decoder as an fp16 export declares it (float16 latents in, float16 image out). Inside, the first three latent
 * channels times `gain` pass through a float16 activation and are upsampled to the image: enough for a load and one
 * small image. A large gain overflows the activation to ±inf, as the stock SDXL VAE overflows; `centred` then
 * subtracts the mean, as the VAE's GroupNorm does, and inf − inf is NaN.
 */
function float16VaeDecoder(gain: number, centred = false): Uint8Array {
  const cast = (name: string, from: string, to: number) =>
    ({ name, opType: 'Cast', input: [from], output: [name], attributes: { to: { kind: 'int', value: to } } }) as const;
  return encodeTestModel({
    opset: 17,
    inputs: [{ name: 'latent_sample', dims: null, elemType: DataType.float16 }],
    initializers: [
      { name: 'first', dataType: DataType.int64, dims: [1], values: [0] },
      { name: 'third', dataType: DataType.int64, dims: [1], values: [3] },
      { name: 'channels', dataType: DataType.int64, dims: [1], values: [1] },
      { name: 'gain', dataType: DataType.float, dims: [], values: [gain] },
      { name: 'scales', dataType: DataType.float, dims: [4], values: [1, 1, 8, 8] },
    ],
    nodes: [
      cast('latents', 'latent_sample', DataType.float),
      { name: 'rgb', opType: 'Slice', input: ['latents', 'first', 'third', 'channels'], output: ['rgb'] },
      { name: 'scaled', opType: 'Mul', input: ['rgb', 'gain'], output: ['scaled'] },
      cast('activation', 'scaled', DataType.float16),
      cast('widened', 'activation', DataType.float),
      ...(centred
        ? [
          { name: 'mean', opType: 'ReduceMean', input: ['widened'], output: ['mean'] },
          { name: 'features', opType: 'Sub', input: ['widened', 'mean'], output: ['features'] },
        ]
        : [{ name: 'features', opType: 'Identity', input: ['widened'], output: ['features'] }]),
      { name: 'image', opType: 'Resize', input: ['features', '', 'scales'], output: ['image'] },
      cast('sample', 'image', DataType.float16),
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
  // Small enough that unscaled latents (tens) stay inside the image's range instead of clamping.
  const gain = 0.02;
  writeFileSync(decoder, float16VaeDecoder(gain));
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  assert.equal(config['force_upcast'], true, 'the stock SDXL VAE config asks for float32');

  for (const forceUpcast of [true, undefined]) {
    writeFileSync(configFile, JSON.stringify({ ...config, force_upcast: forceUpcast }));
    await assert.rejects(SdxlPipeline.load(model, CPU), {
      name: 'ModelLoadError',
      message: `${decoder} computes in float16 and ${configFile} lacks "force_upcast": false: the stock SDXL VAE overflows in `
        + 'float16 (NaN, black images). Use an fp32 VAE, or madebyollin/sdxl-vae-fp16-fix with "force_upcast": false in its config.json',
    }, `force_upcast ${forceUpcast}`);
  }

  writeFileSync(configFile, JSON.stringify({ ...config, force_upcast: false }));
  const fixed = await SdxlPipeline.load(model, CPU);
  try {
    const result = await fixed.generate({ ...requestFor(BASE_REFERENCE_CASES[0]!), steps: 1, width: 64, height: 64 });
    // The decoder's float16 output read back as numbers: each pixel is its latent's first three channels, times the gain.
    const { finalLatents, rgb } = result.panels[0]!;
    const plane = 8 * 8;
    let difference = 0;
    for (let y = 0; y < 64; y++) {
      for (let x = 0; x < 64; x++) {
        for (let channel = 0; channel < 3; channel++) {
          const value = gain * finalLatents[channel * plane + Math.floor(y / 8) * 8 + Math.floor(x / 8)]! / fixed.folder.vae.scalingFactor;
          const expected = Math.round(Math.min(Math.max(value / 2 + 0.5, 0), 1) * 255);
          difference = Math.max(difference, Math.abs(rgb[(y * 64 + x) * 3 + channel]! - expected));
        }
      }
    }
    assert.ok(difference <= 1, `pixels differ by ${difference} from the decoder's own arithmetic`);
  } finally {
    await fixed.dispose();
  }
});

test('a float16 VAE decoder that overflows fails the generation with a clear error instead of a black image', async (t) => {
  const model = mkdtempSync(path.join(tmpdir(), 'wrongbot-fp16-vae-'));
  t.after(() => rmSync(model, { recursive: true, force: true }));
  cpSync(fixturePath('tiny-sdxl'), model, { recursive: true });
  const configFile = path.join(model, 'vae_decoder', 'config.json');
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  // The config claims what sdxl-vae-fp16-fix claims, so only the values can tell.
  writeFileSync(configFile, JSON.stringify({ ...config, force_upcast: false }));
  // Unscaled latents reach tens, so a gain of 1e4 puts most of them past float16's 65504.
  for (const [centred, what] of [[true, 'NaN'], [false, '±inf']] as const) {
    writeFileSync(path.join(model, 'vae_decoder', 'model.onnx'), float16VaeDecoder(1e4, centred));
    const overflowing = await SdxlPipeline.load(model, CPU);
    try {
      await assert.rejects(overflowing.generate({ ...requestFor(BASE_REFERENCE_CASES[0]!), steps: 2 }), {
        message: 'vae_decoder produced NaN or infinite values: the stock SDXL VAE overflows in float16; use an fp32 VAE or the '
          + 'sdxl-vae-fp16-fix VAE in vae_decoder/',
      }, what);
    } finally {
      await overflowing.dispose();
    }
  }
});
