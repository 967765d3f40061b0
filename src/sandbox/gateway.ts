import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';
import type { World } from './world.js';

// The gateway: Discord's WebSocket protocol (JSON encoding) — HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeat
// ACKs, RESUME with replay of what a dropped connection missed — and the dispatches the sandbox sends
// (interactions, reactions) to every session whose intents ask for them.

export const HEARTBEAT_INTERVAL_MS = 41_250;
const GATEWAY_PATH = '/gateway';
export const Intent = { Guilds: 1 << 0, GuildMessageReactions: 1 << 10 } as const;
/** Dispatches kept per session for replay after a RESUME. */
const REPLAY_CAPACITY = 1000;
/** Close codes Discord uses (and discord.js reacts to). */
export const CloseCode = {
  UnknownError: 4000, UnknownOpcode: 4001, DecodeError: 4002, NotAuthenticated: 4003, AuthenticationFailed: 4004,
  AlreadyAuthenticated: 4005,
} as const;

const Op = { Dispatch: 0, Heartbeat: 1, Identify: 2, PresenceUpdate: 3, VoiceStateUpdate: 4, Resume: 6, RequestGuildMembers: 8, InvalidSession: 9, Hello: 10, HeartbeatAck: 11 } as const;

interface GatewayPayload { op: number; d: unknown; s: number | null; t: string | null }

interface Session {
  readonly id: string;
  readonly intents: number;
  readonly shard: unknown;
  seq: number;
  /** Sent (or, while detached, held) dispatches, oldest first, for replay on RESUME. */
  readonly sent: GatewayPayload[];
  socket: WebSocket | null;
}

interface GatewayOptions {
  readonly world: World;
  readonly botToken: string;
  /** ws://host:port of this server; READY's resume_gateway_url and /gateway/bot's url point here. */
  readonly publicWsUrl: string;
  readonly log: (line: string) => void;
}

export class Gateway {
  readonly #server = new WebSocketServer({ noServer: true });
  readonly #sessions = new Map<string, Session>();
  /** Until this wall-clock time new connections wait for their HELLO, so dispatches pile up for replay. */
  #holdUntilMs = 0;

  constructor(private readonly options: GatewayOptions) {}

  get url(): string {
    return `${this.options.publicWsUrl}${GATEWAY_PATH}`;
  }

  /** Takes over an HTTP upgrade request for `path`; false when it is not the gateway's. */
  handleUpgrade(request: IncomingMessage, socket: Duplex, head: Buffer, path: string): boolean {
    if (path !== GATEWAY_PATH) return false;
    this.#server.handleUpgrade(request, socket, head, (ws) => this.#accept(ws));
    return true;
  }

