import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { sha256Hex, writeFileAtomic } from '../common/files.js';
import type { QueueKeys } from './keys.js';

// What a training moves between the bot and a worker, through Redis alone, so that a worker on another host with an
// empty DATA_DIR can train: the snapshot's images under their sha256 (one copy however many snapshots name them),
// with a time to live, and the LoRA files of trained versions, without one, so a worker that joins later can fetch
// any version.

/** Long enough for a training to wait behind another and run for hours. */
export const DEFAULT_TRAINING_IMAGE_TTL_SECONDS = 7 * 24 * 3600;
/** Redis holds the whole set at once; a set above this is refused rather than filling its memory. */
export const DEFAULT_MAX_TRAINING_SET_BYTES = 1024 * 2 ** 20;

export class TrainingTransferError extends Error {
  override name = 'TrainingTransferError';
}

export interface TrainingImageFile {
  sha256: string;
  path: string;
}

export class TrainingTransfer {
  constructor(
    private readonly redis: Redis,
    private readonly keys: QueueKeys,
    readonly options: { imageTtlSeconds: number; maxSetBytes: number } = {
      imageTtlSeconds: DEFAULT_TRAINING_IMAGE_TTL_SECONDS,
      maxSetBytes: DEFAULT_MAX_TRAINING_SET_BYTES,
    },
  ) {}

  /** Reads every image (checking it is what its hash says) and stores the set, or refuses it whole when too large. */
  async putImages(images: readonly TrainingImageFile[]): Promise<{ bytes: number }> {
    const contents: Buffer[] = [];
    let bytes = 0;
    for (const image of images) {
      const data = await readFile(image.path);
      if (sha256Hex(data) !== image.sha256) throw new TrainingTransferError(`${image.path} no longer matches its sha256 ${image.sha256}: the training set was changed on disk`);
      bytes += data.byteLength;
      if (bytes > this.options.maxSetBytes) {
        throw new TrainingTransferError(`the training set is over ${formatMiB(this.options.maxSetBytes)} (MAX_TRAINING_SET_MB), the most that travels to the workers through Redis; remove images with /dataset or raise the limit`);
      }
      contents.push(data);
    }
    const pipeline = this.redis.pipeline();
    images.forEach((image, i) => pipeline.set(this.keys.trainingImage(image.sha256), contents[i]!, 'EX', this.options.imageTtlSeconds));
    await pipeline.exec();
    return { bytes };
  }

  /** Writes each image into `folder` as `<sha256>.png`, checked against its hash; returns the paths in order. */
  async fetchImages(hashes: readonly string[], folder: string): Promise<string[]> {
    const files: string[] = [];
    for (const hash of hashes) {
      const data = await this.redis.getBuffer(this.keys.trainingImage(hash));
      if (data === null) {
        throw new TrainingTransferError(`training image ${hash} is gone from Redis (it is kept ${this.options.imageTtlSeconds / 3600} h after /train); run /train again`);
      }
      if (sha256Hex(data) !== hash) throw new TrainingTransferError(`training image ${hash} in Redis does not match its hash`);
      const file = path.join(folder, `${hash}.png`);
      await writeFile(file, data);
      files.push(file);
    }
    return files;
  }

  async putLora(version: string, file: string): Promise<void> {
    await this.redis.set(this.keys.loraFile(version), await readFile(file));
  }

  /** Stores the file under the version unless a file is stored under that name already. */
  async offerLora(version: string, file: string): Promise<void> {
    await this.redis.set(this.keys.loraFile(version), await readFile(file), 'NX');
  }

  /** Writes the version's file to `file`; false when Redis has no such version. */
  async fetchLora(version: string, file: string): Promise<boolean> {
    const data = await this.redis.getBuffer(this.keys.loraFile(version));
    if (data === null) return false;
    writeFileAtomic(file, data);
    return true;
  }
}

function formatMiB(bytes: number): string {
  return `${Math.round(bytes / 2 ** 20)} MiB`;
}
