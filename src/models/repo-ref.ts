// A model repo on the Hugging Face Hub as settings name it: `owner/name`, optionally `@revision` (a branch, a tag or a
// commit hash).

export interface RepoRef {
  /** `owner/name`. */
  readonly repo: string;
  /** null: the default branch, `main`. */
  readonly revision: string | null;
}

export const DEFAULT_REVISION = 'main';
export const COMMIT_HASH = /^[0-9a-f]{40}$/;

// huggingface_hub's rules: letters, digits, `-`, `_` and `.`, with no `--` or `..` (they would blur the cache's
// `models--owner--name` folder names).
const REPO_ID = /^[A-Za-z0-9][\w.-]{0,95}\/[A-Za-z0-9][\w.-]{0,95}$/;
// Branch and tag names (and `refs/pr/N`), which become paths under the cache's refs/ folder: no `..` segment.
const REVISION = /^[\w.-]+(\/[\w.-]+)*$/;

/** `owner/name[@revision]`, or null when the text is not shaped like one. */
export function parseRepoRef(text: string): RepoRef | null {
  const at = text.indexOf('@');
  const repo = at === -1 ? text : text.slice(0, at);
  const revision = at === -1 ? null : text.slice(at + 1);
  if (!REPO_ID.test(repo) || repo.includes('--') || repo.includes('..') || repo.endsWith('.git')) return null;
  if (revision !== null && (!REVISION.test(revision) || revision.split('/').some((part) => part === '.' || part === '..'))) return null;
  return { repo, revision };
}

export function formatRepoRef(ref: RepoRef): string {
  return ref.revision === null ? ref.repo : `${ref.repo}@${ref.revision}`;
}

/** The repo's own name, `sdxl-wrong-lora` for `minimaxir/sdxl-wrong-lora`. */
export function repoName(repo: string): string {
  return repo.slice(repo.indexOf('/') + 1);
}
