import { existsSync, linkSync, lstatSync, readdirSync, readFileSync, realpathSync, renameSync, statSync } from 'node:fs';
import { link, mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { getHFHubCachePath, getRepoFolderName } from '@huggingface/hub';
import { isExternalData } from './known-repos.js';
import { COMMIT_HASH, DEFAULT_REVISION, type RepoRef } from './repo-ref.js';

// The Hugging Face cache laid out as Python's huggingface_hub lays it out, so that what either side downloaded is
// the other's:
//   models--{owner}--{name}/blobs/{sha256 for LFS files, git blob hash for the others}   the bytes
//   models--{owner}--{name}/snapshots/{commit}/{path}   relative symlinks to the blobs
//   models--{owner}--{name}/refs/{revision}             the commit a branch or tag named when last pulled
// with one exception. onnxruntime (1.30, the version wrongbot runs) refuses external weights whose real path leaves
// the model's folder ("External data path escapes model directory"), which a symlink into blobs/ does: an ONNX
// model's external weights are a hard link in the snapshot, the same bytes under the snapshot's own path, which Python
// reads as any other file. (huggingface_hub's cache cleaning then counts the snapshot's file instead of the blob, so
// deleting that revision with it leaves the blob behind.)

const BLOB_NAME = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;

/** Repo paths come from the Hub's listing and are joined onto the cache: nothing may climb out of a snapshot. */
function repoPathParts(file: string): string[] {
  const parts = file.split('/');
  if (parts.some((part) => part === '' || part === '.' || part === '..' || part.includes('\\'))) {
    throw new Error(`repo path ${JSON.stringify(file)} is not a plain relative path`);
  }
  return parts;
}

/** A file's size, 0 when there is none yet (a partial file before its first byte). */
export function fileBytes(file: string): number {
  return existsSync(file) ? statSync(file).size : 0;
}

export class HubCache {
  /** HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub, read as Python reads them. */
  constructor(readonly dir: string = getHFHubCachePath()) {}

  repoDir(repo: string): string {
    return path.join(this.dir, getRepoFolderName({ type: 'model', name: repo }));
  }

  blobPath(repo: string, blobName: string): string {
    if (!BLOB_NAME.test(blobName)) throw new Error(`blob name ${JSON.stringify(blobName)} of ${repo} is not a sha256 or git hash`);
    return path.join(this.repoDir(repo), 'blobs', blobName);
  }

  /** Where a download grows until it is checked: huggingface_hub's name for it, so either side resumes the other's. */
  partialPath(repo: string, blobName: string): string {
    return `${this.blobPath(repo, blobName)}.incomplete`;
  }

  snapshotDir(repo: string, commit: string): string {
    if (!COMMIT_HASH.test(commit)) throw new Error(`commit ${JSON.stringify(commit)} of ${repo} is not a commit hash`);
    return path.join(this.repoDir(repo), 'snapshots', commit);
  }

  snapshotPath(repo: string, commit: string, file: string): string {
    return path.join(this.snapshotDir(repo, commit), ...repoPathParts(file));
  }

  /** The commit a ref names here: a commit hash names itself, a branch or tag what refs/ recorded (null: none). */
  commitOf(ref: RepoRef): string | null {
    const revision = ref.revision ?? DEFAULT_REVISION;
    if (COMMIT_HASH.test(revision)) return revision;
    const file = path.join(this.repoDir(ref.repo), 'refs', ...repoPathParts(revision));
    if (!existsSync(file)) return null;
    const commit = readFileSync(file, 'utf8').trim();
    return COMMIT_HASH.test(commit) ? commit : null;
  }

  async writeRef(repo: string, revision: string, commit: string): Promise<void> {
    const file = path.join(this.repoDir(repo), 'refs', ...repoPathParts(revision));
    await mkdir(path.dirname(file), { recursive: true });
    // No newline: huggingface_hub writes the bare hash.
    await writeFile(file, commit);
  }

  /** A snapshot's files as repo paths (`unet/model.onnx`), leaving out links whose blob is gone; null: no snapshot. */
  snapshotFiles(repo: string, commit: string): string[] | null {
    const root = this.snapshotDir(repo, commit);
    if (!existsSync(root)) return null;
    const walk = (dir: string, prefix: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) return walk(full, `${prefix}${entry.name}/`);
      return existsSync(full) ? [`${prefix}${entry.name}`] : [];
    });
    return walk(root, '');
  }

  /**
   * Puts a blob into a snapshot as huggingface_hub does: a relative symlink, which survives the cache being moved.
   * A hard link where a symlink will not do: for external weights, or where symlinks need a privilege (Windows
   * without developer mode).
   */
  async link(repo: string, commit: string, file: string, blobName: string): Promise<void> {
    const pointer = this.snapshotPath(repo, commit, file);
    const blob = this.blobPath(repo, blobName);
    await mkdir(path.dirname(pointer), { recursive: true });
    // A link left behind by a blob that was deleted (cache cleaning) would make symlink() fail.
    await rm(pointer, { force: true });
    if (isExternalData(file)) return link(blob, pointer);
    try {
      await symlink(path.relative(path.dirname(pointer), blob), pointer);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EPERM') throw error;
      await link(blob, pointer);
    }
  }

  /** Turns the symlinks of external weights in a snapshot Python made into hard links. */
  makeLoadable(repo: string, commit: string, files: readonly string[]): void {
    for (const file of files.filter(isExternalData)) {
      const pointer = this.snapshotPath(repo, commit, file);
      if (!lstatSync(pointer).isSymbolicLink()) continue;
      const replacement = `${pointer}.wrongbot-link`;
      linkSync(realpathSync(pointer), replacement);
      // A rename replaces the symlink in one step: a reader never finds the file missing.
      renameSync(replacement, pointer);
    }
  }
}
