import { existsSync } from 'node:fs';
import path from 'node:path';
import { downloadBlob } from './download.js';
import { fileBytes, type HubCache } from './hub-cache.js';
import { blobName, HubClient, type HubSettings, type RemoteFile } from './hub-client.js';
import { isPipeline, KNOWN_REPOS, knownRepo, selectFiles, type RepoRole } from './known-repos.js';
import { cachedSnapshot, ModelSourceError } from './resolve.js';
import { COMMIT_HASH, DEFAULT_REVISION, parseRepoRef, type RepoRef } from './repo-ref.js';

// `wrongbot models pull`: the files of a repo that wrongbot reads, into the Hugging Face cache at the commit its
// revision names now. A file already in the snapshot costs no request; a blob already in the cache (another
// revision's, or Python's) is linked without one; the rest is downloaded, resumed and checked (download.ts).

export interface PullProgress {
  /** The file being received. */
  file: string;
  receivedBytes: number;
  /** What this pull receives in all: the blobs it lacks, less what their partial files already hold. */
  totalBytes: number;
}

export interface PullEvents {
  onProgress(progress: PullProgress): void;
  onNote(line: string): void;
}

export interface PullResult {
  ref: RepoRef;
  commit: string;
  /** The snapshot folder, or a LoRA's file: what MODEL_DIR or LORA_PATH naming the repo resolve to. */
  path: string;
  role: RepoRole;
  files: number;
  /** Every file taken, whether it came now or was there before. */
  sizeBytes: number;
  receivedBytes: number;
}

export class PullTargetError extends Error {
  override name = 'PullTargetError';
}

/** `sdxl-base`, `sdxl-base@REV`, `owner/name` or `owner/name@REV`. */
export function parsePullTarget(text: string): RepoRef {
  const at = text.indexOf('@');
  const known = KNOWN_REPOS[at === -1 ? text : text.slice(0, at)];
  const ref = parseRepoRef(known === undefined ? text : `${known.repo}${at === -1 ? '' : text.slice(at)}`);
  if (ref === null) {
    throw new PullTargetError(`${JSON.stringify(text)} is neither a name (${Object.keys(KNOWN_REPOS).join(', ')}) nor a repo id owner/name[@revision]`);
  }
  return ref;
}

function result(ref: RepoRef, commit: string, dir: string, files: string[], sizeBytes: number, receivedBytes: number): PullResult {
  const isLora = !isPipeline(files);
  const role = knownRepo(ref.repo)?.role ?? (isLora ? 'lora' : 'model');
  return { ref, commit, path: isLora ? path.join(dir, ...files[0]!.split('/')) : dir, role, files: files.length, sizeBytes, receivedBytes };
}

/** HF_HUB_OFFLINE: what the cache holds, or which repo or file it lacks. */
function fromCache(ref: RepoRef, cache: HubCache): PullResult {
  try {
    const snapshot = cachedSnapshot(ref, cache);
    const sizeBytes = snapshot.files.reduce((sum, file) => sum + fileBytes(path.join(snapshot.dir, ...file.split('/'))), 0);
    return result(ref, snapshot.commit, snapshot.dir, snapshot.files, sizeBytes, 0);
  } catch (error) {
    if (error instanceof ModelSourceError) throw new ModelSourceError(`HF_HUB_OFFLINE is set, so only the cache was looked at, and ${error.message}`);
    throw error;
  }
}

export async function pullRepo(ref: RepoRef, cache: HubCache, settings: HubSettings, events: PullEvents): Promise<PullResult> {
  if (settings.offline) return fromCache(ref, cache);
  const { repo } = ref;
  const client = new HubClient(settings);
  const revision = ref.revision ?? DEFAULT_REVISION;
  const commit = COMMIT_HASH.test(revision) ? revision : await client.commitOf(repo, revision);
  const listing = await client.listFiles(repo, commit);
  const chosen = selectFiles(repo, `${repo}@${revision}`, listing.map((file) => file.path));
  const files = listing.filter((file) => chosen.includes(file.path));
  const lacking = files.filter((file) => !existsSync(cache.snapshotPath(repo, commit, file.path)));
  // One download per blob: SDXL's two tokenizers share their vocabulary and merges files.
  const toFetch = new Map<string, RemoteFile>();
  for (const file of lacking) {
    const name = blobName(file);
    if (!existsSync(cache.blobPath(repo, name))) toFetch.set(name, file);
  }
  const totalBytes = [...toFetch].reduce((sum, [name, file]) => sum + file.sizeBytes - Math.min(file.sizeBytes, fileBytes(cache.partialPath(repo, name))), 0);
  let receivedBytes = 0;
  for (const file of toFetch.values()) {
    await downloadBlob(client, cache, repo, commit, file, {
      onBytes: (bytes) => {
        receivedBytes += bytes;
        events.onProgress({ file: file.path, receivedBytes, totalBytes });
      },
      onNote: (line) => events.onNote(line),
    });
  }
  for (const file of lacking) await cache.link(repo, commit, file.path, blobName(file));
  // Last, so that an interrupted pull never points MODEL_DIR=owner/name at a snapshot still missing files.
  if (revision !== commit) await cache.writeRef(repo, revision, commit);
  return result(ref, commit, cache.snapshotDir(repo, commit), chosen, files.reduce((sum, file) => sum + file.sizeBytes, 0), receivedBytes);
}
