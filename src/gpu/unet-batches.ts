import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, integerSetting, optionalString, type Env } from '../common/environment.js';
import { fail } from '../common/validation.js';
import { estimateInferenceMemory, type UnetArchitecture } from './memory-estimate.js';

// How many UNet rows one run may hold. A triptych is six rows (an unconditional and a text row per panel); at 1024²
// in float32 each row's attention scores alone take gigabytes, so a card smaller than the whole batch needs runs of
// fewer rows per step. The results are the same: every row is computed on its own either way.

export interface BatchLimits {
  /** At most this many rows per run (WORKER_MAX_BATCH); null: no fixed cap. */
  maxRows: number | null;
  /** Device memory the worker may use (WORKER_MEMORY_GB), weights included; null: no budget. */
  budgetBytes: number | null;
}

export const NO_BATCH_LIMITS: Readonly<BatchLimits> = Object.freeze({ maxRows: null, budgetBytes: null });

const GB = 1e9;
/** No card holds more than this; a larger figure is a typo. */
const MAX_MEMORY_GB = 10_000;
const MAX_ROWS_PER_RUN = 64;

/** WORKER_MAX_BATCH and WORKER_MEMORY_GB: unset, the whole batch runs at once, as on a card that holds it. */
export function readBatchLimits(env: Env): BatchLimits {
  const memory = optionalString(env, 'WORKER_MEMORY_GB');
  const gigabytes = memory === null ? null : Number(memory);
  if (gigabytes !== null && !(Number.isFinite(gigabytes) && gigabytes > 0 && gigabytes <= MAX_MEMORY_GB)) {
    throw new ConfigError(`WORKER_MEMORY_GB = ${JSON.stringify(memory)} must be a number of gigabytes above 0, e.g. 24`);
  }
  return {
    maxRows: optionalString(env, 'WORKER_MAX_BATCH') === null ? null : integerSetting(env, 'WORKER_MAX_BATCH', 1, 1, MAX_ROWS_PER_RUN),
    budgetBytes: gigabytes === null ? null : gigabytes * GB,
  };
}

/** Bytes on disk of a model folder: its graph and external weights, which a session holds in device memory. */
export function modelFolderBytes(modelFile: string): number {
  const folder = path.dirname(modelFile);
  return readdirSync(folder).reduce((sum, name) => sum + (/\.onnx(_data)?$|\.data$/.test(name) ? statSync(path.join(folder, name)).size : 0), 0);
}

export class UnetBatchPlanner {
  constructor(
    private readonly limits: BatchLimits,
    private readonly unet: UnetArchitecture | null,
    private readonly vaeScaleFactor: number,
    /** Every loaded model's weights: they stay in device memory beside the run's activations. */
    private readonly loadedWeightBytes: number,
    private readonly elementBytes: number,
  ) {
    if (limits.budgetBytes !== null && unet === null) {
      fail('memory budget', `${limits.budgetBytes / GB} GB`, 'needs the UNet\'s unet/config.json to estimate what a row takes; the model folder has none');
    }
  }

  /** Rows per run for an image of this size; refuses a size of which not even one row fits the budget. */
  rowsPerRun(width: number, height: number): number {
    const { maxRows, budgetBytes } = this.limits;
    let rows = maxRows ?? Number.POSITIVE_INFINITY;
    if (budgetBytes !== null) {
      const { perRowBytes } = estimateInferenceMemory(this.unet!, { width, height, vaeScaleFactor: this.vaeScaleFactor, rows: 1, elementBytes: this.elementBytes });
      const fitting = Math.floor((budgetBytes - this.loadedWeightBytes) / perRowBytes);
      if (fitting < 1) {
        fail('size', `${width}x${height}`, `needs about ${((this.loadedWeightBytes + perRowBytes) / GB).toFixed(1)} GB (${(this.loadedWeightBytes / GB).toFixed(1)} GB of weights and ${(perRowBytes / GB).toFixed(1)} GB for one UNet row), more than this worker's ${(budgetBytes / GB).toFixed(1)} GB (WORKER_MEMORY_GB); choose a smaller size`);
      }
      rows = Math.min(rows, fitting);
    }
    return rows;
  }
}

/** [start, end) of each run over `rows` rows, at most `perRun` each. */
export function runsOf(rows: number, perRun: number): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let start = 0; start < rows; start += perRun) runs.push([start, Math.min(rows, start + perRun)]);
  return runs;
}
