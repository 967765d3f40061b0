import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fixturePath } from './fixtures.js';

// A stand-in for the Hugging Face Hub, answering the calls a pull makes as the Hub answers them: the model API at a
// revision (its commit), the recursive tree listing (sizes, git hashes, LFS sha256), and the resolve URL — git files
// directly with their ETag, LFS files by a redirect to a CDN path carrying X-Linked-Etag and X-Linked-Size — with
// Range on both; 401/403 with X-Error-Code GatedRepo for a gated repo, and RepoNotFound, RevisionNotFound,
// EntryNotFound. Faults on demand: a connection cut in the middle of a file, bytes that do not match their hash.

export interface HubRepo {
  /** `owner/name`. */
  repo: string;
  /** Repo path → the local file served as it. */
  files: Readonly<Record<string, string>>;
  /** Gated: only these tokens may download (the API still answers, as the Hub's does for gated repos). */
  grantedTokens?: readonly string[];
}

export interface HubRequest {
  method: string;
  /** The path, decoded, without the query. */
  path: string;
  range: string | null;
  authorization: string | null;
}

interface ServedFile {
  content: Buffer;
  sha256: string;
  gitOid: string;
  lfs: boolean;
}

/** What the Hub keeps in LFS (Xet): the big binary formats. Everything else is a git blob. */
const LFS_EXTENSIONS = ['.onnx', '.onnx_data', '.safetensors', '.bin'];
const LFS_POINTER_BYTES = 134;

/** Every file under a folder, as repo paths, optionally leaving some out. */
export function folderFiles(dir: string, leaveOut: readonly string[] = []): Record<string, string> {
  const walk = (sub: string): [string, string][] => readdirSync(path.join(dir, sub), { withFileTypes: true }).flatMap((entry) => {
    const relative = sub === '' ? entry.name : `${sub}/${entry.name}`;
    return entry.isDirectory() ? walk(relative) : [[relative, path.join(dir, relative)] as [string, string]];
  });
  return Object.fromEntries(walk('').filter(([file]) => !leaveOut.includes(file)));
}

export const BASE_REPO = 'stabilityai/stable-diffusion-xl-base-1.0';
export const LORA_REPO = 'minimaxir/sdxl-wrong-lora';
export const TINY_LORA_FILE = fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_kohya.safetensors');

/**
 * The quick start's two repos, made of the tiny fixtures, beside the files the real repos also hold and a pull must
 * never fetch: diffusers weights, OpenVINO files, a pickled LoRA, the model card.
 */
export function quickStartRepos(): HubRepo[] {
  const anyFile = fixturePath('tiny-sdxl-lora', 'lora_info.json');
  return [
    {
      repo: BASE_REPO,
      files: {
        ...folderFiles(fixturePath('tiny-sdxl')),
        'sd_xl_base_1.0.safetensors': TINY_LORA_FILE,
        'unet/diffusion_pytorch_model.safetensors': TINY_LORA_FILE,
        'text_encoder/openvino_model.bin': anyFile,
        'text_encoder/openvino_model.xml': anyFile,
      },
    },
    { repo: LORA_REPO, files: { 'pytorch_lora_weights.safetensors': TINY_LORA_FILE, 'pytorch_lora_weights.bin': anyFile, 'README.md': anyFile } },
  ];
}

function gitBlobHash(content: Buffer): string {
  return createHash('sha1').update(`blob ${content.length}\0`).update(content).digest('hex');
}

export function sha256(content: Buffer): string {
  return createHash('sha256').update(content).digest('hex');
}

/** A stable commit hash per repo, as a real one would be. */
export function commitOf(repo: string): string {
  return createHash('sha1').update(`commit of ${repo}`).digest('hex');
}

function parseRange(header: string | null, size: number): { start: number; end: number } | null | 'invalid' {
  if (header === null) return null;
  const match = /^bytes=(\d+)-(\d*)$/.exec(header);
  if (!match) return 'invalid';
  const start = Number(match[1]);
  const end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  return start >= size || end < start ? 'invalid' : { start, end };
}

