import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { randomUUID } from 'node:crypto';
import { DataDirLockedError, LOCK_FILE_NAME, lockDataDir, type LockHolder } from '../src/store/data-dir-lock.js';
import { startBotStack, type BotStack } from './support/bot-stack.js';
import { runCli } from './support/cli.js';
import { startCliProcess } from './support/cli-process.js';

// One bot per DATA_DIR: real `wrongbot bot` processes on one data dir, and the lock module for what a second host or
// a half-written lock would do.

const SIGNAL_HANDLER_SETTLE_MS = 1_000;

let stack: BotStack;
const lines: string[] = [];
const log = (line: string) => lines.push(line);

test.before(async () => {
  stack = await startBotStack('lock', { workers: 0 });
});

test.after(async () => {
  await stack?.close();
});

function lockOf(dataDir: string): LockHolder {
  return JSON.parse(readFileSync(path.join(dataDir, LOCK_FILE_NAME), 'utf8')) as LockHolder;
}

/** A pid that was a process on this host and is no longer one. */
function deadPid(): number {
  return spawnSync(process.execPath, ['--eval', '']).pid!;
}

function temporaryDataDir(t: TestContext): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'wrongbot-lock-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a second bot on the same DATA_DIR is refused with a message naming the first, which carries on', async () => {
  const second = await startCliProcess(['bot'], stack.botEnv, /^wrongbot: |bot ready as/);
  try {
    const output = second.output();
    assert.doesNotMatch(output, /bot ready as/, 'a second bot started');
    const first = lockOf(stack.dataDir);
    assert.equal(first.pid, stack.bot.child.pid);
    assert.equal(first.host, hostname());
    assert.ok(output.includes(`wrongbot: DATA_DIR ${stack.dataDir} is in use by another wrongbot bot: pid ${first.pid} on ${first.host}, since ${first.since}`), output);
    assert.match(output, /Stop that bot first, or give this one a DATA_DIR of its own/);
    assert.deepEqual(await second.exited, { code: 1, signal: null });
    assert.deepEqual(lockOf(stack.dataDir), first, 'the refused bot left the lock alone');
  } finally {
    second.child.kill('SIGKILL');
  }
  assert.equal(stack.bot.child.exitCode, null, 'the first bot still runs');
  const exported = await runCli(['dataset', 'export', '--data-dir', stack.dataDir, '--out', path.join(stack.dataDir, 'export')]);
  assert.match(exported.stderr, /there are no images to export/, 'dataset export only reads, and runs beside the bot');
});

test('a bot killed with SIGKILL leaves its lock; the next one takes it over, says so, and repairs the dataset folder', async () => {
  const killed = lockOf(stack.dataDir);
  stack.bot.child.kill('SIGKILL');
  await stack.bot.exited;
  // What a crash in the middle of a curation by an older wrongbot left: files no entry owns.
  const stray = `${randomUUID()}-panel-1.png`;
  writeFileSync(path.join(stack.dataDir, 'dataset', stray), 'half a curation');

  await stack.restartBot();
  const output = stack.bot.output();
  assert.ok(output.includes(`took over ${path.join(stack.dataDir, LOCK_FILE_NAME)} from pid ${killed.pid} on ${killed.host} (since ${killed.since}), which is no longer running`), output);
  assert.match(output, new RegExp(`dataset: deleted 1 file\\(s\\) no entry owns: ${stray}`));
  assert.equal(existsSync(path.join(stack.dataDir, 'dataset', stray)), false);
  assert.equal(lockOf(stack.dataDir).pid, stack.bot.child.pid);
});

test('a bot stopped with SIGTERM releases the lock', async () => {
  // `wrongbot bot` listens for SIGTERM only once start-up has returned, just after it prints "bot ready"; a signal in
  // that instant would end it the default way, which is not what this test is about.
  await new Promise((resolve) => setTimeout(resolve, SIGNAL_HANDLER_SETTLE_MS));
  assert.equal(lockOf(stack.dataDir).pid, stack.bot.child.pid);
  stack.bot.child.kill('SIGTERM');
  assert.deepEqual(await stack.bot.exited, { code: 0, signal: null });
  assert.equal(existsSync(path.join(stack.dataDir, LOCK_FILE_NAME)), false);
});

