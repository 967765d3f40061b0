import { test } from 'node:test';
import assert from 'node:assert/strict';

import { InvalidRequestError } from '../src/common/validation.js';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import {
  AdamW, clipGradNorm, TensorMismatchError, type AdamWOptions, type NamedTensor,
} from '../src/gpu/training/adamw.js';
import { fixturePath, readFixtureJson } from './support/fixtures.js';

// Replays the optimizer half of diffusers' recorded training steps: the gradients torch computed go in, and the
// weights torch wrote after clipping and AdamW must come out.

interface TrainingCase {
  steps: number;
  optimizer: { lr: number; betas: [number, number]; weight_decay: number; eps: number; max_grad_norm: number };
  per_step: { grad_norm_before_clip: number }[];
}

/** The notes' figure for replaying torch's formulas in float32 from the recorded gradients. */
const WEIGHT_TOLERANCE = 3e-8;
const NORM_RELATIVE_TOLERANCE = 1e-6;

const CASES = ['b1', 'b2'] as const;

function readCase(name: string): TrainingCase {
  return readFixtureJson<TrainingCase>('training-reference', name, 'case.json');
}

function optionsOf({ optimizer }: TrainingCase): AdamWOptions {
  return { lr: optimizer.lr, betas: optimizer.betas, weightDecay: optimizer.weight_decay, eps: optimizer.eps };
}

/** The tensors of a fixture file in the order `names` gives, or in the file's own order. */
async function readTensors(parts: string[], names?: readonly string[]): Promise<NamedTensor[]> {
  const file = await SafetensorsFile.open(fixturePath('training-reference', ...parts));
  try {
    const tensors: NamedTensor[] = [];
    for (const name of names ?? [...file.entries.keys()]) tensors.push({ name, values: await file.readFloat32(name) });
    return tensors;
  } finally {
    await file.close();
  }
}

function readGrads(caseName: string, step: number, params: readonly NamedTensor[]): Promise<NamedTensor[]> {
  return readTensors([caseName, 'steps', String(step), 'grads.safetensors'], params.map(({ name }) => name));
}

function readWeightsAfter(caseName: string, step: number, params: readonly NamedTensor[]): Promise<NamedTensor[]> {
  return readTensors([caseName, 'steps', String(step), 'lora_after.safetensors'], params.map(({ name }) => name));
}

function maxDifference(actual: readonly NamedTensor[], expected: readonly NamedTensor[]): { value: number; where: string } {
  let value = 0;
  let where = 'nowhere';
  actual.forEach(({ name, values }, t) => {
    assert.equal(expected[t]!.name, name);
    const wanted = expected[t]!.values;
    for (let i = 0; i < values.length; i++) {
      const difference = Math.abs(values[i]! - wanted[i]!);
      // `!(difference <= value)` also catches NaN.
      if (!(difference <= value)) {
        value = difference;
        where = `${name}[${i}]`;
      }
    }
  });
  return { value, where };
}

function l2Norm(values: Float32Array): number {
  let sum = 0;
  for (const value of values) sum += value * value;
  return Math.sqrt(sum);
}

function globalNorm(tensors: readonly NamedTensor[]): number {
  return Math.hypot(...tensors.map(({ values }) => l2Norm(values)));
}

function copyTensors(tensors: readonly NamedTensor[]): NamedTensor[] {
  return tensors.map(({ name, values }) => ({ name, values: values.slice() }));
}

function bytesOf(tensors: readonly NamedTensor[]): Buffer {
  return Buffer.concat(tensors.map(({ values }) => Buffer.from(values.buffer, values.byteOffset, values.byteLength)));
}

/** Clips and steps as the training script does, returning the norm before clipping. */
function optimizerStep(optimizer: AdamW, params: NamedTensor[], grads: NamedTensor[], training: TrainingCase): number {
  const norm = clipGradNorm(grads, training.optimizer.max_grad_norm);
  optimizer.step(params, grads);
  return norm;
}

for (const caseName of CASES) {
  test(`case ${caseName}: clipping and AdamW on the recorded gradients give torch's weights after every step`, async (t) => {
    const training = readCase(caseName);
    const params = await readTensors([caseName, 'lora_init.safetensors']);
    const optimizer = new AdamW(optionsOf(training));
    assert.equal(training.per_step.length, training.steps);
    for (let step = 0; step < training.steps; step++) {
      const norm = optimizerStep(optimizer, params, await readGrads(caseName, step, params), training);
      const recordedNorm = training.per_step[step]!.grad_norm_before_clip;
      const normError = Math.abs(norm - recordedNorm) / recordedNorm;
      const { value, where } = maxDifference(params, await readWeightsAfter(caseName, step, params));
      t.diagnostic(`step ${step}: weights within ${value} (largest at ${where}), norm within ${normError} relative`);
      assert.ok(normError <= NORM_RELATIVE_TOLERANCE, `step ${step}: norm ${norm}, recorded ${recordedNorm}`);
      assert.ok(value <= WEIGHT_TOLERANCE, `step ${step}: weight ${where} is ${value} from torch's`);
    }
  });
}

