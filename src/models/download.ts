import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { appendFile, mkdir, open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileBytes, type HubCache } from './hub-cache.js';
import { blobName, HubError, type HubClient, type RemoteFile } from './hub-client.js';

// One file of a repo into the cache's blobs: grown in a partial file beside the blob, continued with a Range
// request after a cut connection (in this run, or in an earlier one, Python's included), and checked against the
// hash the Hub lists before it becomes the blob. Files of several gigabytes come over connections that drop.

/** The waits before each new attempt; an attempt that received bytes starts the count again. */
const RETRY_DELAYS_MS = [1_000, 2_000, 4_000, 8_000];
const HTTP_PARTIAL_CONTENT = 206;

export interface DownloadEvents {
  /** Bytes written to the partial file, as they come. */
  onBytes(bytes: number): void;
  /** A line worth showing: a retry, a restart. */
  onNote(line: string): void;
}

export class IntegrityError extends Error {
  override name = 'IntegrityError';
}

/**
 * fetch reports every network failure, a connection cut in the middle of a body included, as a TypeError (the Fetch
 * standard's "network error"); a failing disk throws errors with a code (ENOSPC), which no retry mends.
 */
function isRetryable(error: unknown): boolean {
  return error instanceof TypeError || (error instanceof HubError && error.retryable);
}

/** The hash the Hub lists for the file: sha256 for LFS files, git's blob hash (sha1 of a header and the bytes) for the rest. */
async function digestOf(file: string, remote: RemoteFile): Promise<string> {
  const hash = createHash(remote.sha256 === null ? 'sha1' : 'sha256');
  if (remote.sha256 === null) hash.update(`blob ${remote.sizeBytes}\0`);
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Appends the body of one response to the partial file (or starts it anew). */
async function receive(response: Response, partial: string, append: boolean, events: DownloadEvents): Promise<void> {
  const handle = await open(partial, append ? 'a' : 'w');
  try {
    for await (const chunk of response.body ?? []) {
      await handle.write(chunk);
      events.onBytes(chunk.byteLength);
    }
  } finally {
    await handle.close();
  }
}

/** What went wrong in a line: fetch's TypeErrors carry the socket's reason in their cause. */
function describe(error: unknown): string {
  if (error instanceof TypeError) {
    const cause = (error as { cause?: { code?: string; message?: string } }).cause;
    return `connection lost (${cause?.code ?? cause?.message ?? error.message})`;
  }
  return (error as Error).message;
}

export async function downloadBlob(client: HubClient, cache: HubCache, repo: string, commit: string, remote: RemoteFile, events: DownloadEvents): Promise<void> {
  const name = blobName(remote);
  const partial = cache.partialPath(repo, name);
  const label = `${remote.path} of ${repo}@${commit}`;
  await mkdir(path.dirname(partial), { recursive: true });
  if (fileBytes(partial) > remote.sizeBytes) await rm(partial);
  // Made up front so that an empty file, which needs no request, becomes a blob like the others.
  await appendFile(partial, '');
  let failures = 0;
  while (fileBytes(partial) < remote.sizeBytes) {
    const offset = fileBytes(partial);
    let receivedBytes = 0;
    const counting: DownloadEvents = { ...events, onBytes: (bytes) => { receivedBytes += bytes; events.onBytes(bytes); } };
    try {
      const response = await client.openFile(repo, commit, remote.path, offset);
      // A server that ignores Range sends the whole file: start the partial file again rather than append it.
      const append = offset > 0 && response.status === HTTP_PARTIAL_CONTENT;
      if (offset > 0 && !append) events.onNote(`${label}: the server sent the whole file instead of the rest; starting it again`);
      await receive(response, partial, append, counting);
      if (receivedBytes === 0) throw new HubError(`the server sent no bytes from offset ${offset}`, true);
    } catch (error) {
      if (!isRetryable(error)) throw error;
      failures = receivedBytes > 0 ? 1 : failures + 1;
      const delayMs = RETRY_DELAYS_MS[failures - 1];
      const where = `${label}: ${describe(error)} at ${fileBytes(partial)} of ${remote.sizeBytes} bytes`;
      if (delayMs === undefined) throw new HubError(`${where}, ${failures} times in a row; the partial file is kept: pull again to continue`, true);
      events.onNote(`${where}; resuming in ${delayMs / 1000} s`);
      await sleep(delayMs);
    }
  }
  const received = fileBytes(partial);
  const expected = remote.sha256 ?? remote.gitOid;
  const actual = received === remote.sizeBytes ? await digestOf(partial, remote) : null;
  if (actual !== expected) {
    await rm(partial, { force: true });
    throw new IntegrityError(actual === null
      ? `${label}: received ${received} bytes where the Hub lists ${remote.sizeBytes}; the download was removed`
      : `${label}: ${remote.sha256 === null ? 'git hash' : 'sha256'} ${actual} is not the ${expected} the Hub lists; the download was removed`);
  }
  await rename(partial, cache.blobPath(repo, name));
}
