import { listFiles, modelInfo } from '@huggingface/hub';
import { booleanSetting, ConfigError, optionalString, type Env } from '../common/environment.js';
import { COMMIT_HASH } from './repo-ref.js';

// The Hub calls a pull makes, through @huggingface/hub where it has them (a revision's commit, a recursive file
// listing) and a plain ranged GET of the resolve URL for the bytes, which it only offers whole. Every request goes
// through one fetch that adds the token and turns the Hub's refusals into lines that say what to do.

const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';

export interface HubSettings {
  /** HF_ENDPOINT: the Hub, or a mirror of it. */
  endpoint: string;
  /** HF_TOKEN: needed for gated and private repos. */
  token: string | null;
  /** HF_HUB_OFFLINE: answer from the cache alone. */
  offline: boolean;
}

export function hubSettings(env: Env): HubSettings {
  const endpoint = optionalString(env, 'HF_ENDPOINT') ?? DEFAULT_HUB_ENDPOINT;
  let protocol: string;
  try {
    protocol = new URL(endpoint).protocol;
  } catch {
    protocol = '';
  }
  if (protocol !== 'https:' && protocol !== 'http:') throw new ConfigError(`HF_ENDPOINT = ${JSON.stringify(endpoint)} is not an http(s) URL`);
  return {
    endpoint: endpoint.replace(/\/+$/, ''),
    token: optionalString(env, 'HF_TOKEN'),
    offline: booleanSetting(env, 'HF_HUB_OFFLINE', false),
  };
}

/** A file of a repo as the Hub lists it. */
export interface RemoteFile {
  path: string;
  sizeBytes: number;
  /** LFS and Xet files: the sha256 of the content, which the Hub also sends as X-Linked-Etag. */
  sha256: string | null;
  /** The git blob hash; what the Hub's ETag is for a file kept in git itself. */
  gitOid: string;
}

/** The name huggingface_hub gives a file's blob in the cache: its etag, which is the sha256 for LFS files. */
export function blobName(file: RemoteFile): string {
  return file.sha256 ?? file.gitOid;
}

export class HubError extends Error {
  override name = 'HubError';

  /** `retryable`: the Hub or the network failed, not the request; trying again may work. */
  constructor(message: string, readonly retryable: boolean) {
    super(message);
  }
}

/** A refusal as the Hub sends it: the status, and its reason in X-Error-Code (GatedRepo, RepoNotFound, …). */
class HubRefusal extends Error {
  constructor(readonly status: number, readonly code: string | null, readonly detail: string | null, readonly url: string) {
    super(`${status} ${code ?? ''} ${url}`);
  }
}

/** Which file of which repo a request was about, for the message when it fails. */
interface RequestSubject {
  repo: string;
  revision: string;
  file?: string;
}

const HTTP_TOO_MANY_REQUESTS = 429;
const HTTP_SERVER_ERRORS = 500;

export class HubClient {
  private readonly origin: string;

  constructor(private readonly settings: HubSettings) {
    this.origin = new URL(settings.endpoint).origin;
  }

  /** The commit a branch or tag names now. */
  async commitOf(repo: string, revision: string): Promise<string> {
    const info = await this.request({ repo, revision }, () => modelInfo({
      name: repo, revision, additionalFields: ['sha'], hubUrl: this.settings.endpoint, fetch: this.fetch,
    }));
    if (typeof info.sha !== 'string' || !COMMIT_HASH.test(info.sha)) {
      throw new HubError(`${this.settings.endpoint} gave no commit hash for ${repo}@${revision} (sha = ${JSON.stringify(info.sha)})`, false);
    }
    return info.sha;
  }

  /** Every file of the repo at a commit. */
  async listFiles(repo: string, commit: string): Promise<RemoteFile[]> {
    return this.request({ repo, revision: commit }, async () => {
      const files: RemoteFile[] = [];
      for await (const entry of listFiles({ repo, revision: commit, recursive: true, hubUrl: this.settings.endpoint, fetch: this.fetch })) {
        if (entry.type !== 'file') continue;
        if (entry.oid === undefined) throw new HubError(`${this.settings.endpoint} listed ${repo}/${entry.path} without its git hash`, false);
        files.push({ path: entry.path, sizeBytes: entry.size, sha256: entry.lfs?.oid ?? null, gitOid: entry.oid });
      }
      return files;
    });
  }

  /** The file's bytes from `offsetBytes` on (a Range request when that is not 0); the resolve URL redirects to a CDN. */
  async openFile(repo: string, commit: string, file: string, offsetBytes: number): Promise<Response> {
    const url = `${this.settings.endpoint}/${repo}/resolve/${commit}/${file.split('/').map(encodeURIComponent).join('/')}`;
    return this.request({ repo, revision: commit, file }, () => this.fetch(url, offsetBytes > 0 ? { headers: { Range: `bytes=${offsetBytes}-` } } : {}));
  }

  /**
   * The one fetch every call goes through. The token goes to the Hub's own origin only; fetch drops it on the
   * cross-origin redirect to a CDN by itself.
   */
  private readonly fetch: typeof fetch = async (input, init) => {
    const url = input instanceof Request ? input.url : String(input);
    const headers = new Headers(init?.headers);
    if (this.settings.token !== null && new URL(url).origin === this.origin) headers.set('Authorization', `Bearer ${this.settings.token}`);
    let response: Response;
    try {
      response = await fetch(url, { ...init, headers });
    } catch (error) {
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new HubError(`cannot reach ${this.settings.endpoint} (${cause?.code ?? cause?.message ?? (error as Error).message}); `
        + 'HF_ENDPOINT names another server, HF_HUB_OFFLINE=1 uses the cache alone', true);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw new HubRefusal(response.status, response.headers.get('X-Error-Code'), response.headers.get('X-Error-Message'), url);
    }
    return response;
  };

  private async request<T>(subject: RequestSubject, call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } catch (error) {
      if (error instanceof HubRefusal) throw new HubError(this.explain(error, subject), error.status === HTTP_TOO_MANY_REQUESTS || error.status >= HTTP_SERVER_ERRORS);
      throw error;
    }
  }

  private explain(refusal: HubRefusal, { repo, revision, file }: RequestSubject): string {
    const { endpoint, token } = this.settings;
    switch (refusal.code) {
      case 'RepoNotFound':
        return `${endpoint} has no model repo ${repo}${token === null ? ' (or it is private: set HF_TOKEN to a token that can read it)' : ' that HF_TOKEN can read'}`;
      case 'RevisionNotFound':
        return `${repo} has no revision ${revision}`;
      case 'EntryNotFound':
        return `${repo}@${revision} has no file ${file ?? ''}`;
      default:
        break;
    }
    // The Hub answers 401 to a gated repo without a token, 403 to a token whose account has not accepted the licence.
    if (refusal.code === 'GatedRepo' || refusal.status === 401 || refusal.status === 403) {
      return `${repo} is gated: accept its licence on ${endpoint}/${repo} (logged in), then set HF_TOKEN to a read token of that account `
        + `(${endpoint}/settings/tokens)${token === null ? '' : `; HF_TOKEN is set, and was refused (${refusal.status})`}`;
    }
    return `${endpoint} answered ${refusal.status} for ${refusal.url}${refusal.detail ? `: ${refusal.detail}` : ''}`;
  }
}
