import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import type { TrainingTransfer } from '../queue/training-transfer.js';

// Where a worker finds the file of a LoRA version a job names: its own LORA_PATH, a copy it fetched before, or Redis,
// where every trained version (and every worker's own LORA_PATH) is kept. A fetched file stays on disk, so coming
// back to a version costs a file read, not a transfer.

export class LoraVersionError extends Error {
  override name = 'LoraVersionError';
}

export class LoraVersions {
  constructor(
    private readonly transfer: TrainingTransfer,
    private readonly cacheDir: string,
    private readonly own: { version: string; path: string } | null,
  ) {}

  /** Offers this worker's own LORA_PATH to the other workers, unless another file already holds its name. */
  async share(): Promise<void> {
    if (this.own !== null) await this.transfer.offerLora(this.own.version, this.own.path);
  }

  async resolve(version: string): Promise<string> {
    if (this.own?.version === version) return this.own.path;
    const cached = path.join(this.cacheDir, `${version}.safetensors`);
    if (existsSync(cached)) return cached;
    mkdirSync(this.cacheDir, { recursive: true });
    if (await this.transfer.fetchLora(version, cached)) return cached;
    throw new LoraVersionError(`LoRA version "${version}" is neither in Redis nor this worker's LORA_PATH${this.own ? ` (${this.own.version})` : ''}`);
  }
}
