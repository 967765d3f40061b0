// How wrongbot reaches Redis: which server (REDIS_URL, a Redis already on the default address, or a private
// redis-server under DATA_DIR), whether it is safe for BullMQ, and the connection settings for producers and workers.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { Redis } from 'ioredis';
import { writeFileAtomic } from '../common/files.js';
import { isAlive } from '../common/processes.js';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
export const PROBE_TIMEOUT_MS = 500;
/** Replaying a large AOF happens before the server answers, so this is generous. */
const SERVER_START_TIMEOUT_MS = 30_000;
const SERVER_STOP_TIMEOUT_MS = 10_000;
const RECONNECT_FIRST_DELAY_MS = 100;
const RECONNECT_MAX_DELAY_MS = 5_000;
/** One retry rides out a dropped connection that comes straight back; more would keep a Discord reply waiting. */
const PRODUCER_MAX_RETRIES_PER_REQUEST = 1;

const SERVER_POLL_INTERVAL_MS = 50;
const PRIVATE_SERVER_SUBDIR = 'redis';
const STATE_FILE_NAME = 'server.json';
const LOCK_FILE_NAME = 'start.lock';
const LOG_FILE_NAME = 'redis.log';
const PASSWORD_FILE_NAME = 'password';
/** What wrongbot makes: 32 random bytes in hex, which needs no quoting in a URL or in redis-server's config. */
const PASSWORD_FORMAT = /^[0-9a-f]{64}$/;
/** The password lets anyone on this host into the queue: only its owner may read it. */
const PASSWORD_FILE_MODE = 0o600;
const LOG_TAIL_LINES = 5;
const INSTALL_HINT = 'install redis-server (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) or set REDIS_URL to a running Redis';

export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError';
}

export interface RedisSettings {
  /** What producers and workers connect to; REDIS_URL exactly as given when it is set. */
  url: string;
  /** Set when wrongbot runs its own redis-server under DATA_DIR. */
  privateServer: PrivateRedisServer | null;
  /** Things the operator should hear about at start, one sentence each. */
  warnings: string[];
}

export interface ResolveRedisOptions {
  /** Overrides DATA_DIR; the private server lives in its `redis/` subfolder. */
  dataDir?: string;
  /** Where to look for a Redis that is already running when REDIS_URL is unset. */
  defaultUrl?: string;
  probeTimeoutMs?: number;
}

/**
 * Picks the Redis wrongbot uses: REDIS_URL when set, else the default address when something there answers PING,
 * else a private redis-server under DATA_DIR (reusing one that an earlier run left behind).
 */
export async function resolveRedis(env: NodeJS.ProcessEnv = process.env, options: ResolveRedisOptions = {}): Promise<RedisSettings> {
  const probeTimeoutMs = options.probeTimeoutMs ?? PROBE_TIMEOUT_MS;
  const warnings: string[] = [];
  const givenUrl = env.REDIS_URL?.trim();
  if (givenUrl) {
    assertRedisUrl(givenUrl, 'REDIS_URL');
    const evictionWarning = await probeRedis(givenUrl, probeTimeoutMs).catch((error: unknown) => {
      const fix = error instanceof RedisRefusedError ? 'fix the credentials in REDIS_URL' : 'start that server or fix REDIS_URL';
      throw new RedisUnavailableError(`${errorMessage(error)}; ${fix}`);
    });
    pushWarning(warnings, evictionWarning);
    return { url: givenUrl, privateServer: null, warnings };
  }

  const defaultUrl = options.defaultUrl ?? DEFAULT_REDIS_URL;
  const defaultProbe = await probeRedis(defaultUrl, probeTimeoutMs).then(
    (evictionWarning) => ({ evictionWarning, failure: null }),
    (failure: unknown) => ({ evictionWarning: null, failure }),
  );
  const defaultFailure = defaultProbe.failure;
  if (defaultFailure === null) {
    pushWarning(warnings, defaultProbe.evictionWarning);
    return { url: defaultUrl, privateServer: null, warnings };
  }
  if (defaultFailure instanceof RedisRefusedError) {
    warnings.push(`${defaultFailure.message}; using a private redis-server instead (set REDIS_URL, password included, to use that one)`);
  }

  const dataDir = path.resolve(options.dataDir ?? (env.DATA_DIR || 'data'));
  const privateServer = await PrivateRedisServer.startOrReuse(path.join(dataDir, PRIVATE_SERVER_SUBDIR), env, probeTimeoutMs).catch((error: unknown) => {
    throw new RedisUnavailableError(`${errorMessage(defaultFailure)}, and wrongbot could not start a private Redis: ${errorMessage(error)}`);
  });
  pushWarning(warnings, await probeRedis(privateServer.url, probeTimeoutMs));
  return { url: privateServer.url, privateServer, warnings };
}

