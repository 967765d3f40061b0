import { randomInt, randomUUID } from 'node:crypto';
import { Queue, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { InvalidRequestError } from '../common/validation.js';
import {
  GENERATION_JOB_OPTIONS, QUEUE_NAMES, TRAIN_JOB_NAME, TRAIN_JOB_OPTIONS, validateJobData,
  type GenerationJobData, type GenerationJobName, type GenerationJobResult, type JobContracts, type TrainJobData,
  type TrainJobResult,
} from './contracts.js';
import { requestCancel } from './control.js';
import { QueueKeys } from './keys.js';
import { averageDurationMs } from './durations.js';
import { checkRefinerForModels, checkSizeForModels, servedModels } from './models.js';
import { DEFAULT_QUEUE_LIMITS, QueuePlaces, type PlaceHolder, type QueueLimits } from './places.js';
import { RedisUnavailableError } from './redis.js';

// The bot's (and the enqueue command's) side of the queue: check a job, give it a seed, hold each user to their
// share of the queue, enqueue it, and answer where it stands. Nothing here loads a model.


type WithOptionalSeed<Data> = Data extends { settings: infer Settings }
  ? Omit<Data, 'settings'> & { settings: Omit<Settings, 'seed'> & { seed?: number | null } }
  : never;

/** Job data as a caller submits it: the seed may be left for the producer to choose. */
export type GenerationSubmission<N extends GenerationJobName> = WithOptionalSeed<JobContracts[N]['data']>;

export class QueueLimitError extends Error {
  override name = 'QueueLimitError';
}

// What ioredis says when a fail-fast connection has no server behind it.
const CONNECTION_LOST = /Stream isn't writeable|Connection is closed|max retries per request|ECONNREFUSED|ETIMEDOUT/;

export interface SubmitOptions {
  /** The bot records a job under its id before enqueueing it, so that no event can arrive for an unknown job. */
  jobId?: string;
}

export interface Submitted {
  jobId: string;
  seed: number | null;
  /** 1 = next to run. */
  position: number;
}

export type JobStanding =
  | { state: 'waiting'; position: number; etaMs: number | null }
  | { state: 'running'; etaMs: number | null }
  | { state: 'completed' | 'failed' | 'unknown' };

export interface CancelOutcome {
  /** `removed`: it had not started; `stopping`: the worker was told to stop it; `finished`: too late. */
  outcome: 'removed' | 'stopping' | 'finished' | 'unknown';
}

/** Seeds users pick by hand fit in 32 bits, and torch only uses the low 32 bits of larger ones anyway. */
/** BullMQ's largest priority number, which runs last. */
const LOWEST_PRIORITY = 2 ** 21 - 1;

export function randomSeed(): number {
  return randomInt(0, 2 ** 32);
}

export class JobProducer {
  readonly keys: QueueKeys;
  readonly generation: Queue<GenerationJobData, GenerationJobResult, GenerationJobName>;
  readonly training: Queue<TrainJobData, TrainJobResult, typeof TRAIN_JOB_NAME>;
  private readonly places: QueuePlaces;

  constructor(
    private readonly redis: Redis,
    prefix: string,
    limits: QueueLimits = DEFAULT_QUEUE_LIMITS,
  ) {
    this.keys = new QueueKeys(prefix);
    this.generation = new Queue(QUEUE_NAMES.generation, { connection: redis, prefix });
    this.training = new Queue(QUEUE_NAMES.training, { connection: redis, prefix });
    this.places = new QueuePlaces(redis, this.keys, limits, (jobId) => this.generation.getJobState(jobId));
  }

  /**
   * Validates and enqueues a generation. Throws InvalidRequestError for input that can never succeed and
   * QueueLimitError when the user already has their share of jobs waiting.
   */
  async submit<N extends GenerationJobName>(name: N, submission: GenerationSubmission<N>, options: SubmitOptions = {}): Promise<Submitted> {
    return this.reachingRedis('the job was not queued', () => this.enqueue(name, submission, options.jobId ?? randomUUID()));
  }

  /** Turns ioredis's words for a missing server into one error a user (or the bot) can act on. */
  private async reachingRedis<T>(consequence: string, action: () => Promise<T>): Promise<T> {
    try {
      return await action();
    } catch (error) {
      if (error instanceof Error && CONNECTION_LOST.test(error.message)) {
        const { host, port } = this.redis.options;
        throw new RedisUnavailableError(`Redis is unreachable at ${host}:${port} (${error.message}); ${consequence}`);
      }
      throw error;
    }
  }

  private async enqueue<N extends GenerationJobName>(name: N, submission: GenerationSubmission<N>, jobId: string): Promise<Submitted> {
    // The seed is fixed here, not in the worker, so that a retry of the job makes the same image.
    const seed = submission.settings.seed ?? randomSeed();
    const data = validateJobData(name, { ...submission, settings: { ...submission.settings, seed } }) as JobContracts[N]['data'];
    await this.checkDrawable(data.settings);
    const { userId, guildId } = data.requester;
    const place = await this.reservePlace(jobId, { userId, guildId, countsForUser: true });
    try {
      // A member's n-th job, counting the one running, gets priority n: everyone's first job runs before anyone's
      // second, whoever submitted more at once.
      const priority = place + (await this.runningJobsOf(userId));
      await this.generation.add(name, data, { ...GENERATION_JOB_OPTIONS, jobId, priority });
    } catch (error) {
      await this.places.release(jobId, data.requester);
      throw error;
    }
    // The job is queued whatever happens next: a failure to say where it stands must not read as "not queued".
    const standing = await this.standing(jobId).catch((): JobStanding => ({ state: 'unknown' }));
    return { jobId, seed, position: standing.state === 'waiting' ? standing.position : 0 };
  }

  /**
   * A job the bot makes for itself (/dataset bootstrap's images, a candidate's validation): the lowest priority, so
   * every member's job runs first, and outside the per-member limit, since no member is waiting for it.
   */
  async submitBackground<N extends GenerationJobName>(name: N, submission: GenerationSubmission<N>, jobId: string): Promise<void> {
    const data = validateJobData(name, { ...submission, settings: { ...submission.settings, seed: submission.settings.seed ?? randomSeed() } }) as GenerationJobData;
    await this.reachingRedis('the job was not queued', async () => {
      await this.checkDrawable(data.settings);
      // Outside the member's share (nobody waits for it), inside the server's and the deployment's.
      await this.reservePlace(jobId, { ...data.requester, countsForUser: false });
      try {
        await this.generation.add(name, data, { ...GENERATION_JOB_OPTIONS, jobId, priority: LOWEST_PRIORITY });
      } catch (error) {
        await this.places.release(jobId, data.requester);
        throw error;
      }
    });
  }

  /** What the workers' model cannot draw would fail on the GPU every time: it is refused here instead. */
  private async checkDrawable(settings: { width: number; height: number; denoisingEnd?: number | null }): Promise<void> {
    const models = await servedModels(this.redis, this.keys);
    checkSizeForModels('settings.width', settings.width, models);
    checkSizeForModels('settings.height', settings.height, models);
    checkRefinerForModels(settings.denoisingEnd, models);
  }

  private async reservePlace(jobId: string, holder: PlaceHolder): Promise<number> {
    const reservation = await this.places.reserve(jobId, holder);
    if ('place' in reservation) return reservation.place;
    const { full, limit } = reservation;
    throw new QueueLimitError(full === 'user'
      ? `you already have ${limit} jobs waiting; wait for one to start or cancel one`
      : full === 'guild'
        ? `this server already has ${limit} jobs waiting; try again when some have run`
        : `the queue is full (${limit} jobs waiting); try again in a few minutes`);
  }

  /** Running jobs of the member's that no longer hold a place (a worker gives it back as the job starts). */
  private async runningJobsOf(userId: string): Promise<number> {
    const holding = new Set(await this.places.heldBy(userId));
    return (await this.generation.getActive()).filter((job) => job.data.requester?.userId === userId && !holding.has(job.id!)).length;
  }

  async submitTraining(data: TrainJobData, options: SubmitOptions = {}): Promise<string> {
    const validated = validateJobData(TRAIN_JOB_NAME, data);
    const jobId = options.jobId ?? randomUUID();
    await this.reachingRedis('the training job was not queued', async () => {
      // One training at a time across every worker of the deployment: each holds a whole GPU for hours.
      await this.training.setGlobalConcurrency(1);
      await this.training.add(TRAIN_JOB_NAME, validated, { ...TRAIN_JOB_OPTIONS, jobId });
    });
    return jobId;
  }

  /** Where a job stands; see standings(). */
  async standing(jobId: string): Promise<JobStanding> {
    return (await this.standings([jobId])).get(jobId)!;
  }

  /**
   * Where each job stands, from one look at the queue. BullMQ has no position API: a position counts the waiting
   * jobs that run first (lower priority number, or the same and enqueued earlier), and the estimate is the recent
   * mean duration per job name of those jobs and the running ones, shared among the workers.
   */
  async standings(jobIds: readonly string[]): Promise<Map<string, JobStanding>> {
    const waiting = await this.generation.getJobs(['prioritized', 'waiting', 'delayed']);
    waiting.sort((a, b) => (a.priority || 0) - (b.priority || 0) || a.timestamp - b.timestamp);
    const active = await this.generation.getActive();
    const workers = Math.max(1, await this.workerCount());
    const averages = new Map<string, number | null>();
    for (const name of new Set([...waiting, ...active].map((job) => job.name))) {
      averages.set(name, await averageDurationMs(this.redis, this.keys, name));
    }
    const known = (job: Job) => averages.get(job.name) ?? null;
    // Work ahead of the i-th waiting job, null once any job's duration is unknown.
    let ahead: number | null = 0;
    for (const job of active) ahead = ahead === null || known(job) === null ? null : ahead + known(job)! / workers;
    const result = new Map<string, JobStanding>();
    const wanted = new Set(jobIds);
    for (const [index, job] of waiting.entries()) {
      if (wanted.has(job.id!)) {
        const own = known(job);
        result.set(job.id!, { state: 'waiting', position: index + 1, etaMs: ahead === null || own === null ? null : ahead + own });
      }
      ahead = ahead === null || known(job) === null ? null : ahead + known(job)! / workers;
    }
    for (const job of active) {
      if (!wanted.has(job.id!)) continue;
      const progress = job.progress as { etaMs?: number } | number;
      result.set(job.id!, { state: 'running', etaMs: typeof progress === 'object' && progress.etaMs !== undefined ? progress.etaMs : null });
    }
    for (const jobId of wanted) {
      if (result.has(jobId)) continue;
      const state = await this.generation.getJobState(jobId);
      result.set(jobId, { state: state === 'completed' || state === 'failed' ? state : 'unknown' });
    }
    return result;
  }

  private async workerCount(): Promise<number> {
    try {
      return await this.generation.getWorkersCount();
    } catch {
      // Managed Redis may refuse CLIENT LIST; one worker is the cautious estimate.
      return 1;
    }
  }

  /**
   * Cancels a job: removed if it has not started, otherwise the worker running it is told to stop between two
   * steps. `userId`, when given, must be the job's owner.
   */
  async cancel(jobId: string, userId?: string): Promise<CancelOutcome> {
    const job: Job<GenerationJobData | TrainJobData> | undefined = (await this.generation.getJob(jobId)) ?? (await this.training.getJob(jobId));
    if (!job) return { outcome: 'unknown' };
    if (userId !== undefined && job.data.requester.userId !== userId) {
      throw new InvalidRequestError('jobId', jobId, 'belongs to another user');
    }
    const state = await job.getState();
    if (state === 'completed' || state === 'failed') return { outcome: 'finished' };
    if (state !== 'active') {
      try {
        await job.remove();
        await this.places.release(jobId, job.data.requester);
        return { outcome: 'removed' };
      } catch {
        // It was picked up between the state check and the removal: stop it where it runs.
      }
    }
    await requestCancel(this.redis, this.keys, jobId);
    return { outcome: 'stopping' };
  }

  async close(): Promise<void> {
    await Promise.all([this.generation.close(), this.training.close()]);
  }
}