test('gradients above the limit are scaled together so that their global norm becomes the limit', async () => {
  const training = readCase('b1');
  const params = await readTensors(['b1', 'lora_init.safetensors']);
  const grads = await readGrads('b1', 1, params);
  for (const { values } of grads) values.forEach((value, i) => { values[i] = value * 1000; });
  const before = copyTensors(grads);
  const normBefore = globalNorm(before);

  const reported = clipGradNorm(grads, 1);

  assert.ok(Math.abs(reported - 1000 * training.per_step[1]!.grad_norm_before_clip) <= NORM_RELATIVE_TOLERANCE * reported);
  assert.ok(Math.abs(reported - normBefore) <= 1e-9 * normBefore, `reported ${reported}, computed ${normBefore}`);
  assert.ok(Math.abs(globalNorm(grads) - 1) <= 1e-6, `norm after clipping ${globalNorm(grads)}`);
  // One scale for all: clipping each tensor on its own would give each a norm of 1 instead.
  grads.forEach(({ name, values }, index) => {
    const ratio = l2Norm(values) / l2Norm(before[index]!.values);
    assert.ok(Math.abs(ratio * normBefore - 1) <= 1e-6, `${name} scaled by ${ratio}, not 1/${normBefore}`);
  });
});

test("clipping divides by the norm plus torch's 1e-6, which shows when the norm itself is tiny", () => {
  const grads = [{ name: 'g', values: new Float32Array([3e-6, 4e-6]) }];
  assert.ok(Math.abs(clipGradNorm(grads, 1e-6) - 5e-6) <= 1e-12);
  // maxNorm / (norm + 1e-6) = 1/6, so the norm after clipping is 5/6 of maxNorm rather than maxNorm.
  const [a, b] = grads[0]!.values;
  assert.ok(Math.abs(a! - 5e-7) <= 1e-12 && Math.abs(b! - 4e-6 / 6) <= 1e-12, `clipped to ${a}, ${b}`);
});

test('gradients within the limit are left exactly as they are', async () => {
  const params = await readTensors(['b1', 'lora_init.safetensors']);
  const grads = await readGrads('b1', 1, params);
  const before = bytesOf(grads);
  const norm = clipGradNorm(grads, 1);
  assert.ok(norm > 0 && norm < 1);
  assert.deepEqual(bytesOf(grads), before);
});

test('a NaN or infinite gradient gives a non-finite norm for the caller to stop on', () => {
  for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
    const grads = [{ name: 'a', values: new Float32Array([0.5, 0.25]) }, { name: 'b', values: new Float32Array([bad, 1]) }];
    const norm = clipGradNorm(grads, 1);
    assert.ok(!Number.isFinite(norm), `gradient ${bad} gave norm ${norm}`);
    assert.deepEqual([...grads[0]!.values], [0.5, 0.25]);
  }
});

test('weight decay shrinks the weights by lr·weightDecay, and eps bounds the step where the gradient is tiny', () => {
  // lr·weightDecay of the fixtures (1e-8) is below float32's resolution near the weights, so they cannot show
  // whether decay happens: a large decay and a zero gradient make it the only change. A gradient equal to eps makes
  // the first step lr·g/(|g| + eps) = lr/2, half the step a large gradient would take.
  const params = [{ name: 'w', values: new Float32Array([1, 0, -2]) }];
  const grads = [{ name: 'w', values: new Float32Array([0, 1e-8, -3]) }];
  new AdamW({ lr: 0.1, betas: [0.9, 0.999], weightDecay: 0.5, eps: 1e-8 }).step(params, grads);
  const [decayedOnly, halfStep, fullStep] = params[0]!.values;
  assert.ok(Math.abs(decayedOnly! - 0.95) <= 1e-7, `decayed weight ${decayedOnly}`);
  assert.ok(Math.abs(halfStep! - -0.05) <= 1e-7, `weight with a gradient of eps ${halfStep}`);
  assert.ok(Math.abs(fullStep! - (-2 * 0.95 + 0.1)) <= 1e-6, `weight with a large gradient ${fullStep}`);
});

