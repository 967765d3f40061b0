import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { ImageGenerator } from '../src/gpu/image-generator.js';
import { RunClock } from '../src/gpu/onnx-session.js';
import { gaussianLoraInit, namedTensors, type LoraParameters } from '../src/gpu/training/lora-parameters.js';
import { LoraTrainingRun, type TrainingRequest } from '../src/gpu/training/lora-training.js';
import { readReplayCase, readStepArray } from '../src/gpu/training/replay-case.js';
import { UnetTrainingStep } from '../src/gpu/training/unet-training-step.js';
import { writeDiffusersLora } from '../src/gpu/lora/lora-writer.js';
import { fixturePath, readFixtureJson } from './support/fixtures.js';
import { HELD_OUT_EXPERIMENT, runHeldOutExperiment } from './support/held-out.js';
import { assertWeightsMatch } from './support/lora-weights.js';

// The training engine against diffusers' own train_dreambooth_lora_sdxl.py, replayed step for step on the tiny SDXL
// (test/fixtures/training-reference, recorded with torch on the same weights).

const CPU = { kind: 'cpu', index: 0 } as const;
const MODEL_DIR = fixturePath('tiny-sdxl');

interface CaseJson {
  steps: number;
  optimizer: { lr: number };
  per_step: { loss: number }[];
}

function caseDir(name: string): string {
  return fixturePath('training-reference', name);
}

function replayRequest(name: string, outPath: string): TrainingRequest {
  const recorded = readReplayCase(caseDir(name));
  return {
    modelDir: MODEL_DIR, device: CPU, gradientCheckpointing: false, recipe: recorded.recipe, images: recorded.images, draws: { kind: 'recorded', caseDir: caseDir(name) },
    start: { kind: 'lora', path: recorded.initLora }, outPath, checkpoint: null,
  };
}

