import os from 'node:os';
import path from 'node:path';
import { UnrecoverableError, WaitingError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import { ImageGenerator, InferenceThreadError } from '../gpu/image-generator.js';
import { NO_BATCH_LIMITS, type BatchLimits } from '../gpu/unet-batches.js';
import { formatDevice, type Device } from '../gpu/providers.js';
import {
  QUEUE_NAMES, TRAIN_JOB_NAME, validateJobData, type GenerationJobData, type GenerationJobName,
  type GenerationJobResult, type JobProgress, type TrainJobData, type TrainJobResult,
} from '../queue/contracts.js';
import { isCancelRequested, listenForCancels } from '../queue/control.js';
import { recordDuration } from '../queue/durations.js';
import { QueueKeys } from '../queue/keys.js';
import { announceModel, MODEL_ANNOUNCE_INTERVAL_MS } from '../queue/models.js';
import { releasePlace } from '../queue/places.js';
import { ResultsStore } from '../queue/results-store.js';
import { TrainingTransfer } from '../queue/training-transfer.js';
import { planGeneration, storeImages } from './generation-job.js';
import { contactSheetPng } from './contact-sheet.js';
import { jobFailure } from './failures.js';
import { lossCurvePng } from './loss-curve.js';
import { LoraVersions } from './lora-versions.js';
import { runTrainingJob } from './training-job.js';

// A process that owns one GPU: it loads the pipeline once and takes jobs one at a time. Several of them, on one
// host or many, share a Redis and split the work through BullMQ alone. Inference runs in the pipeline's own
// thread, so this event loop stays free for BullMQ's lock renewals and the cancel channel. If that thread dies, the
// job it ran goes back to the queue for another worker and `fault` settles: the process should then exit, so that
// its supervisor starts a fresh one with a working thread.

export const PROGRESS_INTERVAL_MS = 500;
/** LoRA versions one batch may hold: a validation triptych or a judging pair puts the served one beside a candidate. */
export const WORKER_LORA_SLOTS = 2;
export const DEFAULT_LOCK_DURATION_MS = 30_000;
export const DEFAULT_STALLED_INTERVAL_MS = 30_000;
export const DEFAULT_SHUTDOWN_GRACE_MS = 60_000;

const CANCELLED = 'cancelled';
const SHUTTING_DOWN = 'shutting-down';

export interface GpuWorkerOptions {
  modelDir: string;
  /** What results and the bot call the model: its folder's name, or its Hub repo's. */
  modelName: string;
  device: Device;
  /** This worker's own LoRA (LORA_PATH) and its version, or null. */
  lora: { version: string; path: string } | null;
  /** An SDXL refiner folder: servers that turn the refiner on hand their images' last steps to it. */
  refinerDir?: string | null;
  /** How many UNet rows one run may hold on this device (a triptych is six). */
  batchLimits?: BatchLimits;
  prefix: string;
  /**
   * Redis connections this worker uses and its owner closes: BullMQ's two workers each block on their own
   * (`generation`, `training`), `subscriber` is given over to the cancel channel, `commands` serves the rest.
   */
  connections: { generation: Redis; training: Redis; subscriber: Redis; commands: Redis };
  resultTtlSeconds: number;
  /** Where the LoRA versions fetched from Redis are kept. */
  loraCacheDir: string;
  lockDurationMs?: number;
  stalledIntervalMs?: number;
  /** How long SIGTERM lets a running job finish before handing it back to the queue. */
  shutdownGraceMs?: number;
  /** How long the inference thread may take over one step before it is given up as hung. */
  stepTimeoutMs?: number;
  /** Another trainer than the built-in engine (see trainer.ts). */
  trainerCommand?: string | null;
  /** How long TRAINER_COMMAND may go without reporting progress before it is stopped. */
  trainerProgressTimeoutMs?: number;
  /** The built-in engine recomputes activations instead of keeping them: SDXL at 1024² then fits 24 GB. */
  gradientCheckpointing?: boolean;
  log?: (line: string) => void;
}

function throttledProgress(job: Job, intervalMs: number): (progress: JobProgress) => void {
  let lastSentAt = 0;
  return (progress) => {
    const now = performance.now();
    // The last step always goes out, so a client never sees a job stall at 95 %.
    if (now - lastSentAt < intervalMs && progress.step < progress.totalSteps) return;
    lastSentAt = now;
    void job.updateProgress(progress).catch(() => {});
  };
}

export class GpuWorker {
  readonly id: string;
  private readonly keys: QueueKeys;
  private readonly results: ResultsStore;
  private readonly transfer: TrainingTransfer;
  private readonly loraVersions: LoraVersions;
  private generationWorker: Worker<GenerationJobData, GenerationJobResult, GenerationJobName> | null = null;
  private trainingWorker: Worker<TrainJobData, TrainJobResult, typeof TRAIN_JOB_NAME> | null = null;
  private announceTimer: NodeJS.Timeout | null = null;
  private readonly log: (line: string) => void;
  private generator!: ImageGenerator;
  private reportFault!: (error: InferenceThreadError) => void;
  /** Settles when the inference thread dies on its own; this worker serves nothing after that. */
  readonly fault = new Promise<InferenceThreadError>((resolve) => { this.reportFault = resolve; });

  private constructor(
    private readonly options: GpuWorkerOptions,
    generator: ImageGenerator,
    private readonly lora: { version: string; path: string } | null,
  ) {
    this.use(generator);
    this.id = `${os.hostname()}:${process.pid}:${formatDevice(options.device)}`;
    this.keys = new QueueKeys(options.prefix);
    this.results = new ResultsStore(options.connections.commands, this.keys, options.resultTtlSeconds);
    this.transfer = new TrainingTransfer(options.connections.commands, this.keys);
    // Version names are a deployment's own: two deployments (queue prefixes) may both have a wrong-v1.
    this.loraVersions = new LoraVersions(this.transfer, path.join(options.loraCacheDir, options.prefix), lora);
    this.log = options.log ?? (() => {});
  }

  /** Loads the models, then starts taking jobs. */
  static async start(options: GpuWorkerOptions): Promise<GpuWorker> {
    const worker = new GpuWorker(options, await GpuWorker.loadGenerator(options), options.lora);
    for (const notice of worker.generator.loaded.notices) worker.log(`note: ${notice}`);
    await worker.listen();
    return worker;
  }

  /** The UNet always gets LoRA branches: any job may name any version, whose weights are fed without a rebuild. */
  private static loadGenerator(options: GpuWorkerOptions): Promise<ImageGenerator> {
    const pipeline = {
      loraPath: options.lora?.path ?? null, loraSlots: WORKER_LORA_SLOTS, refinerDir: options.refinerDir ?? null, batchLimits: options.batchLimits ?? NO_BATCH_LIMITS,
    };
    return ImageGenerator.start(options.modelDir, options.device, pipeline, { stepTimeoutMs: options.stepTimeoutMs });
  }

  private use(generator: ImageGenerator): void {
    this.generator = generator;
    void generator.died.then((error) => this.reportFault(error));
  }

  /** Whether the inference thread has stopped within `timeoutMs`: one stuck in native code never does. */
  async inferenceThreadStopped(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
    const stopped = await Promise.race([this.generator.exited.then(() => true as const), timedOut]);
    clearTimeout(timer);
    return stopped;
  }

  private async listen(): Promise<void> {
    const { connections, prefix } = this.options;
    const common = {
      prefix,
      concurrency: 1,
      lockDuration: this.options.lockDurationMs ?? DEFAULT_LOCK_DURATION_MS,
      stalledInterval: this.options.stalledIntervalMs ?? DEFAULT_STALLED_INTERVAL_MS,
    };
    this.generationWorker = new Worker(QUEUE_NAMES.generation, (job, token, signal) => this.generate(job, token, signal), {
      ...common,
      connection: connections.generation,
    });
    this.trainingWorker = new Worker(QUEUE_NAMES.training, (job, _token, signal) => this.train(job, signal), {
      ...common,
      connection: connections.training,
    });
    const workers = [this.generationWorker, this.trainingWorker];
    for (const worker of workers) {
      worker.on('failed', (job, error) => this.log(`job ${job?.id} (${job?.name}) failed: ${error.message}`));
      worker.on('completed', (job) => this.log(`job ${job.id} (${job.name}) done`));
      worker.on('error', (error) => this.log(`queue error: ${error.message}`));
    }
    await listenForCancels(connections.subscriber, this.keys, (jobId) => {
      if (this.generationWorker?.cancelJob(jobId, CANCELLED) || this.trainingWorker?.cancelJob(jobId, CANCELLED)) {
        this.log(`job ${jobId}: cancelling`);
      }
    });
    await Promise.all(workers.map((worker) => worker.waitUntilReady()));
    await this.loraVersions.share();
    await this.announceModel();
    this.announceTimer = setInterval(() => void this.announceModel().catch((error: Error) => this.log(`could not announce the model: ${error.message}`)), MODEL_ANNOUNCE_INTERVAL_MS).unref();
    const abilities = [this.lora ? `LoRA ${this.lora.version}` : 'no LoRA', this.options.refinerDir ? `refiner ${this.options.refinerDir}` : 'no refiner', `trains with ${this.options.trainerCommand ? 'TRAINER_COMMAND' : 'the built-in engine'}`];
    this.log(`worker ${this.id} ready: ${this.options.modelDir}, ${abilities.join(', ')}`);
  }

  private async generate(
    job: Job<GenerationJobData, GenerationJobResult, GenerationJobName>,
    token: string | undefined,
    signal: AbortSignal | undefined,
  ): Promise<GenerationJobResult> {
    try {
      return await this.runGeneration(job, signal);
    } catch (error) {
      if (signal?.aborted) return this.stopped(job, token, signal.reason);
      // The thread, not the job, failed: another worker takes the job while this one is replaced.
      if (error instanceof InferenceThreadError) return this.handBack(job, token, error.message);
      throw jobFailure(error);
    }
  }

  private async runGeneration(
    job: Job<GenerationJobData, GenerationJobResult, GenerationJobName>,
    signal: AbortSignal | undefined,
  ): Promise<GenerationJobResult> {
    const started = performance.now();
    const jobId = job.id!;
    const { commands } = this.options.connections;
    const requester = (job.data as Partial<GenerationJobData>).requester;
    if (typeof requester?.userId === 'string') await releasePlace(commands, this.keys, jobId, { userId: requester.userId, guildId: requester.guildId ?? null });
    if (await isCancelRequested(commands, this.keys, jobId)) throw new UnrecoverableError(CANCELLED);
    const plan = planGeneration(job.name, job.data);
    plan.request.loraPaths = await Promise.all(plan.loras.map((choice) => this.loraVersions.resolve(choice.version)));
    this.log(`job ${jobId} (${job.name}) started, attempt ${job.attemptsMade + 1}`);

    const output = await this.generator.generate(plan.request, { signal, onProgress: throttledProgress(job, PROGRESS_INTERVAL_MS) });
    const images = await storeImages(plan, output.panels, (name, png, size) => this.results.put(jobId, name, png, size));
    const durationMs = performance.now() - started;
    await recordDuration(commands, this.keys, job.name, durationMs);
    return {
      ...images,
      seed: plan.request.seed,
      model: this.options.modelName,
      lora: plan.lora,
      notices: output.notices,
      workerId: this.id,
      durationMs,
      expiresAt: Date.now() + this.results.ttlSeconds * 1000,
    };
  }

  /** Tells the bot (and `enqueue`) which sizes this model draws, so that a size it cannot is refused before a GPU tries. */
  private announceModel(): Promise<void> {
    const { multipleOf, defaultSizePx, hasRefiner } = this.generator.loaded.capabilities;
    return announceModel(this.options.connections.commands, this.keys, { name: this.options.modelName, sizeMultiple: multipleOf, defaultSizePx, hasRefiner });
  }

  /** A cancelled job fails for good; one interrupted by shutdown goes back to the queue for another worker. */
  private async stopped(job: Job, token: string | undefined, reason: unknown): Promise<never> {
    if (reason === SHUTTING_DOWN) return this.handBack(job, token, 'this worker is shutting down');
    throw new UnrecoverableError(CANCELLED);
  }

  /** Not a failed attempt: the job waits again, as it was, for the next worker. */
  private async handBack(job: Job, token: string | undefined, why: string): Promise<never> {
    await job.moveToWait(token);
    this.log(`job ${job.id} handed back to the queue: ${why}`);
    throw new WaitingError();
  }

  /**
   * Training waits until no generation runs here, then holds the GPU until it is done: the inference sessions are
   * released first (the training graph needs the memory) and loaded again after.
   */
  private async train(job: Job<TrainJobData, TrainJobResult, typeof TRAIN_JOB_NAME>, signal: AbortSignal | undefined): Promise<TrainJobResult> {
    try {
      return await this.runTraining(job, signal);
    } catch (error) {
      if (signal?.aborted) throw new UnrecoverableError(CANCELLED);
      throw jobFailure(error);
    }
  }

  private async runTraining(job: Job<TrainJobData, TrainJobResult, typeof TRAIN_JOB_NAME>, signal: AbortSignal | undefined): Promise<TrainJobResult> {
    const data = validateJobData(TRAIN_JOB_NAME, job.data);
    if (await isCancelRequested(this.options.connections.commands, this.keys, job.id!)) throw new UnrecoverableError(CANCELLED);
    const started = performance.now();
    await this.generationWorker!.pause();
    try {
      this.log(`job ${job.id} (train ${data.version}) holds the GPU`);
      await this.generator.close();
      const { options } = this;
      const outcome = await runTrainingJob(data, {
        modelDir: options.modelDir,
        device: options.device,
        transfer: this.transfer,
        loraVersions: this.loraVersions,
        trainerCommand: options.trainerCommand ?? null,
        trainerProgressTimeoutMs: options.trainerProgressTimeoutMs,
        gradientCheckpointing: options.gradientCheckpointing ?? false,
        signal: signal ?? new AbortController().signal,
        onProgress: throttledProgress(job, PROGRESS_INTERVAL_MS),
        onImages: async (files) => {
          const sheet = await contactSheetPng(files);
          const contactSheet = await this.results.put(job.id!, 'contact-sheet', sheet.png, sheet);
          await job.updateProgress({ step: 0, totalSteps: data.steps, etaMs: 0, contactSheet } satisfies JobProgress);
        },
        log: (line) => this.log(`trainer: ${line}`),
      });
      const curve = await lossCurvePng(outcome.losses);
      const lossCurve = curve === null ? null : await this.results.put(job.id!, 'loss-curve', curve.png, curve);
      return { version: data.version, ...outcome, lossCurve, workerId: this.id, durationMs: performance.now() - started };
    } finally {
      this.use(await GpuWorker.loadGenerator(this.options));
      this.generationWorker!.resume();
    }
  }

  /**
   * Stops taking jobs; a running job may finish within the grace period, after which it is stopped between two
   * steps and handed back to the queue. Resolves once every connection this worker made is closed.
   */
  async close(): Promise<void> {
    if (this.announceTimer) clearInterval(this.announceTimer);
    const workers = [this.generationWorker, this.trainingWorker].filter((worker): worker is NonNullable<typeof worker> => worker !== null);
    const closing = Promise.all(workers.map((worker) => worker.close()));
    const graceMs = this.options.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
    let timer: NodeJS.Timeout | undefined;
    const graceOver = new Promise<'grace-over'>((resolve) => { timer = setTimeout(() => resolve('grace-over'), graceMs); });
    if (await Promise.race([closing, graceOver]) === 'grace-over') {
      for (const worker of workers) worker.cancelAllJobs(SHUTTING_DOWN);
      await closing;
    }
    clearTimeout(timer);
    await this.generator.close();
  }
}
