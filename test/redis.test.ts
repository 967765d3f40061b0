import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import path from 'node:path';
import { Queue, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import {
  checkEvictionPolicy, pingRedis, producerConnection, resolveRedis, workerConnection, RedisUnavailableError,
  type PrivateRedisServer, type RedisSettings,
} from '../src/queue/redis.js';
import { cleanUpTestRedis, freePort, startTestRedis, temporaryDir } from './support/redis-server.js';

// Generous bounds that only tell "failed fast" and "came back" from "hung"; no test asserts a timing beyond them.
const FAIL_FAST_BOUND_MS = 5_000;
const RECONNECT_BOUND_MS = 30_000;
const STOPPED_BOUND_MS = 15_000;

const privateServers: PrivateRedisServer[] = [];
/** Every private server a test or a child started, by URL and pid, for the last-resort cleanup. */
const startedPrivately = new Map<string, number>();
const clients: Redis[] = [];
const children: ChildProcess[] = [];

test.after(async () => {
  for (const client of clients) client.disconnect();
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.allSettled(privateServers.map((server) => server.stop()));
  // Shared or orphaned servers are not ours to stop(); shut down any still running, checking the pid so a stranger
  // that took a port since is left alone.
  await Promise.allSettled([...startedPrivately].map(([url, pid]) => shutDownIfStillRunning(url, pid)));
  await cleanUpTestRedis();
});

async function shutDownIfStillRunning(url: string, pid: number): Promise<void> {
  const connection = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  connection.on('error', () => {});
  try {
    await connection.connect();
    if ((await connection.info('server')).includes(`process_id:${pid}\r\n`)) await connection.shutdown('NOSAVE').catch(() => {});
  } catch {
    // Nothing answers there any more, which is what we want.
  } finally {
    connection.disconnect();
  }
}

function track<T extends RedisSettings>(settings: T): T {
  if (settings.privateServer) {
    privateServers.push(settings.privateServer);
    startedPrivately.set(settings.url, settings.privateServer.pid);
  }
  return settings;
}

function client(url: string): Redis {
  const connection = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  connection.on('error', () => {});
  clients.push(connection);
  return connection;
}

async function configGet(url: string, name: string): Promise<string> {
  const reply = (await client(url).config('GET', name)) as string[];
  return reply[1]!;
}

/** A URL where nothing answers, standing in for 127.0.0.1:6379 so tests do not depend on what runs there. */
async function deadUrl(): Promise<string> {
  return `redis://127.0.0.1:${await freePort()}`;
}

async function eventually(condition: () => Promise<boolean>, boundMs: number, what: string): Promise<void> {
  const deadline = Date.now() + boundMs;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`${what} within ${boundMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** A pid that was a process on this host and is no longer one. */
function deadPid(): number {
  return spawnSync(process.execPath, ['--eval', '']).pid!;
}

const answers = (url: string) => pingRedis(url).then(() => true, () => false);

async function withinBound<T>(promise: Promise<T>, boundMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} hung for ${boundMs} ms`)), boundMs);
  });
  try {
    return await Promise.race([promise, hung]);
  } finally {
    clearTimeout(timer);
  }
}

test('REDIS_URL is used exactly as given', async () => {
  const server = await startTestRedis();
  const url = `${server.url}/0`;
  const settings = track(await resolveRedis({ REDIS_URL: url }, { defaultUrl: await deadUrl(), dataDir: await temporaryDir('data') }));
  assert.equal(settings.url, url);
  assert.equal(settings.privateServer, null);
  assert.deepEqual(settings.warnings, []);
});

test('REDIS_URL with a password works, and a wrong password is named without being printed', async () => {
  const server = await startTestRedis({ args: ['--requirepass', 's3cret'] });
  const good = `redis://:s3cret@127.0.0.1:${server.port}`;
  assert.equal(track(await resolveRedis({ REDIS_URL: good })).url, good);

  const bad = `redis://:wrong-one@127.0.0.1:${server.port}`;
  await assert.rejects(resolveRedis({ REDIS_URL: bad }), (error: Error) => {
    assert.ok(error instanceof RedisUnavailableError);
    assert.match(error.message, /WRONGPASS.*fix the credentials in REDIS_URL/);
    assert.doesNotMatch(error.message, /wrong-one/);
    return true;
  });
});

test('a REDIS_URL where nothing answers, or that is not a Redis URL, fails at once saying what to fix', async () => {
  const url = await deadUrl();
  await assert.rejects(withinBound(resolveRedis({ REDIS_URL: url }), FAIL_FAST_BOUND_MS, 'resolveRedis'), (error: Error) => {
    assert.ok(error instanceof RedisUnavailableError);
    assert.ok(error.message.includes(url), error.message);
    assert.match(error.message, /start that server or fix REDIS_URL/);
    return true;
  });
  await assert.rejects(resolveRedis({ REDIS_URL: '127.0.0.1:6379' }), /REDIS_URL "127\.0\.0\.1:6379" is not a redis:\/\/ or rediss:\/\/ URL/);
});

