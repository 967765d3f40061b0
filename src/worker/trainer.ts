import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { JobProgress } from '../queue/contracts.js';

// Another trainer than the built-in engine (diffusers' train_dreambooth_lora_sdxl.py behind a wrapper, say), run as
// its own process: TRAINER_COMMAND. It trains what the built-in engine would, and the worker does the rest (the
// images from Redis, the file back to Redis, the version's name).
//
// Protocol: the command gets the training as JSON in WRONGBOT_TRAIN_JOB (ExternalTraining) and prints JSON lines on
// stdout, as often as it likes:
//   {"progress": {"step": 10, "totalSteps": 1000, "loss": 0.1234}}      (loss optional)
// It exits 0 once the LoRA file (diffusers' keys) is at `outPath`. Anything else on stdout goes to the log; a non-zero
// exit fails the job with the end of its stderr.

export interface ExternalTraining {
  modelDir: string;
  /** The snapshot's images, one file each, in this folder and listed in `images`. */
  dataDir: string;
  images: string[];
  prompt: string;
  steps: number;
  seed: number;
  /** The LoRA to continue from, or null. */
  initLora: string | null;
  outPath: string;
}

export interface TrainerOutcome {
  /** The losses the trainer reported, in order (it may report fewer than one a step). */
  losses: number[];
}

const STDERR_TAIL_LINES = 20;

export class TrainerError extends Error {
  override name = 'TrainerError';
}

export function runTrainer(
  command: string,
  training: ExternalTraining,
  options: { signal: AbortSignal; onProgress: (progress: JobProgress) => void; log: (line: string) => void },
): Promise<TrainerOutcome> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, {
      shell: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WRONGBOT_TRAIN_JOB: JSON.stringify(training) },
    });
    const onAbort = () => child.kill('SIGTERM');
    options.signal.addEventListener('abort', onAbort, { once: true });
    const losses: number[] = [];
    const stderrTail: string[] = [];
    createInterface({ input: child.stdout }).on('line', (line) => {
      let message: { progress?: { step?: unknown; totalSteps?: unknown; loss?: unknown } };
      try {
        message = JSON.parse(line) as typeof message;
      } catch {
        options.log(line);
        return;
      }
      const { progress } = message;
      if (!progress || typeof progress.step !== 'number' || typeof progress.totalSteps !== 'number' || progress.totalSteps <= 0) {
        options.log(line);
        return;
      }
      const loss = typeof progress.loss === 'number' ? progress.loss : undefined;
      if (loss !== undefined) losses.push(loss);
      const elapsedMs = performance.now() - started;
      const etaMs = progress.step > 0 ? (elapsedMs / progress.step) * (progress.totalSteps - progress.step) : 0;
      options.onProgress({ step: progress.step, totalSteps: progress.totalSteps, etaMs, ...(loss === undefined ? {} : { loss }) });
    });
    createInterface({ input: child.stderr }).on('line', (line) => {
      stderrTail.push(line);
      if (stderrTail.length > STDERR_TAIL_LINES) stderrTail.shift();
    });
    child.once('error', (error) => reject(new TrainerError(`cannot run the trainer (${command}): ${error.message}`)));
    child.once('close', (code, signal) => {
      options.signal.removeEventListener('abort', onAbort);
      if (options.signal.aborted) reject(options.signal.reason);
      else if (code !== 0) reject(new TrainerError(`the trainer exited with ${signal ?? `code ${code}`}: ${stderrTail.join(' | ') || 'no output'}`));
      else if (!existsSync(training.outPath)) reject(new TrainerError(`the trainer exited without writing ${training.outPath}`));
      else resolve({ losses });
    });
  });
}
