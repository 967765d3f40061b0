import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { runCli } from './support/cli.js';
import { startCliProcess } from './support/cli-process.js';
import { fixturePath, readFixtureJson } from './support/fixtures.js';
import { assertWeightsMatch } from './support/lora-weights.js';

// `wrongbot train` as a user runs it: a separate process, its stdout, stderr, exit code and files.

const MODEL_DIR = fixturePath('tiny-sdxl');

function tempFolder(): string {
  return mkdtempSync(path.join(tmpdir(), 'wrongbot-train-cli-'));
}

/** b1's three images as a data folder, with a sidecar and a stray file as wrongbot's dataset folder has them. */
function dataFolder(root: string): string {
  const data = path.join(root, 'data');
  mkdirSync(data);
  for (const file of ['img00.png', 'img01.png', 'img02.png']) copyFileSync(fixturePath('training-reference', 'b1', 'images', file), path.join(data, file));
  writeFileSync(path.join(data, 'img00.json'), '{}');
  writeFileSync(path.join(data, 'notes.txt'), 'not an image');
  return data;
}

// b2 replays with gradient checkpointing: recomputing activations must not move a loss or a weight.
for (const [name, extra] of [['b1', []], ['b2', ['--gradient-checkpointing']]] as const) {
  test(`train --replay ${[name, ...extra].join(' ')}: one JSON loss line per step on stdout, and the script's weights in the file`, async () => {
    const folder = tempFolder();
    try {
      const out = path.join(folder, 'replayed.safetensors');
      const result = await runCli(['train', '--model', MODEL_DIR, '--replay', fixturePath('training-reference', name), '--out', out, ...extra]);
      assert.equal(result.code, 0, result.stderr);
      const json = readFixtureJson<{ steps: number; optimizer: { lr: number }; per_step: { loss: number }[] }>('training-reference', name, 'case.json');
      const lines = result.stdout.trimEnd().split('\n');
      assert.equal(lines.length, json.steps, `exactly one line per step, nothing else: ${result.stdout}`);
      lines.forEach((line, step) => {
        const parsed = JSON.parse(line) as { step: number; loss: number };
        assert.deepEqual(Object.keys(parsed), ['step', 'loss']);
        assert.equal(parsed.step, step);
        const expected = json.per_step[step]!.loss;
        assert.ok(Math.abs(parsed.loss - expected) <= 1e-4 * expected, `step ${step}: loss ${parsed.loss} vs ${expected}`);
      });
      assert.match(result.stderr, /wrote .*replayed\.safetensors/);
      await assertWeightsMatch(out, fixturePath('training-reference', name, 'final', 'pytorch_lora_weights.safetensors'), json.optimizer.lr, json.steps);
    } finally {
      rmSync(folder, { recursive: true, force: true });
    }
  });
}

