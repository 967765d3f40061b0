import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

// File writing that both processes need: the bot's store and the worker's trained LoRAs. Lives here because the
// worker may not import src/store.

/** What writeFileAtomic's temporaries are called: `.<target>.<pid>.<12 hex digits>.tmp`. */
const TEMPORARY_NAME = /^\.(.+)\.\d+\.[0-9a-f]{12}\.tmp$/;

/**
 * Writes through a temporary name in the same folder and renames it into place, so a crash leaves either the old
 * file or the whole new one under the real name, never a torn one. `mode` (before the umask) is the new file's from
 * its first byte, so a secret is never readable by others, not even for a moment.
 */
export function writeFileAtomic(filePath: string, data: Uint8Array | string, mode = 0o666): void {
  const folder = path.dirname(filePath);
  const temporary = path.join(folder, `.${path.basename(filePath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temporary, 'wx', mode);
  let renamed = false;
  try {
    try {
      writeFileSync(fd, data);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temporary, filePath);
    renamed = true;
  } finally {
    if (!renamed) rmSync(temporary, { force: true });
  }
  // The rename itself only survives a power cut once the folder's entry is on disk.
  syncFolder(folder);
}

/**
 * The name of the file a writeFileAtomic temporary was for, or null when `name` is no such temporary; one left by a
 * killed process names what it was writing.
 */
export function atomicWriteTarget(name: string): string | null {
  const match = TEMPORARY_NAME.exec(name);
  return match === null ? null : match[1]!;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function syncFolder(folder: string): void {
  const fd = openSync(folder, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
