import type { Redis } from 'ioredis';

// Names of wrongbot's own Redis keys, beside BullMQ's under the same prefix, so that one QUEUE_PREFIX separates
// one deployment (or one test) from another entirely.

export class QueueKeys {
  constructor(readonly prefix: string) {}

  image(jobId: string, name: string): string {
    return `${this.prefix}:wrongbot:image:${jobId}:${name}`;
  }

  waitingJobsOf(userId: string): string {
    return `${this.prefix}:wrongbot:waiting:${userId}`;
  }

  waitingJobsOfGuild(guildId: string): string {
    return `${this.prefix}:wrongbot:waiting-guild:${guildId}`;
  }

  get waitingJobs(): string {
    return `${this.prefix}:wrongbot:waiting-all`;
  }

  /** What each model the workers run can draw (see models.ts), by model name. */
  get servedModels(): string {
    return `${this.prefix}:wrongbot:models`;
  }

  /** When a worker last announced each model (epoch ms). */
  get modelsSeenAt(): string {
    return `${this.prefix}:wrongbot:models-seen`;
  }

  /** When each waiting job's place was taken (epoch ms). */
  get placeTakenAt(): string {
    return `${this.prefix}:wrongbot:waiting-since`;
  }

  durations(jobName: string): string {
    return `${this.prefix}:wrongbot:durations:${jobName}`;
  }

  cancelRequested(jobId: string): string {
    return `${this.prefix}:wrongbot:cancel:${jobId}`;
  }

  /** A training image, under its sha256: one copy however many snapshots name it. */
  trainingImage(sha256: string): string {
    return `${this.prefix}:wrongbot:training-image:${sha256}`;
  }

  /** A LoRA version's safetensors file. */
  loraFile(version: string): string {
    return `${this.prefix}:wrongbot:lora:${version}`;
  }

  get controlChannel(): string {
    return `${this.prefix}:wrongbot:control`;
  }
}

/** Deletes every key under `prefix`: BullMQ's and wrongbot's. For tests, benchmarks and tearing a deployment down. */
export async function deleteQueueKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.del(...keys);
  } while (cursor !== '0');
}