/**
 * For the bot's Queues: while Redis is away a command fails at once instead of queueing behind a reconnect that may
 * never come, so a slash command can answer "the queue is down" rather than time out. The connection itself keeps
 * reconnecting, so producing works again once Redis is back.
 */
export function producerConnection(url: string): Redis {
  return new Redis(url, { enableOfflineQueue: false, maxRetriesPerRequest: PRODUCER_MAX_RETRIES_PER_REQUEST, retryStrategy: reconnectDelayMs });
}

/** For Workers and QueueEvents: BullMQ requires `maxRetriesPerRequest: null` on blocking connections; they wait out any outage. */
export function workerConnection(url: string): Redis {
  return new Redis(url, { maxRetriesPerRequest: null, retryStrategy: reconnectDelayMs });
}

/** Capped exponential backoff for ioredis' retryStrategy; `attempt` starts at 1. */
function reconnectDelayMs(attempt: number): number {
  return Math.min(RECONNECT_FIRST_DELAY_MS * 2 ** Math.max(0, attempt - 1), RECONNECT_MAX_DELAY_MS);
}

/** Returns a warning when the server may evict keys (BullMQ then loses jobs) or its policy cannot be read; else null. */
export async function checkEvictionPolicy(connection: Redis): Promise<string | null> {
  const where = `Redis at ${describeConnection(connection)}`;
  let reply: unknown;
  try {
    reply = await connection.config('GET', 'maxmemory-policy');
  } catch (error) {
    if (!isReplyError(error)) throw error;
    reply = error;
  }
  const policy = Array.isArray(reply) ? reply[1] : undefined;
  if (typeof policy !== 'string') {
    const answer = reply instanceof Error ? errorMessage(reply) : 'no value';
    return `${where} did not let us read maxmemory-policy (CONFIG GET answered: ${answer}), so the policy could not be checked; make sure it is noeviction, or BullMQ can lose jobs`;
  }
  if (policy === 'noeviction') return null;
  return `${where} has maxmemory-policy ${policy}, which evicts keys under memory pressure and makes BullMQ lose jobs; set "maxmemory-policy noeviction" in its config (or run CONFIG SET maxmemory-policy noeviction)`;
}

/** Resolves when the server answers PING with PONG; otherwise rejects with a RedisUnavailableError saying why. */
export async function pingRedis(url: string, timeoutMs: number = PROBE_TIMEOUT_MS): Promise<void> {
  await withProbe(url, timeoutMs, (client) => client.ping());
}

/** Pings, then returns checkEvictionPolicy's warning. */
async function probeRedis(url: string, timeoutMs: number): Promise<string | null> {
  return withProbe(url, timeoutMs, async (client) => {
    await client.ping();
    return checkEvictionPolicy(client);
  });
}

/** Something answered as Redis does, but would not serve us (password, ACL): a private server can still stand in. */
class RedisRefusedError extends RedisUnavailableError {}

interface PrivateServerState {
  pid: number;
  port: number;
  /** The wrongbot process that stops the server when it exits. */
  ownerPid: number;
}

/**
 * A redis-server that wrongbot started under DATA_DIR, on 127.0.0.1 only and with a password (kept in `redis/password`,
 * readable by its owner alone), since any local user or process could otherwise read and change the queue. The
 * process that started it stops it when it exits (normally, or on SIGINT, SIGTERM, SIGHUP); another wrongbot process
 * that finds it running shares it without stopping it. One left behind by a SIGKILLed owner is adopted by the next
 * process that finds it.
 */
