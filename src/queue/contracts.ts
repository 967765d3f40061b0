import type { JobsOptions } from 'bullmq';
import {
  checkDenoisingEnd, MAX_IMAGE_SIDE_PX, MAX_LORA_STRENGTH, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS, WEIGHTING_SYNTAXES,
  type WeightingSyntax,
} from '../common/generation-limits.js';
import { checkChoice, checkInteger, checkNumber, checkObject, checkText, fail } from '../common/validation.js';

// The jobs the bot and the GPU workers exchange through Redis: one contract per job name, checked on both sides.
// Job data is small JSON: settings and where to answer. Images never travel inside job data or results; results
// name keys in the results store.

export const QUEUE_NAMES = Object.freeze({ generation: 'generation', training: 'training' });

/**
 * The generations members ask for with their own settings; the bot makes `validate` after a training and `judge`
 * for /judge from the LoRA versions it knows.
 */
export const MEMBER_JOB_NAMES = ['imagine', 'wrong', 'compare'] as const;
export const GENERATION_JOB_NAMES = [...MEMBER_JOB_NAMES, 'validate', 'judge'] as const;
export type MemberJobName = (typeof MEMBER_JOB_NAMES)[number];
export type GenerationJobName = (typeof GENERATION_JOB_NAMES)[number];
export const TRAIN_JOB_NAME = 'train';
export type TrainJobName = typeof TRAIN_JOB_NAME;
export type JobName = GenerationJobName | TrainJobName;

export interface Requester {
  userId: string;
  displayName: string;
  guildId: string | null;
}

/**
 * Where the answer goes. Interaction tokens (which can post as the bot for 15 minutes) stay in the bot's database:
 * workers never answer Discord, and everything in Redis can be read by every worker host.
 */
export interface ReplyTarget {
  channelId: string | null;
}

/** Fields older bots put in job data; jobs queued before an upgrade still carry them, and they are dropped. */
const RETIRED_REPLY_FIELDS = ['interactionToken', 'tokenExpiresAt'];

export interface ImageSettings {
  prompt: string;
  /** null: no negative prompt at all (all-zero conditioning); "" is an empty prompt. */
  negativePrompt: string | null;
  seed: number;
  steps: number;
  guidanceScale: number;
  width: number;
  height: number;
  weighting: WeightingSyntax;
  /** The share of the schedule the base runs before the refiner takes over; absent or null: no refiner. */
  denoisingEnd?: number | null;
}

/** /wrong and /compare fix the negative prompt to the trigger word, so their settings carry none. */
export type LoraImageSettings = Omit<ImageSettings, 'negativePrompt'>;

export interface LoraChoice {
  version: string;
  strength: number;
}

interface JobEnvelope {
  requester: Requester;
  replyTo: ReplyTarget;
}

export interface ImagineJobData extends JobEnvelope {
  settings: ImageSettings;
}

export interface WrongJobData extends JobEnvelope {
  settings: LoraImageSettings;
  lora: LoraChoice;
}

export type CompareJobData = WrongJobData;

/** A candidate beside the served version and the base, all with "wrong" as the negative, in one batch. */
export interface ValidateJobData extends JobEnvelope {
  settings: LoraImageSettings;
  /** One LoRA version per panel after the base panel: the served one (if any) and the candidate. */
  versions: LoraChoice[];
}

/** LoRA versions one validation draws beside the base: the served one and the candidate. */
export const MAX_VALIDATED_VERSIONS = 2;

/**
 * A blind pair: two panels with "wrong" as the negative, left then right, in the order the bot drew. A side is a LoRA
 * version, or null for the base model (when no version is served). Nothing in the images names either side.
 */
export interface JudgeJobData extends JobEnvelope {
  settings: LoraImageSettings;
  sides: Array<LoraChoice | null>;
}

export const JUDGED_SIDES = 2;

/** The training set as the bot froze it when /train was run: what the worker trains on, whatever comes later. */
export interface TrainingSnapshotRef {
  id: number;
  /** sha256 of every image, sorted: the images travel through Redis under these names (see TrainingTransfer). */
  images: string[];
}

export interface TrainJobData extends JobEnvelope {
  snapshot: TrainingSnapshotRef;
  /** The name the bot gave the version this training makes. */
  version: string;
  /** The LoRA version to continue from; null starts from peft's initialisation. */
  baseVersion: string | null;
  steps: number;
  seed: number;
}

export interface StoredImage {
  /** Key in the results store; it expires (see GenerationJobResult.expiresAt). */
  key: string;
  contentType: 'image/png';
  width: number;
  height: number;
  bytes: number;
}

export interface PanelResult {
  image: StoredImage;
  caption: string;
  negativePrompt: string | null;
  loraStrength: number;
  /** The LoRA version the panel was drawn with; null for the base model. */
  loraVersion: string | null;
}

export interface GenerationJobResult {
  panels: PanelResult[];
  /** The captioned side-by-side image for multi-panel jobs. */
  composite: StoredImage | null;
  seed: number;
  model: string;
  lora: LoraChoice | null;
  notices: string[];
  workerId: string;
  durationMs: number;
  /** Epoch milliseconds after which the stored images are gone. */
  expiresAt: number;
}

