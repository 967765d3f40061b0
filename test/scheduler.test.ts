import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EulerDiscreteScheduler, parseEulerConfig, SchedulerConfigError } from '../src/gpu/scheduler.js';
import { fixturePath, readFixtureJson } from './support/fixtures.js';

interface EulerFixture {
  config: Record<string, unknown>;
  steps: Record<string, { timesteps: number[]; sigmas: number[]; init_noise_sigma: number; scale_model_input_factor: number[] }>;
}

const fixture = readFixtureJson<EulerFixture>('scheduler-euler.json');

function assertClose(actual: ArrayLike<number>, expected: readonly number[], tolerance: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i]! - expected[i]!) <= tolerance, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
}

test('Euler timesteps, sigmas, init_noise_sigma and input scaling equal diffusers for 1…50 steps', async () => {
  const scheduler = await EulerDiscreteScheduler.fromDirectory(fixturePath('tiny-sdxl', 'scheduler'));
  assert.ok(Object.keys(fixture.steps).length >= 10);
  for (const [steps, expected] of Object.entries(fixture.steps)) {
    scheduler.setTimesteps(Number(steps));
    assert.deepEqual(Array.from(scheduler.timesteps), expected.timesteps, `timesteps for ${steps} steps`);
    assertClose(scheduler.sigmas, expected.sigmas, 1e-6, `sigmas for ${steps} steps`);
    assertClose([scheduler.initNoiseSigma], [expected.init_noise_sigma], 1e-6, `init_noise_sigma for ${steps} steps`);
    const ones = new Float32Array(expected.timesteps.length).fill(1);
    const factors = expected.timesteps.map((_, i) => scheduler.scaleModelInput(ones, i)[0]!);
    assertClose(factors, expected.scale_model_input_factor, 1e-6, `scale_model_input for ${steps} steps`);
  }
});

test('one Euler step moves the sample by ε · (σ_next − σ)', async () => {
  const scheduler = await EulerDiscreteScheduler.fromDirectory(fixturePath('tiny-sdxl', 'scheduler'));
  scheduler.setTimesteps(4);
  const sample = Float32Array.of(1, -2, 0.5);
  const eps = Float32Array.of(0.25, 1, -4);
  const next = scheduler.step(eps, 0, sample);
  const dt = scheduler.sigmas[1]! - scheduler.sigmas[0]!;
  for (let i = 0; i < sample.length; i++) {
    assert.ok(Math.abs(next[i]! - (sample[i]! + eps[i]! * dt)) < 1e-5, `element ${i}`);
  }
  assert.throws(() => scheduler.step(eps, 4, sample), /stepIndex = 4/);
});

test('unsupported scheduler settings are errors that name the key and value', () => {
  const base = fixture.config;
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ ...base, use_karras_sigmas: true }, /use_karras_sigmas = true/],
    [{ ...base, timestep_spacing: 'sideways' }, /timestep_spacing = "sideways".*leading/],
    [{ ...base, prediction_type: 'sample' }, /prediction_type = "sample"/],
    [{ ...base, interpolation_type: 'log_linear' }, /interpolation_type = "log_linear"/],
    [{ ...base, some_new_option: 3 }, /some_new_option = 3/],
    [{ ...base, _class_name: 'DDIMScheduler' }, /DDIMScheduler/],
    [{ ...base, num_train_timesteps: 0 }, /num_train_timesteps = 0/],
  ];
  for (const [config, message] of cases) {
    assert.throws(() => parseEulerConfig(config, 'scheduler_config.json'), (error: Error) => {
      assert.ok(error instanceof SchedulerConfigError, `${error}`);
      assert.match(error.message, message);
      return true;
    });
  }
});

test('step counts outside 1…num_train_timesteps are rejected', async () => {
  const scheduler = await EulerDiscreteScheduler.fromDirectory(fixturePath('tiny-sdxl', 'scheduler'));
  for (const steps of [0, -3, 2.5, 1001, Number.NaN]) {
    assert.throws(() => scheduler.setTimesteps(steps), new RegExp(`steps = ${steps}`));
  }
});
