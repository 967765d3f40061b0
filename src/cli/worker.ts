import os from 'node:os';
import path from 'node:path';
import { booleanSetting, integerSetting, optionalString, queuePrefix } from '../common/environment.js';
import { workerModels } from '../models/resolve.js';
import { DEFAULT_RESULT_TTL_SECONDS } from '../queue/results-store.js';
import { resolveRedis, workerConnection } from '../queue/redis.js';
import {
  DEFAULT_LOCK_DURATION_MS, DEFAULT_SHUTDOWN_GRACE_MS, DEFAULT_STALLED_INTERVAL_MS, GpuWorker,
} from '../worker/gpu-worker.js';
import { timestamped } from './log.js';
import { stopSignal } from './signals.js';
import { deviceOption } from './device-option.js';
import { parseOptions, type OptionSpec } from './options.js';

export const WORKER_USAGE = 'wrongbot worker   (settings from the environment: MODEL_DIR, LORA_PATH, WORKER_DEVICE, REDIS_URL, QUEUE_PREFIX, …)';
/** None: every setting comes from the environment. */
export const WORKER_OPTIONS: OptionSpec = {};

/** Runs until SIGTERM or SIGINT; a running job gets the grace period to finish, then goes back to the queue. */
export async function runWorker(argv: string[]): Promise<void> {
  parseOptions(argv, WORKER_OPTIONS);
  const env = process.env;
  const { model, lora } = workerModels(env);
  const device = deviceOption(undefined);
  const prefix = queuePrefix(env);
  const settings = {
    lora,
    loraCacheDir: optionalString(env, 'LORA_CACHE_DIR') ?? path.join(os.tmpdir(), 'wrongbot-loras'),
    resultTtlSeconds: integerSetting(env, 'RESULT_TTL_SECONDS', DEFAULT_RESULT_TTL_SECONDS, 60),
    lockDurationMs: integerSetting(env, 'WORKER_LOCK_DURATION_MS', DEFAULT_LOCK_DURATION_MS, 1000),
    stalledIntervalMs: integerSetting(env, 'WORKER_STALLED_INTERVAL_MS', DEFAULT_STALLED_INTERVAL_MS, 500),
    shutdownGraceMs: integerSetting(env, 'WORKER_SHUTDOWN_GRACE_MS', DEFAULT_SHUTDOWN_GRACE_MS, 0),
    trainerCommand: optionalString(env, 'TRAINER_COMMAND'),
    gradientCheckpointing: booleanSetting(env, 'TRAIN_GRADIENT_CHECKPOINTING', false),
  };
  const redis = await resolveRedis(env);
  for (const warning of redis.warnings) timestamped(`warning: ${warning}`);
  const connections = {
    generation: workerConnection(redis.url),
    training: workerConnection(redis.url),
    subscriber: workerConnection(redis.url),
    commands: workerConnection(redis.url),
  };
  // BullMQ leaves connections it is given open: closing them is what lets the process end.
  const closeConnections = async () => {
    for (const connection of Object.values(connections)) connection.disconnect();
    await redis.privateServer?.stop();
  };
  let worker: GpuWorker;
  try {
    worker = await GpuWorker.start({ modelDir: model.path, modelName: model.name, device, prefix, connections, ...settings, log: timestamped });
  } catch (error) {
    await closeConnections();
    throw error;
  }
  const signal = await stopSignal(timestamped);
  timestamped(`${signal}: finishing the current job, then stopping`);
  await worker.close().catch((error: Error) => timestamped(`error while stopping: ${error.message}`));
  await closeConnections();
  timestamped('worker stopped');
}
