import {
  ConfigError, integerSetting, optionalString, queuePrefix, type Env,
} from '../common/environment.js';
import { DEFAULT_STEPS, MAX_IMAGE_SIDE_PX, MAX_LORA_STRENGTH, MAX_STEPS } from '../common/generation-limits.js';
import { MAX_SHUFFLE_SEED } from '../common/seeded-shuffle.js';
import { InvalidRequestError } from '../common/validation.js';
import { loraVersionOfSetting } from '../models/resolve.js';
import { DEFAULT_MAX_TRAINING_SET_BYTES, DEFAULT_TRAINING_IMAGE_TTL_SECONDS } from '../queue/training-transfer.js';
import { readQueueLimits, type QueueLimits } from '../queue/places.js';
import { randomSeed } from '../queue/producer.js';
import { parseImageSizes, SDXL_IMAGE_SIZES, type ImageSize } from './image-sizes.js';

// Everything the bot process reads from the environment, checked at start so that a bad value names its variable
// before the bot logs in.

/** Woolf's comparisons ran at guidance 13; it is the server default until an admin changes it. */
export const DEFAULT_BOT_GUIDANCE_SCALE = 13;
export const DEFAULT_LORA_STRENGTH = 1;
export const DEFAULT_VOTES_TO_CURATE = 1;
export const DEFAULT_IMAGE_RETENTION_DAYS = 14;
/** A training holds the deployment's only training slot for hours: a few a day per server is plenty. */
export const DEFAULT_MAX_TRAININGS_PER_DAY = 3;
const MAX_RETENTION_DAYS = 3650;
/** A candidate that wins half the votes or fewer is no better than what is served. */
const MIN_AUTO_PROMOTE_WIN_RATE = 0.5;
const MAX_AUTO_PROMOTE_VOTES = 1_000_000;
const SNOWFLAKE = /^\d{15,21}$/;
const LOOPBACK_HOSTS = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/;

export interface BotConfig {
  /** null: the bot talks to a local Discord (DISCORD_API_URL) with the token it was given there. */
  token: string;
  /** Discord's REST base (`https://discord.com/api` unless a local Discord is used). */
  apiUrl: string | null;
  /** Commands are registered for this guild at start when set (development); otherwise by `wrongbot deploy-commands`. */
  guildId: string | null;
  /**
   * The servers trusted with the one training set: their members' votes curate, their admins train, judge, promote
   * and bootstrap. Other servers generate only. TRAINING_GUILD_IDS, else DISCORD_GUILD_ID's server.
   */
  trainingGuildIds: readonly string[];
  /** Trainings one server may start in 24 hours. */
  maxTrainingsPerDay: number;
  adminRoleIds: readonly string[];
  votesToCurate: number;
  imageRetentionDays: number;
  dataDir: string;
  queuePrefix: string;
  queueLimits: QueueLimits;
  imageSizes: readonly ImageSize[];
  defaults: { size: ImageSize; steps: number; guidanceScale: number; loraStrength: number };
  /** The LoRA version /wrong and /compare ask the workers for; null when no LoRA is deployed. */
  loraVersion: string | null;
  /** How the training set travels to the workers through Redis. */
  trainingTransfer: { imageTtlSeconds: number; maxSetBytes: number };
  /** A candidate is served without an admin once this share of at least this many blind votes chose it; null: never. */
  autoPromote: { winRate: number; minVotes: number } | null;
  /**
   * Where the sequence of /judge's left/right shuffles starts: JUDGING_SEED (reproducible studies, tests), else one
   * drawn at each start, so that nobody can work the sides out.
   */
  judgingSeed: number;
}

function snowflakes(env: Env, key: string): string[] {
  const text = optionalString(env, key);
  if (text === null) return [];
  return text.split(',').map((part) => part.trim()).filter((part) => part !== '').map((id) => {
    if (!SNOWFLAKE.test(id)) throw new ConfigError(`${key} = ${JSON.stringify(text)}: ${JSON.stringify(id)} is not a Discord id (15–21 digits)`);
    return id;
  });
}

function numberSetting(env: Env, key: string, fallback: number, min: number, max: number): number {
  const text = optionalString(env, key);
  if (text === null) return fallback;
  const value = Number(text);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new ConfigError(`${key} = ${JSON.stringify(text)} must be a number from ${min} to ${max}`);
  }
  return value;
}

/** LORA_VERSION, else the name of LORA_PATH's file or repo. */
function loraVersion(env: Env): string | null {
  const explicit = optionalString(env, 'LORA_VERSION');
  const loraPath = optionalString(env, 'LORA_PATH');
  try {
    if (explicit !== null) return loraVersionOfSetting(explicit, 'LORA_VERSION');
    return loraPath === null ? null : loraVersionOfSetting(loraPath, 'LORA_PATH');
  } catch (error) {
    if (error instanceof InvalidRequestError) throw new ConfigError(`${explicit !== null ? 'LORA_VERSION' : 'LORA_PATH'}: ${error.message}`);
    throw error;
  }
}