test('with nothing at the default address, a private server starts under DATA_DIR with AOF and noeviction, is reused, and stops', async () => {
  const dataDir = await temporaryDir('data');
  const env = { PATH: process.env.PATH, DATA_DIR: dataDir };
  const defaultUrl = await deadUrl();
  const first = track(await resolveRedis(env, { defaultUrl }));
  const server = first.privateServer;
  assert.ok(server, 'a private server was started');
  assert.equal(first.url, server.url);
  assert.equal(server.owned, true);
  assert.deepEqual(first.warnings, []);
  assert.equal(await configGet(first.url, 'dir'), path.join(dataDir, 'redis'));
  assert.equal(await configGet(first.url, 'appendonly'), 'yes');
  assert.equal(await configGet(first.url, 'appendfsync'), 'everysec');
  assert.equal(await configGet(first.url, 'maxmemory-policy'), 'noeviction');
  assert.equal(await configGet(first.url, 'bind'), '127.0.0.1');

  const second = track(await resolveRedis(env, { defaultUrl }));
  assert.equal(second.url, first.url);
  assert.equal(second.privateServer?.pid, server.pid);
  assert.equal(second.privateServer?.owned, false, 'the process that started it stays the one to stop it');
  await second.privateServer?.stop();
  assert.ok(await answers(first.url), 'stopping a shared server that this resolve does not own leaves it running');

  await server.stop();
  assert.equal(await answers(first.url), false);
});

test('the private server listens on 127.0.0.1 only and wants the password kept owner-only under DATA_DIR, also after a restart', async () => {
  const dataDir = await temporaryDir('data');
  const options = { defaultUrl: await deadUrl(), dataDir };
  const settings = track(await resolveRedis({ PATH: process.env.PATH }, options));
  const server = settings.privateServer!;
  await assert.rejects(pingRedis(`redis://127.0.0.1:${server.port}`), /refused our connection: NOAUTH/);
  const passwordFile = path.join(dataDir, 'redis', 'password');
  assert.equal((await stat(passwordFile)).mode & 0o777, 0o600);
  const password = (await readFile(passwordFile, 'utf8')).trim();
  assert.match(password, /^[0-9a-f]{64}$/);
  assert.equal(settings.url, `redis://:${password}@127.0.0.1:${server.port}`);

  await assert.rejects(pingRedis(`redis://:${'0'.repeat(64)}@127.0.0.1:${server.port}`), /refused our connection: WRONGPASS/);
  for (const connect of [producerConnection, workerConnection]) {
    const connection = connect(settings.url);
    clients.push(connection);
    // The producer's connection refuses commands until it is ready, as the bot's does.
    if (connection.status !== 'ready') await withinBound(once(connection, 'ready'), FAIL_FAST_BOUND_MS, `${connect.name} connecting`);
    assert.equal(await connection.ping(), 'PONG');
  }
  assert.equal(await configGet(settings.url, 'bind'), '127.0.0.1');
  assert.doesNotMatch(execFileSync('ps', ['-o', 'args=', '-p', String(server.pid)], { encoding: 'utf8' }), new RegExp(password),
    'the password is not on the command line, where any user can read it');

  await server.stop();
  const restarted = track(await resolveRedis({ PATH: process.env.PATH }, options));
  assert.notEqual(restarted.privateServer!.pid, server.pid);
  assert.equal(restarted.url, `redis://:${password}@127.0.0.1:${restarted.privateServer!.port}`, 'the same password');
  await assert.rejects(pingRedis(`redis://127.0.0.1:${restarted.privateServer!.port}`), /NOAUTH/);
});

test('a private server that an older wrongbot started without a password is adopted and made to ask for one', async () => {
  const dataDir = await temporaryDir('data');
  const dir = path.join(dataDir, 'redis');
  await mkdir(dir);
  const older = await startTestRedis({ dir });
  const pid = Number(/process_id:(\d+)/.exec(await client(older.url).info('server'))![1]);
  await writeFile(path.join(dir, 'server.json'), JSON.stringify({ pid, port: older.port, ownerPid: deadPid() }));

  const settings = track(await resolveRedis({ PATH: process.env.PATH }, { defaultUrl: await deadUrl(), dataDir }));
  assert.equal(settings.privateServer?.pid, pid);
  await assert.rejects(pingRedis(older.url), /NOAUTH/);
  await pingRedis(settings.url);
});