test('train: the same seed and data give the same file byte for byte, and a resumed checkpoint ends where the whole run did', async () => {
  const folder = tempFolder();
  try {
    const data = dataFolder(folder);
    const common = ['train', '--model', MODEL_DIR, '--data', data, '--steps', '6', '--seed', '11', '--lr', '1e-3'];
    const first = path.join(folder, 'first.safetensors');
    const second = path.join(folder, 'second.safetensors');
    const [a, b] = [await runCli([...common, '--out', first, '--checkpoint-every', '3']), await runCli([...common, '--out', second])];
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    assert.match(a.stderr, /skipping .*notes\.txt/, 'the stray file is named; the JSON sidecar is skipped silently');
    assert.doesNotMatch(a.stderr, /img00\.json/);
    assert.match(a.stderr, /step 6\/6 {2}loss \d+\.\d{4}/);
    assert.ok(readFileSync(first).equals(readFileSync(second)), 'two runs with one seed write identical files');

    const checkpoint = path.join(folder, 'first.checkpoint.safetensors');
    assert.ok(existsSync(checkpoint), 'the checkpoint of step 3 is kept beside the output');
    const resumed = path.join(folder, 'resumed.safetensors');
    const c = await runCli([...common, '--out', resumed, '--resume', checkpoint]);
    assert.equal(c.code, 0, c.stderr);
    assert.ok(readFileSync(resumed).equals(readFileSync(first)), 'resuming at step 3 gives the uninterrupted run\'s file');

    const other = await runCli(['train', '--model', MODEL_DIR, '--data', data, '--steps', '6', '--seed', '12', '--lr', '1e-3', '--out', path.join(folder, 'other.safetensors')]);
    assert.equal(other.code, 0, other.stderr);
    assert.ok(!readFileSync(path.join(folder, 'other.safetensors')).equals(readFileSync(first)), 'another seed trains differently');
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test('train: Ctrl-C stops between steps and keeps the last checkpoint; no LoRA file is written', async () => {
  const folder = tempFolder();
  try {
    const data = dataFolder(folder);
    const out = path.join(folder, 'stopped.safetensors');
    const trainer = await startCliProcess(['train', '--model', MODEL_DIR, '--data', data, '--steps', '100000', '--checkpoint-every', '2', '--out', out], { WORKER_DEVICE: 'cpu' }, /training \d+ steps/);
    await trainer.waitForLine(/step (?:[3-9]|\d{2,})\/100000/);
    trainer.child.kill('SIGINT');
    const exit = await trainer.exited;
    assert.equal(exit.code, 1, trainer.output());
    assert.match(trainer.output(), /training stopped after step \d+ of 100000; checkpoint .*stopped\.checkpoint\.safetensors holds it/);
    assert.equal(existsSync(out), false, 'no LoRA file under the final name');
    const checkpoint = await SafetensorsFile.open(path.join(folder, 'stopped.checkpoint.safetensors'));
    try {
      const state = JSON.parse(checkpoint.metadata['wrongbot.checkpoint']!) as { step: number };
      assert.ok(state.step >= 3, `the checkpoint holds step ${state.step}`);
    } finally {
      await checkpoint.close();
    }
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test('train: bad input is one line naming the thing, and nothing is written', async () => {
  const folder = tempFolder();
  try {
    const data = dataFolder(folder);
    const out = path.join(folder, 'never.safetensors');
    const empty = path.join(folder, 'empty');
    mkdirSync(empty);
    const broken = path.join(folder, 'broken');
    mkdirSync(broken);
    writeFileSync(path.join(broken, 'bad.png'), 'not a png at all');
    const rank8 = path.join(folder, 'rank8.safetensors');
    const cases: { args: string[]; error: RegExp }[] = [
      { args: ['--data', path.join(folder, 'missing')], error: /training folder .*missing does not exist/ },
      { args: ['--data', empty], error: /training folder .*empty has no images/ },
      { args: ['--data', broken], error: /training image .*bad\.png cannot be decoded/ },
      { args: ['--data', data, '--model', fixturePath('tiny-sdxl-legacy-io')], error: /has no vae_encoder\/model\.onnx: training encodes its images with it/ },
      { args: ['--data', data, '--resolution', '100'], error: /resolution = 100 must be a multiple of 16 for this model/ },
      { args: ['--data', data, '--steps', '0'], error: /steps = 0 must be an integer from 1/ },
      { args: ['--data', data, '--init-lora', fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_peft.safetensors'), '--rank', '8'], error: /--init-lora .* has rank 4, but the training is set to rank 8/ },
      { args: ['--data', data, '--init-lora', rank8, '--resume', rank8], error: /--init-lora and --resume cannot be combined/ },
      { args: ['--data', data, '--out', path.join(folder, 'no-such-folder', 'x.safetensors')], error: /the folder .*no-such-folder does not exist or cannot be written to/ },
    ];
    for (const { args, error } of cases) {
      const result = await runCli(['train', '--model', MODEL_DIR, '--out', out, ...args]);
      assert.notEqual(result.code, 0, `${args.join(' ')} must fail`);
      const lines = result.stderr.trim().split('\n').filter((line) => line.startsWith('wrongbot:'));
      assert.equal(lines.length, 1, result.stderr);
      assert.match(lines[0]!, error);
      assert.equal(existsSync(out), false, `${args.join(' ')} wrote nothing`);
    }
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
});

test('train --dry-run prints the memory estimate for the model, resolution and batch, and trains nothing', async () => {
  const small = await runCli(['train', '--model', MODEL_DIR, '--dry-run']);
  const large = await runCli(['train', '--model', MODEL_DIR, '--dry-run', '--resolution', '256', '--batch-size', '2']);
  assert.equal(small.code, 0, small.stderr);
  assert.equal(large.code, 0, large.stderr);
  assert.match(small.stdout, /memory for one training step at 128×128, batch 1, rank 4, float32 UNet/);
  const total = (output: string) => Number(/total: ([\d.]+) MB/.exec(output)?.[1]);
  assert.ok(total(large.stdout) > total(small.stdout), `256² batch 2 (${total(large.stdout)} MB) needs more than 128² batch 1 (${total(small.stdout)} MB)`);
  const checkpointed = Number(/with --gradient-checkpointing: .* total ([\d.]+) MB/.exec(large.stdout)?.[1]);
  assert.ok(checkpointed < total(large.stdout), `with checkpointing ${checkpointed} MB, without ${total(large.stdout)} MB`);
});
