import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { checkInteger, fail } from '../common/validation.js';
import { MAX_TRAIN_STEPS, type JobProgress } from '../queue/contracts.js';
import { readBoundedLines } from './bounded-lines.js';
import { childEnvironment } from './child-environment.js';

// Another trainer than the built-in engine (diffusers' train_dreambooth_lora_sdxl.py behind a wrapper, say), run as
// its own process: TRAINER_COMMAND. It trains what the built-in engine would, and the worker does the rest (the
// images from Redis, the file back to Redis, the version's name).
//
// Protocol: the command gets the training as JSON in WRONGBOT_TRAIN_JOB (ExternalTraining), in an environment cut
// down to what a program needs (child-environment.ts), and prints JSON lines on stdout, as often as it likes:
//   {"progress": {"step": 10, "totalSteps": 1000, "loss": 0.1234}}      (loss optional)
// It exits 0 once the LoRA file (diffusers' keys) is at `outPath`. Everything else it prints goes to the worker's
// log. Its output is not trusted: a progress line that does not add up is ignored, a trainer that stops reporting or
// prints an endless line is stopped, and what it printed never becomes the reason an admin reads (it may hold
// anything, a token included).

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

/** Generous: a trainer loads SDXL and may cache latents before its first step, which takes minutes. */
export const DEFAULT_TRAINER_PROGRESS_TIMEOUT_MS = 30 * 60_000;
/** A progress line is a few dozen characters; one this long is a trainer out of control, not output to keep. */
export const MAX_TRAINER_LINE_CHARS = 1024 * 1024;
/** How long a trainer that was asked to stop (SIGTERM) may take before it is killed. */
const TRAINER_KILL_GRACE_MS = 10_000;
/** What the log keeps of one line the trainer printed. */
const LOGGED_LINE_CHARS = 2_000;

export class TrainerError extends Error {
  override name = 'TrainerError';
}

export interface TrainerOptions {
  signal: AbortSignal;
  onProgress: (progress: JobProgress) => void;
  log: (line: string) => void;
  /** How long the trainer may go without a progress line; DEFAULT_TRAINER_PROGRESS_TIMEOUT_MS by default. */
  progressTimeoutMs?: number | undefined;
}

type ProgressLine = { step: number; totalSteps: number; loss: number | undefined };

/** A progress message's numbers, checked: a step beyond the total would break every progress bar downstream. */
function readProgress(progress: Record<string, unknown>): ProgressLine {
  const totalSteps = checkInteger('totalSteps', progress['totalSteps'], 1, MAX_TRAIN_STEPS);
  const step = checkInteger('step', progress['step'], 0, totalSteps);
  const loss = progress['loss'];
  if (loss !== undefined && (typeof loss !== 'number' || !Number.isFinite(loss))) fail('loss', loss, 'must be a finite number');
  return { step, totalSteps, loss };
}

function clipped(line: string): string {
  return line.length <= LOGGED_LINE_CHARS ? line : `${line.slice(0, LOGGED_LINE_CHARS)}… (${line.length} characters)`;
}