export class PrivateRedisServer {
  /** With the password: what wrongbot's own connections use. */
  readonly url: string;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly pid: number,
    password: string,
    /** Whether this process stops the server at exit; false while another live wrongbot process owns it. */
    readonly owned: boolean,
    private readonly child: ChildProcess | null,
  ) {
    this.url = localUrl(port, password);
    if (owned) serversToStopAtExit.add(this);
    syncExitHooks();
  }

  /** What resolveRedis falls back to; `dir` holds the AOF, the log and the state file that later starts reuse. */
  static async startOrReuse(dir: string, env: NodeJS.ProcessEnv, probeTimeoutMs: number): Promise<PrivateRedisServer> {
    await fs.mkdir(dir, { recursive: true });
    // The bot and the worker often start together; two servers on one AOF would corrupt it.
    return withStartLock(dir, () => PrivateRedisServer.startOrReuseLocked(dir, env, probeTimeoutMs));
  }

  private static async startOrReuseLocked(dir: string, env: NodeJS.ProcessEnv, probeTimeoutMs: number): Promise<PrivateRedisServer> {
    const passwordPath = path.join(dir, PASSWORD_FILE_NAME);
    const password = await privatePassword(passwordPath);
    const statePath = path.join(dir, STATE_FILE_NAME);
    const previous = await readState(statePath);
    const found = previous && (await inspectServer(previous.port, password, probeTimeoutMs));
    if (previous && found?.pid === previous.pid) {
      // One that an older wrongbot started without a password: from now on it asks for ours.
      if (!found.passwordRequired) await withProbe(localUrl(previous.port), probeTimeoutMs, (client) => client.config('SET', 'requirepass', password));
      const owned = !isAlive(previous.ownerPid);
      if (owned) await writeState(statePath, { ...previous, ownerPid: process.pid });
      return new PrivateRedisServer(dir, previous.port, previous.pid, password, owned, null);
    }
    if (previous && !found && isAlive(previous.pid) && !(await isPortFree(previous.port))) {
      // Most likely ours with a password that has changed since: a second server would share its AOF and corrupt it.
      throw new RedisUnavailableError(`the private redis-server in ${dir} (pid ${previous.pid}) still runs on port ${previous.port} but let wrongbot in neither with the password in ${passwordPath} nor without one; stop it (kill ${previous.pid}), then start wrongbot again`);
    }
    // The previous port keeps workers of other wrongbot processes, still retrying it, in reach of the new server.
    const port = previous && (await isPortFree(previous.port)) ? previous.port : await freePort();
    const child = await startServer(dir, port, password, env);
    await writeState(statePath, { pid: child.pid!, port, ownerPid: process.pid });
    return new PrivateRedisServer(dir, port, child.pid!, password, true, child);
  }

  /** Stops the server and waits for it to finish writing its AOF; does nothing for a server this process does not own. */
  async stop(): Promise<void> {
    if (!serversToStopAtExit.delete(this)) return;
    syncExitHooks();
    signal(this.pid, 'SIGTERM');
    if (!(await this.exited(SERVER_STOP_TIMEOUT_MS))) {
      signal(this.pid, 'SIGKILL');
      await this.exited(SERVER_STOP_TIMEOUT_MS);
    }
  }

  private async exited(timeoutMs: number): Promise<boolean> {
    const { child } = this;
    if (child) {
      // Our own child stays a zombie, and so "alive", until Node reaps it: wait for the exit event instead of polling.
      if (child.exitCode !== null || child.signalCode !== null) return true;
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(false), timeoutMs);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve(true);
        });
      });
    }
    return waitFor(() => !isAlive(this.pid), timeoutMs);
  }
}

const serversToStopAtExit = new Set<PrivateRedisServer>();
const HANDLED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
let exitHooksInstalled = false;

function stopAllAtExit(): void {
  for (const server of serversToStopAtExit) signal(server.pid, 'SIGTERM');
  serversToStopAtExit.clear();
}

function onSignal(received: NodeJS.Signals): void {
  // An application handler of its own shuts down gracefully, which needs Redis, then exits: the exit hook stops it then.
  if (process.listenerCount(received) > 1) return;
  stopAllAtExit();
  syncExitHooks();
  // With our handler gone the signal's default action applies, so the process ends as it would have without us.
  process.kill(process.pid, received);
}

function syncExitHooks(): void {
  const wanted = serversToStopAtExit.size > 0;
  if (wanted === exitHooksInstalled) return;
  exitHooksInstalled = wanted;
  if (wanted) {
    process.on('exit', stopAllAtExit);
    for (const name of HANDLED_SIGNALS) process.on(name, onSignal);
  } else {
    process.off('exit', stopAllAtExit);
    for (const name of HANDLED_SIGNALS) process.off(name, onSignal);
  }
}

