import type { SimulatedClock } from './clock.js';

// What the sandbox saw: every REST request with its answer and every violation — a request the OpenAPI spec rejects
// or one that breaks a platform limit — so tests can assert the bot never did either. Both logs keep only their
// latest entries, so a sandbox left running stays bounded.

export interface Violation { readonly at: number; readonly method: string; readonly path: string; readonly problems: string[] }
export interface RequestLogEntry { readonly at: number; readonly method: string; readonly route: string; readonly status: number }

const REQUEST_LOG_CAPACITY = 10_000;
const VIOLATION_LOG_CAPACITY = 1000;

/** The last `capacity` entries, oldest first; adding one overwrites the oldest in place instead of shifting the rest. */
class RingLog<T> {
  readonly #entries: T[] = [];
  /** Where the next entry goes; once full, also where the oldest is. */
  #next = 0;

  constructor(private readonly capacity: number) {}

  add(entry: T): void {
    this.#entries[this.#next] = entry;
    this.#next = (this.#next + 1) % this.capacity;
  }

  entries(): T[] {
    return [...this.#entries.slice(this.#next), ...this.#entries.slice(0, this.#next)];
  }

  clear(): void {
    this.#entries.length = 0;
    this.#next = 0;
  }
}

export class Recorder {
  readonly #violations = new RingLog<Violation>(VIOLATION_LOG_CAPACITY);
  readonly #requests = new RingLog<RequestLogEntry>(REQUEST_LOG_CAPACITY);

  constructor(private readonly clock: SimulatedClock, private readonly log: (line: string) => void) {}

  violation(method: string, path: string, problems: string[]): void {
    this.#violations.add({ at: this.clock.now(), method, path, problems });
    this.log(`violation: ${method} ${path}: ${problems.join('; ')}`);
  }

  request(method: string, route: string, status: number): void {
    this.#requests.add({ at: this.clock.now(), method, route, status });
  }

  violations(): Violation[] {
    return this.#violations.entries();
  }

  clearViolations(): void {
    this.#violations.clear();
  }

  requests(): RequestLogEntry[] {
    return this.#requests.entries();
  }
}
