import type { Redis } from 'ioredis';
import { fail } from '../common/validation.js';
import type { QueueKeys } from './keys.js';

// What the workers' models can draw, as each worker announces it in Redis: the bot and `enqueue` share no files
// with the workers, yet must refuse a size the model can never draw (before a GPU tries it) and know its default.

export interface ServedModel {
  name: string;
  /** Every image side must be a multiple of this (see SdxlModelFolder.sizeMultiple). */
  sizeMultiple: number;
  /** The size the model was trained at, for a request that names none. */
  defaultSizePx: number;
  /** Whether the worker has a refiner loaded (REFINER_DIR), for jobs that hand off to one. */
  hasRefiner: boolean;
}

/** A worker announces its model at start and this often after; a model nobody announced for a day is gone. */
export const MODEL_ANNOUNCE_INTERVAL_MS = 3600_000;
export const MODEL_FORGOTTEN_AFTER_MS = 24 * 3600_000;

export async function announceModel(redis: Redis, keys: QueueKeys, model: ServedModel, now = Date.now()): Promise<void> {
  await redis.multi().hset(keys.servedModels, model.name, JSON.stringify(model)).zadd(keys.modelsSeenAt, now, model.name).exec();
}

/** The models announced in the last day, most recently announced first. */
export async function servedModels(redis: Redis, keys: QueueKeys, now = Date.now()): Promise<ServedModel[]> {
  const names = await redis.zrevrangebyscore(keys.modelsSeenAt, '+inf', now - MODEL_FORGOTTEN_AFTER_MS);
  if (names.length === 0) return [];
  const entries = await redis.hmget(keys.servedModels, ...names);
  return entries.flatMap((entry) => (entry === null ? [] : [JSON.parse(entry) as ServedModel]));
}

/** Refuses a hand-off to a refiner when some worker has none: any worker may take any job. */
export function checkRefinerForModels(denoisingEnd: number | null | undefined, models: readonly ServedModel[]): void {
  if (denoisingEnd == null) return;
  const without = models.find((model) => !model.hasRefiner);
  if (without !== undefined) fail('settings.denoisingEnd', denoisingEnd, `needs a refiner, and a worker running ${without.name} has none (REFINER_DIR)`);
}

/** Refuses a side that some served model cannot draw, naming the model; any worker may take any job. */
export function checkSizeForModels(field: string, side: number, models: readonly ServedModel[]): void {
  for (const model of models) {
    if (side % model.sizeMultiple !== 0) fail(field, side, `must be a multiple of ${model.sizeMultiple}: the workers' model ${model.name} cannot draw other sizes`);
  }
}