async function withStartLock<T>(dir: string, use: () => Promise<T>): Promise<T> {
  const lockPath = path.join(dir, LOCK_FILE_NAME);
  const deadline = Date.now() + SERVER_START_TIMEOUT_MS;
  for (;;) {
    try {
      await fs.writeFile(lockPath, String(process.pid), { flag: 'wx' });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const holder = Number(await fs.readFile(lockPath, 'utf8').catch(() => ''));
    // An empty lock is one being written right now; a dead holder's lock is left from a start that was killed.
    if (holder > 0 && !isAlive(holder)) {
      await fs.rm(lockPath, { force: true });
      continue;
    }
    if (Date.now() > deadline) {
      throw new RedisUnavailableError(`wrongbot process ${holder} has been starting the private redis-server in ${dir} for over ${SERVER_START_TIMEOUT_MS} ms; stop that process, or delete ${lockPath} if it is gone`);
    }
    await new Promise((resolve) => setTimeout(resolve, SERVER_POLL_INTERVAL_MS));
  }
  try {
    return await use();
  } finally {
    await fs.rm(lockPath, { force: true });
  }
}

/** The private server's password: made once, then read by every start, so clients and a running server agree. */
async function privatePassword(passwordPath: string): Promise<string> {
  let text: string;
  try {
    text = await fs.readFile(passwordPath, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    const password = randomBytes(32).toString('hex');
    writeFileAtomic(passwordPath, `${password}\n`, PASSWORD_FILE_MODE);
    return password;
  }
  const password = text.trim();
  if (!PASSWORD_FORMAT.test(password)) {
    throw new RedisUnavailableError(`${passwordPath} holds ${password.length} character(s), not the 64 hex digits wrongbot writes there; delete it and wrongbot makes a new password`);
  }
  return password;
}

function localUrl(port: number, password?: string): string {
  return `redis://${password === undefined ? '' : `:${password}@`}127.0.0.1:${port}`;
}

async function startServer(dir: string, port: number, password: string, env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const logPath = path.join(dir, LOG_FILE_NAME);
  const args = [
    // The password comes on stdin ("-"), where, unlike the command line, no other user can read it.
    '-',
    // Loopback only: protected-mode does not apply once a password is set, so this is what keeps other hosts out.
    '--bind', '127.0.0.1',
    '--port', String(port),
    '--dir', dir,
    '--appendonly', 'yes',
    '--appendfsync', 'everysec',
    '--maxmemory-policy', 'noeviction',
    // The AOF already holds every job; RDB snapshots on top would only double the disk writes.
    '--save', '',
    '--daemonize', 'no',
    '--logfile', logPath,
  ];
  // Detached, so a Ctrl-C in the terminal reaches only us and we stop the server after the app has closed its queues.
  const child = spawn('redis-server', args, { cwd: dir, env, detached: true, stdio: ['pipe', 'ignore', 'ignore'] });
  child.unref();
  // A server that dies at once closes its stdin early; its exit, below, says why.
  child.stdin!.on('error', () => {});
  child.stdin!.end(`requirepass ${password}\n`);
  let failure: string | null = null;
  child.once('error', (error: NodeJS.ErrnoException) => {
    failure = error.code === 'ENOENT' ? `there is no redis-server on PATH; ${INSTALL_HINT}` : `redis-server did not start (${error.message}); ${INSTALL_HINT}`;
  });
  child.once('exit', (code, signalName) => {
    failure ??= `the redis-server in ${dir} exited (${signalName ?? `code ${code}`}); its log ${logPath} ends with: ${logTail(logPath)}`;
  });
  const ready = await waitFor(async () => failure !== null || (await serverPid(localUrl(port, password), PROBE_TIMEOUT_MS)) === child.pid, SERVER_START_TIMEOUT_MS);
  if (failure !== null) throw new RedisUnavailableError(failure);
  if (!ready) {
    signal(child.pid!, 'SIGKILL');
    throw new RedisUnavailableError(`the redis-server in ${dir} did not answer within ${SERVER_START_TIMEOUT_MS} ms; its log ${logPath} ends with: ${logTail(logPath)}`);
  }
  return child;
}

function logTail(logPath: string): string {
  let text = '';
  try {
    text = readFileSync(logPath, 'utf8');
  } catch {
    // A server that died before opening its log leaves nothing to quote.
  }
  const lines = text.trim().split('\n').slice(-LOG_TAIL_LINES);
  return lines.join(' | ') || '(empty)';
}

async function readState(statePath: string): Promise<PrivateServerState | null> {
  try {
    const state = JSON.parse(await fs.readFile(statePath, 'utf8')) as Partial<PrivateServerState>;
    const { pid, port, ownerPid } = state;
    if (Number.isInteger(pid) && Number.isInteger(port) && Number.isInteger(ownerPid)) return { pid: pid!, port: port!, ownerPid: ownerPid! };
  } catch {
    // No state or a damaged one: either way there is no server of ours to reuse.
  }
  return null;
}

async function writeState(statePath: string, state: PrivateServerState): Promise<void> {
  const temporary = `${statePath}.${process.pid}.tmp`;
  await fs.writeFile(temporary, `${JSON.stringify(state)}\n`);
  await fs.rename(temporary, statePath);
}

/**
 * The pid the Redis on this port reports, and whether it asked for the password; null when it lets us in neither
 * without the password nor with it. Without first: AUTH to a server that has no password only prints a warning.
 */
async function inspectServer(port: number, password: string, timeoutMs: number): Promise<{ pid: number; passwordRequired: boolean } | null> {
  const openPid = await serverPid(localUrl(port), timeoutMs);
  if (openPid !== null) return { pid: openPid, passwordRequired: false };
  const pid = await serverPid(localUrl(port, password), timeoutMs);
  return pid === null ? null : { pid, passwordRequired: true };
}

/**
 * The pid a Redis at this URL reports, or null when nothing answers or it refuses us. A pid match tells our own
 * server from a stranger that took the port since, and INFO answers even while the server is still loading its AOF.
 */
async function serverPid(url: string, timeoutMs: number): Promise<number | null> {
  try {
    const info = await withProbe(url, timeoutMs, (client) => client.info('server'));
    const match = /^process_id:(\d+)/m.exec(info);
    return match ? Number(match[1]) : null;
  } catch {
    return null;
  }
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await condition()) return true;
    if (Date.now() >= deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, SERVER_POLL_INTERVAL_MS));
  }
}