export interface TrainJobResult {
  version: string;
  steps: number;
  /** Every step's loss, in order. */
  losses: number[];
  /** null when the trainer reported no loss. */
  finalLoss: number | null;
  /** The losses as a chart (see loss-curve.ts), in the results store; null without losses. */
  lossCurve: StoredImage | null;
  workerId: string;
  durationMs: number;
}

export interface JobProgress {
  step: number;
  totalSteps: number;
  etaMs: number;
  /** Training reports its last loss. */
  loss?: number;
  /** Training reports, before its first step, thumbnails of what it trains on (in the results store). */
  contactSheet?: StoredImage;
}

export interface JobContracts {
  imagine: { data: ImagineJobData; result: GenerationJobResult };
  wrong: { data: WrongJobData; result: GenerationJobResult };
  compare: { data: CompareJobData; result: GenerationJobResult };
  validate: { data: ValidateJobData; result: GenerationJobResult };
  judge: { data: JudgeJobData; result: GenerationJobResult };
  train: { data: TrainJobData; result: TrainJobResult };
}

export type GenerationJobData = JobContracts[GenerationJobName]['data'];

// Retry policy as data. A generation that fails for a passing reason (a driver hiccup, memory pressure from a
// neighbour) gets two more tries with growing pauses; input that can never work fails at once (UnrecoverableError).
export const GENERATION_JOB_OPTIONS = Object.freeze({
  attempts: 3,
  backoff: { type: 'exponential', delay: 5_000 },
  removeOnComplete: { age: 24 * 3600, count: 1000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 1000 },
} as const satisfies JobsOptions);

// Training runs for hours and writes a new LoRA version: a failure is reported to the admin, not retried blindly.
export const TRAIN_JOB_OPTIONS = Object.freeze({
  attempts: 1,
  removeOnComplete: { age: 30 * 24 * 3600 },
  removeOnFail: { age: 30 * 24 * 3600 },
} as const satisfies JobsOptions);

export const MAX_TRAIN_STEPS = 100_000;
/** A training set larger than this many images is refused: each travels through Redis. */
export const MAX_TRAINING_IMAGES = 10_000;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_ID_CHARS = 100;
const MAX_NAME_CHARS = 200;
const LORA_VERSION_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function checkKeys(field: string, object: Record<string, unknown>, allowed: readonly string[]): void {
  for (const key of Object.keys(object)) {
    if (!allowed.includes(key)) fail(`${field}.${key}`, object[key], 'is not part of this job');
  }
}

function checkId(field: string, value: unknown, nullable: boolean): string | null {
  if (value === null && nullable) return null;
  const id = checkText(field, value, MAX_ID_CHARS);
  if (id.length === 0) fail(field, id, 'must not be empty');
  return id;
}

export function validateLoraVersion(field: string, value: unknown): string {
  const version = checkText(field, value, MAX_NAME_CHARS);
  if (!LORA_VERSION_PATTERN.test(version)) fail(field, version, 'must be 1–64 letters, digits, dots, dashes or underscores');
  return version;
}

function validateEnvelope(data: Record<string, unknown>): JobEnvelope {
  const requester = checkObject('requester', data['requester']);
  checkKeys('requester', requester, ['userId', 'displayName', 'guildId']);
  const replyTo = checkObject('replyTo', data['replyTo']);
  checkKeys('replyTo', replyTo, ['channelId', ...RETIRED_REPLY_FIELDS]);
  return {
    requester: {
      userId: checkId('requester.userId', requester['userId'], false)!,
      displayName: checkText('requester.displayName', requester['displayName'], MAX_NAME_CHARS),
      guildId: checkId('requester.guildId', requester['guildId'] ?? null, true),
    },
    replyTo: {
      channelId: checkId('replyTo.channelId', replyTo['channelId'] ?? null, true),
    },
  };
}

function validateSettings(value: unknown, withNegative: boolean): ImageSettings | LoraImageSettings {
  const settings = checkObject('settings', value);
  const keys = ['prompt', 'seed', 'steps', 'guidanceScale', 'width', 'height', 'weighting', 'denoisingEnd'];
  checkKeys('settings', settings, withNegative ? [...keys, 'negativePrompt'] : keys);
  const side = (field: string): number => {
    const size = checkInteger(`settings.${field}`, settings[field], 8, MAX_IMAGE_SIDE_PX);
    if (size % 8 !== 0) fail(`settings.${field}`, size, 'must be a multiple of 8');
    return size;
  };
  const prompt = checkText('settings.prompt', settings['prompt'], MAX_PROMPT_CHARS);
  if (prompt.trim() === '') fail('settings.prompt', prompt, 'is empty; say what to draw');
  const common: LoraImageSettings = {
    prompt,
    seed: checkInteger('settings.seed', settings['seed'], 0, MAX_SEED),
    steps: checkInteger('settings.steps', settings['steps'], 1, MAX_STEPS),
    guidanceScale: checkNumber('settings.guidanceScale', settings['guidanceScale'], 0, 100),
    width: side('width'),
    height: side('height'),
    weighting: checkChoice('settings.weighting', settings['weighting'] ?? 'auto', WEIGHTING_SYNTAXES),
    ...(settings['denoisingEnd'] == null ? {} : { denoisingEnd: checkDenoisingEnd('settings.denoisingEnd', settings['denoisingEnd']) }),
  };
  if (!withNegative) return common;
  const negative = settings['negativePrompt'] ?? null;
  return { ...common, negativePrompt: negative === null ? null : checkText('settings.negativePrompt', negative, MAX_PROMPT_CHARS) };
}