test('a state exported mid-run and restored continues exactly as the uninterrupted run, unaffected by later steps', async () => {
  const training = readCase('b1');
  const params = await readTensors(['b1', 'lora_init.safetensors']);
  const uninterrupted = new AdamW(optionsOf(training));
  // Two steps before the export, so that a step count lost or reset to 1 shows in the bias corrections.
  const exportAfter = 2;
  for (let step = 0; step < exportAfter; step++) {
    optimizerStep(uninterrupted, params, await readGrads('b1', step, params), training);
  }
  const saved = uninterrupted.state();
  const savedParams = copyTensors(params);
  assert.equal(saved.step, exportAfter);
  assert.deepEqual(saved.moments.map(({ name }) => name), params.map(({ name }) => name));

  for (let step = exportAfter; step < training.steps; step++) {
    optimizerStep(uninterrupted, params, await readGrads('b1', step, params), training);
  }
  // Resumed twice from the same state: restoring must not hand the state's arrays to the optimizer to change.
  for (const attempt of ['first', 'second']) {
    const resumedParams = copyTensors(savedParams);
    const resumed = AdamW.fromState(optionsOf(training), saved);
    for (let step = exportAfter; step < training.steps; step++) {
      optimizerStep(resumed, resumedParams, await readGrads('b1', step, params), training);
    }
    assert.ok(bytesOf(resumedParams).equals(bytesOf(params)), `the ${attempt} resumed run drifted from the uninterrupted one`);
    assert.deepEqual(resumed.state(), uninterrupted.state());
  }
});

test('bad options are refused with the option and its value named', () => {
  const good: AdamWOptions = { lr: 1e-4, betas: [0.9, 0.999], weightDecay: 1e-4, eps: 1e-8 };
  const bad: [Partial<AdamWOptions>, string][] = [
    [{ lr: 0 }, 'lr = 0'], [{ lr: -1e-4 }, 'lr = -0.0001'], [{ lr: Number.NaN }, 'lr = NaN'],
    [{ lr: Number.POSITIVE_INFINITY }, 'lr = Infinity'],
    [{ betas: [1, 0.999] }, 'betas[0] = 1'], [{ betas: [-0.1, 0.999] }, 'betas[0] = -0.1'],
    [{ betas: [0.9, 1] }, 'betas[1] = 1'], [{ betas: [0.9, Number.NaN] }, 'betas[1] = NaN'],
    [{ weightDecay: -1e-4 }, 'weightDecay = -0.0001'], [{ weightDecay: Number.POSITIVE_INFINITY }, 'weightDecay = Infinity'],
    [{ eps: 0 }, 'eps = 0'], [{ eps: Number.NaN }, 'eps = NaN'],
  ];
  for (const [change, named] of bad) {
    assert.throws(() => new AdamW({ ...good, ...change }), (error: unknown) => {
      assert.ok(error instanceof InvalidRequestError, String(error));
      assert.ok(error.message.startsWith(named), `${error.message} should name ${named}`);
      return true;
    });
  }
  assert.doesNotThrow(() => new AdamW({ ...good, betas: [0, 0], weightDecay: 0 }));
  for (const maxNorm of [0, -1, Number.NaN]) {
    assert.throws(() => clipGradNorm([], maxNorm), { name: 'InvalidRequestError', message: new RegExp(`^maxNorm = ${maxNorm}`) });
  }
});

test('gradients or a restored state that do not match the parameters are refused, naming the tensor', () => {
  const options: AdamWOptions = { lr: 1e-4, betas: [0.9, 0.999], weightDecay: 1e-4, eps: 1e-8 };
  const tensors = (names: string[], length = 2): NamedTensor[] =>
    names.map((name) => ({ name, values: new Float32Array(length).fill(0.5) }));
  const refused = (action: () => void, ...fragments: string[]): void => {
    assert.throws(action, (error: unknown) => {
      assert.ok(error instanceof TensorMismatchError, String(error));
      for (const fragment of fragments) assert.ok(error.message.includes(fragment), `${error.message} lacks ${fragment}`);
      return true;
    });
  };

  refused(() => new AdamW(options).step(tensors(['a', 'b']), tensors(['a', 'c'])), '"c"', '"b"');
  refused(() => new AdamW(options).step(tensors(['a', 'b']), [...tensors(['a']), ...tensors(['b'], 3)]), '"b"', '3');
  refused(() => new AdamW(options).step(tensors(['a', 'b']), tensors(['a'])), '1 tensors', '2');

  const trained = new AdamW(options);
  trained.step(tensors(['a', 'b']), tensors(['a', 'b']));
  const state = trained.state();
  refused(() => AdamW.fromState(options, state).step(tensors(['a', 'x']), tensors(['a', 'x'])), '"b"', '"x"');
  refused(() => AdamW.fromState(options, state).step(tensors(['a', 'b'], 3), tensors(['a', 'b'], 3)), '"a"', '3');
  const [first, second] = state.moments;
  refused(() => AdamW.fromState(options, { step: 1, moments: [first!, { ...second!, v: new Float32Array(5) }] }), '"b"', '5');
  refused(() => AdamW.fromState(options, { step: 1, moments: [first!, first!] }), '"a"', 'twice');
  for (const step of [-1, 1.5, Number.NaN]) {
    assert.throws(() => AdamW.fromState(options, { ...state, step }), { message: new RegExp(`^state.step = ${step}`) });
  }
  assert.throws(() => AdamW.fromState(options, { step: 0, moments: state.moments }), { message: /^state.moments = "2 tensors"/ });
  assert.throws(() => AdamW.fromState(options, { step: 2, moments: [] }), { message: /^state.moments = "0 tensors"/ });
});
