import { randomUUID } from 'node:crypto';
import {
  MAX_TRAINING_IMAGES, type GenerationJobName, type ImageSettings, type JobProgress, type LoraChoice, type LoraImageSettings,
} from '../queue/contracts.js';
import { randomSeed, type GenerationSubmission, type JobProducer } from '../queue/producer.js';
import { TrainingTransfer, TrainingTransferError } from '../queue/training-transfer.js';
import type { BotStore } from '../store/database.js';
import type { DatasetEntry } from '../store/dataset.js';
import type { JobRecord } from '../store/jobs.js';
import type { TrainingSnapshot } from '../store/trainings.js';
import type { SyntheticSettings } from './bootstrap.js';
import type { Delivery } from './delivery.js';
import { UserFacingError } from './errors.js';
import { formatDuration } from './views.js';

// Turns a member's request into a recorded, queued job: the record is written first (so no queue event can arrive for
// a job the bot does not know), then the job is enqueued, then its message shows where it stands.

/** Discord lets an application edit an interaction's reply for 15 minutes after the interaction was created. */
export const INTERACTION_TOKEN_LIFETIME_MS = 15 * 60_000;
const DAY_MS = 24 * 3600_000;

/** Who asked, and where the answer goes. */
export interface JobOrigin {
  userId: string;
  userName: string;
  guildId: string | null;
  channelId: string | null;
  applicationId: string;
  /** null for a job nobody watches (a synthetic image). */
  interactionToken: string | null;
  /** When Discord created the interaction (epoch ms): its token lives 15 minutes from then. */
  interactionCreatedAt: number;
}

export type GenerationSettings = Omit<ImageSettings, 'seed' | 'negativePrompt'> & { seed: number | null; negativePrompt?: string | null };

export interface TrainingRequest {
  /** The server's quota of trainings in 24 hours, this one included. */
  maxPerDay: number;
  steps: number;
  seed: number | null;
  baseVersion: string | null;
}

export class JobSubmitter {
  constructor(
    private readonly store: BotStore,
    private readonly producer: JobProducer,
    private readonly transfer: TrainingTransfer,
    private readonly delivery: Delivery,
    private readonly log: (line: string) => void,
    /** Discord's time (see DiscordClock): an interaction's token lives 15 minutes by it. */
    private readonly discordNow: () => number = Date.now,
    private readonly now: () => number = Date.now,
  ) {}

  async submitGeneration(origin: JobOrigin, kind: GenerationJobName, settings: GenerationSettings, lora: LoraChoice | null): Promise<JobRecord> {
    // The seed is chosen here so that the record, the job and the buttons that re-use it all agree.
    const seed = settings.seed ?? randomSeed();
    const { negativePrompt, ...common } = { ...settings, seed };
    // /wrong and /compare fix their negative prompt to the trigger word; their jobs carry none.
    const fullSettings: ImageSettings | LoraImageSettings = kind === 'imagine' ? { ...common, negativePrompt: negativePrompt ?? null } : common;
    const request = lora === null ? { settings: fullSettings } : { settings: fullSettings, lora };
    return this.submitForMember(origin, kind, request);
  }

  /**
   * A blind pair for /judge, sides left then right. `recordPair` runs once the job is recorded and before it is
   * queued, so that nothing about the pair can arrive before the pair is known.
   */
  submitJudging(origin: JobOrigin, settings: LoraImageSettings, sides: Array<LoraChoice | null>, recordPair: (record: JobRecord) => void): Promise<JobRecord> {
    return this.submitForMember(origin, 'judge', { settings, sides }, recordPair);
  }

  private async submitForMember(
    origin: JobOrigin,
    kind: GenerationJobName,
    request: Record<string, unknown>,
    beforeQueueing?: (record: JobRecord) => void,
  ): Promise<JobRecord> {
    const record = this.record(origin, kind, request);
    await this.enqueueing(record, () => {
      beforeQueueing?.(record);
      return this.producer.submit(kind, { ...this.envelope(record), ...request } as GenerationSubmission<GenerationJobName>, { jobId: record.jobId });
    });
    await this.showQueued(record);
    return record;
  }

  /**
   * Queues synthetic "wrong" images for the training set (see bootstrap.ts): jobs with no message of their own,
   * which the delivery puts straight into the set.
   */
  async submitSynthetic(origin: JobOrigin, images: readonly SyntheticSettings[]): Promise<JobRecord[]> {
    const records: JobRecord[] = [];
    for (const image of images) {
      const settings = { ...image, seed: randomSeed() };
      records.push(await this.submitInBackground({ ...origin, channelId: null }, 'imagine', { settings, synthetic: true }, { settings }));
    }
    return records;
  }

  /** A job the bot makes for itself: recorded with no interaction to answer, queued after every member's job. */
  private async submitInBackground<N extends GenerationJobName>(
    origin: JobOrigin,
    kind: N,
    request: Record<string, unknown>,
    job: Omit<GenerationSubmission<N>, 'requester' | 'replyTo'>,
  ): Promise<JobRecord> {
    const record = this.record({ ...origin, interactionToken: null }, kind, request);
    await this.enqueueing(record, () => this.producer.submitBackground(kind, { ...this.envelope(record), ...job } as GenerationSubmission<N>, record.jobId));
    return record;
  }

