import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

// File writing that both processes need: the bot's store and the worker's trained LoRAs. Lives here because the
// worker may not import src/store.

/**
 * Writes through a temporary name in the same folder and renames it into place, so a crash leaves either the old
 * file or the whole new one under the real name, never a torn one.
 */
export function writeFileAtomic(filePath: string, data: Uint8Array | string): void {
  const folder = path.dirname(filePath);
  const temporary = path.join(folder, `.${path.basename(filePath)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(temporary, 'wx');
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