function autoPromote(env: Env): BotConfig['autoPromote'] {
  const winRate = optionalString(env, 'AUTO_PROMOTE_WIN_RATE');
  const minVotes = optionalString(env, 'AUTO_PROMOTE_MIN_VOTES');
  if (winRate === null && minVotes === null) return null;
  if (winRate === null || minVotes === null) {
    throw new ConfigError(`${winRate === null ? 'AUTO_PROMOTE_MIN_VOTES' : 'AUTO_PROMOTE_WIN_RATE'} is set without ${winRate === null ? 'AUTO_PROMOTE_WIN_RATE' : 'AUTO_PROMOTE_MIN_VOTES'}: set both to promote on votes, or neither`);
  }
  return {
    winRate: numberSetting(env, 'AUTO_PROMOTE_WIN_RATE', 1, MIN_AUTO_PROMOTE_WIN_RATE, 1),
    minVotes: integerSetting(env, 'AUTO_PROMOTE_MIN_VOTES', 1, 1, MAX_AUTO_PROMOTE_VOTES),
  };
}

export function readBotConfig(env: Env, token: string): BotConfig {
  const apiUrl = optionalString(env, 'DISCORD_API_URL');
  if (apiUrl !== null && !/^https?:\/\/[^/]+/.test(apiUrl)) {
    throw new ConfigError(`DISCORD_API_URL = ${JSON.stringify(apiUrl)} must be an http(s) URL such as http://127.0.0.1:8787/api`);
  }
  // Plain http is for a Discord on this machine (the sandbox); anywhere else the token would cross the network readable.
  if (apiUrl !== null && apiUrl.startsWith('http://') && !LOOPBACK_HOSTS.test(new URL(apiUrl).hostname)) {
    throw new ConfigError(`DISCORD_API_URL = ${JSON.stringify(apiUrl)} would send the bot's token unencrypted; use https, or http only to 127.0.0.1, ::1 or localhost`);
  }
  const guildIds = snowflakes(env, 'DISCORD_GUILD_ID');
  if (guildIds.length > 1) throw new ConfigError(`DISCORD_GUILD_ID = ${JSON.stringify(env['DISCORD_GUILD_ID'])} must be one guild id`);
  let imageSizes: ImageSize[];
  try {
    imageSizes = parseImageSizes(optionalString(env, 'IMAGE_SIZES') ?? SDXL_IMAGE_SIZES.map((size) => size.value).join(','), MAX_IMAGE_SIDE_PX);
  } catch (error) {
    throw new ConfigError(`IMAGE_SIZES: ${(error as Error).message}`);
  }
  const defaultSizeText = optionalString(env, 'DEFAULT_SIZE') ?? imageSizes[0]!.value;
  const defaultSize = imageSizes.find((size) => size.value === defaultSizeText);
  if (!defaultSize) {
    throw new ConfigError(`DEFAULT_SIZE = ${JSON.stringify(defaultSizeText)} must be one of IMAGE_SIZES: ${imageSizes.map((size) => size.value).join(', ')}`);
  }
  return {
    token,
    apiUrl,
    guildId: guildIds[0] ?? null,
    trainingGuildIds: optionalString(env, 'TRAINING_GUILD_IDS') === null ? guildIds : snowflakes(env, 'TRAINING_GUILD_IDS'),
    maxTrainingsPerDay: integerSetting(env, 'MAX_TRAININGS_PER_DAY', DEFAULT_MAX_TRAININGS_PER_DAY, 1, 1000),
    adminRoleIds: snowflakes(env, 'ADMIN_ROLE_IDS'),
    votesToCurate: integerSetting(env, 'VOTES_TO_CURATE', DEFAULT_VOTES_TO_CURATE, 1, 1000),
    imageRetentionDays: integerSetting(env, 'IMAGE_RETENTION_DAYS', DEFAULT_IMAGE_RETENTION_DAYS, 1, MAX_RETENTION_DAYS),
    dataDir: optionalString(env, 'DATA_DIR') ?? 'data',
    queuePrefix: queuePrefix(env),
    queueLimits: readQueueLimits(env),
    imageSizes,
    defaults: {
      size: defaultSize,
      steps: integerSetting(env, 'DEFAULT_STEPS', DEFAULT_STEPS, 1, MAX_STEPS),
      guidanceScale: numberSetting(env, 'DEFAULT_GUIDANCE', DEFAULT_BOT_GUIDANCE_SCALE, 0, 100),
      loraStrength: numberSetting(env, 'DEFAULT_LORA_STRENGTH', DEFAULT_LORA_STRENGTH, -MAX_LORA_STRENGTH, MAX_LORA_STRENGTH),
    },
    loraVersion: loraVersion(env),
    trainingTransfer: {
      imageTtlSeconds: DEFAULT_TRAINING_IMAGE_TTL_SECONDS,
      maxSetBytes: integerSetting(env, 'MAX_TRAINING_SET_MB', DEFAULT_MAX_TRAINING_SET_BYTES / 2 ** 20, 1, 1_000_000) * 2 ** 20,
    },
    autoPromote: autoPromote(env),
    judgingSeed: integerSetting(env, 'JUDGING_SEED', randomSeed(), 0, MAX_SHUFFLE_SEED),
  };
}
