import { QueueEvents, type Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  QUEUE_NAMES, type GenerationJobResult, type JobProgress, type TrainJobResult,
} from '../queue/contracts.js';
import type { JobProducer } from '../queue/producer.js';
import type { ResultsStore } from '../queue/results-store.js';
import type { BotStore } from '../store/database.js';
import type { PanelProvenance } from '../store/images.js';
import type { JobRecord } from '../store/jobs.js';
import type { JobMessages, OutgoingFile } from './job-messages.js';
import {
  endedView, progressView, queuedView, resultView, trainedView, type GenerationRequestRecord,
} from './views.js';

// Hears the queue's events and keeps each job's message current: position while it waits, steps while it runs, then
// its images exactly once. The database, not memory, says what is still owed, so a restarted bot picks up where the
// last one stopped (reconcile) and a job finished while no bot was running is still delivered.

/** Positions shift whenever a job starts or ends; recomputing them for every event would flood Discord. */
export const POSITION_REFRESH_MS = 2_000;
/** Discord's default limit for one attachment, and for one whole request. */
export const MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024;
export const MAX_REQUEST_BYTES = 25 * 1024 * 1024;
const CANCELLED_REASON = 'cancelled';

export interface DeliveryOptions {
  store: BotStore;
  producer: JobProducer;
  results: ResultsStore;
  messages: JobMessages;
  /** How long delivered panels are kept on disk for late votes. */
  imageRetentionMs: number;
  log: (line: string) => void;
  now?: () => number;
}

type AnyQueue = Queue<unknown, unknown, string>;

export class Delivery {
  private readonly events: QueueEvents[] = [];
  private positionTimer: NodeJS.Timeout | null = null;
  private readonly now: () => number;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly options: DeliveryOptions) {
    this.now = options.now ?? Date.now;
  }

  /** Listens on both queues; each QueueEvents blocks on its own connection, which the caller owns. */
  async start(prefix: string, connections: { generation: Redis; training: Redis }): Promise<void> {
    const { producer } = this.options;
    const pairs: Array<[string, Redis, AnyQueue]> = [
      [QUEUE_NAMES.generation, connections.generation, producer.generation as unknown as AnyQueue],
      [QUEUE_NAMES.training, connections.training, producer.training as unknown as AnyQueue],
    ];
    for (const [name, connection, queue] of pairs) {
      const events = new QueueEvents(name, { connection, prefix });
      events.on('active', ({ jobId }) => this.track(this.started(jobId)));
      events.on('progress', ({ jobId, data }) => this.track(this.progressed(jobId, data as JobProgress)));
      events.on('completed', ({ jobId }) => this.track(this.finished(jobId, queue)));
      events.on('failed', ({ jobId }) => this.track(this.finished(jobId, queue)));
      events.on('removed', () => this.refreshPositionsSoon());
      events.on('error', (error) => this.options.log(`queue events (${name}): ${error.message}`));
      this.events.push(events);
    }
    await Promise.all(this.events.map((events) => events.waitUntilReady()));
    await this.reconcile();
  }

  /** Jobs the database still owes an answer for, checked against the queue: what finished meanwhile is delivered. */
  async reconcile(): Promise<void> {
    for (const job of this.options.store.jobs.unfinished()) {
      const queue = this.queueOf(job);
      const bullJob = await queue.getJob(job.jobId);
      const state = bullJob ? await bullJob.getState() : 'unknown';
      if (state === 'completed' || state === 'failed') await this.finished(job.jobId, queue);
      else if (state === 'unknown') await this.end(job, 'failed', 'the job was lost from the queue');
    }
    this.refreshPositionsSoon();
  }

  /** The first view of a job just queued. */
  async showQueued(job: JobRecord): Promise<void> {
    const standing = await this.options.producer.standing(job.jobId);
    const current = this.options.store.jobs.get(job.jobId);
    if (current === null || !isOpen(current)) return;
    const shown = await this.options.messages.show(current, () => queuedView(current, standing));
    if (shown) this.options.store.jobs.setMessageId(job.jobId, shown.messageId);
  }

  /** Ends a job that will never run (cancelled before it started). */
  async end(job: JobRecord, outcome: 'failed' | 'cancelled', reason: string | null): Promise<void> {
    if (!this.options.store.jobs.finish(job.jobId, outcome, reason)) return;
    await this.options.messages.show(job, (inChannel) => endedView(job, outcome, reason, inChannel), { final: true });
    this.refreshPositionsSoon();
  }

  async close(): Promise<void> {
    if (this.positionTimer) clearTimeout(this.positionTimer);
    this.positionTimer = null;
    await Promise.all(this.events.map((events) => events.close()));
    await Promise.allSettled([...this.inFlight]);
    await this.options.messages.drain();
  }

  private track(work: Promise<unknown>): void {
    const tracked = work.catch((error: Error) => this.options.log(`delivery: ${error.message}`)).finally(() => this.inFlight.delete(tracked));
    this.inFlight.add(tracked);
  }

  private queueOf(job: JobRecord): AnyQueue {
    const { producer } = this.options;
    return (job.kind === 'train' ? producer.training : producer.generation) as unknown as AnyQueue;
  }

  private async started(jobId: string): Promise<void> {
    this.refreshPositionsSoon();
    const job = this.options.store.jobs.get(jobId);
    if (job === null || !isOpen(job)) return;
    this.options.store.jobs.markRunning(jobId);
    await this.options.messages.show(job, () => queuedView(job, { state: 'running', etaMs: null }));
  }

  private async progressed(jobId: string, progress: JobProgress): Promise<void> {
    const job = this.options.store.jobs.get(jobId);
    if (job === null || !isOpen(job) || typeof progress !== 'object' || progress === null) return;
    await this.options.messages.show(job, () => progressView(job, progress));
  }

  private async finished(jobId: string, queue: AnyQueue): Promise<void> {
    this.refreshPositionsSoon();
    const job = this.options.store.jobs.get(jobId);
    if (job === null || !isOpen(job)) return;
    const bullJob = await queue.getJob(jobId);
    const state = bullJob ? await bullJob.getState() : 'unknown';
    // A failed attempt that will be retried is not the end of the job.
    if (state !== 'completed' && state !== 'failed') return;
    if (state === 'failed') {
      const reason = bullJob!.failedReason ?? null;
      await this.end(job, reason === CANCELLED_REASON ? 'cancelled' : 'failed', reason === CANCELLED_REASON ? null : reason);
      return;
    }
    if (job.kind === 'train') {
      const result = bullJob!.returnvalue as TrainJobResult;
      if (!this.options.store.jobs.finish(jobId, 'delivered')) return;
      await this.options.messages.show(job, (inChannel) => trainedView(job, result.loraVersion, inChannel), { final: true });
      return;
    }
    await this.deliverImages(job, bullJob as Job<unknown, GenerationJobResult>);
  }

  private async deliverImages(job: JobRecord, bullJob: Job<unknown, GenerationJobResult>): Promise<void> {
    const { store, results, messages, log } = this.options;
    const result = bullJob.returnvalue;
    const panels: Buffer[] = [];
    for (const panel of result.panels) {
      const png = await results.get(panel.image);
      if (png === null) {
        await this.end(job, 'failed', 'the finished images expired before they could be delivered');
        return;
      }
      panels.push(png);
    }
    const composite = result.composite ? await results.get(result.composite) : null;
    // Kept before the delivery is claimed, so a vote on the message always finds the lossless original.
    if (store.images.get(job.jobId, 0) === null) {
      const keptUntil = this.now() + this.options.imageRetentionMs;
      store.images.keep(panels.map((png, panelIndex) => ({ png, provenance: provenanceOf(job, result, panelIndex, bullJob.finishedOn ?? this.now()) })), keptUntil);
    }
    const files = attachmentsFor(panels, composite);
    if (!store.jobs.finish(job.jobId, 'delivered')) return;
    const shownFile = files[0]!;
    const shown = await messages.show(job, (inChannel) => resultView(job, result, { filename: shownFile.name }, inChannel), { final: true, files });
    if (!shown) return;
    store.jobs.setMessageId(job.jobId, shown.messageId);
    store.images.attachMessage(job.jobId, shown.messageId);
    if (result.panels.length === 1) {
      await messages.addVoteReaction(shown).catch((error: Error) => log(`job ${job.jobId}: could not add the vote reaction: ${error.message}`));
    }
    log(`job ${job.jobId} delivered${shown.inChannel ? ' to the channel' : ''}`);
  }

  private refreshPositionsSoon(): void {
    if (this.positionTimer) return;
    this.positionTimer = setTimeout(() => {
      this.positionTimer = null;
      this.track(this.refreshPositions());
    }, POSITION_REFRESH_MS);
  }

  private async refreshPositions(): Promise<void> {
    for (const job of this.options.store.jobs.unfinished()) {
      if (job.status === 'queued') await this.showQueued(job);
    }
  }
}