export class LocalHub {
  readonly requests: HubRequest[] = [];
  private readonly repos = new Map<string, { spec: HubRepo; files: Map<string, ServedFile> }>();
  private readonly cuts = new Map<string, number>();
  private readonly corrupted = new Set<string>();

  private constructor(private readonly server: Server, readonly url: string, repos: readonly HubRepo[]) {
    for (const spec of repos) {
      const files = new Map<string, ServedFile>();
      for (const [file, local] of Object.entries(spec.files)) {
        const content = readFileSync(local);
        files.set(file, { content, sha256: sha256(content), gitOid: gitBlobHash(content), lfs: LFS_EXTENSIONS.some((extension) => file.endsWith(extension)) });
      }
      this.repos.set(spec.repo, { spec, files });
    }
  }

  static async start(repos: readonly HubRepo[]): Promise<LocalHub> {
    let hub: LocalHub | null = null;
    const server = createServer((request, response) => hub!.handle(request, response));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    hub = new LocalHub(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`, repos);
    return hub;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  /** The next download of this file stops after `afterBytes` bytes of the body: the connection is cut. */
  cutNextDownload(repo: string, file: string, afterBytes: number): void {
    this.cuts.set(`${repo}/${file}`, afterBytes);
  }

  /** Every download of this file has one byte changed; the listing and headers keep the true hash. */
  corrupt(repo: string, file: string): void {
    this.corrupted.add(`${repo}/${file}`);
  }

  /** GET requests for file contents (resolve and CDN), which is what a download costs. */
  downloads(): HubRequest[] {
    return this.requests.filter((request) => request.method === 'GET' && (request.path.includes('/resolve/') || request.path.startsWith('/cdn-lfs/')));
  }

  file(repo: string, file: string): ServedFile {
    const served = this.repos.get(repo)?.files.get(file);
    if (!served) throw new Error(`the stand-in Hub has no ${repo}/${file}`);
    return served;
  }

  private handle(request: IncomingMessage, response: ServerResponse): void {
    const url = new URL(request.url!, this.url);
    const pathname = decodeURIComponent(url.pathname);
    this.requests.push({ method: request.method!, path: pathname, range: request.headers.range ?? null, authorization: request.headers.authorization ?? null });
    let match: RegExpExecArray | null;
    if ((match = /^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/.exec(pathname))) return this.modelInfo(request, response, match[1]!, match[2]!);
    if ((match = /^\/api\/models\/([^/]+\/[^/]+)\/tree\/([^/]+)$/.exec(pathname))) return this.tree(request, response, match[1]!, match[2]!);
    if ((match = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(pathname))) return this.resolve(request, response, match[1]!, match[2]!, match[3]!);
    if ((match = /^\/cdn-lfs\/([^/]+\/[^/]+)\/(.+)$/.exec(pathname))) {
      const entry = this.repos.get(match[1]!);
      const file = entry?.files.get(match[2]!);
      if (!file) return this.refuse(response, 404, null, 'no such object');
      return this.serve(request, response, `${match[1]}/${match[2]}`, file, { ETag: `"${file.sha256}"` });
    }
    return this.refuse(response, 404, null, `not a Hub route: ${pathname}`);
  }

  private refuse(response: ServerResponse, status: number, code: string | null, message: string): void {
    response.writeHead(status, { 'Content-Type': 'application/json', ...(code ? { 'X-Error-Code': code } : {}), 'X-Error-Message': message });
    response.end(JSON.stringify({ error: message }));
  }

  /** The repo at a revision, or a refusal as the Hub words it (a missing repo is a 401 to strangers, so as not to tell private ones apart). */
  private lookUp(request: IncomingMessage, response: ServerResponse, repo: string, revision: string) {
    const entry = this.repos.get(repo);
    if (!entry) {
      this.refuse(response, request.headers.authorization ? 404 : 401, 'RepoNotFound', 'Repository not found');
      return null;
    }
    const commit = commitOf(repo);
    if (revision !== 'main' && revision !== commit) {
      this.refuse(response, 404, 'RevisionNotFound', `Invalid rev id: ${revision}`);
      return null;
    }
    return { ...entry, commit };
  }

  private modelInfo(request: IncomingMessage, response: ServerResponse, repo: string, revision: string): void {
    const found = this.lookUp(request, response, repo, revision);
    if (!found) return;
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify({
      _id: found.commit.slice(0, 24), id: repo, sha: found.commit, private: false, gated: found.spec.grantedTokens ? 'manual' : false,
      downloads: 0, likes: 0, lastModified: '2023-07-26T00:00:00.000Z', pipeline_tag: 'text-to-image',
      siblings: [...found.files.keys()].map((rfilename) => ({ rfilename })),
    }));
  }

  private tree(request: IncomingMessage, response: ServerResponse, repo: string, revision: string): void {
    const found = this.lookUp(request, response, repo, revision);
    if (!found) return;
    const folders = new Set([...found.files.keys()].flatMap((file) => file.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))));
    const entries = [
      ...[...folders].map((folder) => ({ type: 'directory', oid: createHash('sha1').update(folder).digest('hex'), size: 0, path: folder })),
      ...[...found.files].map(([file, served]) => ({
        type: 'file', size: served.content.length, path: file,
        ...(served.lfs
          ? { oid: createHash('sha1').update(`pointer ${served.sha256}`).digest('hex'), lfs: { oid: served.sha256, size: served.content.length, pointerSize: LFS_POINTER_BYTES }, xetHash: createHash('sha256').update(`xet ${served.sha256}`).digest('hex') }
          : { oid: served.gitOid }),
      })),
    ];
    response.writeHead(200, { 'Content-Type': 'application/json' });
    response.end(JSON.stringify(entries));
  }

  private resolve(request: IncomingMessage, response: ServerResponse, repo: string, revision: string, file: string): void {
    const found = this.lookUp(request, response, repo, revision);
    if (!found) return;
    const granted = found.spec.grantedTokens;
    if (granted) {
      const token = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1];
      if (token === undefined) return this.refuse(response, 401, 'GatedRepo', `Access to model ${repo} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      if (!granted.includes(token)) return this.refuse(response, 403, 'GatedRepo', `Access to model ${repo} is restricted and you are not in the authorized list. Visit ${this.url}/${repo} to ask for access.`);
    }
    const served = found.files.get(file);
    if (!served) return this.refuse(response, 404, 'EntryNotFound', `${file} does not exist on "${revision}"`);
    if (served.lfs) {
      response.writeHead(302, {
        Location: `/cdn-lfs/${repo}/${file.split('/').map(encodeURIComponent).join('/')}`,
        'X-Repo-Commit': found.commit,
        'X-Linked-Etag': `"${served.sha256}"`,
        'X-Linked-Size': String(served.content.length),
        ETag: `W/"${served.gitOid.slice(0, 30)}"`,
      });
      response.end();
      return;
    }
    this.serve(request, response, `${repo}/${file}`, served, { 'X-Repo-Commit': found.commit, ETag: `"${served.gitOid}"` });
  }

