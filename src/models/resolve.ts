import { existsSync } from 'node:fs';
import path from 'node:path';
import { optionalString, requiredString, type Env } from '../common/environment.js';
import { validateLoraVersion } from '../queue/contracts.js';
import { HubCache } from './hub-cache.js';
import { isPipeline, NoOnnxExportError, pullCommand, selectFiles, SelectionError } from './known-repos.js';
import { formatRepoRef, parseRepoRef, repoName, type RepoRef } from './repo-ref.js';

// MODEL_DIR, LORA_PATH, --model, --lora and --refiner name a folder or a file, or a Hub repo (`owner/name`, with an
// optional `@revision`) that `wrongbot models pull` (or Python's huggingface_hub) put in the Hugging Face cache. An
// existing path wins. Nothing here downloads: a repo missing from the cache is an error naming the pull command, so
// that no worker starts a 14 GB download on its own.

export class ModelSourceError extends Error {
  override name = 'ModelSourceError';
}

/** A model folder, and the name results and the bot show for it. */
export interface ResolvedModel {
  path: string;
  name: string;
}

export interface ResolvedLora {
  path: string;
  /** The version jobs name it by: the file's name, or the repo's. */
  version: string;
}

export interface CachedSnapshot {
  commit: string;
  dir: string;
  /** The snapshot's files that wrongbot takes, as repo paths. */
  files: string[];
  isLora: boolean;
}

/** The snapshot the cache holds for a ref, and what wrongbot takes from it; what is missing names the pull command. */
export function cachedSnapshot(ref: RepoRef, cache: HubCache): CachedSnapshot {
  const command = pullCommand(ref.repo, ref.revision);
  const commit = cache.commitOf(ref);
  const files = commit === null ? null : cache.snapshotFiles(ref.repo, commit);
  if (commit === null || files === null) {
    throw new ModelSourceError(`${formatRepoRef(ref)} is not in the Hugging Face cache (${cache.dir}): download it with \`${command}\``);
  }
  try {
    const selected = selectFiles(ref.repo, `the cached snapshot ${commit} of ${ref.repo}`, files);
    cache.makeLoadable(ref.repo, commit, selected);
    return { commit, dir: cache.snapshotDir(ref.repo, commit), files: selected, isLora: !isPipeline(selected) };
  } catch (error) {
    if (error instanceof NoOnnxExportError) throw new ModelSourceError(error.message);
    if (error instanceof SelectionError) throw new ModelSourceError(`${error.message}: download it with \`${command}\``);
    throw error;
  }
}

/** The repo a setting names, or null for a path: an existing one wins, and a LoRA file's name is never a repo. */
function repoOf(value: string): RepoRef | null {
  if (existsSync(value) || value.toLowerCase().endsWith('.safetensors')) return null;
  return parseRepoRef(value);
}

function snapshotFor(setting: string, value: string, ref: RepoRef): CachedSnapshot {
  try {
    return cachedSnapshot(ref, new HubCache());
  } catch (error) {
    if (error instanceof ModelSourceError) throw new ModelSourceError(`${setting} ${value}: no such path here, and ${error.message}`);
    throw error;
  }
}

/** `wrong-v3.safetensors` is version `wrong-v3`. */
function fileVersion(setting: string, file: string): string {
  return validateLoraVersion(setting, path.basename(file).replace(/\.safetensors$/i, ''));
}

/** `minimaxir/sdxl-wrong-lora` is version `sdxl-wrong-lora`, whichever revision. */
function repoVersion(setting: string, ref: RepoRef): string {
  return validateLoraVersion(setting, repoName(ref.repo));
}

/** An SDXL pipeline or refiner folder (MODEL_DIR, --model, --refiner). */
export function resolveModel(value: string, setting: string): ResolvedModel {
  const ref = repoOf(value);
  if (ref === null) return { path: value, name: path.basename(path.resolve(value)) };
  const snapshot = snapshotFor(setting, value, ref);
  if (snapshot.isLora) throw new ModelSourceError(`${setting} ${value}: ${ref.repo} holds a LoRA, not an SDXL pipeline (give it as LORA_PATH or --lora)`);
  return { path: snapshot.dir, name: repoName(ref.repo) };
}

/** A LoRA file (LORA_PATH, --lora) and its version. */
export function resolveLora(value: string, setting: string): ResolvedLora {
  const ref = repoOf(value);
  if (ref === null) return { path: value, version: fileVersion(setting, value) };
  const snapshot = snapshotFor(setting, value, ref);
  if (!snapshot.isLora) throw new ModelSourceError(`${setting} ${value}: ${ref.repo} is an SDXL pipeline, not a LoRA (give it as MODEL_DIR or --model)`);
  return { path: path.join(snapshot.dir, ...snapshot.files[0]!.split('/')), version: repoVersion(setting, ref) };
}

/** The version alone, for the bot and `enqueue`, which never read the file (and may run where it is not). */
export function loraVersionOfSetting(value: string, setting: string): string {
  const ref = repoOf(value);
  return ref === null ? fileVersion(setting, value) : repoVersion(setting, ref);
}

/** A worker's model and LoRA (MODEL_DIR, LORA_PATH); `wrongbot start` checks them too before it starts anything. */
export function workerModels(env: Env): { model: ResolvedModel; lora: ResolvedLora | null } {
  const modelDir = requiredString(env, 'MODEL_DIR', 'point it at an SDXL model folder (optimum ONNX layout), or a repo pulled with `npx wrongbot models pull`');
  const loraPath = optionalString(env, 'LORA_PATH');
  return { model: resolveModel(modelDir, 'MODEL_DIR'), lora: loraPath === null ? null : resolveLora(loraPath, 'LORA_PATH') };
}