function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Runs `use` on a short-lived connection that tries once and gives up after `timeoutMs`, whatever hangs: a refused
 * port, a host that drops packets, or a server that accepts but never answers.
 */
async function withProbe<T>(url: string, timeoutMs: number, use: (client: Redis) => Promise<T>): Promise<T> {
  assertRedisUrl(url);
  const where = redactUrl(url);
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: timeoutMs,
    // INFO and PING answer while a server loads its AOF, where the ready check would hold us until loading ends.
    enableReadyCheck: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  // The cause (ECONNREFUSED, a refused AUTH) arrives only as an error event; connect() and the commands then fail
  // with a bare "Connection is closed". Listening also keeps ioredis from printing it.
  let cause: Error | undefined;
  client.on('error', (error: Error) => {
    cause = error;
  });
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RedisUnavailableError(`Redis at ${where} did not answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    const work = client.connect().then(() => use(client));
    // When the deadline wins, the abandoned attempt's rejection must not go unhandled.
    work.catch(() => {});
    return await Promise.race([work, deadline]);
  } catch (error) {
    if (error instanceof RedisUnavailableError) throw error;
    const reason = isReplyError(error) ? error : (cause ?? error);
    if (isReplyError(reason)) throw new RedisRefusedError(`Redis at ${where} refused our connection: ${errorMessage(reason)}`);
    if (errorMessage(reason).startsWith('Protocol error')) throw new RedisUnavailableError(`${where} answered, but not as Redis does (wrong port?)`);
    throw new RedisUnavailableError(`Redis at ${where} is unreachable: ${errorMessage(reason)}`);
  } finally {
    clearTimeout(timer);
    client.disconnect();
  }
}

function isReplyError(error: unknown): error is Error {
  return error instanceof Error && error.name === 'ReplyError';
}

function assertRedisUrl(url: string, name = 'The Redis URL'): void {
  const parsed = URL.canParse(url) ? new URL(url) : null;
  if (!parsed || (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:')) {
    throw new RedisUnavailableError(`${name} "${redactUrl(url)}" is not a redis:// or rediss:// URL; write it as redis://[:password@]host[:port][/db]`);
  }
}

/** The URL with its password masked, for messages. */
function redactUrl(url: string): string {
  if (!URL.canParse(url)) return url.replace(/:[^:@/]*@/, ':***@');
  const parsed = new URL(url);
  if (!parsed.password) return url;
  parsed.password = '***';
  return parsed.toString();
}

function describeConnection(connection: Redis): string {
  const { host, port, path: socketPath, tls } = connection.options;
  if (socketPath) return socketPath;
  return `${tls ? 'rediss' : 'redis'}://${host}:${port}`;
}

function pushWarning(warnings: string[], warning: string | null): void {
  if (warning) warnings.push(warning);
}

/** The message without a closing period, so it reads well inside a longer sentence. */
function errorMessage(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).replace(/\.$/, '');
}
