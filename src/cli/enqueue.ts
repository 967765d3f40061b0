import { once } from 'node:events';
import path from 'node:path';
import { QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { DEFAULT_GUIDANCE_SCALE, DEFAULT_STEPS, WEIGHTING_SYNTAXES, type WeightingSyntax } from '../common/generation-limits.js';
import { optionalString, queuePrefix } from '../common/environment.js';
import { InvalidRequestError } from '../common/validation.js';
import {
  MEMBER_JOB_NAMES, QUEUE_NAMES, type MemberJobName, type GenerationJobResult, type JobProgress,
} from '../queue/contracts.js';
import { servedModels } from '../queue/models.js';
import { readQueueLimits } from '../queue/places.js';
import { JobProducer, QueueLimitError, type GenerationSubmission } from '../queue/producer.js';
import { producerConnection, resolveRedis, workerConnection } from '../queue/redis.js';
import { ResultsStore } from '../queue/results-store.js';
import { loraVersionOfSetting } from '../models/resolve.js';
import { DEFAULT_LORA_STRENGTH, writeOutput } from './generation-options.js';
import { integerOption, numberOption, parseOptions, UsageError, type OptionSpec, type OptionValues } from './options.js';

// Submits a job to the queue as the bot would, for scripts, smoke tests and admins; with --wait it follows the job
// and writes its images.

export const ENQUEUE_USAGE = 'wrongbot enqueue imagine|wrong|compare --prompt TEXT [--negative TEXT] [--seed N] [--steps N] '
  + '[--guidance G] [--width W] [--height H] [--weighting auto|compel|a1111|none] [--strength S] [--lora-version V] '
  + '[--user ID] [--wait --out FILE.png [--panels-dir DIR]]';

const DEFAULT_USER_ID = 'cli';

export const ENQUEUE_OPTIONS = {
  prompt: { type: 'string', value: 'TEXT', description: 'what to draw (required)' },
  negative: { type: 'string', value: 'TEXT', description: 'the negative prompt (imagine only; wrong and compare use "wrong")' },
  seed: { type: 'string', value: 'N', description: 'the noise seed (default: one picked before the job is queued, printed)' },
  steps: { type: 'string', value: 'N', description: `denoising steps (default ${DEFAULT_STEPS})` },
  guidance: { type: 'string', value: 'G', description: `classifier-free guidance scale (default ${DEFAULT_GUIDANCE_SCALE})` },
  width: { type: 'string', value: 'W', description: 'image width in pixels (default: what the workers\' model was trained at)' },
  height: { type: 'string', value: 'H', description: 'image height in pixels (default: what the workers\' model was trained at)' },
  weighting: { type: 'string', value: WEIGHTING_SYNTAXES.join('|'), description: 'prompt weighting syntax (default auto: recognised in the prompt)' },
  strength: { type: 'string', value: 'S', description: `the LoRA's strength (wrong and compare; default ${DEFAULT_LORA_STRENGTH})` },
  'lora-version': { type: 'string', value: 'V', description: "the LoRA version (wrong and compare; default: LORA_PATH's file or repo name)" },
  user: { type: 'string', value: 'ID', description: `whose job it is, for the per-user limit (default ${DEFAULT_USER_ID})` },
  wait: { type: 'boolean', description: 'follow the job, printing its progress, and write its image' },
  out: { type: 'string', value: 'FILE.png', description: 'where --wait writes the image (the triptych for compare)' },
  'panels-dir': { type: 'string', value: 'DIR', description: 'where --wait also writes every panel, lossless' },
} as const satisfies OptionSpec;

/** The job as the options describe it; a side left out is the workers' model's own (`defaultSizePx`). */
function submissionFrom(name: MemberJobName, values: OptionValues<typeof ENQUEUE_OPTIONS>, defaultSizePx: number | undefined): GenerationSubmission<MemberJobName> {
  if (values.prompt === undefined) throw new UsageError('--prompt is required');
  if (name !== 'imagine' && values.negative !== undefined) throw new UsageError(`--negative is fixed to "wrong" for ${name}`);
  if (name === 'imagine' && (values.strength !== undefined || values['lora-version'] !== undefined)) {
    throw new UsageError('imagine uses the base model: --strength and --lora-version are for wrong and compare');
  }
  const weighting = values.weighting ?? 'auto';
  if (!(WEIGHTING_SYNTAXES as readonly string[]).includes(weighting)) {
    throw new UsageError(`--weighting ${JSON.stringify(weighting)} must be one of ${WEIGHTING_SYNTAXES.join(', ')}`);
  }
  const settings = {
    prompt: values.prompt,
    seed: values.seed === undefined ? null : integerOption('seed', values.seed),
    steps: integerOption('steps', values.steps, DEFAULT_STEPS),
    guidanceScale: numberOption('guidance', values.guidance, DEFAULT_GUIDANCE_SCALE),
    width: integerOption('width', values.width, defaultSizePx),
    height: integerOption('height', values.height, defaultSizePx),
    weighting: weighting as WeightingSyntax,
  };
  const envelope = {
    requester: { userId: values.user ?? DEFAULT_USER_ID, displayName: values.user ?? DEFAULT_USER_ID, guildId: null },
    replyTo: { channelId: null },
  };
  if (name === 'imagine') return { ...envelope, settings: { ...settings, negativePrompt: values.negative ?? null } };
  const loraPath = optionalString(process.env, 'LORA_PATH');
  const version = values['lora-version'] ?? (loraPath === null ? undefined : loraVersionOfSetting(loraPath, 'LORA_PATH'));
  if (version === undefined) throw new UsageError(`${name} needs --lora-version (or LORA_PATH, whose file or repo name is the version)`);
  return { ...envelope, settings, lora: { version, strength: numberOption('strength', values.strength, DEFAULT_LORA_STRENGTH) } };
}

export async function runEnqueue(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (name === undefined || !(MEMBER_JOB_NAMES as readonly string[]).includes(name)) {
    throw new UsageError(`enqueue needs a job name, one of ${MEMBER_JOB_NAMES.join(', ')}; got ${JSON.stringify(name ?? '')}`);
  }
  const jobName = name as MemberJobName;
  const values = parseOptions(rest, ENQUEUE_OPTIONS);
  if (values.wait && values.out === undefined) throw new UsageError('--wait needs --out FILE.png');
  if (!values.wait && (values.out !== undefined || values['panels-dir'] !== undefined)) throw new UsageError('--out and --panels-dir need --wait');
  const prefix = queuePrefix(process.env);
  const redis = await resolveRedis(process.env);
  for (const warning of redis.warnings) console.error(`warning: ${warning}`);
  const connection = producerConnection(redis.url);
  const producer = new JobProducer(connection, prefix, readQueueLimits(process.env));
  // BullMQ leaves connections it is given open: each is closed below, or the process would never exit.
  const eventsConnection = values.wait ? workerConnection(redis.url) : null;
  const events = eventsConnection ? new QueueEvents(QUEUE_NAMES.generation, { connection: eventsConnection, prefix }) : null;
  try {
    await events?.waitUntilReady();
    // The producer's connection fails commands until it is connected (no offline queue).
    if (connection.status !== 'ready') await once(connection, 'ready');
    const sized = values.width !== undefined && values.height !== undefined;
    const submission = submissionFrom(jobName, values, sized ? undefined : await modelDefaultSize(connection, producer));
    let submitted;
    try {
      submitted = await producer.submit(jobName, submission);
    } catch (error) {
      if (error instanceof InvalidRequestError || error instanceof QueueLimitError) throw new UsageError(error.message);
      throw error;
    }
    const place = submitted.position > 0 ? `position ${submitted.position}` : 'starting now';
    console.log(`job ${submitted.jobId} queued (seed ${submitted.seed}, ${place})`);
    if (!events) return;
    const result = await followJob(events, submitted.jobId);
    const store = new ResultsStore(connection, producer.keys);
    const main = result.composite ?? result.panels[0]!.image;
    await writeOutput(values.out!, await fetchImage(store, main.key));
    console.log(`wrote ${values.out} (${main.width}x${main.height}) from worker ${result.workerId} in ${(result.durationMs / 1000).toFixed(2)} s`);
    for (const notice of result.notices) console.error(`note: ${notice}`);
    const panelsDir = values['panels-dir'];
    if (panelsDir !== undefined) {
      for (const [index, panel] of result.panels.entries()) {
        await writeOutput(path.join(panelsDir, `panel-${index + 1}.png`), await fetchImage(store, panel.image.key));
      }
    }
  } finally {
    await events?.close();
    eventsConnection?.disconnect();
    await producer.close();
    connection.disconnect();
    await redis.privateServer?.stop();
  }
}

/** The size the workers' model was trained at: the image a job with no size gets, as `generate` would draw it. */
async function modelDefaultSize(redis: Redis, producer: JobProducer): Promise<number> {
  const [model] = await servedModels(redis, producer.keys);
  if (model === undefined) throw new UsageError('no worker has said which model it runs yet (start one with `wrongbot worker`), so give --width and --height');
  return model.defaultSizePx;
}

async function fetchImage(store: ResultsStore, key: string): Promise<Buffer> {
  const image = await store.get({ key });
  if (!image) throw new Error(`image ${key} has expired from the results store`);
  return image;
}

/** Prints progress until the job completes (its result) or fails (an Error with the worker's reason). */
function followJob(events: QueueEvents, jobId: string): Promise<GenerationJobResult> {
  return new Promise((resolve, reject) => {
    const onProgress = ({ jobId: id, data }: { jobId: string; data: unknown }) => {
      if (id !== jobId || typeof data !== 'object' || data === null) return;
      const { step, totalSteps, etaMs } = data as JobProgress;
      console.error(`step ${step}/${totalSteps}, ${(etaMs / 1000).toFixed(1)} s left`);
    };
    const onCompleted = ({ jobId: id, returnvalue }: { jobId: string; returnvalue: unknown }) => {
      if (id !== jobId) return;
      cleanup();
      resolve((typeof returnvalue === 'string' ? JSON.parse(returnvalue) : returnvalue) as GenerationJobResult);
    };
    const onFailed = ({ jobId: id, failedReason }: { jobId: string; failedReason: string }) => {
      if (id !== jobId) return;
      cleanup();
      reject(new Error(`job ${jobId} failed: ${failedReason}`));
    };
    const cleanup = () => {
      events.off('progress', onProgress);
      events.off('completed', onCompleted);
      events.off('failed', onFailed);
    };
    events.on('progress', onProgress);
    events.on('completed', onCompleted);
    events.on('failed', onFailed);
  });
}