function maxAbsDiff(actual: Float32Array, expected: Float32Array): number {
  assert.equal(actual.length, expected.length, 'same number of values');
  let worst = 0;
  for (let i = 0; i < actual.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  return worst;
}

async function readWeights(file: string, into: LoraParameters): Promise<void> {
  const weights = await SafetensorsFile.open(file);
  try {
    for (const { name, values } of namedTensors(into)) values.set(await weights.readFloat32(name));
  } finally {
    await weights.close();
  }
}

for (const name of ['b1', 'b2']) {
  test(`replay of diffusers' case ${name}: every intermediate teacher-forced, then the weights free-running`, async () => {
    const folder = mkdtempSync(path.join(tmpdir(), 'wrongbot-replay-'));
    const run = await LoraTrainingRun.prepare(replayRequest(name, path.join(folder, 'lora.safetensors')));
    try {
      const json = readFixtureJson<CaseJson>('training-reference', name, 'case.json');
      const { parameters } = await run.start();
      for (let step = 0; step < json.steps; step++) {
        // Teacher-forced: each step starts from the script's own weights before it.
        await readWeights(step === 0 ? path.join(caseDir(name), 'lora_init.safetensors') : path.join(caseDir(name), 'steps', String(step - 1), 'lora_after.safetensors'), parameters);
        const outcome = await run.computeStep(step, parameters);
        const recorded = (file: string) => readStepArray(caseDir(name), step, { file });
        // 1e-5: the fixture README's bound, from an independent onnxruntime pass agreeing with torch within 3.3e-6.
        for (const [label, actual, file] of [
          ['pixel values', outcome.pixelValues, 'pixel_values.bin'],
          ['latent parameters', outcome.latentParameters, 'latent_parameters.bin'],
          ['latents', outcome.latents, 'model_input.bin'],
          ['noisy latents', outcome.noisyLatents, 'noisy_model_input.bin'],
          ['UNet prediction', outcome.prediction, 'model_pred.bin'],
        ] as const) {
          const difference = maxAbsDiff(actual, recorded(file));
          assert.ok(difference <= 1e-5, `step ${step} ${label}: max difference ${difference} (bound 1e-5)`);
        }
        const expectedLoss = json.per_step[step]!.loss;
        assert.ok(Math.abs(outcome.loss - expectedLoss) <= 1e-5 * expectedLoss, `step ${step} loss ${outcome.loss} vs ${expectedLoss}`);
        const grads = await SafetensorsFile.open(path.join(caseDir(name), 'steps', String(step), 'grads.safetensors'));
        try {
          assert.equal(outcome.gradients.length, grads.entries.size, 'a gradient for every recorded LoRA weight');
          for (const { name: key, values } of outcome.gradients) {
            const expected = await grads.readFloat32(key);
            const largest = expected.reduce((max, value) => Math.max(max, Math.abs(value)), 0);
            // With B = 0 at step 0 the script's gradients of A are exactly 0 (the notes' check): ours must be too.
            const bound = largest === 0 ? 0 : 1e-3 * largest;
            assert.ok(maxAbsDiff(values, expected) <= bound, `step ${step} gradient ${key}: difference ${maxAbsDiff(values, expected)} above ${bound}`);
          }
        } finally {
          await grads.close();
        }
      }
      // Free-running: our own weights from step to step, as the script ran.
      const outcome = await run.train();
      assert.equal(outcome.losses.length, json.steps);
      await assertWeightsMatch(outcome.loraPath, path.join(caseDir(name), 'steps', String(json.steps - 1), 'lora_after.safetensors'), json.optimizer.lr, json.steps);
      await assertWeightsMatch(outcome.loraPath, path.join(caseDir(name), 'final', 'pytorch_lora_weights.safetensors'), json.optimizer.lr, json.steps);
    } finally {
      await run.dispose();
      rmSync(folder, { recursive: true, force: true });
    }
  });
}

test('the current and the legacy optimum exports (same weights), with and without gradient checkpointing, give the same gradients', async () => {
  const name = 'b1';
  const step = 1;
  const clock = new RunClock();
  const shape = { batchSize: 1, latent: [4, 16, 16] as const, promptEmbeds: [77, 64] as const, pooledWidth: 32, timeIdCount: 6 };
  const variants = ['tiny-sdxl', 'tiny-sdxl-legacy-io'].flatMap((model) => [false, true].map((gradientCheckpointing) => ({ model, gradientCheckpointing })));
  const steps = await Promise.all(variants.map(({ model, gradientCheckpointing }) =>
    UnetTrainingStep.create(fixturePath(model, 'unet', 'model.onnx'), CPU, clock, { rank: 4, shape, gradientCheckpointing })));
  try {
    const json = readFixtureJson<{ per_step: { timesteps: number[]; time_ids: number[][] }[] }>('training-reference', name, 'case.json');
    const parameters = gaussianLoraInit(steps[0]!.targets, 4, 0);
    await readWeights(path.join(caseDir(name), 'steps', String(step - 1), 'lora_after.safetensors'), parameters);
    const floats = (file: string) => { const bytes = readFileSync(path.join(caseDir(name), file)); return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)); };
    const batch = {
      noisyLatents: readStepArray(caseDir(name), step, { file: 'noisy_model_input.bin' }),
      timesteps: json.per_step[step]!.timesteps,
      promptEmbeds: floats('prompt_embeds.bin'),
      pooledPromptEmbeds: floats('pooled_prompt_embeds.bin'),
      timeIds: Float32Array.from(json.per_step[step]!.time_ids.flat()),
      target: readStepArray(caseDir(name), step, { file: 'noise.bin' }),
    };
    const [reference, ...others] = await Promise.all(steps.map((unetStep) => unetStep.run(batch, parameters, 1)));
    others.forEach((other, o) => {
      const variant = JSON.stringify(variants[o + 1]);
      assert.ok(Math.abs(reference!.loss - other.loss) <= 1e-5 * reference!.loss, `${variant}: loss ${other.loss} vs ${reference!.loss}`);
      let checked = 0;
      reference!.gradients.forEach(({ name: key, values }, index) => {
        const gradient = other.gradients[index]!;
        assert.equal(gradient.name, key);
        const largest = values.reduce((max, value) => Math.max(max, Math.abs(value)), 0);
        assert.ok(largest > 0, `${key}: a non-zero gradient at step ${step}`);
        assert.ok(maxAbsDiff(gradient.values, values) <= 1e-3 * largest, `${variant} ${key}: disagrees by ${maxAbsDiff(gradient.values, values)}`);
        checked++;
      });
      assert.equal(checked, 192, 'A and B of all 96 projections');
    });
  } finally {
    await Promise.all(steps.map((unetStep) => unetStep.dispose()));
  }
});

