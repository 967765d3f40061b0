import { UnrecoverableError } from 'bullmq';

// Which failures of a job another attempt can cure, decided here and nowhere else. A job that can never succeed
// fails at once with one readable line, rather than three times over a minute with the same stack trace; anything
// else keeps BullMQ's retry policy (GENERATION_JOB_OPTIONS). Errors are told apart by name, not class: those raised
// in the inference thread arrive here as copies that keep only their name and message.

export type Failure =
  /** The queue's plumbing or this worker failed, not the job: a later attempt, here or on another worker, can succeed. */
  | { kind: 'retry' }
  /** The job itself cannot succeed: input, model or size; `reason` is what its owner reads. */
  | { kind: 'final'; reason: string };

/** A failed reason is read in a Discord message and a log line: its first line, and not an essay. */
export const MAX_REASON_CHARS = 300;

// Redis dropped or refused a command (including its own OOM, which is about Redis's memory, not the GPU's), BullMQ
// lost this worker's lock, or this worker's inference thread died. None of these says anything about the job.
const TRANSIENT_NAMES = new Set(['ReplyError', 'MaxRetriesPerRequestError', 'RedisUnavailableError', 'InferenceThreadError']);
const TRANSIENT_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN']);
const TRANSIENT_MESSAGES = /^(Connection is closed\.|Stream isn't writeable|Missing lock for job|Lock mismatch for job)/;

/** What each kind of permanent failure is called in the reason, by error name. */
const PERMANENT_LABELS: ReadonlyMap<string, string> = new Map([
  ['UnrecoverableError', ''],
  ['InvalidRequestError', 'invalid input'],
  ['LoraVersionError', ''],
  ['LoraFileError', 'unusable LoRA file'],
  ['SafetensorsError', 'unusable LoRA file'],
  ['ModelLoadError', 'model error'],
  ['OnnxRunError', 'model error'],
  ['CompositionError', ''],
]);

// onnxruntime's CPU and CUDA allocators, cuDNN and cuBLAS, and V8 when a typed array cannot be allocated.
const OUT_OF_MEMORY = /Failed to allocate memory[^\n]*|out of memory[^\n]*|std::bad_alloc|CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED|Array buffer allocation failed/i;

function oneLine(text: string): string {
  const line = text.split('\n', 1)[0]!.trim();
  return line.length <= MAX_REASON_CHARS ? line : `${line.slice(0, MAX_REASON_CHARS - 1)}…`;
}

export function classifyFailure(error: unknown): Failure {
  if (!(error instanceof Error)) return { kind: 'retry' };
  const code = (error as { code?: unknown }).code;
  if (TRANSIENT_NAMES.has(error.name) || (typeof code === 'string' && TRANSIENT_CODES.has(code)) || TRANSIENT_MESSAGES.test(error.message)) {
    return { kind: 'retry' };
  }
  const outOfMemory = OUT_OF_MEMORY.exec(error.message);
  if (outOfMemory) return { kind: 'final', reason: oneLine(`out of memory at this size (${outOfMemory[0].trim()}); a smaller image or fewer panels may fit`) };
  const label = PERMANENT_LABELS.get(error.name);
  if (label === undefined) return { kind: 'retry' };
  return { kind: 'final', reason: oneLine(label === '' ? error.message : `${label}: ${error.message}`) };
}

/** What a job's processor throws for `error`: an UnrecoverableError with the reason, or the error as it is. */
export function jobFailure(error: unknown): unknown {
  const failure = classifyFailure(error);
  if (failure.kind === 'retry') return error;
  return error instanceof UnrecoverableError && error.message === failure.reason ? error : new UnrecoverableError(failure.reason);
}
