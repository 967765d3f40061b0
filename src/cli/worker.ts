import os from 'node:os';
import path from 'node:path';
import { booleanSetting, integerSetting, optionalString, queuePrefix } from '../common/environment.js';
import { readBatchLimits } from '../gpu/unet-batches.js';
import { DEFAULT_STEP_TIMEOUT_MS, InferenceThreadError } from '../gpu/image-generator.js';
import { resolveModel, workerModels } from '../models/resolve.js';
import { DEFAULT_RESULT_TTL_SECONDS } from '../queue/results-store.js';
import { resolveRedis, workerConnection } from '../queue/redis.js';
import {
  DEFAULT_LOCK_DURATION_MS, DEFAULT_SHUTDOWN_GRACE_MS, DEFAULT_STALLED_INTERVAL_MS, GpuWorker,
} from '../worker/gpu-worker.js';
import { DEFAULT_TRAINER_PROGRESS_TIMEOUT_MS } from '../worker/trainer.js';
import { timestamped } from './log.js';
import { stopSignal } from './signals.js';
import { deviceOption } from './device-option.js';
import { parseOptions, type OptionSpec } from './options.js';

export const WORKER_USAGE = 'wrongbot worker   (settings from the environment: MODEL_DIR, LORA_PATH, WORKER_DEVICE, REDIS_URL, QUEUE_PREFIX, …)';
/** None: every setting comes from the environment. */
export const WORKER_OPTIONS: OptionSpec = {};

/**
 * How long an inference thread given up by the watchdog may take to finish its step and stop; after that it is taken
 * for hung and the process is killed rather than exited.
 */
const THREAD_STOP_WAIT_MS = 10_000;

/**
 * Runs until SIGTERM or SIGINT; a running job gets the grace period to finish, then goes back to the queue. If the
 * inference thread dies, its job goes back to the queue and the process fails, for its supervisor to restart it.
 */
export async function runWorker(argv: string[]): Promise<void> {
  parseOptions(argv, WORKER_OPTIONS);
  const env = process.env;
  const { model, lora } = workerModels(env);
  const device = deviceOption(undefined);
  const prefix = queuePrefix(env);
  const settings = {
    lora,
    refinerDir: optionalString(env, 'REFINER_DIR') === null ? null : resolveModel(optionalString(env, 'REFINER_DIR')!, 'REFINER_DIR').path,
    batchLimits: readBatchLimits(env),
    loraCacheDir: optionalString(env, 'LORA_CACHE_DIR') ?? path.join(os.tmpdir(), 'wrongbot-loras'),
    resultTtlSeconds: integerSetting(env, 'RESULT_TTL_SECONDS', DEFAULT_RESULT_TTL_SECONDS, 60),
    lockDurationMs: integerSetting(env, 'WORKER_LOCK_DURATION_MS', DEFAULT_LOCK_DURATION_MS, 1000),
    stalledIntervalMs: integerSetting(env, 'WORKER_STALLED_INTERVAL_MS', DEFAULT_STALLED_INTERVAL_MS, 500),
    shutdownGraceMs: integerSetting(env, 'WORKER_SHUTDOWN_GRACE_MS', DEFAULT_SHUTDOWN_GRACE_MS, 0),
    stepTimeoutMs: integerSetting(env, 'WORKER_STEP_TIMEOUT_MS', DEFAULT_STEP_TIMEOUT_MS, 1),
    trainerCommand: optionalString(env, 'TRAINER_COMMAND'),
    trainerProgressTimeoutMs: integerSetting(env, 'TRAINER_PROGRESS_TIMEOUT_MS', DEFAULT_TRAINER_PROGRESS_TIMEOUT_MS, 1),
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
  const stop = await Promise.race([stopSignal(timestamped), worker.fault]);
  const fault = stop instanceof InferenceThreadError ? stop : null;
  timestamped(fault ? `${fault.message}: stopping this worker for its supervisor to start a fresh one` : `${stop}: finishing the current job, then stopping`);
  await worker.close().catch((error: Error) => timestamped(`error while stopping: ${error.message}`));
  await closeConnections();
  if (fault) await failForSupervisor(worker, fault);
  timestamped('worker stopped');
}

/** Exits non-zero, so that a supervisor starts a fresh worker with a working inference thread. */
async function failForSupervisor(worker: GpuWorker, fault: InferenceThreadError): Promise<never> {
  // Node joins its threads on exit, so a thread stuck in native code (a hung GPU) would keep this process forever.
  if (!await worker.inferenceThreadStopped(THREAD_STOP_WAIT_MS)) {
    timestamped(`the inference thread has not stopped within ${THREAD_STOP_WAIT_MS} ms: killing this process`);
    process.kill(process.pid, 'SIGKILL');
  }
  throw fault;
}
