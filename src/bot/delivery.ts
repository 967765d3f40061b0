import { QueueEvents, type Job, type Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { QUEUE_NAMES, type GenerationJobResult, type JobProgress, type TrainJobResult } from '../queue/contracts.js';
import type { JobProducer, JobStanding } from '../queue/producer.js';
import type { ResultsStore } from '../queue/results-store.js';
import type { BotStore } from '../store/database.js';
import type { PanelProvenance } from '../store/images.js';
import type { JobRecord } from '../store/jobs.js';
import type { JobMessages, OutgoingFile } from './job-messages.js';
import {
  clip, endedView, progressView, queuedView, resultView, standingLine, trainedView, type GenerationRequestRecord,
} from './views.js';

// Hears the queue's events and keeps each job's message current: position while it waits, steps while it runs, then
// its result. The database, not memory, says what is still owed: a job stays open until its result is on Discord, so
// a failed send is tried again (reconcile, every RECONCILE_INTERVAL_MS and at start) and a job finished while no bot
// was running is delivered when one starts.

/** Positions shift whenever a job starts or ends; recomputing them for every event would flood Discord. */
export const POSITION_REFRESH_MS = 2_000;
/**
 * Each job start or end moves every waiting job up: with hundreds waiting, editing them all at once would run into
 * Discord's rate limits. A refresh edits at most this many, those nearest the front first, and the next refresh
 * goes on with the rest.
 */
export const MAX_POSITION_EDITS_PER_REFRESH = 10;
export const RECONCILE_INTERVAL_MS = 60_000;
/** How long stopping the bot waits for its queue listeners to close; a healthy Redis closes them at once. */
export const QUEUE_EVENTS_CLOSE_GRACE_MS = 2_000;
/** A result Discord refuses this many times (no access to the channel, say) is given up on. */
export const MAX_DELIVERY_ATTEMPTS = 5;
/** Discord's default limit for one attachment, and for one whole request. */
export const MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024;
export const MAX_REQUEST_BYTES = 25 * 1024 * 1024;
const CANCELLED_REASON = 'cancelled';
const MAX_PRIVATE_REASON_CHARS = 300;

export interface DeliveryOptions {
  store: BotStore;
  producer: JobProducer;
  results: ResultsStore;
  messages: JobMessages;
  /** How long delivered panels are kept on disk for late votes. */
  imageRetentionMs: number;
  log: (line: string) => void;
  /** Whether votes in this server curate the training set: its results then get 👎 buttons and the bot's own 👎. */
  curates: (guildId: string | null) => boolean;
  /** A training's candidate has been shown: what comes next (its validation images). */
  onTrained?: (training: JobRecord, candidate: string) => Promise<void>;
  now?: () => number;
}

type AnyQueue = Queue<unknown, unknown, string>;

/** An outcome that ends a job without a result, with what the member is told in private. */
class JobEnded extends Error {
  constructor(readonly outcome: 'failed' | 'cancelled', readonly reason: string | null) {
    super(reason ?? outcome);
  }
}

export class Delivery {
  private readonly events: QueueEvents[] = [];
  private positionTimer: NodeJS.Timeout | null = null;
  private positionsRefreshing: Promise<void> | null = null;
  private reconcileTimer: NodeJS.Timeout | null = null;
  private readonly now: () => number;
  private readonly inFlight = new Set<Promise<unknown>>();
  /** Jobs whose result this process is sending now: a second event for one of them waits for the next reconcile. */
  private readonly delivering = new Set<string>();
  private readonly failedAttempts = new Map<string, number>();
  /** The place in the queue each waiting job's message shows, so that a refresh edits only those that moved. */
  private readonly shownStandings = new Map<string, string>();
  /** A training's contact sheet, until an edit of its message has carried it. */
  private readonly contactSheets = new Map<string, OutgoingFile>();

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
      // A job another worker took back after its worker died waits again: its message says so.
      events.on('waiting', ({ jobId, prev }) => { if (prev === 'active') this.track(this.requeued(jobId)); });
      events.on('removed', ({ jobId }) => this.track(this.removed(jobId)));
      events.on('error', (error) => this.options.log(`queue events (${name}): ${error.message}`));
      this.events.push(events);
    }
    await Promise.all(this.events.map((events) => events.waitUntilReady()));
    await this.reconcile();
    this.reconcileTimer = setInterval(() => this.track(this.reconcile()), RECONCILE_INTERVAL_MS);
  }

  /** Jobs the database still owes an answer for, checked against the queue: what finished meanwhile is delivered. */
  async reconcile(): Promise<void> {
    for (const job of this.options.store.jobs.unfinished()) {
      try {
        await this.finished(job.jobId, this.queueOf(job));
      } catch (error) {
        this.options.log(`job ${job.jobId}: ${(error as Error).message}`);
      }
    }
    this.refreshPositionsSoon();
  }

  /** The first view of a job just queued. */
  async showQueued(job: JobRecord): Promise<void> {
    const standing = job.kind === 'train' ? null : await this.options.producer.standing(job.jobId);
    await this.showWaiting(job.jobId, standing);
  }

  /**
   * Ends a job that will never give a result: the public message says so, the reason goes to the member privately.
   * `reason` is the bot's own words; a worker's goes through forMembers, as it may name the model's internals.
   */
  async end(job: JobRecord, outcome: 'failed' | 'cancelled', reason: string | null, forMembers: string | null = reason): Promise<void> {
    if (!this.options.store.jobs.finish(job.jobId, outcome, reason)) return;
    this.failedAttempts.delete(job.jobId);
    const { messages, log } = this.options;
    await messages.show(job, (inChannel) => endedView(job, outcome, inChannel), { final: true }).catch(() => {});
    if (reason !== null) log(`job ${job.jobId} ${outcome}: ${reason}`);
    if (forMembers !== null) await messages.privateNote(job, `Why: ${clip(forMembers.split('\n')[0]!, MAX_PRIVATE_REASON_CHARS)}`);
    this.refreshPositionsSoon();
  }

  async close(): Promise<void> {
    if (this.positionTimer) clearTimeout(this.positionTimer);
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    this.positionTimer = null;
    this.reconcileTimer = null;
    // BullMQ closes a QueueEvents only once its connection settles, which it never does if Redis is away (or the
    // connection is waiting to retry) when the bot is told to stop: the bot stops anyway after a grace period.
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(this.events.map((events) => events.close())),
      new Promise((resolve) => { grace = setTimeout(resolve, QUEUE_EVENTS_CLOSE_GRACE_MS); }),
    ]);
    clearTimeout(grace);
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

  private openJob(jobId: string): JobRecord | null {
    const job = this.options.store.jobs.get(jobId);
    return job !== null && (job.status === 'queued' || job.status === 'running') ? job : null;
  }

  /** Shows "queued" only while the job really waits, so a slow position lookup never covers its progress. */
  private async showWaiting(jobId: string, standing: JobStanding | null): Promise<void> {
    const job = this.openJob(jobId);
    if (job === null || job.status !== 'queued' || (standing !== null && standing.state !== 'waiting')) return;
    if (standing !== null) this.shownStandings.set(jobId, standingLine(standing));
    const shown = await this.options.messages.show(job, () => queuedView(job, standing));
    if (shown && job.messageId === null) this.options.store.jobs.setMessageId(job.jobId, shown.messageId);
  }

  private async started(jobId: string): Promise<void> {
    this.refreshPositionsSoon();
    const job = this.openJob(jobId);
    if (job === null) return;
    this.options.store.jobs.markRunning(jobId);
    await this.options.messages.show(job, () => queuedView(job, { state: 'running', etaMs: null }));
  }

  private async requeued(jobId: string): Promise<void> {
    const job = this.openJob(jobId);
    if (job === null) return;
    const standing = await this.options.producer.standing(jobId);
    if (standing.state === 'waiting') await this.options.messages.show(job, () => queuedView(job, standing));
  }

  private async progressed(jobId: string, progress: JobProgress): Promise<void> {
    const job = this.openJob(jobId);
    if (job === null || !isProgress(progress)) return;
    if (progress.contactSheet !== undefined && !this.contactSheets.has(jobId)) {
      const png = await this.options.results.get(progress.contactSheet);
      if (png !== null) this.contactSheets.set(jobId, { name: CONTACT_SHEET_FILE, data: png });
    }
    // Attached until one edit carries it: later edits leave a message's attachments as they are.
    const sheet = this.contactSheets.get(jobId);
    const shown = await this.options.messages.show(job, () => progressView(job, progress), { files: sheet ? [sheet] : [] });
    if (shown !== null && sheet !== undefined) this.contactSheets.delete(jobId);
  }

  private async removed(jobId: string): Promise<void> {
    const job = this.openJob(jobId);
    // Removed from the queue before it ran: /cancel, ❌, or an operator's tool.
    if (job !== null) await this.end(job, 'cancelled', null);
  }

  private async finished(jobId: string, queue: AnyQueue): Promise<void> {
    this.refreshPositionsSoon();
    const job = this.openJob(jobId);
    if (job === null || this.delivering.has(jobId)) return;
    const bullJob = await queue.getJob(jobId);
    if (!bullJob) {
      await this.end(job, 'failed', 'the job was lost from the queue');
      return;
    }
    const state = await bullJob.getState();
    // Still waiting or running (a failed attempt that will be retried is not the end of the job).
    if (state !== 'completed' && state !== 'failed') return;
    if (state === 'failed') {
      const reason = bullJob.failedReason ?? null;
      if (reason === CANCELLED_REASON) await this.end(job, 'cancelled', null);
      else await this.end(job, 'failed', reason, workerFailureForMembers(reason, job.jobId));
      return;
    }
    this.delivering.add(jobId);
    try {
      await this.deliver(job, bullJob);
      this.failedAttempts.delete(jobId);
    } catch (error) {
      if (error instanceof JobEnded) {
        await this.end(job, error.outcome, error.reason);
        return;
      }
      const attempts = (this.failedAttempts.get(jobId) ?? 0) + 1;
      this.failedAttempts.set(jobId, attempts);
      if (attempts >= MAX_DELIVERY_ATTEMPTS) {
        // Given up: the message, still on "Starting…" with a live ❌, says so, and the member learns why.
        await this.end(job, 'failed', `Discord refused the result ${attempts} times: ${(error as Error).message}`,
          'the image was made, but Discord refused the message that carries it; an admin can find why in the bot\'s log.');
      }
      throw error;
    } finally {
      this.delivering.delete(jobId);
    }
  }

  private async deliver(job: JobRecord, bullJob: Job): Promise<void> {
    if (job.kind === 'train') {
      const result = bullJob.returnvalue as TrainJobResult;
      const snapshot = this.options.store.trainings.snapshotOfJob(job.jobId);
      if (snapshot !== null) this.options.store.trainings.addCandidate(snapshot, result.finalLoss);
      const curve = result.lossCurve === null ? null : await this.options.results.get(result.lossCurve);
      const files = curve === null ? [] : [{ name: LOSS_CURVE_FILE, data: curve }];
      const shown = await this.options.messages.show(job, (inChannel) => trainedView(job, result, curve === null ? null : { filename: LOSS_CURVE_FILE }, inChannel), { final: true, files });
      if (shown && this.options.store.jobs.finish(job.jobId, 'delivered')) {
        await this.options.onTrained?.(job, result.version).catch((error: Error) => this.options.log(`job ${job.jobId}: could not queue the validation: ${error.message}`));
      }
      return;
    }
    const result = bullJob.returnvalue as GenerationJobResult;
    const { store, results, messages, log } = this.options;
    const panels: Buffer[] = [];
    for (const panel of result.panels) {
      const png = await results.get(panel.image);
      if (png === null) throw new JobEnded('failed', 'the finished images expired before they could be delivered');
      panels.push(png);
    }
    const composite = result.composite ? await results.get(result.composite) : null;
    const files = attachmentsFor(panels, composite === null ? null : { name: job.kind === 'judge' ? 'pair.png' : 'triptych.png', data: composite });
    // Kept before anything is shown, so a vote on the message always finds the lossless original.
    if (store.images.get(job.jobId, 0) === null) {
      const keptUntil = this.now() + this.options.imageRetentionMs;
      const generatedAt = bullJob.finishedOn ?? this.now();
      store.images.keep(panels.map((png, panelIndex) => ({ png, provenance: provenanceOf(job, result, panelIndex, generatedAt) })), keptUntil);
    }
    if (isSynthetic(job)) {
      // Made for the training set, on purpose: it joins it at once, with no votes and no message.
      const kept = store.images.get(job.jobId, 0)!;
      const entry = store.dataset.curate(kept, []);
      store.jobs.finish(job.jobId, 'delivered');
      log(`job ${job.jobId}: synthetic image in the training set as entry ${entry.id}`);
      return;
    }
    const votes = this.options.curates(job.guildId);
    const shown = await messages.show(job, (inChannel) => resultView(job, result, { filename: files[0]!.name }, { inChannel, votes }), { final: true, files });
    if (!shown) return;
    store.jobs.setMessageId(job.jobId, shown.messageId);
    store.images.attachMessage(job.jobId, shown.messageId);
    store.jobs.finish(job.jobId, 'delivered');
    if (votes && result.panels.length === 1) {
      await messages.addVoteReaction(shown).catch((error: Error) => log(`job ${job.jobId}: could not add the vote reaction: ${error.message}`));
    }
    log(`job ${job.jobId} delivered${shown.inChannel ? ' to the channel' : ''}`);
  }

  private refreshPositionsSoon(): void {
    if (this.positionTimer) return;
    this.positionTimer = setTimeout(() => {
      this.positionTimer = null;
      // One refresh at a time; one asked for meanwhile runs after it.
      const previous = this.positionsRefreshing ?? Promise.resolve();
      const next = previous.then(() => this.refreshPositions()).finally(() => {
        if (this.positionsRefreshing === next) this.positionsRefreshing = null;
      });
      this.positionsRefreshing = next;
      this.track(next);
    }, POSITION_REFRESH_MS);
  }

  private async refreshPositions(): Promise<void> {
    // Only a reply (while its interaction lives) shows a place; the bot's own jobs have none.
    const queued = this.options.store.jobs.unfinished().filter((job) => job.status === 'queued' && job.kind !== 'train' && job.interactionToken !== null);
    for (const shown of this.shownStandings.keys()) if (!queued.some((job) => job.jobId === shown)) this.shownStandings.delete(shown);
    if (queued.length === 0) return;
    const standings = await this.options.producer.standings(queued.map((job) => job.jobId));
    const moved = queued
      .map((job) => ({ job, standing: standings.get(job.jobId)!, line: standingLine(standings.get(job.jobId)!) }))
      .filter(({ job, standing, line }) => standing.state === 'waiting' && this.shownStandings.get(job.jobId) !== line)
      .sort((a, b) => (a.standing as { position: number }).position - (b.standing as { position: number }).position);
    const now = moved.slice(0, MAX_POSITION_EDITS_PER_REFRESH);
    await Promise.all(now.map(({ job, standing }) => this.showWaiting(job.jobId, standing)));
    if (moved.length > now.length) this.refreshPositionsSoon();
  }
}

