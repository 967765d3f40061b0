import type { Redis } from 'ioredis';
import { integerSetting, type Env } from '../common/environment.js';
import type { QueueKeys } from './keys.js';

// Places in the generation queue. Each waiting job holds one in its member's share, its server's and the whole
// deployment's, taken in one Redis script so that concurrent submissions can neither pass a limit together nor count
// each other out. A worker gives the place back when the job starts; the producer when a job is removed unstarted.

export interface QueueLimits {
  /** Jobs one member may have waiting. */
  perUser: number;
  /** Jobs one server may have waiting, its members' and the bot's own for it. */
  perGuild: number;
  /** Jobs waiting in the whole deployment. */
  total: number;
}

export const DEFAULT_QUEUE_LIMITS: Readonly<QueueLimits> = Object.freeze({ perUser: 2, perGuild: 20, total: 200 });
const MAX_QUEUED_JOBS = 100_000;

/** Whose share a place counts in: a job the bot makes for itself holds none of the member's. */
export interface PlaceHolder {
  userId: string;
  guildId: string | null;
  countsForUser: boolean;
}

export type Reservation = { place: number } | { full: 'user' | 'guild' | 'total'; limit: number };

/** A place taken moments ago whose job is not in the queue yet is being enqueued, not lost. */
export const RESERVATION_GRACE_MS = 60_000;

// Returns the member's count after taking the place (0 when the place does not count for the member), or -1, -2, -3
// for the member's, the server's or the deployment's share being full.
const RESERVE_SCRIPT = `
local countsForUser = ARGV[5] == '1'
local hasGuild = ARGV[6] == '1'
if countsForUser and redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
if hasGuild and redis.call('SCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -2 end
if redis.call('SCARD', KEYS[3]) >= tonumber(ARGV[4]) then return -3 end
if countsForUser then redis.call('SADD', KEYS[1], ARGV[1]) end
if hasGuild then redis.call('SADD', KEYS[2], ARGV[1]) end
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[7])
if countsForUser then return redis.call('SCARD', KEYS[1]) end
return 0`;

const FULL_SHARES = { [-1]: 'user', [-2]: 'guild', [-3]: 'total' } as const;

export class QueuePlaces {
  constructor(
    private readonly redis: Redis,
    private readonly keys: QueueKeys,
    private readonly limits: QueueLimits,
    /** BullMQ's state of a job: whether a place still belongs to a waiting job. */
    private readonly stateOf: (jobId: string) => Promise<string>,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Takes a place for `jobId`. A full share is looked at again once, after giving back the places of jobs that no
   * longer wait (removed by an operator's tool, or left by a producer that died mid-submission).
   */
  async reserve(jobId: string, holder: PlaceHolder): Promise<Reservation> {
    const first = await this.tryReserve(jobId, holder);
    if ('place' in first) return first;
    await this.forgetStale(this.shareKey(first.full, holder));
    return this.tryReserve(jobId, holder);
  }

  release(jobId: string, holder: { userId: string; guildId: string | null }): Promise<void> {
    return releasePlace(this.redis, this.keys, jobId, holder);
  }

  /** The member's jobs that hold a place. */
  heldBy(userId: string): Promise<string[]> {
    return this.redis.smembers(this.keys.waitingJobsOf(userId));
  }

  private async tryReserve(jobId: string, holder: PlaceHolder): Promise<Reservation> {
    const { keys, limits } = this;
    const result = Number(await this.redis.eval(
      RESERVE_SCRIPT, 4,
      keys.waitingJobsOf(holder.userId), keys.waitingJobsOfGuild(holder.guildId ?? ''), keys.waitingJobs, keys.placeTakenAt,
      jobId, String(limits.perUser), String(limits.perGuild), String(limits.total),
      holder.countsForUser ? '1' : '0', holder.guildId === null ? '0' : '1', String(this.now()),
    ));
    if (result >= 0) return { place: result };
    const full = FULL_SHARES[result as keyof typeof FULL_SHARES];
    return { full, limit: full === 'user' ? limits.perUser : full === 'guild' ? limits.perGuild : limits.total };
  }

  private shareKey(share: 'user' | 'guild' | 'total', holder: PlaceHolder): string {
    if (share === 'user') return this.keys.waitingJobsOf(holder.userId);
    return share === 'guild' ? this.keys.waitingJobsOfGuild(holder.guildId ?? '') : this.keys.waitingJobs;
  }

  private async forgetStale(shareKey: string): Promise<void> {
    const takenAt = await this.redis.hgetall(this.keys.placeTakenAt);
    for (const jobId of await this.redis.smembers(shareKey)) {
      const state = await this.stateOf(jobId);
      if (state === 'waiting' || state === 'prioritized' || state === 'delayed') continue;
      if (state === 'unknown' && this.now() - Number(takenAt[jobId] ?? 0) < RESERVATION_GRACE_MS) continue;
      await this.redis.multi().srem(shareKey, jobId).srem(this.keys.waitingJobs, jobId).hdel(this.keys.placeTakenAt, jobId).exec();
    }
  }
}

/** Gives a job's place back (it started, or was removed before it did); giving it back twice does nothing. */
export async function releasePlace(redis: Redis, keys: QueueKeys, jobId: string, holder: { userId: string; guildId: string | null }): Promise<void> {
  await redis.multi()
    .srem(keys.waitingJobsOf(holder.userId), jobId)
    .srem(keys.waitingJobsOfGuild(holder.guildId ?? ''), jobId)
    .srem(keys.waitingJobs, jobId)
    .hdel(keys.placeTakenAt, jobId)
    .exec();
}

export function readQueueLimits(env: Env): QueueLimits {
  return {
    perUser: integerSetting(env, 'MAX_QUEUED_PER_USER', DEFAULT_QUEUE_LIMITS.perUser, 1, MAX_QUEUED_JOBS),
    perGuild: integerSetting(env, 'MAX_QUEUED_PER_GUILD', DEFAULT_QUEUE_LIMITS.perGuild, 1, MAX_QUEUED_JOBS),
    total: integerSetting(env, 'MAX_QUEUED_TOTAL', DEFAULT_QUEUE_LIMITS.total, 1, MAX_QUEUED_JOBS),
  };
}
