import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { progressView } from '../src/bot/views.js';
import type { JobProgress } from '../src/queue/contracts.js';
import type { JobRecord } from '../src/store/jobs.js';
import { MAX_TRAINER_LINE_CHARS, runTrainer, type ExternalTraining } from '../src/worker/trainer.js';
import { fakeTrainerCommand, TINY_LORA } from './support/worker-process.js';

// TRAINER_COMMAND at its process boundary: real child processes (test/support/fake-trainer.ts), well- and
// ill-behaved, run by the worker's runTrainer.

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-trainer-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

/** Whether the process the fake trainer named in its `pid N` line is gone, as a stopped trainer must be. */
async function trainerGone(log: readonly string[]): Promise<boolean> {
  const pid = Number(/^pid (\d+)$/.exec(log.find((line) => line.startsWith('pid '))!)![1]);
  for (let tries = 0; tries < 50; tries++) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

function training(name: string, steps = 3): ExternalTraining {
  return { modelDir: '/models/sdxl', dataDir: work, images: [], prompt: 'wrong', steps, seed: 1, initLora: null, outPath: path.join(work, `${name}.safetensors`) };
}

interface Run {
  progress: JobProgress[];
  log: string[];
}

function run(args: string[], job: ExternalTraining, progressTimeoutMs?: number): { run: Run; done: ReturnType<typeof runTrainer> } {
  const observed: Run = { progress: [], log: [] };
  const done = runTrainer(fakeTrainerCommand(...args), job, {
    signal: new AbortController().signal,
    onProgress: (progress) => observed.progress.push(progress),
    log: (line) => observed.log.push(line),
    progressTimeoutMs,
  });
  return { run: observed, done };
}

test('the trainer gets the allow-listed environment and its job, never the worker\'s secrets', async () => {
  const given = {
    LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', CUDA_VISIBLE_DEVICES: '1', HF_HOME: '/cache/hf', LD_LIBRARY_PATH: '/opt/cuda/lib64',
    DISCORD_TOKEN: 'discord-secret', REDIS_URL: 'redis://:hunter2@redis:6379', HF_TOKEN: 'hf_secret', AWS_SECRET_ACCESS_KEY: 'aws',
    CUDA_API_KEY: 'looks-like-a-key', TRAINER_COMMAND: 'python train.py',
  };
  Object.assign(process.env, given);
  const log = path.join(work, 'env.log');
  const job = training('env', 1);
  const { done } = run(['train', log, TINY_LORA], job);
  await done;
  const names = readFileSync(log, 'utf8').split('\n').find((line) => line.startsWith('env '))!.slice(4).split(',');
  for (const name of ['PATH', 'HOME', 'LANG', 'LC_ALL', 'CUDA_VISIBLE_DEVICES', 'HF_HOME', 'LD_LIBRARY_PATH', 'WRONGBOT_TRAIN_JOB']) {
    assert.ok(names.includes(name), `${name} is passed on`);
  }
  for (const name of ['DISCORD_TOKEN', 'REDIS_URL', 'HF_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'CUDA_API_KEY', 'TRAINER_COMMAND']) {
    assert.ok(!names.includes(name), `${name} is not passed on`);
  }
});

test('a failing trainer\'s output stays in the log; the reason an admin reads is its exit code', async () => {
  const secret = 'hf_TOKENabcdef0123456789';
  const { run: observed, done } = run(['fail', secret], training('fail'));
  await assert.rejects(done, (error: Error) => {
    assert.equal(error.name, 'TrainerError');
    assert.equal(error.message, 'the trainer exited with code 3; its output is in the worker\'s log');
    return true;
  });
  assert.ok(observed.log.some((line) => line.includes(secret)), 'the log keeps what the trainer printed');
});

test('a trainer that stops reporting is stopped after the progress timeout', async () => {
  const job = training('silent', 10);
  const started = performance.now();
  const { run: observed, done } = run(['silent'], job, 400);
  await assert.rejects(done, { name: 'TrainerError', message: 'the trainer reported no progress for 400 ms (TRAINER_PROGRESS_TIMEOUT_MS); it was stopped' });
  assert.deepEqual(observed.progress.map((p) => p.step), [1]);
  assert.ok(await trainerGone(observed.log), 'the trainer process was stopped, not just its shell');
  assert.ok(performance.now() - started < 10_000, 'stopped at SIGTERM, well before the grace period for SIGKILL');
});

test('a trainer that prints an endless line is stopped rather than buffered', async () => {
  const { run: observed, done } = run(['flood'], training('flood'));
  await assert.rejects(done, {
    name: 'TrainerError',
    message: `the trainer printed more than ${MAX_TRAINER_LINE_CHARS} characters on stdout without a line break; it was stopped`,
  });
  assert.ok(await trainerGone(observed.log), 'the trainer process was stopped');
});

test('progress lines that do not add up are ignored, and every one passed on can be shown', async () => {
  const job = training('bad-progress', 4);
  const { run: observed, done } = run(['bad-progress', TINY_LORA], job);
  assert.deepEqual(await done, { losses: [0.5, 0.25] });
  assert.ok(existsSync(job.outPath));
  assert.deepEqual(observed.progress.map(({ step, totalSteps, loss }) => [step, totalSteps, loss]), [[1, 4, 0.5], [3, 4, 0.25]]);
  const ignored = observed.log.filter((line) => line.startsWith('ignored a progress line'));
  assert.deepEqual(ignored.map((line) => /\((.*?)\)/.exec(line)![1]), [
    'step = 5 must be an integer from 0 to 4',
    'step = -1 must be an integer from 0 to 4',
    'step = 2.5 must be an integer from 0 to 4',
    'totalSteps = 0 must be an integer from 1 to 100000',
    'loss = "low" must be a finite number',
  ]);
  const record: JobRecord = {
    jobId: 'train-1', kind: 'train', userId: 'u', userName: 'admin', guildId: null, channelId: null, applicationId: 'app',
    interactionToken: null, tokenExpiresAt: null, request: { steps: 4, baseVersion: null }, status: 'running', messageId: null,
    createdAt: 0, finishedAt: null, error: null,
  };
  for (const progress of observed.progress) assert.match(progressView(record, progress).content, /step \d\/4/);
});
