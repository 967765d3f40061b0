import type { UploadedFile } from './message-content.js';
import type { Route } from './router.js';
import type { SandboxServices } from './services.js';

export interface RestRequest {
  readonly params: Record<string, string>;
  readonly query: URLSearchParams;
  /** Parsed JSON (or payload_json); validated against the OpenAPI spec before a handler sees it. */
  readonly body: unknown;
  readonly files: UploadedFile[];
}

export interface RestAnswer {
  readonly status: number;
  readonly body?: unknown;
}

type RestHandler = (services: SandboxServices, request: RestRequest) => RestAnswer;

interface RestEndpoint {
  /** Needs `Authorization: Bot <token>`; interaction callbacks and webhook-token routes do not. */
  readonly auth: boolean;
  /** Counts toward the simulated rate limit (never the interaction callback: its 3 s deadline must hold). */
  readonly rateLimited: boolean;
  readonly handle: RestHandler;
}

export type RestRoute = Route<RestEndpoint>;

/** Bot-authenticated and exempt from the simulated rate limit unless `access` says otherwise. */
export function endpoint(handle: RestHandler, access: { auth?: boolean; rateLimited?: boolean } = {}): RestEndpoint {
  return { auth: access.auth ?? true, rateLimited: access.rateLimited ?? false, handle };
}

export const ok = (body: unknown): RestAnswer => ({ status: 200, body });
export const noContent: RestAnswer = { status: 204 };

export function bodyObject(request: RestRequest): Record<string, unknown> {
  const { body } = request;
  return typeof body === 'object' && body !== null && !Array.isArray(body) ? body as Record<string, unknown> : {};
}