test('200 steps at lr 1e-3 lower the held-out loss, and the LoRA written changes what generate draws', async () => {
  const folder = mkdtempSync(path.join(tmpdir(), 'wrongbot-train-'));
  const out = path.join(folder, 'wrong-test.safetensors');
  try {
    const { before, after, drop, outcome, trainingSetSha256 } = await runHeldOutExperiment(out);
    console.log(`# held-out loss over ${HELD_OUT_EXPERIMENT.triples} triples: ${before.toFixed(4)} → ${after.toFixed(4)} (${(100 * drop).toFixed(2)} % lower); last training loss ${outcome.finalLoss.toFixed(4)}`);
    assert.ok(drop >= 0.01, `held-out loss ${before} → ${after}: ${(100 * drop).toFixed(2)} % lower, expected at least 1 %`);

    const written = await SafetensorsFile.open(out);
    const metadata = written.metadata;
    await written.close();
    assert.equal(metadata['wrongbot.steps'], '200');
    assert.equal(JSON.parse(metadata['wrongbot.recipe']!).learningRate, 1e-3);
    assert.equal(metadata['wrongbot.training_set_sha256'], trainingSetSha256);
    assert.equal(Number(metadata['wrongbot.final_loss']), outcome.finalLoss);

    const panel = { prompt: 'a cat', negativePrompt: null, guidanceScale: 5, guidanceRescale: 0 };
    const request = { seed: 3, steps: 2, width: 64, height: 64 };
    const base = await ImageGenerator.start(MODEL_DIR, CPU);
    const withLora = await ImageGenerator.start(MODEL_DIR, CPU, { loraPath: out });
    try {
      const [plain, patched] = await Promise.all([
        base.generate({ ...request, panels: [panel] }),
        withLora.generate({ ...request, panels: [{ ...panel, loraStrength: 1 }] }),
      ]);
      assert.ok(withLora.loaded.notices.some((notice) => /96 UNet projections patched/.test(notice)), withLora.loaded.notices.join('; '));
      assert.notDeepEqual(Buffer.from(patched.panels[0]!.png), Buffer.from(plain.panels[0]!.png), 'the trained LoRA changes the image');
    } finally {
      await Promise.all([base.close(), withLora.close()]);
    }
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test('a NaN loss stops the training at that step and writes nothing', async () => {
  const folder = mkdtempSync(path.join(tmpdir(), 'wrongbot-nan-'));
  const out = path.join(folder, 'never.safetensors');
  const poisoned = path.join(folder, 'nan-lora.safetensors');
  const run = await LoraTrainingRun.prepare({
    modelDir: MODEL_DIR, device: CPU, gradientCheckpointing: false, recipe: { steps: 3, resolution: 128 }, images: readReplayCase(caseDir('b1')).images,
    draws: { kind: 'seeded' }, start: { kind: 'lora', path: poisoned }, outPath: out, checkpoint: null,
  });
  try {
    // A LoRA to continue from whose first up-projection went NaN, as a diverged earlier run leaves one.
    const start = gaussianLoraInit(run.targets, 4, 0);
    start.modules[0]!.up.fill(Number.NaN);
    writeDiffusersLora(poisoned, start.modules, {});
    await assert.rejects(run.train(), (error: Error) => {
      assert.equal(error.name, 'TrainingDivergedError');
      assert.match(error.message, /^the loss is NaN \(gradient norm NaN\) at step 0: training stopped and nothing was written/);
      return true;
    });
    assert.equal(existsSync(out), false, 'no LoRA file is written');
  } finally {
    await run.dispose();
    rmSync(folder, { recursive: true, force: true });
  }
});