// An InvalidRequestError's message ("settings.width = 100 must be a multiple of 8") is about the member's own input.
const ABOUT_THE_INPUT = /^[\w.[\]]+ = .+ (must|is|contains) /;
const OUT_OF_MEMORY = /out of memory|failed to allocate|bad_alloc|\bOOM\b/i;

/**
 * What a member is told of a worker's failure: their input's fault in its own words, running out of memory as advice,
 * anything else (an onnxruntime node name, a file path) only as a pointer to the log, which has it in full.
 */
export function workerFailureForMembers(reason: string | null, jobId: string): string {
  const firstLine = reason?.split('\n')[0] ?? '';
  const withoutPrefix = firstLine.replace(/^invalid \w+ job: /, '');
  if (ABOUT_THE_INPUT.test(withoutPrefix)) return withoutPrefix;
  if (OUT_OF_MEMORY.test(firstLine)) return 'the worker ran out of memory for this image; a smaller size may work.';
  return `the worker could not make this image (job ${jobId}); an admin can find why in the bot's log.`;
}

/** Anything can write to Redis: a progress report that is not one is not shown. */
function isProgress(value: unknown): value is JobProgress {
  if (typeof value !== 'object' || value === null) return false;
  const { step, totalSteps, etaMs, loss } = value as Record<string, unknown>;
  const finite = (number: unknown) => typeof number === 'number' && Number.isFinite(number);
  return finite(step) && finite(totalSteps) && finite(etaMs) && (loss === undefined || finite(loss));
}

