import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { JobProgress, TrainJobData } from '../queue/contracts.js';

// Training runs as its own process (diffusers' train_dreambooth_lora_sdxl.py or any wrapper around it): hours of
// GPU work that must not share the worker's heap, and the one thing tests replace, at this process boundary.
//
// Protocol: the command gets the job as JSON in WRONGBOT_TRAIN_JOB and prints JSON lines on stdout:
//   {"progress": {"step": 10, "totalSteps": 1000}}        as often as it likes
//   {"done": {"loraVersion": "wrong-v4", "loraPath": "/data/lora/wrong-v4.safetensors"}}   once, at the end
// Anything else on stdout is passed to the log; a non-zero exit fails the job with the end of its stderr.

export interface TrainerOutcome {
  loraVersion: string;
  loraPath: string;
}

const STDERR_TAIL_LINES = 20;

export class TrainerError extends Error {
  override name = 'TrainerError';
}

export function runTrainer(
  command: string,
  job: TrainJobData,
  options: { signal: AbortSignal; onProgress: (progress: JobProgress) => void; log: (line: string) => void },
): Promise<TrainerOutcome> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, {
      shell: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, WRONGBOT_TRAIN_JOB: JSON.stringify(job) },
    });
    const onAbort = () => child.kill('SIGTERM');
    options.signal.addEventListener('abort', onAbort, { once: true });
    let outcome: TrainerOutcome | null = null;
    const stderrTail: string[] = [];
    createInterface({ input: child.stdout }).on('line', (line) => {
      let message: { progress?: { step?: unknown; totalSteps?: unknown }; done?: { loraVersion?: unknown; loraPath?: unknown } };
      try {
        message = JSON.parse(line) as typeof message;
      } catch {
        options.log(line);
        return;
      }
      const { progress, done } = message;
      if (progress && typeof progress.step === 'number' && typeof progress.totalSteps === 'number' && progress.totalSteps > 0) {
        const elapsedMs = performance.now() - started;
        const etaMs = progress.step > 0 ? (elapsedMs / progress.step) * (progress.totalSteps - progress.step) : 0;
        options.onProgress({ step: progress.step, totalSteps: progress.totalSteps, etaMs });
      } else if (done && typeof done.loraVersion === 'string' && typeof done.loraPath === 'string') {
        outcome = { loraVersion: done.loraVersion, loraPath: done.loraPath };
      } else {
        options.log(line);
      }
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
      else if (outcome === null) reject(new TrainerError('the trainer exited without reporting the LoRA it wrote'));
      else resolve(outcome);
    });
  });
}
