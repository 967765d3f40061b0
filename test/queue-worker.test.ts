import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import { Redis } from 'ioredis';
import {
  GENERATION_JOB_OPTIONS, QUEUE_NAMES, type GenerationJobData, type GenerationJobName, type GenerationJobResult, type ImagineJobData,
  type JobProgress,
} from '../src/queue/contracts.js';
import { DEFAULT_QUEUE_LIMITS, type QueueLimits } from '../src/queue/places.js';
import { JobProducer, type GenerationSubmission } from '../src/queue/producer.js';
import { producerConnection } from '../src/queue/redis.js';
import { ResultsStore } from '../src/queue/results-store.js';
import { TrainingTransfer } from '../src/queue/training-transfer.js';
import { sha256Hex } from '../src/common/files.js';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { runCli } from './support/cli.js';
import { fixturePath } from './support/fixtures.js';
import { startTestRedis } from './support/redis-server.js';
import {
  deletePrefix, fakeTrainerCommand, killAllWorkers, startWorker, testPrefix, TEST_REDIS_URL, TINY_LORA, TINY_LORA_VERSION,
  type WorkerProcess,
} from './support/worker-process.js';

// The queue and the GPU worker end to end: real Redis, real `wrongbot worker` processes on the tiny model.

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-queue-'));
const prefixes = new Set<string>();
const closers: Array<() => Promise<unknown> | unknown> = [];
test.after(async () => {
  killAllWorkers();
  for (const close of closers.reverse()) await close();
  for (const prefix of prefixes) await deletePrefix(prefix);
  rmSync(work, { recursive: true, force: true });
});

interface Harness {
  close(): Promise<void>;
  prefix: string;
  redis: Redis;
  producer: JobProducer;
  events: QueueEvents;
  store: ResultsStore;
}

async function harness(label: string, url = TEST_REDIS_URL, limits: Partial<QueueLimits> = {}, prefix = testPrefix(label)): Promise<Harness> {
  prefixes.add(prefix);
  const redis = producerConnection(url);
  // The producer's connection fails commands until it is connected (no offline queue), as the bot's does.
  if (redis.status !== 'ready') await once(redis, 'ready');
  const producer = new JobProducer(redis, prefix, { ...DEFAULT_QUEUE_LIMITS, ...limits });
  const eventsConnection = new Redis(url, { maxRetriesPerRequest: null });
  const events = new QueueEvents(QUEUE_NAMES.generation, { connection: eventsConnection, prefix });
  await events.waitUntilReady();
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await events.close();
    await producer.close();
    // BullMQ leaves the connections it is given open; the test process only ends once they are closed.
    eventsConnection.disconnect();
    redis.disconnect();
  };
  closers.push(close);
  return { close, prefix, redis, producer, events, store: new ResultsStore(redis, producer.keys) };
}

// Loading the model takes a worker seconds: the tests that neither stop their worker nor need settings of their own
// share one, on a queue of its own, started by the first of them that runs.
const SHARED_PREFIX = testPrefix('shared');
/** Its LoRA cache, where a test may put a file in the way of the cache folder. */
const SHARED_LORA_CACHE = path.join(work, 'shared-lora-cache');
let sharedWorkerStarted: Promise<WorkerProcess> | null = null;

async function onSharedWorker(): Promise<{ h: Harness; worker: WorkerProcess }> {
  sharedWorkerStarted ??= startWorker(SHARED_PREFIX, { LORA_CACHE_DIR: SHARED_LORA_CACHE });
  const worker = await sharedWorkerStarted;
  assert.equal(worker.child.exitCode, null, `the shared worker is still running:\n${worker.output()}`);
  return { h: await harness('shared', TEST_REDIS_URL, {}, SHARED_PREFIX), worker };
}

type JobEventName = 'active' | 'completed' | 'delayed' | 'failed' | 'stalled';
const ATTEMPT_ENDS: readonly JobEventName[] = ['completed', 'delayed', 'failed'];

/**
 * Each job's events, in the order the queue sent them, from the moment this is made: a test can wait for one without
 * missing it when it came before the test asked.
 */
class JobEventLog {
  private readonly byJob = new Map<string, JobEventName[]>();
  private readonly listeners = new Set<() => void>();

  constructor(events: QueueEvents, names: readonly JobEventName[]) {
    for (const name of names) {
      events.on(name, ({ jobId }: { jobId: string }) => {
        this.byJob.set(jobId, [...this.of(jobId), name]);
        for (const listener of this.listeners) listener();
      });
    }
  }

  of(jobId: string): readonly JobEventName[] {
    return this.byJob.get(jobId) ?? [];
  }

  count(jobId: string, name: JobEventName): number {
    return this.of(jobId).filter((seen) => seen === name).length;
  }

  /** How the job's n-th attempt ended: completed, failed for good, or delayed for a retry. Needs those three logged. */
  attemptEnd(jobId: string, n: number): Promise<JobEventName> {
    return new Promise((resolve) => {
      const check = () => {
        const ends = this.of(jobId).filter((name) => ATTEMPT_ENDS.includes(name));
        if (ends.length < n) return;
        this.listeners.delete(check);
        resolve(ends[n - 1]!);
      };
      this.listeners.add(check);
      check();
    });
  }
}

const requester = (userId: string) => ({ userId, displayName: userId, guildId: 'guild-1' });
const noReply = { channelId: 'channel-1' };
const TINY = { steps: 4, guidanceScale: 7.5, width: 64, height: 64, weighting: 'auto' as const };