test('a running private server that the password on file does not open is refused, not started twice on its AOF', async () => {
  const dataDir = await temporaryDir('data');
  const options = { defaultUrl: await deadUrl(), dataDir };
  const settings = track(await resolveRedis({ PATH: process.env.PATH }, options));
  const passwordFile = path.join(dataDir, 'redis', 'password');
  await writeFile(passwordFile, 'not one\n');
  await assert.rejects(resolveRedis({ PATH: process.env.PATH }, options), /password holds 7 character\(s\), not the 64 hex digits wrongbot writes there; delete it/);
  await rm(passwordFile);
  await assert.rejects(resolveRedis({ PATH: process.env.PATH }, options), (error: Error) => {
    assert.ok(error.message.includes(`(pid ${settings.privateServer!.pid}) still runs on port ${settings.privateServer!.port} but let wrongbot in neither with the password in ${passwordFile} nor without one`), error.message);
    return true;
  });
  await pingRedis(settings.url);
});

test('two starts at once share one private server', async () => {
  const options = { defaultUrl: await deadUrl(), dataDir: await temporaryDir('data') };
  const [first, second] = (await Promise.all([resolveRedis({ PATH: process.env.PATH }, options), resolveRedis({ PATH: process.env.PATH }, options)])).map(track);
  assert.equal(first!.url, second!.url);
  assert.equal(first!.privateServer?.pid, second!.privateServer?.pid);
  assert.deepEqual([first!.privateServer?.owned, second!.privateServer?.owned].sort(), [false, true]);
  await Promise.all([first!.privateServer?.stop(), second!.privateServer?.stop()]);
  assert.equal(await answers(first!.url), false);
});

test('with no redis-server on PATH, the error is one line naming both fixes', async () => {
  const emptyDir = await temporaryDir('empty-path');
  const defaultUrl = await deadUrl();
  await assert.rejects(resolveRedis({ PATH: emptyDir }, { defaultUrl, dataDir: await temporaryDir('data') }), (error: Error) => {
    assert.ok(error instanceof RedisUnavailableError);
    assert.doesNotMatch(error.message, /\n/);
    assert.ok(error.message.includes(defaultUrl), error.message);
    assert.match(error.message, /no redis-server on PATH/);
    assert.match(error.message, /apt-get install redis-server/);
    assert.match(error.message, /brew install redis/);
    assert.match(error.message, /set REDIS_URL/);
    return true;
  });
});

test('an evicting maxmemory-policy gets a warning, noeviction none, and an unreadable policy says so', async () => {
  const evicting = await startTestRedis({ args: ['--maxmemory-policy', 'allkeys-lru'] });
  const warning = await checkEvictionPolicy(client(evicting.url));
  assert.match(warning ?? '', /allkeys-lru/);
  assert.match(warning ?? '', /noeviction/);
  assert.deepEqual(track(await resolveRedis({ REDIS_URL: evicting.url })).warnings, [warning]);

  const safe = await startTestRedis({ args: ['--maxmemory-policy', 'noeviction'] });
  assert.equal(await checkEvictionPolicy(client(safe.url)), null);

  // Managed Redis services often deny CONFIG; an ACL that does the same stands in for them.
  const locked = await startTestRedis({ args: ['--user', 'default', 'on', 'nopass', '~*', '&*', '+@all', '-config'] });
  const [lockedWarning] = track(await resolveRedis({ REDIS_URL: locked.url })).warnings;
  assert.match(lockedWarning ?? '', /could not be checked/);
  assert.match(lockedWarning ?? '', /NOPERM/);
});

test('a producer connection fails fast with a clear error once its server is gone', async () => {
  const server = await startTestRedis();
  const connection = producerConnection(server.url);
  const queue = new Queue('redis-test-producer', { connection });
  queue.on('error', () => {});
  try {
    await queue.add('first', { n: 1 });
    await server.stop();
    const error = await withinBound(
      queue.add('second', { n: 2 }).then(
        () => assert.fail('adding a job with Redis stopped succeeded'),
        (failure: Error) => failure,
      ),
      FAIL_FAST_BOUND_MS,
      'queue.add with Redis stopped',
    );
    assert.match(error.message, /enableOfflineQueue|Connection is closed|max retries/i);
  } finally {
    await queue.close();
    // BullMQ leaves a connection it was handed open; this one would otherwise retry forever and keep the test alive.
    connection.disconnect();
  }
});

