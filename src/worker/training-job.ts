import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { trainLora } from '../gpu/training/lora-trainer.js';
import { TRAINING_DEFAULTS } from '../gpu/training/recipe.js';
import type { Device } from '../gpu/providers.js';
import type { JobProgress, TrainJobData } from '../queue/contracts.js';
import type { TrainingTransfer } from '../queue/training-transfer.js';
import type { LoraVersions } from './lora-versions.js';
import { runTrainer } from './trainer.js';

// One train job on a worker, from the snapshot in Redis to the new version's file in Redis:
//   1. the snapshot's images into a folder of the job's own (nothing is read from this host's DATA_DIR);
//   2. the file of the LoRA version to continue from;
//   3. training: the built-in engine in a thread, or TRAINER_COMMAND;
//   4. the file to Redis under the version's name, where every worker and the bot can fetch it.

export interface TrainingJobEnvironment {
  modelDir: string;
  device: Device;
  transfer: TrainingTransfer;
  loraVersions: LoraVersions;
  trainerCommand: string | null;
  /** How long TRAINER_COMMAND may go without reporting progress; the trainer's default when undefined. */
  trainerProgressTimeoutMs: number | undefined;
  gradientCheckpointing: boolean;
  signal: AbortSignal;
  onProgress: (progress: JobProgress) => void;
  /** The snapshot's images are here, in training order, before training starts. */
  onImages: (files: readonly string[]) => Promise<void>;
  log: (line: string) => void;
}

export interface TrainingJobOutcome {
  steps: number;
  losses: number[];
  finalLoss: number | null;
}

export async function runTrainingJob(data: TrainJobData, environment: TrainingJobEnvironment): Promise<TrainingJobOutcome> {
  const { transfer, signal } = environment;
  const workDir = mkdtempSync(path.join(tmpdir(), `wrongbot-train-${data.version}-`));
  try {
    // 1. The snapshot's images.
    const dataDir = path.join(workDir, 'images');
    mkdirSync(dataDir);
    const images = await transfer.fetchImages(data.snapshot.images, dataDir);
    await environment.onImages(images);

    // 2. The LoRA to continue from.
    const initLora = data.baseVersion === null ? null : await environment.loraVersions.resolve(data.baseVersion);

    // 3. Training.
    const outPath = path.join(workDir, `${data.version}.safetensors`);
    let losses: number[];
    if (environment.trainerCommand !== null) {
      const outcome = await runTrainer(environment.trainerCommand, {
        modelDir: environment.modelDir, dataDir, images, prompt: TRAINING_DEFAULTS.prompt, steps: data.steps, seed: data.seed, initLora, outPath,
      }, { signal, onProgress: environment.onProgress, log: environment.log, progressTimeoutMs: environment.trainerProgressTimeoutMs });
      losses = outcome.losses;
    } else {
      const outcome = await trainLora({
        modelDir: environment.modelDir,
        device: environment.device,
        gradientCheckpointing: environment.gradientCheckpointing,
        recipe: { steps: data.steps, seed: data.seed },
        images,
        draws: { kind: 'seeded' },
        start: initLora === null ? { kind: 'fresh' } : { kind: 'lora', path: initLora },
        outPath,
        checkpoint: null,
      }, {
        signal,
        onProgress: ({ step, totalSteps, etaMs, loss }) => environment.onProgress({ step, totalSteps, etaMs, loss }),
      });
      for (const note of outcome.notes) environment.log(`note: ${note}`);
      losses = outcome.losses;
    }

    // 4. The file, for every worker and the bot.
    await transfer.putLora(data.version, outPath);
    return { steps: data.steps, losses, finalLoss: losses.at(-1) ?? null };
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}
