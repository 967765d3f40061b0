import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isAlive } from '../common/processes.js';

// One bot per DATA_DIR: two would both answer every interaction and post every result twice. The lock is a file
// created exclusively (O_EXCL) that names its holder, so a refused bot can say which one runs, and a lock left by a
// killed bot is recognised by its dead pid and taken over.

export const LOCK_FILE_NAME = 'bot.lock';
/** How long a lock that does not name its holder yet may be one being written right now. */
const INCOMPLETE_LOCK_GRACE_MS = 2_000;
const RETRY_INTERVAL_MS = 50;

export interface LockHolder {
  pid: number;
  host: string;
  /** ISO 8601. */
  since: string;
}

export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
}

export interface DataDirLock {
  readonly file: string;
  readonly holder: LockHolder;
  /** Deletes the lock file if it is still this holder's; releasing again does nothing. */
  release(): void;
}

/** The lock files this process holds: a second lock of one data dir in one process is refused, not taken over. */
const heldHere = new Map<string, LockHolder>();

/**
 * Takes the data dir for this process, or throws DataDirLockedError naming the bot that has it. A lock whose holder
 * is dead on this host is taken over, with a log line; one held on another host cannot be checked and is refused.
 */
export async function lockDataDir(dataDir: string, log: (line: string) => void): Promise<DataDirLock> {
  const dir = path.resolve(dataDir);
  const file = path.join(dir, LOCK_FILE_NAME);
  mkdirSync(dir, { recursive: true });
  const me: LockHolder = { pid: process.pid, host: os.hostname(), since: new Date().toISOString() };
  const incompleteUntil = Date.now() + INCOMPLETE_LOCK_GRACE_MS;
  let tookOverFrom: LockHolder | null = null;
  for (;;) {
    const heldAlready = heldHere.get(file);
    if (heldAlready !== undefined) throw new DataDirLockedError(inUseMessage(dir, file, heldAlready));
    if (createLock(file, me)) break;
    const found = readLock(file);
    if (found === 'gone') continue;
    if (found === 'incomplete') {
      if (Date.now() > incompleteUntil) {
        throw new DataDirLockedError(`${file} exists but names no holder (a bot killed while taking it?); if no wrongbot bot runs on DATA_DIR ${dir}, delete it and start again`);
      }
      await new Promise((resolve) => setTimeout(resolve, RETRY_INTERVAL_MS));
      continue;
    }
    if (!isStale(found)) throw new DataDirLockedError(inUseMessage(dir, file, found));
    if (setAside(file, found)) tookOverFrom = found;
  }
  heldHere.set(file, me);
  if (tookOverFrom !== null) {
    log(`took over ${file} from pid ${tookOverFrom.pid} on ${tookOverFrom.host} (since ${tookOverFrom.since}), which is no longer running`);
  }
  return {
    file,
    holder: me,
    release() {
      if (!heldHere.delete(file)) return;
      const current = readLock(file);
      if (typeof current === 'object' && sameHolder(current, me)) rmSync(file, { force: true });
    },
  };
}

function inUseMessage(dir: string, file: string, holder: LockHolder): string {
  return `DATA_DIR ${dir} is in use by another wrongbot bot: pid ${holder.pid} on ${holder.host}, since ${holder.since}. `
    + 'Two bots on one DATA_DIR would answer every interaction twice. Stop that bot first, or give this one a DATA_DIR of '
    + `its own; if that process is gone (its host crashed, or the pid now belongs to another program), delete ${file}`;
}

/** false when a lock file exists already. */
function createLock(file: string, holder: LockHolder): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'wx');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw error;
  }
  try {
    writeSync(fd, `${JSON.stringify(holder)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return true;
}

function readLock(file: string): LockHolder | 'gone' | 'incomplete' {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw error;
  }
  try {
    const { pid, host, since } = JSON.parse(text) as Partial<LockHolder>;
    if (Number.isInteger(pid) && typeof host === 'string' && typeof since === 'string') return { pid: pid!, host, since };
  } catch {
    // Created but not written yet, or cut short by a crash: the caller waits a moment before calling it damaged.
  }
  return 'incomplete';
}

function isStale(holder: LockHolder): boolean {
  if (holder.host !== os.hostname()) return false;
  // Our own pid in a lock this process does not hold: an earlier life of this process (a container restarted with
  // the same pid) left it.
  return holder.pid === process.pid || !isAlive(holder.pid);
}

/**
 * Moves a stale lock out of the way; false when another starter took it over first. Renaming, then checking what was
 * moved, keeps two starters that both found the same stale lock from each deleting the other's new one.
 */
function setAside(file: string, stale: LockHolder): boolean {
  const aside = `${file}.${process.pid}.stale`;
  try {
    renameSync(file, aside);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw error;
  }
  const moved = readLock(aside);
  const wasStale = typeof moved === 'object' && sameHolder(moved, stale);
  if (!wasStale) {
    // Another starter's fresh lock: put it back. Should a third starter have created one in this instant, that one
    // stays and the second runs unlocked; three bots starting together over a stale lock is the case not covered.
    try {
      linkSync(aside, file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
  }
  rmSync(aside, { force: true });
  return wasStale;
}

function sameHolder(a: LockHolder, b: LockHolder): boolean {
  return a.pid === b.pid && a.host === b.host && a.since === b.since;
}
