import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SdxlPipeline } from '../src/gpu/sdxl-pipeline.js';
import { InvalidRequestError } from '../src/common/validation.js';
import type { GenerationRequest } from '../src/gpu/request.js';
import { fixturePath, readFloat32Fixture, readFixtureJson } from './support/fixtures.js';
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