test('a lock from another host is refused, since its pid cannot be checked from here', async (t) => {
  const dataDir = temporaryDataDir(t);
  const elsewhere: LockHolder = { pid: deadPid(), host: `not-${hostname()}`, since: '2025-01-01T00:00:00.000Z' };
  writeFileSync(path.join(dataDir, LOCK_FILE_NAME), JSON.stringify(elsewhere));
  await assert.rejects(lockDataDir(dataDir, log), (error: Error) => {
    assert.ok(error instanceof DataDirLockedError);
    assert.ok(error.message.includes(`pid ${elsewhere.pid} on not-${hostname()}, since 2025-01-01T00:00:00.000Z`), error.message);
    return true;
  });
});

test('a dead pid on this host is taken over; a lock this process holds is not, and release leaves another holder\'s lock alone', async (t) => {
  const dataDir = temporaryDataDir(t);
  const file = path.join(dataDir, LOCK_FILE_NAME);
  const dead: LockHolder = { pid: deadPid(), host: hostname(), since: '2025-01-01T00:00:00.000Z' };
  writeFileSync(file, JSON.stringify(dead));
  lines.length = 0;
  const lock = await lockDataDir(dataDir, log);
  assert.deepEqual(lockOf(dataDir), lock.holder);
  assert.equal(lock.holder.pid, process.pid);
  assert.deepEqual(lines, [`took over ${file} from pid ${dead.pid} on ${dead.host} (since ${dead.since}), which is no longer running`]);
  assert.deepEqual(readFileSync(file, 'utf8').trim(), JSON.stringify(lock.holder));

  await assert.rejects(lockDataDir(dataDir, log), DataDirLockedError, 'our own pid, but held by this process: not stale');
  lock.release();
  assert.equal(existsSync(file), false);

  const again = await lockDataDir(dataDir, log);
  const successor: LockHolder = { ...again.holder, pid: deadPid() };
  writeFileSync(file, JSON.stringify(successor));
  again.release();
  assert.deepEqual(lockOf(dataDir), successor, 'a lock that is no longer ours is not deleted');
});

// Each child loads the module, says "ready", and on the test's "go" (all at once) takes the lock, says how that went,
// and holds what it got until the test closes its stdin.
const RACER_SCRIPT = `
const { lockDataDir } = await import(process.env.LOCK_MODULE_URL);
console.log('ready');
process.stdin.once('data', async () => {
  console.log(await lockDataDir(process.env.TEST_DATA_DIR, () => {}).then(() => 'locked', (error) => error.name));
});
`;
const RACERS = 4;

test('bots starting at once over a stale lock: exactly one takes it over', async (t) => {
  const dataDir = temporaryDataDir(t);
  writeFileSync(path.join(dataDir, LOCK_FILE_NAME), JSON.stringify({ pid: deadPid(), host: hostname(), since: '2025-01-01T00:00:00.000Z' }));
  const racers = Array.from({ length: RACERS }, () => spawn(process.execPath, ['--input-type=module', '--eval', RACER_SCRIPT], {
    env: { LOCK_MODULE_URL: new URL('../src/store/data-dir-lock.js', import.meta.url).href, TEST_DATA_DIR: dataDir },
    stdio: ['pipe', 'pipe', 'inherit'],
  }));
  t.after(() => racers.forEach((racer) => racer.kill('SIGKILL')));
  const lines = racers.map((racer) => createInterface({ input: racer.stdout! })[Symbol.asyncIterator]());
  const nextLine = async (racer: number) => (await lines[racer]!.next()).value ?? 'exited without a word';
  assert.deepEqual(await Promise.all(racers.map((_, racer) => nextLine(racer))), Array<string>(RACERS).fill('ready'));
  for (const racer of racers) racer.stdin!.write('go\n');
  const outcomes = await Promise.all(racers.map((_, racer) => nextLine(racer)));
  assert.deepEqual([...outcomes].sort(), [...Array<string>(RACERS - 1).fill('DataDirLockedError'), 'locked']);
  assert.equal(lockOf(dataDir).pid, racers[outcomes.indexOf('locked')]!.pid, 'the lock names the one that got it');
  for (const racer of racers) racer.stdin!.end();
});

test('a lock file that never names its holder is refused after a grace period, saying to delete it', async (t) => {
  const dataDir = temporaryDataDir(t);
  writeFileSync(path.join(dataDir, LOCK_FILE_NAME), '');
  await assert.rejects(lockDataDir(dataDir, log), /bot\.lock exists but names no holder .* delete it and start again/);
});
