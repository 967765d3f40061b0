import { randomUUID } from 'node:crypto';
import { Queue, Worker } from 'bullmq';
import { GENERATION_JOB_OPTIONS, QUEUE_NAMES, type ImagineJobData } from '../src/queue/contracts.js';
import { deleteQueueKeys } from '../src/queue/keys.js';
import { JobProducer } from '../src/queue/producer.js';
import { producerConnection, workerConnection } from '../src/queue/redis.js';

// The queue's own cost, with a processor that does nothing: how long an idle worker takes to pick a job up after
// it is enqueued, and how many jobs per second one worker (concurrency 1, as a GPU worker runs) gets through.

export interface QueueFigures {
  latencySamples: number;
  pickupP50Ms: number;
  pickupP99Ms: number;
  throughputJobs: number;
  jobsPerSecond: number;
}

const LATENCY_SAMPLES = 300;
const THROUGHPUT_JOBS = 3000;

/** The value below which `fraction` of the sorted samples fall (nearest rank). */
export function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(fraction * sorted.length))]!;
}

function job(i: number): ImagineJobData {
  return {
    requester: { userId: `bench-${i}`, displayName: 'bench', guildId: null },
    replyTo: { channelId: null },
    settings: { prompt: 'a cat', negativePrompt: null, seed: i, steps: 1, guidanceScale: 5, width: 64, height: 64, weighting: 'auto' },
  };
}

export async function benchQueue(redisUrl: string): Promise<QueueFigures> {
  const prefix = `bench-${randomUUID().slice(0, 8)}`;
  const producerRedis = producerConnection(redisUrl);
  const workerRedis = workerConnection(redisUrl);
  const producer = new JobProducer(producerRedis, prefix, { perUser: Number.MAX_SAFE_INTEGER, perGuild: Number.MAX_SAFE_INTEGER, total: Number.MAX_SAFE_INTEGER });
  // Keyed by seed: an idle worker can pick a job up before submit() has even returned its id.
  const enqueuedAt = new Map<number, number>();
  const pickups: number[] = [];
  let completed = 0;
  let onCompleted = () => {};
  const worker = new Worker<ImagineJobData>(QUEUE_NAMES.generation, async (bullJob) => {
    const at = enqueuedAt.get(bullJob.data.settings.seed);
    if (at !== undefined) pickups.push(performance.now() - at);
    return null;
  }, { connection: workerRedis, prefix, concurrency: 1 });
  worker.on('completed', () => {
    completed++;
    onCompleted();
  });
  try {
    await worker.waitUntilReady();
    // Latency: one job at a time into an idle worker, through the producer the bot uses.
    for (let i = 0; i < LATENCY_SAMPLES; i++) {
      const done = new Promise<void>((resolve) => { onCompleted = resolve; });
      enqueuedAt.set(i, performance.now());
      await producer.submit('imagine', job(i));
      await done;
    }
    // Throughput: a backlog added in bulk and drained by one worker, timed from the first add.
    enqueuedAt.clear();
    const raw = new Queue(QUEUE_NAMES.generation, { connection: producerRedis, prefix });
    completed = 0;
    const drained = new Promise<void>((resolve) => { onCompleted = () => { if (completed === THROUGHPUT_JOBS) resolve(); }; });
    const started = performance.now();
    await raw.addBulk(Array.from({ length: THROUGHPUT_JOBS }, (_, i) => ({ name: 'imagine', data: job(i), opts: { ...GENERATION_JOB_OPTIONS, priority: 1 } })));
    await drained;
    const seconds = (performance.now() - started) / 1000;
    await raw.close();
    const sorted = [...pickups].sort((a, b) => a - b);
    return {
      latencySamples: sorted.length,
      pickupP50Ms: percentile(sorted, 0.5),
      pickupP99Ms: percentile(sorted, 0.99),
      throughputJobs: THROUGHPUT_JOBS,
      jobsPerSecond: THROUGHPUT_JOBS / seconds,
    };
  } finally {
    await worker.close();
    await producer.close();
    await deleteQueueKeys(producerRedis, prefix);
    producerRedis.disconnect();
    workerRedis.disconnect();
  }
}
