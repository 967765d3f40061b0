import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { COMMANDS } from '../src/commands/index.js';
import { LocalDiscord } from '../src/sandbox/local-discord.js';
import { SandboxClient } from '../src/sandbox/control-client.js';
import { runCli } from './support/cli.js';
import { startCliProcess } from './support/cli-process.js';
import { deletePrefix, testPrefix, TEST_REDIS_URL } from './support/worker-process.js';

// `npm start` as a newcomer runs it: with no token, a local Discord, the bot and a worker, driven from outside.

test('with no DISCORD_TOKEN, `wrongbot start` runs a local Discord, the bot and a worker that answer a command', async () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-start-'));
  const prefix = testPrefix('start');
  const start = await startCliProcess(['start'], {
    DISCORD_TOKEN: '', SANDBOX_PORT: '0', DATA_DIR: dataDir, REDIS_URL: TEST_REDIS_URL, QUEUE_PREFIX: prefix,
    MODEL_DIR: '', LORA_PATH: '', IMAGE_SIZES: '', WORKER: '', WORKER_DEVICE: 'cpu',
  }, /\[worker\] .*worker \S+ ready/);
  try {
    await start.waitForLine(/\[bot\] .*bot ready/);
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
