import type { Redis } from 'ioredis';
import type { StoredImage } from './contracts.js';
import type { QueueKeys } from './keys.js';

// Finished images travel through Redis as plain keys with a time to live, so a bot and a worker on different hosts
// need nothing but Redis between them, and nothing large sits in job data or BullMQ's result hashes.

export const DEFAULT_RESULT_TTL_SECONDS = 24 * 3600;

export class ResultsStore {
  constructor(
    private readonly redis: Redis,
    private readonly keys: QueueKeys,
    readonly ttlSeconds = DEFAULT_RESULT_TTL_SECONDS,
  ) {}

  async put(jobId: string, name: string, png: Uint8Array, size: { width: number; height: number }): Promise<StoredImage> {
    const key = this.keys.image(jobId, name);
    await this.redis.set(key, Buffer.from(png.buffer, png.byteOffset, png.byteLength), 'EX', this.ttlSeconds);
    return { key, contentType: 'image/png', width: size.width, height: size.height, bytes: png.byteLength };
  }

  /** The image's bytes, or null once its time to live has passed. */
  async get(image: Pick<StoredImage, 'key'>): Promise<Buffer | null> {
    return this.redis.getBuffer(image.key);
  }
}