function imagine(userId: string, prompt: string, overrides: Partial<GenerationSubmission<'imagine'>['settings']> = {}): GenerationSubmission<'imagine'> {
  return { requester: requester(userId), replyTo: noReply, settings: { prompt, negativePrompt: null, seed: 5, ...TINY, ...overrides } };
}

function withLora(userId: string, prompt: string, strength: number): GenerationSubmission<'wrong'> {
  return { requester: requester(userId), replyTo: noReply, settings: { prompt, seed: 9, ...TINY }, lora: { version: TINY_LORA_VERSION, strength } };
}

async function finished(h: Harness, jobId: string): Promise<GenerationJobResult> {
  const job = await h.producer.generation.getJob(jobId);
  assert.ok(job, `job ${jobId} exists`);
  return job.waitUntilFinished(h.events, 120_000);
}

async function image(h: Harness, key: string): Promise<Buffer> {
  const bytes = await h.store.get({ key });
  assert.ok(bytes, `image ${key} in the results store`);
  return bytes;
}

test('imagine, wrong and compare jobs run through a worker process and equal the generate and compare commands', async () => {
  const { h } = await onSharedWorker();
  const prompt = 'a lighthouse at dusk';
  const [imagineJob, wrongJob, compareJob] = [
    await h.producer.submit('imagine', imagine('alice', prompt, { negativePrompt: 'blurry' })),
    await h.producer.submit('wrong', withLora('bob', prompt, 0.8)),
    await h.producer.submit('compare', withLora('carol', prompt, 0.8)),
  ];
  const shared = ['--model', fixturePath('tiny-sdxl'), '--prompt', prompt, '--steps', '4', '--guidance', '7.5', '--width', '64', '--height', '64'];

  const imagined = await finished(h, imagineJob.jobId);
  assert.equal(imagined.seed, 5);
  assert.equal(imagined.panels.length, 1);
  assert.equal(imagined.composite, null);
  const generated = path.join(work, 'imagine.png');
  assert.equal((await runCli(['generate', ...shared, '--seed', '5', '--negative', 'blurry', '--out', generated])).code, 0);
  assert.deepEqual(await image(h, imagined.panels[0]!.image.key), readFileSync(generated));

  const wrong = await finished(h, wrongJob.jobId);
  assert.deepEqual(wrong.lora, { version: TINY_LORA_VERSION, strength: 0.8 });
  const wrongFile = path.join(work, 'wrong.png');
  const lora = ['--lora', TINY_LORA, '--strength', '0.8'];
  assert.equal((await runCli(['generate', ...shared, '--seed', '9', '--negative', 'wrong', ...lora, '--out', wrongFile])).code, 0);
  assert.deepEqual(await image(h, wrong.panels[0]!.image.key), readFileSync(wrongFile));

  const compared = await finished(h, compareJob.jobId);
  assert.equal(compared.panels.length, 3);
  const compareFile = path.join(work, 'compare.png');
  const panelsDir = path.join(work, 'compare-panels');
  assert.equal((await runCli(['compare', ...shared, '--seed', '9', ...lora, '--out', compareFile, '--panels-dir', panelsDir])).code, 0);
  assert.deepEqual(await image(h, compared.composite!.key), readFileSync(compareFile));
  for (const [index, panel] of compared.panels.entries()) {
    assert.deepEqual(await image(h, panel.image.key), readFileSync(path.join(panelsDir, `panel-${index + 1}.png`)), `panel ${index + 1}`);
  }
  assert.deepEqual(compared.panels.map((panel) => [panel.negativePrompt, panel.loraStrength]), [[null, 0], ['wrong', 0], ['wrong', 0.8]]);
  // RESULT_TTL_SECONDS's documented default (README, .env.example): a day, counted from when the worker stored them.
  const documentedTtlSeconds = 86_400;
  const ttl = await h.redis.ttl(compared.composite!.key);
  assert.ok(ttl > documentedTtlSeconds - 600 && ttl <= documentedTtlSeconds, `results expire after a day (ttl ${ttl} s)`);
});