function validateLora(value: unknown): LoraChoice {
  const lora = checkObject('lora', value);
  checkKeys('lora', lora, ['version', 'strength']);
  return {
    version: validateLoraVersion('lora.version', lora['version']),
    strength: checkNumber('lora.strength', lora['strength'], -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH),
  };
}

function validateSnapshotRef(value: unknown): TrainingSnapshotRef {
  const snapshot = checkObject('snapshot', value);
  checkKeys('snapshot', snapshot, ['id', 'images']);
  const images = snapshot['images'];
  if (!Array.isArray(images) || images.length === 0 || images.length > MAX_TRAINING_IMAGES) {
    fail('snapshot.images', Array.isArray(images) ? `${images.length} images` : images, `must list 1 to ${MAX_TRAINING_IMAGES} image hashes`);
  }
  const hashes = (images as unknown[]).map((hash, i) => {
    if (typeof hash !== 'string' || !SHA256_HEX.test(hash)) fail(`snapshot.images[${i}]`, hash, 'must be a lowercase hex sha256');
    return hash as string;
  });
  if (hashes.some((hash, i) => i > 0 && hash <= hashes[i - 1]!)) fail('snapshot.images', 'unsorted or repeated hashes', 'must be sorted and distinct');
  return { id: checkInteger('snapshot.id', snapshot['id'], 1, Number.MAX_SAFE_INTEGER), images: hashes };
}

/**
 * The job's data if it follows its contract; otherwise an InvalidRequestError naming the field and value. The
 * producer calls it before enqueueing and the worker again before running, because Redis is shared and anything
 * can write to it.
 */
export function validateJobData<N extends JobName>(name: N, raw: unknown): JobContracts[N]['data'] {
  const data = checkObject('data', raw);
  switch (name) {
    case 'imagine':
      checkKeys('data', data, ['requester', 'replyTo', 'settings']);
      return { ...validateEnvelope(data), settings: validateSettings(data['settings'], true) } as JobContracts[N]['data'];
    case 'wrong':
    case 'compare':
      checkKeys('data', data, ['requester', 'replyTo', 'settings', 'lora']);
      return { ...validateEnvelope(data), settings: validateSettings(data['settings'], false), lora: validateLora(data['lora']) } as JobContracts[N]['data'];
    case 'validate': {
      checkKeys('data', data, ['requester', 'replyTo', 'settings', 'versions']);
      const versions = data['versions'];
      if (!Array.isArray(versions) || versions.length === 0 || versions.length > MAX_VALIDATED_VERSIONS) {
        fail('versions', versions, `must list 1 to ${MAX_VALIDATED_VERSIONS} LoRA versions`);
      }
      return { ...validateEnvelope(data), settings: validateSettings(data['settings'], false), versions: (versions as unknown[]).map(validateLora) } as JobContracts[N]['data'];
    }
    case 'judge': {
      checkKeys('data', data, ['requester', 'replyTo', 'settings', 'sides']);
      const sides = data['sides'];
      if (!Array.isArray(sides) || sides.length !== JUDGED_SIDES) fail('sides', sides, `must list ${JUDGED_SIDES} sides, left then right`);
      const choices = (sides as unknown[]).map((side) => (side === null ? null : validateLora(side)));
      const [left, right] = choices;
      if ((left?.version ?? null) === (right?.version ?? null)) fail('sides', left?.version ?? null, 'must be two different versions (or one version and the base model)');
      return { ...validateEnvelope(data), settings: validateSettings(data['settings'], false), sides: choices } as JobContracts[N]['data'];
    }
    case 'train':
      checkKeys('data', data, ['requester', 'replyTo', 'snapshot', 'version', 'baseVersion', 'steps', 'seed']);
      return {
        ...validateEnvelope(data),
        snapshot: validateSnapshotRef(data['snapshot']),
        version: validateLoraVersion('version', data['version']),
        baseVersion: data['baseVersion'] == null ? null : validateLoraVersion('baseVersion', data['baseVersion']),
        steps: checkInteger('steps', data['steps'], 1, MAX_TRAIN_STEPS),
        seed: checkInteger('seed', data['seed'], 0, MAX_SEED),
      } as JobContracts[N]['data'];
    default:
      return fail('name', name, `is not a job; use one of ${[...GENERATION_JOB_NAMES, TRAIN_JOB_NAME].join(', ')}`);
  }
}
