import type { SimulatedClock } from './clock.js';

// What the sandbox saw: every REST request with its answer (bounded) and every violation — a request the OpenAPI
// spec rejects or one that breaks a platform limit — so tests can assert the bot never did either.

export interface Violation { readonly at: number; readonly method: string; readonly path: string; readonly problems: string[] }
export interface RequestLogEntry { readonly at: number; readonly method: string; readonly route: string; readonly status: number }

export const REQUEST_LOG_CAPACITY = 10_000;

export class Recorder {
  readonly #violations: Violation[] = [];
  readonly #requests: RequestLogEntry[] = [];

  constructor(private readonly clock: SimulatedClock, private readonly log: (line: string) => void) {}

  violation(method: string, path: string, problems: string[]): void {
    this.#violations.push({ at: this.clock.now(), method, path, problems });
    this.log(`violation: ${method} ${path}: ${problems.join('; ')}`);
  }

  request(method: string, route: string, status: number): void {
    this.#requests.push({ at: this.clock.now(), method, route, status });
    if (this.#requests.length > REQUEST_LOG_CAPACITY) this.#requests.splice(0, this.#requests.length - REQUEST_LOG_CAPACITY);
  }

  violations(): Violation[] {
    return [...this.#violations];
  }

  clearViolations(): void {
    this.#violations.length = 0;
  }

  requests(): RequestLogEntry[] {
    return [...this.#requests];
  }
}
