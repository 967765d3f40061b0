import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { SimulatedClock } from './clock.js';
import { CONTROL_PREFIX, handleControl } from './control-api.js';
import { Gateway } from './gateway.js';
import { OpenApiValidator } from './openapi-validator.js';
import { RateLimiter } from './rate-limiter.js';
import { Recorder } from './recorder.js';
import { API_PREFIX, RestApi } from './rest-api.js';
import { sendJson } from './router.js';
import type { SandboxServices } from './services.js';
import { World } from './world.js';

// A local Discord that discord.js 14 talks to unchanged (`rest: { api: apiUrl }` and the gateway URL it is
// given): REST under /api/v10, the gateway WebSocket, attachment downloads, and the control API under /_sandbox.

export interface LocalDiscordOptions {
  host?: string;
  /** 0 = any free port. */
  port?: number;
  /** The token the bot must present (`Authorization: Bot <token>`, and in IDENTIFY). */
  botToken?: string;
  /** Answer every n-th rate-limit-eligible REST request with 429 (0 = never). */
  rateLimitEveryNth?: number;
  log?: (line: string) => void;
}

const DEFAULT_BOT_TOKEN = 'sandbox-token';
const ATTACHMENT_PATH = /^\/attachments\/(\d+)\/(\d+)\/[^/]+$/;

export class LocalDiscord {
  readonly apiUrl: string;
  readonly controlUrl: string;
  readonly botToken: string;

  private constructor(private readonly server: Server, private readonly services: SandboxServices, readonly url: string) {
    this.apiUrl = `${url}/api`;
    this.controlUrl = `${url}${CONTROL_PREFIX}`;
    this.botToken = services.botToken;
  }

  static async start(options: LocalDiscordOptions = {}): Promise<LocalDiscord> {
    const host = options.host ?? '127.0.0.1';
    const log = options.log ?? (() => {});
    // Parsed once per server: the spec is large.
    const validator = OpenApiValidator.fromFile();
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const { port } = server.address() as AddressInfo;
    const hostInUrl = host.includes(':') ? `[${host}]` : host;
    const url = `http://${hostInUrl}:${port}`;
    const clock = new SimulatedClock();
    const world = new World(clock, url);
    const botToken = options.botToken ?? DEFAULT_BOT_TOKEN;
    const services: SandboxServices = {
      world, clock, botToken, log,
      gateway: new Gateway({ world, botToken, publicWsUrl: `ws://${hostInUrl}:${port}`, log }),
      recorder: new Recorder(clock, log),
      rateLimiter: new RateLimiter(options.rateLimitEveryNth ?? 0),
    };
    const rest = new RestApi(services, validator);
    server.on('request', (request: IncomingMessage, response: ServerResponse) => {
      const requestUrl = parseRequestUrl(request, url);
      if (requestUrl === null) {
        sendJson(response, 400, { message: `${JSON.stringify(request.url)} is not a request path` });
        return;
      }
      const path = requestUrl.pathname;
      let handled: Promise<void> | void;
      if (path.startsWith(`${API_PREFIX}/`)) handled = rest.handle(request, response, requestUrl);
      else if (path === CONTROL_PREFIX || path.startsWith(`${CONTROL_PREFIX}/`)) handled = handleControl(services, request, response, requestUrl);
      else handled = serveAttachment(services, request, response, path);
      void Promise.resolve(handled).catch((error: unknown) => {
        log(`request ${request.method} ${path} failed: ${(error as Error).stack ?? String(error)}`);
        if (!response.headersSent) sendJson(response, 500, { message: 'internal error' });
      });
    });
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = parseRequestUrl(request, url)?.pathname;
      if (path === undefined || !services.gateway.handleUpgrade(request, socket, head, path)) socket.destroy();
    });
    log(`local Discord at ${url} (REST ${url}${API_PREFIX}, gateway ${services.gateway.url}, control ${url}${CONTROL_PREFIX})`);
    return new LocalDiscord(server, services, url);
  }

  async close(): Promise<void> {
    await this.services.gateway.close();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Null for a request target that is no URL path, such as '//' (read as a URL with an empty host). */
function parseRequestUrl(request: IncomingMessage, base: string): URL | null {
  try {
    return new URL(request.url ?? '/', base);
  } catch {
    return null;
  }
}

function serveAttachment(services: SandboxServices, request: IncomingMessage, response: ServerResponse, path: string): void {
  const match = ATTACHMENT_PATH.exec(path);
  const attachment = match === null || request.method !== 'GET' ? undefined : services.world.findAttachment(match[1]!, match[2]!);
  if (attachment === undefined) {
    sendJson(response, 404, { message: `nothing at ${path}` });
    return;
  }
  response.writeHead(200, { 'Content-Type': attachment.contentType, 'Content-Length': attachment.bytes.length }).end(attachment.bytes);
}
