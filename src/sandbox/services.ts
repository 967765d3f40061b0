import type { SimulatedClock } from './clock.js';
import type { Gateway } from './gateway.js';
import type { RateLimiter } from './rate-limiter.js';
import type { Recorder } from './recorder.js';
import type { World } from './world.js';

/** The parts of one running local Discord that its REST and control handlers share. */
export interface SandboxServices {
  readonly world: World;
  readonly gateway: Gateway;
  readonly recorder: Recorder;
  readonly rateLimiter: RateLimiter;
  readonly clock: SimulatedClock;
  readonly botToken: string;
  readonly log: (line: string) => void;
}
