import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { deleteQueueKeys } from '../../src/queue/keys.js';
import { CLI_PATH } from './cli.js';
import { fixturePath, REPO_ROOT_DIR } from './fixtures.js';

// Real `wrongbot worker` processes for tests, on the tiny model, with a queue prefix of the test's own.

export const TEST_REDIS_URL = process.env['TEST_REDIS_URL'] ?? 'redis://127.0.0.1:6379';
export const TINY_LORA = fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_kohya.safetensors');
export const TINY_LORA_VERSION = 'tiny_sdxl_lora_kohya';
const READY_TIMEOUT_MS = 120_000;

export function testPrefix(label: string): string {
  return `test-${label}-${randomUUID().slice(0, 8)}`;
}

export interface WorkerProcess {
  readonly child: ChildProcess;
  readonly id: string;
  /** Everything the worker printed so far. */
  output(): string;
  waitForLine(pattern: RegExp, timeoutMs?: number): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

const running = new Set<ChildProcess>();

export async function startWorker(prefix: string, env: Record<string, string> = {}): Promise<WorkerProcess> {
  const child = spawn(process.execPath, [CLI_PATH, 'worker'], {
    cwd: REPO_ROOT_DIR,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      MODEL_DIR: fixturePath('tiny-sdxl'),
      LORA_PATH: TINY_LORA,
      WORKER_DEVICE: 'cpu',
      REDIS_URL: TEST_REDIS_URL,
      QUEUE_PREFIX: prefix,
      ...env,
    },
  });
  running.add(child);
  let text = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString();
    for (const listener of listeners) listener();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
      for (const listener of listeners) listener();
    });
  });
  const waitForLine = (pattern: RegExp, timeoutMs = READY_TIMEOUT_MS) => new Promise<string>((resolve, reject) => {
    const check = () => {
      const match = text.split('\n').find((line) => pattern.test(line));
      if (match !== undefined) {
        done();
        resolve(match);
      } else if (child.exitCode !== null || child.signalCode !== null) {
        done();
        reject(new Error(`worker exited before printing ${pattern}:\n${text}`));
      }
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`no ${pattern} from the worker within ${timeoutMs} ms:\n${text}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      listeners.delete(check);
    };
    listeners.add(check);
    check();
  });
  const ready = await waitForLine(/worker \S+ ready/);
  const id = /worker (\S+) ready/.exec(ready)![1]!;
  return { child, id, output: () => text, waitForLine, exited };
}

export function killAllWorkers(): void {
  for (const child of running) child.kill('SIGKILL');
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
