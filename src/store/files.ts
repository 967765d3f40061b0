import { rmdirSync } from 'node:fs';

/** Removes a job's folder once its last file is gone; one that still holds files, or is already gone, is left be. */
export function removeFolderIfEmpty(folder: string): void {
  try {
    rmdirSync(folder);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOTEMPTY' && code !== 'EEXIST' && code !== 'ENOENT') throw error;
  }
}