function isSynthetic(job: JobRecord): boolean {
  return (job.request as { synthetic?: boolean }).synthetic === true;
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
    // Results of workers from before per-panel versions name the job's one LoRA.
    loraVersion: panel.loraVersion !== undefined ? panel.loraVersion : panel.loraStrength !== 0 && result.lora ? result.lora.version : null,
    loraStrength: panel.loraStrength,
    requesterId: job.userId,
    guildId: job.guildId,
    channelId: job.channelId,
    workerId: result.workerId,
    generatedAt,
    ...(isSynthetic(job) ? { synthetic: true } : {}),
  };
}

/**
 * The message's files, the one the embed shows first: the triptych, then each lossless panel while Discord's limits
 * allow (a panel over them is left out, not shrunk: the archive keeps it either way).
 */
const LOSS_CURVE_FILE = 'loss-curve.png';
const CONTACT_SHEET_FILE = 'contact-sheet.png';

export function attachmentsFor(panels: Buffer[], composite: OutgoingFile | null): OutgoingFile[] {
  const candidates: OutgoingFile[] = [
    ...(composite ? [composite] : []),
    ...panels.map((data, index) => ({ name: `panel-${index + 1}.png`, data })),
  ];
  const files: OutgoingFile[] = [];
  let totalBytes = 0;
  for (const file of candidates) {
    if (file.data.byteLength > MAX_ATTACHMENT_BYTES || totalBytes + file.data.byteLength > MAX_REQUEST_BYTES) continue;
    files.push(file);
    totalBytes += file.data.byteLength;
  }
  if (files.length === 0) {
    throw new JobEnded('failed', `every image is over Discord's ${MAX_ATTACHMENT_BYTES / 2 ** 20} MiB attachment limit (${candidates.map((file) => file.data.byteLength).join(', ')} bytes)`);
  }
  return files;
}