  private serve(request: IncomingMessage, response: ServerResponse, key: string, file: ServedFile, headers: Record<string, string>): void {
    const size = file.content.length;
    const range = parseRange(request.headers.range ?? null, size);
    if (range === 'invalid') {
      response.writeHead(416, { 'Content-Range': `bytes */${size}` });
      response.end();
      return;
    }
    const { start, end } = range ?? { start: 0, end: size - 1 };
    let body = file.content.subarray(start, end + 1);
    if (this.corrupted.has(key)) {
      body = Buffer.from(body);
      body[body.length >> 1] ^= 0xff;
    }
    response.writeHead(range ? 206 : 200, {
      ...headers,
      'Content-Type': 'application/octet-stream',
      'Content-Length': String(body.length),
      'Accept-Ranges': 'bytes',
      ...(range ? { 'Content-Range': `bytes ${start}-${end}/${size}` } : {}),
    });
    if (request.method === 'HEAD') {
      response.end();
      return;
    }
    const cutAfter = this.cuts.get(key);
    if (cutAfter === undefined) {
      response.end(body);
      return;
    }
    this.cuts.delete(key);
    // end(), not destroy(): the bytes written arrive before the close, so the cut falls where it was asked to.
    response.write(body.subarray(0, cutAfter), () => response.socket?.end());
  }
}