  #accept(ws: WebSocket): void {
    let session: Session | null = null;
    // ws reports a frame it cannot take (bad UTF-8, too large) here and closes the connection itself; unheard, the
    // error would end the process.
    ws.on('error', (error) => this.options.log(`gateway: connection error: ${error.message}`));
    ws.on('message', (raw) => {
      const payload = decode(raw.toString());
      if (payload === null) {
        ws.close(CloseCode.DecodeError, 'Error while decoding payload.');
        return;
      }
      session = this.#receive(ws, session, payload);
    });
    const hello = () => send(ws, { op: Op.Hello, d: { heartbeat_interval: HEARTBEAT_INTERVAL_MS, _trace: ['["sandbox-gateway"]'] }, s: null, t: null });
    const waitMs = this.#holdUntilMs - Date.now();
    // Cleared when the connection closes (close() terminates them all), so no timer outlives its connection.
    const helloTimer = waitMs > 0 ? setTimeout(hello, waitMs).unref() : undefined;
    if (helloTimer === undefined) hello();
    ws.on('close', () => {
      clearTimeout(helloTimer);
      if (session?.socket === ws) session.socket = null;
    });
  }

  /** Handles one client payload; returns the connection's session (new after IDENTIFY or RESUME). */
  #receive(ws: WebSocket, session: Session | null, payload: GatewayPayload): Session | null {
    const d = (payload.d ?? {}) as Record<string, unknown>;
    switch (payload.op) {
      case Op.Heartbeat:
        send(ws, { op: Op.HeartbeatAck, d: null, s: null, t: null });
        return session;
      case Op.Identify:
        if (session !== null) return closeWith(ws, CloseCode.AlreadyAuthenticated, 'Already authenticated.');
        if (d['token'] !== this.options.botToken) return closeWith(ws, CloseCode.AuthenticationFailed, 'Authentication failed.');
        return this.#identify(ws, d);
      case Op.Resume:
        if (d['token'] !== this.options.botToken) return closeWith(ws, CloseCode.AuthenticationFailed, 'Authentication failed.');
        return this.#resume(ws, d);
      case Op.PresenceUpdate:
      case Op.VoiceStateUpdate:
        if (session === null) return closeWith(ws, CloseCode.NotAuthenticated, 'Not authenticated.');
        return session;
      case Op.RequestGuildMembers:
        if (session === null) return closeWith(ws, CloseCode.NotAuthenticated, 'Not authenticated.');
        this.#sendTo(session, 'GUILD_MEMBERS_CHUNK', this.#membersChunk(d));
        return session;
      default:
        return closeWith(ws, CloseCode.UnknownOpcode, `Unknown opcode ${payload.op}.`);
    }
  }

  #identify(ws: WebSocket, d: Record<string, unknown>): Session {
    // A new IDENTIFY means the bot started over: sessions nobody is connected to can no longer be resumed by it.
    for (const [id, old] of this.#sessions) if (old.socket === null) this.#sessions.delete(id);
    const session: Session = {
      id: randomBytes(16).toString('hex'), intents: Number(d['intents'] ?? 0), shard: d['shard'] ?? [0, 1], seq: 0, sent: [], socket: ws,
    };
    this.#sessions.set(session.id, session);
    const { world } = this.options;
    this.options.log(`gateway: IDENTIFY, session ${session.id}, intents ${session.intents}`);
    this.#sendTo(session, 'READY', {
      v: 10, user: { ...world.userJson(world.botUser), verified: true, mfa_enabled: false, email: null },
      guilds: [{ id: world.guildId, unavailable: true }], session_id: session.id, resume_gateway_url: this.url,
      shard: session.shard, application: { id: world.applicationId, flags: 0 }, session_type: 'normal',
      private_channels: [], relationships: [], presences: [], guild_join_requests: [], user_settings: {},
      geo_ordered_rtc_regions: [], _trace: ['["sandbox-gateway"]'],
    });
    if ((session.intents & Intent.Guilds) !== 0) this.#sendTo(session, 'GUILD_CREATE', world.guildCreateJson());
    return session;
  }

  #resume(ws: WebSocket, d: Record<string, unknown>): Session | null {
    const session = this.#sessions.get(String(d['session_id']));
    const seq = Number(d['seq'] ?? 0);
    const oldest = session?.sent[0]?.s ?? (session?.seq ?? 0) + 1;
    if (session === undefined || seq + 1 < oldest) {
      // d: false = the session cannot be resumed; discord.js identifies afresh.
      send(ws, { op: Op.InvalidSession, d: false, s: null, t: null });
      return null;
    }
    if (session.socket !== null && session.socket !== ws) session.socket.close(CloseCode.UnknownError, 'Resumed elsewhere.');
    session.socket = ws;
    const missed = session.sent.filter((payload) => payload.s! > seq);
    this.options.log(`gateway: RESUME of ${session.id} from ${seq}, replaying ${missed.length}`);
    for (const payload of missed) send(ws, payload);
    this.#sendTo(session, 'RESUMED', { _trace: ['["sandbox-gateway"]'] });
    return session;
  }

  /** Answers a member request (discord.js's members.fetch with several users) in one chunk. */
  #membersChunk(d: Record<string, unknown>): Record<string, unknown> {
    const { world } = this.options;
    const wanted = d['user_ids'] === undefined ? null : [d['user_ids']].flat().map(String);
    const query = typeof d['query'] === 'string' ? d['query'] : '';
    const limit = Number(d['limit'] ?? 0) || Infinity;
    const users = world.users().filter((user) => (wanted === null ? user.name.startsWith(query) : wanted.includes(user.id))).slice(0, limit);
    return {
      guild_id: world.guildId, members: users.map((user) => world.memberJson(user)), chunk_index: 0, chunk_count: 1,
      not_found: wanted?.filter((id) => world.findUser(id) === undefined) ?? [], nonce: d['nonce'],
    };
  }

  #sendTo(session: Session, event: string, data: unknown): void {
    const payload: GatewayPayload = { op: Op.Dispatch, d: data, s: ++session.seq, t: event };
    session.sent.push(payload);
    if (session.sent.length > REPLAY_CAPACITY) session.sent.shift();
    if (session.socket !== null) send(session.socket, payload);
  }

  /** Sends an event to every session (connected or waiting to resume) whose intents include `intent`. */
  dispatch(event: string, data: unknown, intent?: number): void {
    for (const session of this.#sessions.values()) {
      if (intent === undefined || (session.intents & intent) !== 0) this.#sendTo(session, event, data);
    }
  }

  /** How many sessions are connected right now. */
  connectedSessions(): number {
    return [...this.#sessions.values()].filter((session) => session.socket !== null).length;
  }

  /**
   * Drops every connection with `code` (4000 lets discord.js resume) and holds new ones for `holdMs`, so that
   * dispatches made meanwhile must be replayed.
   */
  disconnect(code: number, holdMs: number): number {
    let dropped = 0;
    for (const session of this.#sessions.values()) {
      if (session.socket === null) continue;
      session.socket.close(code, 'Sandbox disconnect.');
      session.socket = null;
      dropped++;
    }
    // Only once every close went through: a refused code must not leave new connections held.
    this.#holdUntilMs = Date.now() + holdMs;
    return dropped;
  }

  async close(): Promise<void> {
    for (const ws of this.#server.clients) ws.terminate();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

/** A client payload, or null when the text is not a JSON object. */
function decode(text: string): GatewayPayload | null {
  try {
    const payload: unknown = JSON.parse(text);
    return typeof payload === 'object' && payload !== null && !Array.isArray(payload) ? payload as GatewayPayload : null;
  } catch {
    return null;
  }
}

function send(ws: WebSocket, payload: GatewayPayload): void {
  if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(payload));
}

function closeWith(ws: WebSocket, code: number, reason: string): null {
  ws.close(code, reason);
  return null;
}