function isOpen(job: JobRecord): boolean {
  return job.status === 'queued' || job.status === 'running';
}

function provenanceOf(job: JobRecord, result: GenerationJobResult, panelIndex: number, generatedAt: number): PanelProvenance {
  const panel = result.panels[panelIndex]!;
  const { settings } = job.request as unknown as GenerationRequestRecord;
  return {
    jobId: job.jobId,
    kind: job.kind as PanelProvenance['kind'],
    panelIndex,
    caption: panel.caption,
    prompt: settings.prompt,
    negativePrompt: panel.negativePrompt,
    seed: result.seed,
    steps: settings.steps,
    guidanceScale: settings.guidanceScale,
    width: panel.image.width,
    height: panel.image.height,
    model: result.model,
    loraVersion: panel.loraStrength !== 0 && result.lora ? result.lora.version : null,
    loraStrength: panel.loraStrength,
    requesterId: job.userId,
    guildId: job.guildId,
    channelId: job.channelId,
    workerId: result.workerId,
    generatedAt,
  };
}

/**
 * The message's files, the one the embed shows first: the triptych, then each lossless panel while Discord's limits
 * allow (a panel over them is left out, not shrunk: the archive keeps it either way).
 */
export function attachmentsFor(panels: Buffer[], composite: Buffer | null): OutgoingFile[] {
  const candidates: OutgoingFile[] = [
    ...(composite ? [{ name: 'triptych.png', data: composite }] : []),
    ...panels.map((data, index) => ({ name: `panel-${index + 1}.png`, data })),
  ];
  const files: OutgoingFile[] = [];
  let totalBytes = 0;
  for (const file of candidates) {
    if (file.data.byteLength > MAX_ATTACHMENT_BYTES || totalBytes + file.data.byteLength > MAX_REQUEST_BYTES) continue;
    files.push(file);
    totalBytes += file.data.byteLength;
  }
  if (files.length === 0) throw new Error(`the images (${candidates.map((file) => file.data.byteLength).join(', ')} bytes) are all over Discord's ${MAX_ATTACHMENT_BYTES}-byte attachment limit`);
  return files;
}