  /**
   * Draws a new candidate beside the served version and the base, one job per validation prompt, posted in the channel
   * the training was asked for in.
   */
  async submitValidation(training: JobRecord, settings: readonly LoraImageSettings[], versions: readonly LoraChoice[]): Promise<JobRecord[]> {
    const origin: JobOrigin = {
      userId: training.userId, userName: training.userName, guildId: training.guildId, channelId: training.channelId,
      applicationId: training.applicationId, interactionToken: null, interactionCreatedAt: this.now(),
    };
    const records: JobRecord[] = [];
    for (const one of settings) {
      const request = { settings: one, versions: [...versions] };
      records.push(await this.submitInBackground(origin, 'validate', request, request));
    }
    return records;
  }

  /**
   * Freezes the training set as it is now (the snapshot), sends its images to Redis for whichever worker trains, and
   * queues the training of the version the snapshot names.
   */
  async submitTraining(origin: JobOrigin, request: TrainingRequest): Promise<{ record: JobRecord; snapshot: TrainingSnapshot }> {
    const underway = this.store.jobs.unfinished().find((job) => job.kind === 'train');
    if (underway !== undefined) throw new UserFacingError(await this.trainingUnderway(underway));
    const startedToday = this.store.jobs.countSince('train', origin.guildId, this.now() - DAY_MS);
    if (startedToday >= request.maxPerDay) {
      throw new UserFacingError(`This server has started ${startedToday} training(s) in the last 24 hours, its limit (MAX_TRAININGS_PER_DAY); try again later.`);
    }
    const entries = this.distinctImages(this.store.dataset.list({ limit: MAX_TRAINING_IMAGES + 1 }));
    if (entries.length === 0) throw new UserFacingError('The training set is empty: 👎 some images first, then /train.');
    if (entries.length > MAX_TRAINING_IMAGES) throw new UserFacingError(`The training set has more than ${MAX_TRAINING_IMAGES} images; remove some with /dataset first.`);
    // Sent before anything is recorded: a set Redis refuses leaves no job behind. Unused images expire.
    try {
      await this.transfer.putImages(entries.map((entry) => ({ sha256: entry.sha256, path: entry.imagePath })));
    } catch (error) {
      if (error instanceof TrainingTransferError) throw new UserFacingError(`The training was not queued: ${error.message}.`);
      throw error;
    }
    const seed = request.seed ?? randomSeed();
    const { maxPerDay, ...recipe } = request;
    const record = this.record(origin, 'train', { ...recipe, seed, images: entries.length });
    const snapshot = this.store.trainings.snapshot({
      jobId: record.jobId, baseVersion: request.baseVersion, steps: request.steps, seed, createdBy: origin.userId,
      entries: entries.map((entry) => ({ id: entry.id, sha256: entry.sha256 })),
    });
    await this.enqueueing(record, () => this.producer.submitTraining({
      ...this.envelope(record),
      snapshot: { id: snapshot.id, images: snapshot.entries.map((entry) => entry.sha256) },
      version: snapshot.version,
      baseVersion: snapshot.baseVersion,
      steps: snapshot.steps,
      seed: snapshot.seed,
    }, { jobId: record.jobId }));
    await this.showQueued(record);
    return { record, snapshot };
  }

  /** Where the training that holds the deployment stands, for the admin who asks for another. */
  private async trainingUnderway(job: JobRecord): Promise<string> {
    const progress = (await this.producer.training.getJob(job.jobId))?.progress;
    const stopping = `\`/cancel job:${job.jobId}\` stops it`;
    if (typeof progress !== 'object' || progress === null || !('step' in progress)) {
      return `A training is already queued (job \`${job.jobId}\`); one runs at a time. ${stopping}.`;
    }
    const { step, totalSteps, loss, etaMs } = progress as JobProgress;
    const lossText = loss === undefined ? '' : `, loss ${loss.toFixed(4)}`;
    return `A training is already under way: step ${step}/${totalSteps}${lossText}, about ${formatDuration(etaMs)} left (job \`${job.jobId}\`). ${stopping}.`;
  }

  /** One entry per image: two panels with the same pixels are one training example. */
  private distinctImages(entries: readonly DatasetEntry[]): DatasetEntry[] {
    const seen = new Set<string>();
    return entries.filter((entry) => !seen.has(entry.sha256) && seen.add(entry.sha256));
  }

  private record(origin: JobOrigin, kind: JobRecord['kind'], request: object): JobRecord {
    const createdAt = Math.min(origin.interactionCreatedAt, this.discordNow());
    return this.store.jobs.insert({
      jobId: randomUUID(),
      kind,
      userId: origin.userId,
      userName: origin.userName,
      guildId: origin.guildId,
      channelId: origin.channelId,
      applicationId: origin.applicationId,
      interactionToken: origin.interactionToken,
      tokenExpiresAt: origin.interactionToken === null ? null : createdAt + INTERACTION_TOKEN_LIFETIME_MS,
      request: request as Record<string, unknown>,
    });
  }

  private envelope(record: JobRecord) {
    return {
      requester: { userId: record.userId, displayName: record.userName, guildId: record.guildId },
      replyTo: { channelId: record.channelId },
    };
  }

  /** The job is queued by now: a failure to show where it stands must not read as a failure to queue it. */
  private async showQueued(record: JobRecord): Promise<void> {
    await this.delivery.showQueued(record).catch((error: Error) => this.log(`job ${record.jobId}: could not show its place: ${error.message}`));
  }

  /** A job the queue refused is closed in the database at once, so it never shows up as owed. */
  private async enqueueing(record: JobRecord, enqueue: () => Promise<unknown>): Promise<void> {
    try {
      await enqueue();
    } catch (error) {
      this.store.jobs.finish(record.jobId, 'failed', (error as Error).message);
      throw error;
    }
  }
}
