import type { Redis } from 'ioredis';
import type { QueueKeys } from './keys.js';

// Recent job durations per job name, kept by the workers and read by the producer to estimate waiting times.

const DURATION_SAMPLES = 20;

export async function recordDuration(redis: Redis, keys: QueueKeys, jobName: string, durationMs: number): Promise<void> {
  const key = keys.durations(jobName);
  await redis.multi().lpush(key, String(Math.round(durationMs))).ltrim(key, 0, DURATION_SAMPLES - 1).exec();
}

/** The mean of the recent durations, or null before any job of that name has finished. */
export async function averageDurationMs(redis: Redis, keys: QueueKeys, jobName: string): Promise<number | null> {
  const samples = (await redis.lrange(keys.durations(jobName), 0, -1)).map(Number).filter(Number.isFinite);
  return samples.length === 0 ? null : samples.reduce((a, b) => a + b, 0) / samples.length;
}
