import type { UserView } from './control-api.js';
import type { RequestLogEntry, Violation } from './recorder.js';
import type { ExtraRoleName } from './world.js';

// A typed client for the local Discord's control API (/_sandbox), used by tests and `wrongbot sandbox`. Every
// method is one endpoint (see src/sandbox/README.md); a refusal throws an Error carrying the server's message.

export interface SandboxState {
  applicationId: string;
  botUserId: string;
  guildId: string;
  channels: Record<string, string>;
  /** Role name (Admin, Manager, Curator) → id. */
  roles: Record<string, string>;
  users: UserView[];
  commands: Array<Record<string, unknown> & { id: string; name: string }>;
  gatewaySessions: number;
  rateLimitEveryNth: number;
}

interface InteractionHandle { interactionId: string; token: string }

interface SandboxAttachmentView { id: string; filename: string; size: number; contentType: string; url: string }

export interface SandboxMessageView {
  id: string;
  author: { id: string; name: string; bot: boolean };
  content: string;
  embeds: Array<Record<string, unknown>>;
  components: Array<Record<string, unknown>>;
  attachments: SandboxAttachmentView[];
  reactions: Array<{ emoji: string; users: string[] }>;
  flags: number;
  ephemeral: boolean;
  interactionId: string | null;
  createdAt: number;
  edits: Array<{ at: number; fields: string[] }>;
  mentions: string[];
}

interface SandboxInteractionView {
  id: string;
  type: number;
  user: string;
  createdAt: number;
  acknowledgedAt: number | null;
  callbackType: number | null;
  messageId: string | null;
  followUpIds: string[];
  tokenExpiresAt: number;
}

interface CommandInput {
  user: string;
  command: string;
  options?: Record<string, string | number | boolean>;
  subcommand?: string;
  /** 'general', 'art' or a channel id; default 'general'. */
  channel?: string;
  force?: boolean;
}

interface ReactionChange { changed: boolean; message: SandboxMessageView }

const DEFAULT_WAIT_TIMEOUT_MS = 10_000;
const POLL_INTERVAL_MS = 50;

/** What waitFor throws when time runs out, so a caller can tell "not yet" from a failure. */
export class WaitTimeoutError extends Error {
  override name = 'WaitTimeoutError';
}

export class SandboxClient {
  readonly #base: string;

  /** `controlUrl` as LocalDiscord.controlUrl gives it, e.g. http://127.0.0.1:8787/_sandbox. */
  constructor(controlUrl: string) {
    this.#base = controlUrl.replace(/\/+$/, '');
  }

  async #call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await fetch(`${this.#base}${path}`, {
      method,
      headers: body === undefined ? {} : { 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new Error(`${method} ${this.#base}${path}: HTTP ${response.status} with a body that is not JSON: ${text.slice(0, 200)}`);
    }
    if (!response.ok) {
      const message = (parsed as { message?: unknown } | undefined)?.message;
      throw new Error(typeof message === 'string' ? message : `${method} ${this.#base}${path}: HTTP ${response.status}`);
    }
    return parsed as T;
  }

  state(): Promise<SandboxState> {
    return this.#call('GET', '/state');
  }

  createUser(name: string, options: { admin?: boolean; bot?: boolean; roles?: ExtraRoleName[] } = {}): Promise<UserView> {
    return this.#call('POST', '/users', { name, ...options });
  }

  command(input: CommandInput): Promise<InteractionHandle> {
    return this.#call('POST', '/commands', input);
  }

  press(user: string, messageId: string, customId: string): Promise<InteractionHandle> {
    return this.#call('POST', '/buttons', { user, messageId, customId });
  }

  react(user: string, messageId: string, emoji: string): Promise<ReactionChange> {
    return this.#call('POST', '/reactions', { user, messageId, emoji });
  }

  unreact(user: string, messageId: string, emoji: string): Promise<ReactionChange> {
    return this.#call('DELETE', '/reactions', { user, messageId, emoji });
  }

  /** Oldest first; ephemeral messages only those `options.user` may see. */
  messages(channel = 'general', options: { user?: string } = {}): Promise<SandboxMessageView[]> {
    const query = options.user === undefined ? '' : `?user=${encodeURIComponent(options.user)}`;
    return this.#call('GET', `/channels/${encodeURIComponent(channel)}/messages${query}`);
  }

  interaction(id: string): Promise<SandboxInteractionView> {
    return this.#call('GET', `/interactions/${encodeURIComponent(id)}`);
  }

  violations(): Promise<Violation[]> {
    return this.#call('GET', '/violations');
  }

  async clearViolations(): Promise<void> {
    await this.#call('DELETE', '/violations');
  }

  requests(): Promise<RequestLogEntry[]> {
    return this.#call('GET', '/requests');
  }

  async now(): Promise<number> {
    return (await this.#call<{ now: number }>('GET', '/clock')).now;
  }

  /** Moves the sandbox's clock forward; returns the new time (epoch ms). */
  async advanceClock(advanceMs: number): Promise<number> {
    return (await this.#call<{ now: number }>('POST', '/clock', { advanceMs })).now;
  }

  async setRateLimit(everyNth: number): Promise<void> {
    await this.#call('POST', '/rate-limit', { everyNth });
  }

  /** Drops the bot's gateway connections (4000: resumable) and delays new ones by `holdMs`; returns how many dropped. */
  async disconnectGateway(options: { code?: number; holdMs?: number } = {}): Promise<number> {
    return (await this.#call<{ dropped: number }>('POST', '/gateway/disconnect', options)).dropped;
  }

  /** The bytes at an attachment URL the sandbox handed out. */
  async download(url: string): Promise<Buffer> {
    const response = await fetch(url);
    if (!response.ok) throw new Error(`GET ${url}: HTTP ${response.status}`);
    return Buffer.from(await response.arrayBuffer());
  }

  /** Polls `probe` until it returns something (not null/undefined/false); a WaitTimeoutError naming `what` after the timeout. */
  async waitFor<T>(probe: () => Promise<T | null | undefined | false>, options: { timeoutMs?: number; what: string }): Promise<T> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_WAIT_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const result = await probe();
      if (result !== null && result !== undefined && result !== false) return result;
      if (Date.now() >= deadline) throw new WaitTimeoutError(`timed out after ${timeoutMs} ms waiting for ${options.what}`);
      await new Promise((resolve) => setTimeout(resolve, POLL_INTERVAL_MS));
    }
  }
}