test('a worker without LORA_PATH serves /wrong for any version in Redis, switching versions between jobs without a restart', async () => {
  const h = await harness('versions');
  const cacheDir = path.join(work, 'lora-cache');
  const worker = await startWorker(h.prefix, { LORA_PATH: '', LORA_CACHE_DIR: cacheDir });
  const files: Record<string, string> = {
    'wrong-v1': TINY_LORA,
    'wrong-v2': fixturePath('training-reference', 'b1', 'final', 'pytorch_lora_weights.safetensors'),
  };
  for (const [version, file] of Object.entries(files)) await h.redis.set(h.producer.keys.loraFile(version), readFileSync(file));
  const prompt = 'a tram in the rain';
  const shared = ['--model', fixturePath('tiny-sdxl'), '--prompt', prompt, '--steps', '4', '--guidance', '7.5', '--width', '64', '--height', '64', '--seed', '9', '--negative', 'wrong'];
  const wrongWith = (version: string): GenerationSubmission<'wrong'> =>
    ({ requester: requester('olga'), replyTo: noReply, settings: { prompt, seed: 9, ...TINY }, lora: { version, strength: 0.8 } });

  const images: Buffer[] = [];
  for (const version of ['wrong-v1', 'wrong-v2', 'wrong-v1']) {
    const result = await finished(h, (await h.producer.submit('wrong', wrongWith(version))).jobId);
    assert.deepEqual(result.lora, { version, strength: 0.8 });
    images.push(await image(h, result.panels[0]!.image.key));
  }
  for (const [index, version] of ['wrong-v1', 'wrong-v2'].entries()) {
    const expected = path.join(work, `${version}.png`);
    assert.equal((await runCli(['generate', ...shared, '--lora', files[version]!, '--strength', '0.8', '--out', expected])).code, 0);
    assert.deepEqual(images[index], readFileSync(expected), `${version} as generate --lora draws it`);
  }
  assert.deepEqual(images[2], images[0], 'back to the first version, the same image');
  assert.ok(readdirSync(path.join(cacheDir, h.prefix)).includes('wrong-v2.safetensors'), 'a fetched version is kept on disk, under its deployment');
  assert.equal(worker.child.exitCode, null, 'the same worker process served every version');

  const unknown = await h.producer.submit('wrong', wrongWith('wrong-v9'));
  const job = (await h.producer.generation.getJob(unknown.jobId))!;
  await assert.rejects(job.waitUntilFinished(h.events, 60_000), /LoRA version "wrong-v9" is neither in Redis nor this worker's LORA_PATH/);
});

test('wrongbot enqueue --wait submits, follows and writes the image, at the workers\' model\'s own size when none is given', async () => {
  const unserved = testPrefix('enqueue-unserved');
  prefixes.add(unserved);
  const early = await runCli(['enqueue', 'imagine', '--prompt', 'a red cube'], { QUEUE_PREFIX: unserved, REDIS_URL: TEST_REDIS_URL });
  assert.equal(early.code, 2);
  assert.match(early.stderr, /no worker has said which model it runs yet .* give --width and --height/);
  const { h } = await onSharedWorker();
  const env = { QUEUE_PREFIX: h.prefix, REDIS_URL: TEST_REDIS_URL };
  const out = path.join(work, 'enqueued.png');
  const result = await runCli(['enqueue', 'imagine', '--prompt', 'a red cube', '--seed', '3', '--steps', '3', '--wait', '--out', out], env);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /^job \S+ queued \(seed 3, (position \d+|starting now)\)$/m);
  assert.match(result.stderr, /step 3\/3/);
  assert.match(result.stdout, /wrote .* \(128x128\)/, 'the tiny model\'s own 128 px, not SDXL\'s 1024');
  const direct = path.join(work, 'direct.png');
  assert.equal((await runCli(['generate', '--model', fixturePath('tiny-sdxl'), '--prompt', 'a red cube', '--seed', '3', '--steps', '3', '--out', direct])).code, 0);
  assert.deepEqual(readFileSync(out), readFileSync(direct));

  // A size the VAE allows (a multiple of 8) but the tiny UNet's downsampling does not (16) is refused before queueing.
  await assert.rejects(h.producer.submit('imagine', imagine('kim', 'odd size', { width: 152 })),
    /settings\.width = 152 must be a multiple of 16: the workers' model tiny-sdxl cannot draw other sizes/);
  // This worker has no refiner (REFINER_DIR): a hand-off to one would fail on it every time.
  await assert.rejects(h.producer.submit('imagine', imagine('kim', 'refined', { denoisingEnd: 0.8 })),
    /settings\.denoisingEnd = 0\.8 needs a refiner, and a worker running tiny-sdxl has none \(REFINER_DIR\)/);
  assert.equal(await h.producer.generation.getJobCountByTypes('waiting', 'prioritized'), 0);
});

test('two worker processes split 20 jobs and each job runs exactly once', async () => {
  const { h, worker } = await onSharedWorker();
  const other = await startWorker(h.prefix);
  const workers = [worker, other];
  const log = new JobEventLog(h.events, ['active']);
  const jobs = [];
  for (let i = 0; i < 20; i++) jobs.push(await h.producer.submit('imagine', imagine(`user-${i}`, `job ${i}`, { steps: 1, seed: i })));
  const results = [];
  for (const { jobId } of jobs) results.push(await finished(h, jobId));
  assert.equal(results.length, 20);
  const byWorker = new Map<string, number>();
  for (const result of results) byWorker.set(result.workerId, (byWorker.get(result.workerId) ?? 0) + 1);
  assert.deepEqual([...byWorker.keys()].sort(), workers.map((w) => w.id).sort(), 'both workers took jobs');
  for (const { jobId } of jobs) {
    assert.equal(log.count(jobId, 'active'), 1, `job ${jobId} started once`);
    assert.equal((await h.producer.generation.getJob(jobId))!.attemptsMade, 1, `job ${jobId} ran once`);
  }
  // The shared worker's later tests expect it alone on its queue.
  other.child.kill('SIGTERM');
  assert.deepEqual(await other.exited, { code: 0, signal: null });
});

test('a worker killed mid-job: the job completes once on a new worker after the stall interval', async () => {
  const h = await harness('sigkill');
  const fastStall = { WORKER_LOCK_DURATION_MS: '2000', WORKER_STALLED_INTERVAL_MS: '1000' };
  const first = await startWorker(h.prefix, fastStall);
  const log = new JobEventLog(h.events, ['completed']);
  const { jobId } = await h.producer.submit('imagine', imagine('dave', 'a slow job', { steps: 60, width: 128, height: 128 }));
  await first.waitForLine(new RegExp(`job ${jobId} \\(imagine\\) started`));
  first.child.kill('SIGKILL');
  await first.exited;
  const second = await startWorker(h.prefix, fastStall);
  const result = await finished(h, jobId);
  assert.equal(result.workerId, second.id);
  // A second copy of the job, queued while it ran here, would run before a job queued now: once this one is done, a
  // second completion would have come.
  const after = await h.producer.submit('imagine', imagine('dave', 'after the takeover', { steps: 1 }));
  assert.equal((await finished(h, after.jobId)).workerId, second.id);
  assert.equal(log.count(jobId, 'completed'), 1, 'one completion');
  assert.equal(await h.producer.generation.getCompletedCount(), 2);
});

test('a job several times longer than the lock runs once: inference never starves lock renewal', async () => {
  const h = await harness('lock-renewal');
  const lockMs = 1000;
  const worker = await startWorker(h.prefix, { WORKER_LOCK_DURATION_MS: String(lockMs), WORKER_STALLED_INTERVAL_MS: '500' });
  const log = new JobEventLog(h.events, ['active', 'completed', 'delayed', 'failed', 'stalled']);
  // About 5 s at 512 px on an idle CPU here. Without renewals its lock would lapse after a second, and the stall
  // check, every half second, would take the job for dead and queue it again.
  const { jobId } = await h.producer.submit('imagine', imagine('lou', 'longer than the lock', { steps: 12, width: 512, height: 512 }));
  const result = await finished(h, jobId);
  const job = (await h.producer.generation.getJob(jobId))!;
  const ranMs = job.finishedOn! - job.processedOn!;
  assert.ok(ranMs >= 3 * lockMs, `the job ran ${ranMs} ms, too short to outlast the ${lockMs} ms lock several times`);
  assert.equal(result.workerId, worker.id);
  assert.deepEqual(log.of(jobId), ['active', 'completed'], 'started once, never stalled, completed once');
  assert.equal(job.attemptsMade, 1);
});

test('cancelling: a waiting job is removed, a running one stops between steps', async (t) => {
  const { h, worker } = await onSharedWorker();
  // At 512 px a step of the tiny model takes about as long as the progress interval here, so nearly every step
  // reports itself: the step the job stopped at is seen to within one. The step running when the cancel lands
  // finishes, and the one after it may already have started.
  const totalSteps = 40;
  const maxStepsAfterCancel = 5;
  const runningId = randomUUID();
  const reported: number[] = [];
  const stepListeners = new Set<(step: number) => void>();
  h.events.on('progress', ({ jobId, data }) => {
    if (jobId !== runningId) return;
    const { step } = data as JobProgress;
    reported.push(step);
    for (const listener of stepListeners) listener(step);
  });
  const nextStep = () => new Promise<number>((resolve) => {
    const listener = (step: number) => {
      stepListeners.delete(listener);
      resolve(step);
    };
    stepListeners.add(listener);
  });
  // A cancel that does not stop the job lets it complete: that ends the wait too, and fails below.
  const ended = new Promise<{ outcome: string; at: number }>((resolve) => {
    h.events.on('failed', ({ jobId, failedReason }) => {
      if (jobId === runningId) resolve({ outcome: failedReason, at: performance.now() });
    });
    h.events.on('completed', ({ jobId }) => {
      if (jobId === runningId) resolve({ outcome: 'completed', at: performance.now() });
    });
  });
  await h.producer.submit('imagine', imagine('erin', 'a very long job', { steps: totalSteps, width: 512, height: 512 }), { jobId: runningId });
  const waiting = await h.producer.submit('imagine', imagine('frank', 'a job that never starts'));
  await worker.waitForLine(new RegExp(`job ${runningId} \\(imagine\\) started`));

  assert.deepEqual(await h.producer.cancel(waiting.jobId), { outcome: 'removed' });
  assert.equal(await h.producer.generation.getJob(waiting.jobId), undefined);

  const stepAtCancel = await nextStep();
  const cancelledAt = performance.now();
  assert.deepEqual(await h.producer.cancel(runningId), { outcome: 'stopping' });
  const { outcome, at } = await ended;
  assert.equal(outcome, 'cancelled');
  const lastStep = reported.at(-1)!;
  assert.ok(lastStep - stepAtCancel <= maxStepsAfterCancel, `cancelled after step ${stepAtCancel}, it still reported step ${lastStep} of ${totalSteps}`);
  const job = await h.producer.generation.getJob(runningId);
  assert.equal(job!.attemptsMade, 1, 'a cancelled job is not retried');
  t.diagnostic(`cancelled after step ${stepAtCancel}, last reported step ${lastStep}; stopped ${(at - cancelledAt).toFixed(0)} ms after the cancel`);
});

test('malformed job data fails at once, without retries, with a readable reason; the worker keeps serving', async () => {
  const { h } = await onSharedWorker();
  const raw = new Queue(QUEUE_NAMES.generation, { connection: h.redis, prefix: h.prefix });
  closers.push(() => raw.close());
  const valid: ImagineJobData = { requester: requester('gina'), replyTo: noReply, settings: { prompt: 'ok', negativePrompt: null, seed: 1, ...TINY } };
  const bad: Array<[string, GenerationJobName, unknown, RegExp]> = [
    ['wrong types', 'imagine', { ...valid, settings: { ...valid.settings, steps: 'many' } }, /settings\.steps = "many" must be an integer/],
    ['a 10 000-character prompt', 'imagine', { ...valid, settings: { ...valid.settings, prompt: 'x'.repeat(10_000) } }, /settings\.prompt = .* is 10000 characters/],
    ['10 000 steps', 'imagine', { ...valid, settings: { ...valid.settings, steps: 10_000 } }, /settings\.steps = 10000 must be an integer from 1 to 500/],
    ['NaN guidance', 'imagine', { ...valid, settings: { ...valid.settings, guidanceScale: Number.NaN } }, /settings\.guidanceScale = null must be a number/],
    ['an unknown LoRA version', 'wrong', { requester: requester('gina'), replyTo: noReply, settings: { prompt: 'ok', seed: 1, ...TINY }, lora: { version: 'wrong-v99', strength: 1 } }, /LoRA version "wrong-v99" is neither in Redis nor this worker.s LORA_PATH \(tiny_sdxl_lora_kohya\)/],
  ];
  for (const [what, name, data, reason] of bad) {
    const job = await raw.add(name, data as ImagineJobData, { ...GENERATION_JOB_OPTIONS });
    await assert.rejects(job.waitUntilFinished(h.events, 60_000), reason, what);
    const after = await raw.getJob(job.id!);
    assert.equal(after!.attemptsMade, 1, `${what}: no retries`);
  }
  const ok = await h.producer.submit('imagine', imagine('gina', 'still serving', { steps: 1 }));
  assert.equal((await finished(h, ok.jobId)).panels.length, 1);
});

test('each user gets a fair share: at most MAX_QUEUED_PER_USER waiting, and their n-th job priority n', async () => {
  const h = await harness('fairness', TEST_REDIS_URL, { perUser: 2 });
  const first = await h.producer.submit('imagine', imagine('hana', 'one'));
  const second = await h.producer.submit('imagine', imagine('hana', 'two'));
  await assert.rejects(h.producer.submit('imagine', imagine('hana', 'three')), { name: 'QueueLimitError', message: /already have 2 jobs waiting/ });
  const other = await h.producer.submit('imagine', imagine('ivan', 'first of another user'));
  const priorities = await Promise.all([first, second, other].map(async ({ jobId }) => (await h.producer.generation.getJob(jobId))!.priority));
  assert.deepEqual(priorities, [1, 2, 1]);
  assert.deepEqual([first.position, second.position, other.position], [1, 2, 2], 'the other user\'s first job goes before hana\'s second');
  const standing = await h.producer.standing(second.jobId);
  assert.deepEqual(standing, { state: 'waiting', position: 3, etaMs: null });
  assert.deepEqual(await h.producer.cancel(first.jobId), { outcome: 'removed' });
  await h.producer.submit('imagine', imagine('hana', 'three, after a cancel'));
  await assert.rejects(h.producer.submit('imagine', { ...imagine('hana', 'x'), settings: { ...imagine('hana', 'x').settings, width: 100 } }), /settings\.width = 100 must be a multiple of 8/);
});

test('concurrent submissions: exact shares per member, server and deployment, and everyone\'s first job before anyone\'s second', async () => {
  const h = await harness('fair-race', TEST_REDIS_URL, { perUser: 3, perGuild: 5, total: 6 });
  const inGuild = (submission: GenerationSubmission<'imagine'>, guildId: string) => ({ ...submission, requester: { ...submission.requester, guildId } });
  // Five at once from one member, with another member's first job among them.
  const [dave, ...carol] = await Promise.allSettled([
    h.producer.submit('imagine', imagine('dave', 'dave 1')),
    ...Array.from({ length: 5 }, (_, i) => h.producer.submit('imagine', imagine('carol', `carol ${i + 1}`))),
  ]);
  const accepted = carol.filter((outcome) => outcome.status === 'fulfilled').map((outcome) => outcome.value);
  assert.equal(accepted.length, 3, 'exactly MAX_QUEUED_PER_USER of the five');
  for (const outcome of carol.filter((one) => one.status === 'rejected')) assert.match(String(outcome.reason), /already have 3 jobs waiting/);
  assert.equal(dave.status, 'fulfilled');
  const priorityOf = async (jobId: string) => (await h.producer.generation.getJob(jobId))!.priority;
  assert.deepEqual((await Promise.all(accepted.map(({ jobId }) => priorityOf(jobId)))).sort(), [1, 2, 3]);
  assert.equal(await priorityOf(dave.value.jobId), 1, 'dave\'s first job runs before carol\'s second');

  // The server's share: four waiting in guild-1, two more at once, one fits.
  const server = await Promise.allSettled([h.producer.submit('imagine', imagine('erin', 'erin 1')), h.producer.submit('imagine', imagine('fred', 'fred 1'))]);
  assert.equal(server.filter((outcome) => outcome.status === 'fulfilled').length, 1);
  assert.match(String(server.find((outcome) => outcome.status === 'rejected')!.reason), /this server already has 5 jobs waiting/);
  // The deployment's share: another server's member takes the sixth place, the seventh is refused.
  await h.producer.submit('imagine', inGuild(imagine('gus', 'gus 1'), 'guild-2'));
  await assert.rejects(h.producer.submit('imagine', inGuild(imagine('hal', 'hal 1'), 'guild-2')), /the queue is full \(6 jobs waiting\)/);
});

test('a running job counts in its member\'s priority: their next job, while the first runs, is their second', async () => {
  const { h, worker } = await onSharedWorker();
  const priorityOf = async (jobId: string) => (await h.producer.generation.getJob(jobId))!.priority;
  // Seconds of steps: still running while the next jobs are submitted, and cancelled after.
  const running = await h.producer.submit('imagine', imagine('carol', 'carol runs', { steps: 200, width: 128, height: 128 }));
  await worker.waitForLine(new RegExp(`job ${running.jobId} \\(imagine\\) started`));
  const [next, other] = await Promise.all([h.producer.submit('imagine', imagine('carol', 'carol next')), h.producer.submit('imagine', imagine('ivan', 'ivan first'))]);
  assert.deepEqual([await priorityOf(next.jobId), await priorityOf(other.jobId)], [2, 1]);
  // The shared worker is left idle for the next test.
  for (const waiting of [next, other]) assert.deepEqual(await h.producer.cancel(waiting.jobId), { outcome: 'removed' });
  assert.deepEqual(await h.producer.cancel(running.jobId), { outcome: 'stopping' });
  await assert.rejects(finished(h, running.jobId), /cancelled/);
});

test('SIGTERM lets the running job finish and the worker exits cleanly', async () => {
  const h = await harness('sigterm-finish');
  const worker = await startWorker(h.prefix);
  const { jobId } = await h.producer.submit('imagine', imagine('jack', 'finish me', { steps: 20, width: 128, height: 128 }));
  await worker.waitForLine(new RegExp(`job ${jobId} \\(imagine\\) started`));
  worker.child.kill('SIGTERM');
  assert.equal((await finished(h, jobId)).workerId, worker.id);
  assert.deepEqual(await worker.exited, { code: 0, signal: null });
});

test('SIGTERM past the grace period hands the running job back, and another worker completes it', async () => {
  const h = await harness('sigterm-handback');
  const log = new JobEventLog(h.events, ['active', 'completed', 'delayed', 'failed']);
  const worker = await startWorker(h.prefix, { WORKER_SHUTDOWN_GRACE_MS: '300' });
  // Over a second of steps here: several times the grace period.
  const { jobId } = await h.producer.submit('imagine', imagine('kim', 'hand me back', { steps: 80, width: 128, height: 128 }));
  await worker.waitForLine(new RegExp(`job ${jobId} \\(imagine\\) started`));
  worker.child.kill('SIGTERM');
  assert.deepEqual(await worker.exited, { code: 0, signal: null });
  assert.match(worker.output(), new RegExp(`job ${jobId} handed back to the queue`));
  assert.ok(['waiting', 'prioritized'].includes(await h.producer.generation.getJobState(jobId)), 'back in the queue');
  const next = await startWorker(h.prefix);
  const result = await finished(h, jobId);
  assert.equal(result.workerId, next.id, 'the job the first worker handed back');
  assert.equal(result.panels.length, 1);
  assert.deepEqual(log.of(jobId), ['active', 'active', 'completed'], 'started on each worker, completed once, never failed or delayed');
  assert.equal((await h.producer.generation.getJob(jobId))!.attemptsMade, 1, 'the hand-back was not a failed attempt');
});

test('a dead inference thread: the worker hands its job back and exits non-zero, and another worker completes the job', async () => {
  const h = await harness('thread-death');
  // A step timeout no step meets: the watchdog gives the thread up as hung, as it would a GPU that stopped answering.
  const first = await startWorker(h.prefix, { WORKER_STEP_TIMEOUT_MS: '1' });
  const { jobId } = await h.producer.submit('imagine', imagine('olive', 'a step that never returns', { steps: 3 }));
  const exit = await Promise.race([first.exited, new Promise((resolve) => setTimeout(() => resolve('still running'), 60_000))]);
  assert.deepEqual(exit, { code: 1, signal: null }, first.output());
  assert.match(first.output(), new RegExp(`job ${jobId} handed back to the queue: the inference thread sent nothing for 1 ms`));
  assert.ok(['waiting', 'prioritized'].includes(await h.producer.generation.getJobState(jobId)), 'back in the queue');
  const second = await startWorker(h.prefix);
  assert.equal((await finished(h, jobId)).workerId, second.id);
  assert.equal((await h.producer.generation.getJob(jobId))!.attemptsMade, 1, 'the hand-back was not a failed attempt');
});

test('a failure no retry can cure fails at once; one another try may cure is tried 3 times with growing pauses; either way the worker takes the next job', async () => {
  const { h, worker } = await onSharedWorker();
  const log = new JobEventLog(h.events, ['completed', 'delayed', 'failed']);
  const takesTheNextJob = async (after: string) => {
    const next = await h.producer.submit('imagine', imagine('rita', `after ${after}`, { steps: 1 }));
    assert.equal((await finished(h, next.jobId)).workerId, worker.id, `the worker took the next job after ${after}`);
  };

  // A vertical tab cannot be drawn in a caption (XML has none): the contract refuses it before any GPU tries, and a
  // worker refuses it too when something else put it in Redis, once.
  const undrawable = withLora('pia', 'a\u000bcat', 0.8);
  await assert.rejects(h.producer.submit('compare', undrawable), /contains the control character U\+000B/);
  const raw = new Queue(QUEUE_NAMES.generation, { connection: h.redis, prefix: h.prefix });
  closers.push(() => raw.close());
  const composite = await raw.add('compare', { ...undrawable, settings: { ...undrawable.settings, seed: 1 } } as GenerationJobData, { ...GENERATION_JOB_OPTIONS });
  await assert.rejects(composite.waitUntilFinished(h.events, 60_000), /settings\.prompt = .* contains the control character U\+000B/);
  assert.equal((await raw.getJob(composite.id!))!.attemptsMade, 1, 'not retried');
  assert.deepEqual(log.of(composite.id!), ['failed'], 'failed for good at its first attempt, never delayed');
  await takesTheNextJob('a failure no retry can cure');

  // A file where the worker keeps this queue's fetched LoRA versions: fetching one fails until it is gone.
  const cacheFolder = path.join(SHARED_LORA_CACHE, h.prefix);
  rmSync(cacheFolder, { recursive: true, force: true });
  mkdirSync(SHARED_LORA_CACHE, { recursive: true });
  writeFileSync(cacheFolder, 'in the way');
  await h.redis.set(h.producer.keys.loraFile('wrong-v2'), readFileSync(TINY_LORA));
  const fetching = () => ({ ...withLora('quinn', 'a cat', 0.8), lora: { version: 'wrong-v2', strength: 0.8 } });
  /** Checks the pause BullMQ set before the job's next attempt, then starts that attempt now rather than after it. */
  const retryNow = async (jobId: string, attempt: number, pauseMs: number) => {
    assert.equal(await log.attemptEnd(jobId, attempt), 'delayed', `attempt ${attempt} is followed by a retry`);
    const job = (await h.producer.generation.getJob(jobId))!;
    assert.equal(job.attemptsMade, attempt);
    assert.match(job.failedReason, /EEXIST|ENOTDIR/);
    assert.equal(Number(job.delay), pauseMs, `the pause after attempt ${attempt}`);
    // A job whose pause is over already went back to the queue by itself.
    await job.promote().catch(async (error: unknown) => {
      if (await job.isDelayed()) throw error;
    });
  };

  // The production policy (GENERATION_JOB_OPTIONS, through the producer): 3 attempts, 5 s then 10 s apart.
  const uncured = await h.producer.submit('wrong', fetching());
  await retryNow(uncured.jobId, 1, 5_000);
  await retryNow(uncured.jobId, 2, 10_000);
  await assert.rejects(finished(h, uncured.jobId), /EEXIST|ENOTDIR/);
  assert.equal(await log.attemptEnd(uncured.jobId, 3), 'failed');
  assert.equal((await h.producer.generation.getJob(uncured.jobId))!.attemptsMade, 3, 'tried 3 times, then failed for good');
  await takesTheNextJob('a failure retried to the end');

  const cured = await h.producer.submit('wrong', fetching());
  assert.equal(await log.attemptEnd(cured.jobId, 1), 'delayed');
  rmSync(cacheFolder);
  await retryNow(cured.jobId, 1, 5_000);
  await finished(h, cured.jobId);
  assert.equal((await h.producer.generation.getJob(cured.jobId))!.attemptsMade, 2, 'failed once, then succeeded on the retry');
});

/** Case b1's images, sent to Redis as the bot sends a snapshot's: what a worker with no DATA_DIR trains on. */
async function sendSnapshot(h: Harness): Promise<{ images: string[]; files: string[] }> {
  const folder = fixturePath('training-reference', 'b1', 'images');
  const files = readdirSync(folder).filter((name) => name.endsWith('.png')).map((name) => path.join(folder, name));
  const images = files.map((file) => ({ sha256: sha256Hex(readFileSync(file)), path: file })).sort((a, b) => a.sha256.localeCompare(b.sha256));
  await new TrainingTransfer(h.redis, h.producer.keys).putImages(images);
  return { images: images.map((image) => image.sha256), files: images.map((image) => image.path) };
}

async function trainingEvents(h: Harness): Promise<QueueEvents> {
  const trainConnection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
  const trainEvents = new QueueEvents(QUEUE_NAMES.training, { connection: trainConnection, prefix: h.prefix });
  closers.push(async () => {
    await trainEvents.close();
    trainConnection.disconnect();
  });
  await trainEvents.waitUntilReady();
  return trainEvents;
}

test('TRAINER_COMMAND trains from the snapshot in Redis, takes the GPU only when no generation runs, and its LoRA goes back to Redis', async () => {
  const h = await harness('training');
  const log = path.join(work, 'trainer.log');
  const worker = await startWorker(h.prefix, { TRAINER_COMMAND: fakeTrainerCommand('train', log, TINY_LORA), DISCORD_TOKEN: 'not-for-trainers' });
  const trainEvents = await trainingEvents(h);
  const snapshot = await sendSnapshot(h);
  const before = await h.producer.submit('imagine', imagine('lee', 'before training', { steps: 40, width: 128, height: 128 }));
  // Training queued while a generation runs: it waits for that one to finish, then keeps every other out.
  await worker.waitForLine(new RegExp(`job ${before.jobId} \\(imagine\\) started`));
  const trainId = await h.producer.submitTraining({
    requester: requester('admin'), replyTo: noReply, snapshot: { id: 7, images: snapshot.images }, version: 'wrong-v7', baseVersion: null, steps: 7, seed: 1,
  });
  await worker.waitForLine(new RegExp(`job ${trainId} \\(train wrong-v7\\) holds the GPU`));
  const during = await h.producer.submit('imagine', imagine('mia', 'submitted while training waits', { steps: 1 }));
  const trainJob = (await h.producer.training.getJob(trainId))!;
  const trained = await trainJob.waitUntilFinished(trainEvents, 60_000);
  assert.equal(trained.version, 'wrong-v7', 'the version is the one the job names');
  assert.deepEqual(trained.losses, [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5, 1 / 6, 1 / 7]);
  assert.equal(trained.finalLoss, 1 / 7);
  const stored = await h.redis.getBuffer(h.producer.keys.loraFile('wrong-v7'));
  assert.ok(stored?.equals(readFileSync(TINY_LORA)), 'the file the trainer wrote is in Redis under the version');
  await finished(h, during.jobId);
  const lines = readFileSync(log, 'utf8').trim().split('\n').map((line) => line.split(' '));
  assert.deepEqual(lines.find(([event]) => event === 'images')?.[1]?.split(','), snapshot.images, 'the trainer got every image of the snapshot, intact');
  const environment = lines.find(([event]) => event === 'env')![1]!.split(',');
  assert.ok(environment.includes('WRONGBOT_TRAIN_JOB') && environment.includes('PATH'), environment.join(' '));
  for (const secret of ['DISCORD_TOKEN', 'REDIS_URL', 'TRAINER_COMMAND']) assert.ok(!environment.includes(secret), `the trainer did not get ${secret}`);
  const times = Object.fromEntries(lines.map(([event, at]) => [event!, Number(at)]));
  const beforeJob = (await h.producer.generation.getJob(before.jobId))!;
  const duringJob = (await h.producer.generation.getJob(during.jobId))!;
  assert.ok(beforeJob.finishedOn! <= times['start']!, 'the trainer started after the running generation finished');
  assert.ok(duringJob.processedOn! >= times['end']!, 'generation waited until training was done');
  // processedOn is the last attempt's start: one that failed during the training would pass the check above.
  assert.equal(duringJob.attemptsMade, 1, 'the generation ran once, after the training');
});

test('the built-in engine trains a job from Redis into the tensors `wrongbot train` writes for the same images, seed and steps', async () => {
  const { h } = await onSharedWorker();
  const trainEvents = await trainingEvents(h);
  const snapshot = await sendSnapshot(h);
  const steps = 3;
  const seed = 5;
  const trainId = await h.producer.submitTraining({
    requester: requester('admin'), replyTo: noReply, snapshot: { id: 1, images: snapshot.images }, version: 'wrong-v1', baseVersion: null, steps, seed,
  });
  const trained = await (await h.producer.training.getJob(trainId))!.waitUntilFinished(trainEvents, 120_000);
  assert.equal(trained.losses.length, steps);
  const fromQueue = path.join(work, 'wrong-v1.safetensors');
  writeFileSync(fromQueue, (await h.redis.getBuffer(h.producer.keys.loraFile('wrong-v1')))!);

  // The snapshot as a folder, its images named by hash as the worker names them.
  const data = path.join(work, 'builtin-data');
  mkdirSync(data);
  snapshot.files.forEach((file, i) => copyFileSync(file, path.join(data, `${snapshot.images[i]}.png`)));
  const fromCli = path.join(work, 'cli.safetensors');
  const cli = await runCli(['train', '--model', fixturePath('tiny-sdxl'), '--data', data, '--steps', String(steps), '--seed', String(seed), '--out', fromCli]);
  assert.equal(cli.code, 0, cli.stderr);
  const [queued, direct] = await Promise.all([SafetensorsFile.open(fromQueue), SafetensorsFile.open(fromCli)]);
  try {
    const names = [...direct.entries.keys()];
    assert.deepEqual([...queued.entries.keys()], names);
    assert.equal(names.length, 192, 'A and B of all 96 projections');
    const bytes = (values: Float32Array) => Buffer.from(values.buffer, values.byteOffset, values.byteLength);
    for (const name of names) assert.ok(bytes(await queued.readFloat32(name)).equals(bytes(await direct.readFloat32(name))), `${name} is byte-identical`);
    assert.equal(queued.metadata['wrongbot.losses'], direct.metadata['wrongbot.losses']);
  } finally {
    await Promise.all([queued.close(), direct.close()]);
  }
});

test('a producer whose Redis is gone fails fast with a clear error', async () => {
  const server = await startTestRedis();
  const redis = producerConnection(server.url);
  const producer = new JobProducer(redis, testPrefix('gone'));
  await producer.generation.waitUntilReady();
  await server.stop();
  try {
    const started = performance.now();
    await assert.rejects(producer.submit('imagine', imagine('ned', 'nobody listens')), {
      name: 'RedisUnavailableError',
      message: /Redis is unreachable at 127\.0\.0\.1:\d+ .*; the job was not queued/,
    });
    assert.ok(performance.now() - started < 10_000, 'did not hang');
  } finally {
    // Disconnected first: closing a queue whose server is gone would wait for it to come back.
    redis.disconnect();
    await producer.close();
  }
});

test('jobs waiting in Redis survive a Redis restart with AOF and all run', async () => {
  const server = await startTestRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always', '--maxmemory-policy', 'noeviction'] });
  closers.push(() => server.stop());
  const h = await harness('restart', server.url);
  const jobs = [];
  for (let i = 0; i < 3; i++) jobs.push(await h.producer.submit('imagine', imagine(`restart-${i}`, `job ${i}`, { steps: 1 })));
  await h.close();
  await server.stop();
  const restarted = await startTestRedis({ port: server.port, dir: server.dir, args: ['--appendonly', 'yes', '--maxmemory-policy', 'noeviction'] });
  closers.push(() => restarted.stop());
  const after = await harness('restart', restarted.url, {}, h.prefix);
  const worker: WorkerProcess = await startWorker(h.prefix, { REDIS_URL: restarted.url });
  for (const { jobId } of jobs) {
    assert.ok(await after.producer.generation.getJob(jobId), `job ${jobId} survived the restart`);
    assert.equal((await finished(after, jobId)).workerId, worker.id);
  }
});

test('a worker process reconnects after its Redis restarts: it takes the next job, and cancels still reach it', async () => {
  const server = await startTestRedis();
  closers.push(() => server.stop());
  const h = await harness('reconnect', server.url);
  const worker = await startWorker(h.prefix, { REDIS_URL: server.url });
  await h.close();
  await server.stop();
  // Without persistence: the worker comes back to an empty Redis, as after a flush or a new server on that address.
  const restarted = await startTestRedis({ port: server.port, dir: server.dir });
  closers.push(() => restarted.stop());
  const after = await harness('reconnect', restarted.url, {}, h.prefix);

  const next = await after.producer.submit('imagine', imagine('vera', 'after the restart', { steps: 1 }));
  assert.equal((await finished(after, next.jobId)).workerId, worker.id);
  // The cancel flag is read only as a job starts: a running job stops through the control channel alone.
  const long = await after.producer.submit('imagine', imagine('vera', 'cancelled after the restart', { steps: 300, width: 128, height: 128 }));
  await worker.waitForLine(new RegExp(`job ${long.jobId} \\(imagine\\) started`));
  assert.deepEqual(await after.producer.cancel(long.jobId), { outcome: 'stopping' });
  await assert.rejects(finished(after, long.jobId), /cancelled/);
  assert.equal(worker.child.exitCode, null, 'the same worker process throughout');
});