test('a worker connection reconnects after its server restarts on the same port, and AOF keeps the jobs', async () => {
  const dir = await temporaryDir('aof');
  const aof = ['--appendonly', 'yes', '--appendfsync', 'everysec'];
  const first = await startTestRedis({ dir, args: aof });
  const name = 'redis-test-worker';
  const workerRedis = workerConnection(first.url);
  const producerRedis = producerConnection(first.url);
  const worker = new Worker(name, async (job: Job<{ n: number }>) => job.data.n * 2, { connection: workerRedis });
  worker.on('error', () => {});
  const completed = new Map<string, unknown>();
  worker.on('completed', (job, result) => completed.set(job.id!, result));
  const producer = new Queue(name, { connection: producerRedis });
  producer.on('error', () => {});
  try {
    const before = await producer.add('before', { n: 1 });
    await eventually(async () => completed.has(before.id!), RECONNECT_BOUND_MS, 'the first job completed');

    await first.stop();
    await startTestRedis({ port: first.port, dir, args: aof });
    // The producer needs a moment to reconnect; a job lost with the old process would stay 'unknown' and fail this.
    const stateOfBefore = () => producer.getJobState(before.id!).catch(() => 'unreachable');
    await eventually(async () => (await stateOfBefore()) === 'completed', RECONNECT_BOUND_MS, 'the job completed before the restart was there after it');

    const after = await producer.add('after', { n: 21 });
    await eventually(async () => completed.has(after.id!), RECONNECT_BOUND_MS, 'the worker took a job after the restart');
    assert.equal(completed.get(after.id!), 42);
  } finally {
    await Promise.allSettled([worker.close(), producer.close()]);
    workerRedis.disconnect();
    producerRedis.disconnect();
  }
});

// A child process stands in for a wrongbot process, so exits and signals reach it and not the test runner.
const CHILD_SCRIPT = `
const { resolveRedis } = await import(process.env.REDIS_MODULE_URL);
const settings = await resolveRedis({ PATH: process.env.PATH }, { defaultUrl: process.env.DEFAULT_URL, dataDir: process.env.TEST_DATA_DIR });
console.log(JSON.stringify({ url: settings.url, pid: settings.privateServer.pid }));
if (process.env.STAY === '1') setInterval(() => {}, 60_000);
`;

async function startChild(dataDir: string, defaultUrl: string, stay: boolean): Promise<{ child: ChildProcess; url: string; pid: number }> {
  const child = spawn(process.execPath, ['--input-type=module', '--eval', CHILD_SCRIPT], {
    env: {
      PATH: process.env.PATH,
      REDIS_MODULE_URL: new URL('../src/queue/redis.js', import.meta.url).href,
      DEFAULT_URL: defaultUrl,
      TEST_DATA_DIR: dataDir,
      STAY: stay ? '1' : '0',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  children.push(child);
  const [line] = await withinBound(
    (async () => {
      for await (const output of createInterface({ input: child.stdout! })) return [output];
      throw new Error('the child exited without printing its Redis');
    })(),
    RECONNECT_BOUND_MS,
    'the child starting its private server',
  );
  const started = JSON.parse(line!) as { url: string; pid: number };
  startedPrivately.set(started.url, started.pid);
  return { child, ...started };
}

function exitOf(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

test('the private server stops when its process exits normally or on SIGTERM', async () => {
  const normal = await startChild(await temporaryDir('data'), await deadUrl(), false);
  assert.deepEqual(await withinBound(exitOf(normal.child), STOPPED_BOUND_MS, 'the child exiting by itself'), { code: 0, signal: null });
  await eventually(async () => !(await answers(normal.url)), STOPPED_BOUND_MS, 'the server stopped after a normal exit');

  const terminated = await startChild(await temporaryDir('data'), await deadUrl(), true);
  terminated.child.kill('SIGTERM');
  assert.deepEqual(await withinBound(exitOf(terminated.child), STOPPED_BOUND_MS, 'the child ending on SIGTERM'), { code: null, signal: 'SIGTERM' });
  await eventually(async () => !(await answers(terminated.url)), STOPPED_BOUND_MS, 'the server stopped after SIGTERM');
});

test('a private server left by a SIGKILLed process is adopted by the next start, not duplicated', async () => {
  const dataDir = await temporaryDir('data');
  const defaultUrl = await deadUrl();
  const killed = await startChild(dataDir, defaultUrl, true);
  killed.child.kill('SIGKILL');
  await exitOf(killed.child);
  assert.ok(await answers(killed.url), 'a SIGKILLed process cannot stop its server');

  const settings = track(await resolveRedis({ PATH: process.env.PATH }, { defaultUrl, dataDir }));
  assert.equal(settings.url, killed.url);
  assert.equal(settings.privateServer?.pid, killed.pid);
  assert.equal(settings.privateServer?.owned, true, 'the orphan now belongs to this process');
  await settings.privateServer?.stop();
  assert.equal(await answers(killed.url), false);
});
