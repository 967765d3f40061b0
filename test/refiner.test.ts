import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SdxlPipeline, type UnetCall } from '../src/gpu/sdxl-pipeline.js';
import { fixturePath, readFloat32Fixture } from './support/fixtures.js';
import { maxAbsDifference, maxRgbDifference } from './support/pixels.js';
import { REFINER_REFERENCE_CASES, type RefinerReferenceCase } from './support/reference-cases.js';

// The base → refiner hand-off against diffusers' own arrays. The refiner only runs the last, low-noise steps and
// the tiny VAE hides most latent differences, so its inputs are checked directly and its latents tightly.

const CPU = { kind: 'cpu', index: 0 } as const;
const pipelines = new Map<string | null, Promise<SdxlPipeline>>();
function pipelineFor(loraFile: string | null): Promise<SdxlPipeline> {
  let pipeline = pipelines.get(loraFile);
  if (!pipeline) {
    pipeline = SdxlPipeline.load(fixturePath('tiny-sdxl'), CPU, {
      refinerDir: fixturePath('tiny-sdxl-refiner'),
      loraPath: loraFile === null ? null : fixturePath('tiny-sdxl-lora', loraFile),
    });
    pipelines.set(loraFile, pipeline);
  }
  return pipeline;
}
test.after(async () => {
  for (const pipeline of pipelines.values()) await (await pipeline).dispose();
});

async function run(c: RefinerReferenceCase) {
  const pipeline = await pipelineFor(c.lora?.file ?? null);
  const calls: UnetCall[] = [];
  const result = await pipeline.generate({
    seed: c.seed, steps: c.steps, width: c.width, height: c.height, denoisingEnd: c.high_noise_frac,
    panels: [{
      prompt: c.prompt, negativePrompt: c.negative_prompt, guidanceScale: c.guidance_scale, guidanceRescale: 0,
      loraStrength: c.lora?.scale ?? 0,
    }],
  }, { onUnetCall: (call) => calls.push(call) });
  return { result, calls };
}

for (const c of REFINER_REFERENCE_CASES) {
  test(`${c.id}: hand-off split, refiner inputs, final latents and pixels match diffusers`, async () => {
    const { result, calls } = await run(c);
    const baseCalls = calls.filter((call) => call.model === 'base');
    const refinerCalls = calls.filter((call) => call.model === 'refiner');
    assert.equal(baseCalls.length, c.base_steps, 'base steps');
    assert.equal(refinerCalls.length, c.refiner_steps, 'refiner steps');

    const refinerStep0 = refinerCalls[0]!;
    assert.deepEqual(Array.from(refinerStep0.inputs.time_ids), Array.from(readFloat32Fixture('reference-refiner', c.dir, 'refiner_unet_step0_time_ids.bin')), 'refiner time_ids');
    assert.deepEqual(Array.from(baseCalls[0]!.inputs.time_ids), Array.from(readFloat32Fixture('reference-refiner', c.dir, 'base_unet_step0_time_ids.bin')), 'base time_ids');
    for (const name of ['encoder_hidden_states', 'text_embeds'] as const) {
      const difference = maxAbsDifference(refinerStep0.inputs[name], readFloat32Fixture('reference-refiner', c.dir, `refiner_unet_step0_${name}.bin`));
      assert.ok(difference <= 1e-5, `refiner ${name} differs by ${difference}`);
    }
    const sampleDifference = maxAbsDifference(refinerStep0.inputs.sample, readFloat32Fixture('reference-refiner', c.dir, 'refiner_unet_step0_sample.bin'));
    assert.ok(sampleDifference <= 1e-3, `refiner step-0 sample differs by ${sampleDifference}`);

    const latentDifference = maxAbsDifference(result.panels[0]!.finalLatents, readFloat32Fixture('reference-refiner', c.dir, 'final_latents.bin'));
    assert.ok(latentDifference <= 1e-3, `final latents differ by ${latentDifference}`);
    const pixelDifference = maxRgbDifference(result.panels[0]!.rgb, readFloat32Fixture('reference-refiner', c.dir, 'image.bin'));
    assert.ok(pixelDifference <= 1, `pixels differ by ${pixelDifference}`);
  });
}

test('denoisingEnd without a refiner, or out of (0, 1), is refused by name', async () => {
  const withoutRefiner = await SdxlPipeline.load(fixturePath('tiny-sdxl'), CPU);
  const request = {
    seed: 1, steps: 4, width: 64, height: 64,
    panels: [{ prompt: 'a cat', negativePrompt: null, guidanceScale: 5, guidanceRescale: 0 }],
  };
  try {
    await assert.rejects(withoutRefiner.generate({ ...request, denoisingEnd: 0.8 }), /denoisingEnd = 0.8 needs a refiner model/);
  } finally {
    await withoutRefiner.dispose();
  }
  const withRefiner = await pipelineFor(null);
  for (const bad of [0, 1, 1.5, -0.2]) {
    await assert.rejects(withRefiner.generate({ ...request, denoisingEnd: bad }), new RegExp(`denoisingEnd = ${bad} must be a number between 0 and 1`));
  }
});
