import { randomUUID } from 'node:crypto';
import path from 'node:path';
import { Redis } from 'ioredis';
import { deleteQueueKeys } from '../../src/queue/keys.js';
import { killAllCliProcesses, startCliProcess, type CliProcess } from './cli-process.js';
import { fixturePath, REPO_ROOT_DIR } from './fixtures.js';

// Real `wrongbot worker` processes for tests, on the tiny model, with a queue prefix of the test's own.

export const TEST_REDIS_URL = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const TINY_LORA = fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_kohya.safetensors');
export const TINY_LORA_VERSION = 'tiny_sdxl_lora_kohya';

export function testPrefix(label: string): string {
  return `test-${label}-${randomUUID().slice(0, 8)}`;
}

export interface WorkerProcess extends CliProcess {
  readonly id: string;
}

export async function startWorker(prefix: string, env: Record<string, string> = {}): Promise<WorkerProcess> {
  const worker = await startCliProcess(['worker'], {
    MODEL_DIR: fixturePath('tiny-sdxl'),
    LORA_PATH: TINY_LORA,
    WORKER_DEVICE: 'cpu',
    REDIS_URL: TEST_REDIS_URL,
    QUEUE_PREFIX: prefix,
    ...env,
  }, /worker \S+ ready/);
  const id = /worker (\S+) ready/.exec(await worker.waitForLine(/worker \S+ ready/))![1]!;
  return { ...worker, id };
}

export const killAllWorkers = killAllCliProcesses;

/** A TRAINER_COMMAND that runs test/support/fake-trainer.ts with these arguments (see there for the modes). */
export function fakeTrainerCommand(...args: string[]): string {
  const script = path.join(REPO_ROOT_DIR, 'dist', 'test', 'support', 'fake-trainer.js');
  return [process.execPath, script, ...args].map((arg) => `"${arg}"`).join(' ');
}

/** Deletes every key under a test's prefix. */
export async function deletePrefix(prefix: string, url = TEST_REDIS_URL): Promise<void> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1 });
  try {
    await deleteQueueKeys(redis, prefix);
  } finally {
    redis.disconnect();
  }
}
