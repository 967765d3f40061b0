import type { Redis } from 'ioredis';
import type { QueueKeys } from './keys.js';

// Cancelling a running job from another process (the bot): a message on a pub/sub channel every worker listens
// to, plus a short-lived flag for the job that a worker picks up in the instant between the producer's check and
// its own subscription seeing the message.

export const CANCEL_FLAG_TTL_SECONDS = 3600;

interface ControlMessage {
  type: 'cancel';
  jobId: string;
}

export async function requestCancel(redis: Redis, keys: QueueKeys, jobId: string): Promise<void> {
  await redis.set(keys.cancelRequested(jobId), '1', 'EX', CANCEL_FLAG_TTL_SECONDS);
  await redis.publish(keys.controlChannel, JSON.stringify({ type: 'cancel', jobId } satisfies ControlMessage));
}

export async function isCancelRequested(redis: Redis, keys: QueueKeys, jobId: string): Promise<boolean> {
  return (await redis.exists(keys.cancelRequested(jobId))) === 1;
}

/** `subscriber` becomes a subscriber connection and can serve nothing else. */
export async function listenForCancels(subscriber: Redis, keys: QueueKeys, onCancel: (jobId: string) => void): Promise<void> {
  subscriber.on('message', (channel: string, text: string) => {
    if (channel !== keys.controlChannel) return;
    try {
      const message = JSON.parse(text) as Partial<ControlMessage>;
      if (message.type === 'cancel' && typeof message.jobId === 'string') onCancel(message.jobId);
    } catch {
      // Anyone can publish on a Redis channel; a message that is not ours is not an instruction.
    }
  });
  await subscriber.subscribe(keys.controlChannel);
}
