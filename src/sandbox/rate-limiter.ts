import { fail } from '../common/validation.js';

// Simulated rate limits: every n-th eligible request is answered 429, so tests prove the bot (through
// @discordjs/rest) waits and retries. Answers carry the X-RateLimit-* headers @discordjs/rest reads; it sleeps for
// Retry-After (parsed as fractional seconds) before retrying, so a short value keeps tests quick without a tight loop.

const RETRY_AFTER_SECONDS = 0.25;
/** The per-bucket quota the headers advertise; the sandbox never runs it down by itself. */
const BUCKET_LIMIT = 5;

interface RateLimitAnswer {
  readonly limited: boolean;
  readonly headers: Record<string, string>;
}

export class RateLimiter {
  #everyNth: number;
  #eligibleSeen = 0;

  constructor(everyNth: number) {
    this.#everyNth = checkEveryNth(everyNth);
  }

  get everyNth(): number {
    return this.#everyNth;
  }

  setEveryNth(everyNth: number): void {
    this.#everyNth = checkEveryNth(everyNth);
    this.#eligibleSeen = 0;
  }

  /** Counts the request when eligible and decides whether it is the one to refuse. */
  check(bucket: string, eligible: boolean): RateLimitAnswer {
    const limited = eligible && this.#everyNth > 0 && ++this.#eligibleSeen % this.#everyNth === 0;
    const headers: Record<string, string> = {
      'X-RateLimit-Limit': String(BUCKET_LIMIT),
      'X-RateLimit-Remaining': String(limited ? 0 : BUCKET_LIMIT - 1),
      // Real time, not the simulated clock: @discordjs/rest waits in real time.
      'X-RateLimit-Reset': ((Date.now() / 1000) + RETRY_AFTER_SECONDS).toFixed(3),
      'X-RateLimit-Reset-After': RETRY_AFTER_SECONDS.toFixed(3),
      'X-RateLimit-Bucket': bucketHash(bucket),
    };
    if (limited) Object.assign(headers, { 'Retry-After': String(RETRY_AFTER_SECONDS), 'X-RateLimit-Scope': 'user' });
    return { limited, headers };
  }
}

/** 1 would refuse every retry too, so the bot could never get through. */
function checkEveryNth(everyNth: number): number {
  if (!Number.isInteger(everyNth) || everyNth < 0 || everyNth === 1) fail('rateLimitEveryNth', everyNth, 'must be 0 (off) or a whole number ≥ 2');
  return everyNth;
}

/** Discord's bucket ids are opaque hashes; a stable hex digest of the route stands in for them. */
function bucketHash(bucket: string): string {
  let hash = 0x811c9dc5;
  for (const char of bucket) hash = Math.imul(hash ^ char.charCodeAt(0), 0x01000193) >>> 0;
  return hash.toString(16).padStart(8, '0');
}

export const RATE_LIMITED_BODY = { message: 'You are being rate limited.', retry_after: RETRY_AFTER_SECONDS, global: false };