export function runTrainer(command: string, training: ExternalTraining, options: TrainerOptions): Promise<TrainerOutcome> {
  const progressTimeoutMs = options.progressTimeoutMs ?? DEFAULT_TRAINER_PROGRESS_TIMEOUT_MS;
  return new Promise((resolve, reject) => {
    const started = performance.now();
    // The shell may run the trainer as its own child (dash does), so on POSIX the command gets a process group of
    // its own and a stop signal goes to the whole group; signalling the shell alone would orphan the trainer.
    const ownGroup = process.platform !== 'win32';
    const child = spawn(command, {
      shell: true,
      detached: ownGroup,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: childEnvironment(process.env, { WRONGBOT_TRAIN_JOB: JSON.stringify(training) }),
    });
    const losses: number[] = [];
    let stopReason: TrainerError | null = null;
    let killTimer: NodeJS.Timeout | undefined;
    let silenceTimer: NodeJS.Timeout | undefined;
    let settled = false;

    const signalTrainer = (signal: NodeJS.Signals) => {
      if (!ownGroup || child.pid === undefined) {
        child.kill(signal);
        return;
      }
      try {
        process.kill(-child.pid, signal);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
      }
    };
    // The timer outlives the promise: a process of the group that ignores SIGTERM is killed even after the shell exited.
    const terminate = () => {
      signalTrainer('SIGTERM');
      killTimer ??= setTimeout(() => signalTrainer('SIGKILL'), TRAINER_KILL_GRACE_MS).unref();
    };
    const stop = (reason: string) => {
      if (stopReason !== null) return;
      stopReason = new TrainerError(reason);
      options.log(reason);
      terminate();
    };
    const expectProgress = () => {
      clearTimeout(silenceTimer);
      silenceTimer = setTimeout(
        () => stop(`the trainer reported no progress for ${progressTimeoutMs} ms (TRAINER_PROGRESS_TIMEOUT_MS); it was stopped`),
        progressTimeoutMs,
      );
    };
    options.signal.addEventListener('abort', terminate, { once: true });
    expectProgress();

    const onStdoutLine = (line: string) => {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        options.log(clipped(line));
        return;
      }
      const progress = (message as { progress?: unknown } | null)?.progress;
      if (typeof progress !== 'object' || progress === null) {
        options.log(clipped(line));
        return;
      }
      let checked: ProgressLine;
      try {
        checked = readProgress(progress as Record<string, unknown>);
      } catch (error) {
        options.log(`ignored a progress line (${(error as Error).message}): ${clipped(line)}`);
        return;
      }
      if (stopReason !== null) return;
      expectProgress();
      const { step, totalSteps, loss } = checked;
      if (loss !== undefined) losses.push(loss);
      const elapsedMs = performance.now() - started;
      const etaMs = step > 0 ? (elapsedMs / step) * (totalSteps - step) : 0;
      options.onProgress({ step, totalSteps, etaMs, ...(loss === undefined ? {} : { loss }) });
    };
    const overflow = (stream: string) => () =>
      stop(`the trainer printed more than ${MAX_TRAINER_LINE_CHARS} characters on ${stream} without a line break; it was stopped`);
    readBoundedLines(child.stdout, MAX_TRAINER_LINE_CHARS, { line: onStdoutLine, overflow: overflow('stdout') });
    // Kept in the worker's log, where the operator reads it; an admin gets the exit status alone.
    readBoundedLines(child.stderr, MAX_TRAINER_LINE_CHARS, { line: (line) => options.log(clipped(line)), overflow: overflow('stderr') });

    const settle = (outcome: () => TrainerOutcome) => {
      if (settled) return;
      settled = true;
      clearTimeout(silenceTimer);
      options.signal.removeEventListener('abort', terminate);
      try {
        resolve(outcome());
      } catch (error) {
        reject(error);
      }
    };
    child.once('error', (error) => {
      options.log(`cannot run ${command}: ${error.message}`);
      settle(() => { throw new TrainerError(`cannot start the trainer (TRAINER_COMMAND): ${error.message}`); });
    });
    // A stopped trainer is done once its shell exits, even if a process that left the group still holds its output.
    child.once('exit', () => {
      if (stopReason !== null || options.signal.aborted) settle(() => { throw options.signal.aborted ? options.signal.reason : stopReason; });
    });
    child.once('close', (code, signal) => settle(() => {
      if (options.signal.aborted) throw options.signal.reason;
      if (stopReason !== null) throw stopReason;
      if (code !== 0) throw new TrainerError(`the trainer exited with ${signal ?? `code ${code}`}; its output is in the worker's log`);
      if (!existsSync(training.outPath)) throw new TrainerError(`the trainer exited without writing ${training.outPath}`);
      return { losses };
    }));
  });
}
