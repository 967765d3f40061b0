import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { once } from 'node:events';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { workerEnvironment } from '../src/cli/worker-environment.js';
import { COMMANDS } from '../src/commands/index.js';
import { LocalDiscord } from '../src/sandbox/local-discord.js';
import { SandboxClient } from '../src/sandbox/control-client.js';
import { runCli } from './support/cli.js';
import { startCliProcess } from './support/cli-process.js';
import { deletePrefix, testPrefix, TEST_REDIS_URL } from './support/worker-process.js';

// `npm start` as a newcomer runs it: with no token, a local Discord, the bot and a worker, driven from outside.

/** The environment of the child of `parentPid` that runs `wrongbot <command>`, read from /proc (Linux only). */
function childEnvironment(parentPid: number, command: string): Record<string, string> {
  for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
    let stat: string;
    let args: string[];
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue; // gone since the listing
    }
    // "pid (name) state ppid …", where the name may itself hold spaces or parentheses.
    const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    if (parent !== parentPid || args[2] !== command) continue;
    const entries = readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').filter((entry) => entry !== '');
    return Object.fromEntries(entries.map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]));
  }
  throw new Error(`no child of ${parentPid} runs wrongbot ${command}`);
}

test('with no DISCORD_TOKEN, `wrongbot start` runs a local Discord, the bot and a worker that answer a command', async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-start-'));
  const prefix = testPrefix('start');
  const start = await startCliProcess(['start'], {
    DISCORD_TOKEN: '', SANDBOX_PORT: '0', DATA_DIR: dataDir, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix,
    MODEL_DIR: '', LORA_PATH: '', IMAGE_SIZES: '', WORKER: '', WORKER_DEVICE: 'cpu', DISCORD_CLIENT_SECRET: 'kept-from-the-worker',
  }, /\[worker\] .*worker \S+ ready/);
  try {
    await start.waitForLine(/\[bot\] .*bot ready/);
    if (process.platform === 'linux') {
      const worker = childEnvironment(start.child.pid!, 'worker');
      assert.deepEqual(Object.keys(worker).filter((name) => name.startsWith('DISCORD_')), [], 'the worker gets no Discord setting');
      assert.equal(worker['REDIS_URL'], TEST_REDIS_URL);
      assert.equal(worker['QUEUE_PREFIX'], prefix);
      assert.equal(childEnvironment(start.child.pid!, 'bot')['DISCORD_TOKEN'], 'sandbox-token', 'the bot does get the token');
    }
    const controlUrl = /The same over HTTP: (\S+) /.exec(await start.waitForLine(/The same over HTTP/))![1]!;
    const sandbox = new SandboxClient(controlUrl);
    const { interactionId } = await sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'a cat', seed: 42, steps: 2 } });
    const result = await sandbox.waitFor(async () => (await sandbox.messages()).find((message) => message.interactionId === interactionId && message.attachments.length > 0),
      { what: 'the image', timeoutMs: 60_000 });
    assert.equal((result.embeds[0]!['fields'] as Array<{ name: string; value: string }>).find((field) => field.name === 'Size')!.value, '128×128',
      'the tiny model’s sizes by default');
    assert.deepEqual(await sandbox.violations(), []);
  } finally {
    start.child.kill('SIGTERM');
    const exit = await start.exited;
    assert.equal(exit.code, 0, start.output());
    assert.match(start.output(), /bot stopped/);
    assert.match(start.output(), /worker stopped/);
    await deletePrefix(prefix);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('with a DISCORD_TOKEN and WORKER=off, `wrongbot start` runs the bot alone against that Discord', async () => {
  const discord = await LocalDiscord.start();
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-start-'));
  const prefix = testPrefix('start-token');
  try {
    const { guildId } = await new SandboxClient(discord.controlUrl).state();
    const start = await startCliProcess(['start'], {
      DISCORD_TOKEN: discord.botToken, DISCORD_API_URL: discord.apiUrl, DISCORD_GUILD_ID: guildId, WORKER: 'off',
      DATA_DIR: dataDir, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix,
    }, /\[bot\] .*bot ready/);
    start.child.kill('SIGTERM');
    assert.equal((await start.exited).code, 0, start.output());
    assert.doesNotMatch(start.output(), /\[worker\]|local Discord/, 'no worker and no local Discord of its own');
  } finally {
    await discord.close();
    await deletePrefix(prefix);
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('the worker\'s environment is start\'s without DISCORD_TOKEN or any other Discord setting, whatever its case', () => {
  const env = {
    DISCORD_TOKEN: 'token', DISCORD_API_URL: 'http://127.0.0.1:8787/api', DISCORD_GUILD_ID: '1', DISCORD_CLIENT_SECRET: 'secret',
    discord_token: 'token', MODEL_DIR: 'models/sdxl', LORA_PATH: 'wrong.safetensors', REDIS_URL: 'redis://127.0.0.1:6379',
    QUEUE_PREFIX: 'wrongbot', WORKER_DEVICE: 'cuda:1', TRAINER_COMMAND: 'python train.py', PATH: '/usr/bin',
  };
  assert.deepEqual(workerEnvironment(env), {
    MODEL_DIR: 'models/sdxl', LORA_PATH: 'wrong.safetensors', REDIS_URL: 'redis://127.0.0.1:6379', QUEUE_PREFIX: 'wrongbot',
    WORKER_DEVICE: 'cuda:1', TRAINER_COMMAND: 'python train.py', PATH: '/usr/bin',
  });
  assert.equal(env.DISCORD_TOKEN, 'token', 'the bot\'s environment is left as it is');
});

test('`wrongbot start` on a port already taken says so, and how to pick another, instead of EADDRINUSE', async () => {
  const taken = createServer().listen(0, '127.0.0.1');
  await once(taken, 'listening');
  const { port } = taken.address() as AddressInfo;
  try {
    const result = await runCli(['start'], { DISCORD_TOKEN: '', SANDBOX_PORT: String(port), REDIS_URL: TEST_REDIS_URL });
    assert.equal(result.code, 1);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.match(result.stderr, new RegExp(`^wrongbot: SANDBOX_PORT = ${port}: the port is already taken, probably by another wrongbot .*SANDBOX_PORT=0 npm start`));
  } finally {
    taken.close();
  }
});

test('a bad setting stops `wrongbot start` before anything runs, naming the variable', async () => {
  const result = await runCli(['start'], { DISCORD_TOKEN: 'x', VOTES_TO_CURATE: 'lots', REDIS_URL: TEST_REDIS_URL });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /VOTES_TO_CURATE = "lots" must be an integer/);
  const worker = await runCli(['start'], { DISCORD_TOKEN: 'x', WORKER: 'maybe', REDIS_URL: TEST_REDIS_URL });
  assert.match(worker.stderr, /WORKER = "maybe" must be on or off/);
});

test('`wrongbot deploy-commands` registers every command for a guild through the REST API', async () => {
  const discord = await LocalDiscord.start();
  try {
    const sandbox = new SandboxClient(discord.controlUrl);
    const { guildId } = await sandbox.state();
    const result = await runCli(['deploy-commands', '--guild', guildId], { DISCORD_TOKEN: discord.botToken, DISCORD_API_URL: discord.apiUrl });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, new RegExp(`registered ${COMMANDS.length} commands for guild ${guildId}`));
    assert.deepEqual((await sandbox.state()).commands.map((command) => command.name).sort(),
      ['cancel', 'compare', 'dataset', 'defaults', 'imagine', 'judge', 'lora', 'queue', 'train', 'wrong']);
    assert.deepEqual(await sandbox.violations(), []);
  } finally {
    await discord.close();
  }
});
