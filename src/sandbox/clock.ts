// Simulated time for the local Discord: tests move it forward to reach the 3 s acknowledgement deadline and the
// 15 min token lifetime without waiting. Everything time-dependent in the sandbox reads this one clock.

export class SimulatedClock {
  #offsetMs = 0;

  now(): number {
    return Date.now() + this.#offsetMs;
  }

  advance(ms: number): number {
    this.#offsetMs += ms;
    return this.now();
  }
}

/** 2015-01-01T00:00:00Z, the epoch Discord snowflakes count from. */
const DISCORD_EPOCH_MS = 1_420_070_400_000n;
const TIMESTAMP_SHIFT_BITS = 22n;

/**
 * Numeric snowflakes as Discord makes them (discord.js derives creation times from them with BigInt), strictly
 * increasing even when two ids are made in the same millisecond.
 */
export class SnowflakeFactory {
  #last = 0n;

  constructor(private readonly clock: SimulatedClock) {}

  next(): string {
    const fromClock = (BigInt(this.clock.now()) - DISCORD_EPOCH_MS) << TIMESTAMP_SHIFT_BITS;
    this.#last = fromClock > this.#last ? fromClock : this.#last + 1n;
    return this.#last.toString();
  }
}
