import type { IncomingMessage } from 'node:http';
import { invalidJson } from './discord-errors.js';
import { breach, MAX_JSON_DEPTH } from './limits.js';
import type { UploadedFile } from './message-content.js';

// Reads a REST request's body: JSON, or multipart/form-data with payload_json and files[n] parts (parsed by the
// fetch implementation built into Node, the same one discord.js sends with).

interface ParsedBody {
  /** Parsed JSON (or payload_json for multipart); undefined when the request had no body. */
  readonly json: unknown;
  readonly files: UploadedFile[];
}

/** Reads the whole body, but keeps at most `keepBytes` of it; `bytes` tells how much came. */
export async function readBody(request: IncomingMessage, keepBytes: number): Promise<{ data: Buffer; bytes: number }> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes <= keepBytes) chunks.push(chunk);
  }
  return { data: bytes <= keepBytes ? Buffer.concat(chunks) : Buffer.alloc(0), bytes };
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPENERS = new Set([0x5b, 0x7b]);
const CLOSERS = new Set([0x5d, 0x7d]);

/** The deepest nesting of arrays and objects in JSON text, read without parsing it (brackets inside strings skipped). */
function jsonNestingDepth(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (inString) {
      if (unit === BACKSLASH) i++;
      else if (unit === QUOTE) inString = false;
    } else if (unit === QUOTE) {
      inString = true;
    } else if (OPENERS.has(unit)) {
      deepest = Math.max(deepest, ++depth);
    } else if (CLOSERS.has(unit)) {
      depth--;
    }
  }
  return deepest;
}

/**
 * Parses JSON, refusing anything else as Discord does (50109), and nesting past MAX_JSON_DEPTH as a breach (50035).
 * The depth is read from the text first, so an absurd body costs one pass and never reaches a recursive walk.
 */
export function parseJson(text: string): unknown {
  const depth = jsonNestingDepth(text);
  if (depth > MAX_JSON_DEPTH) throw breach([`body: nested ${depth} levels deep; the limit is ${MAX_JSON_DEPTH}`]);
  try {
    return JSON.parse(text);
  } catch {
    throw invalidJson();
  }
}

export async function parseBody(data: Buffer, contentType: string | null): Promise<ParsedBody> {
  if (data.length === 0) return { json: undefined, files: [] };
  const mediaType = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  if (mediaType !== 'multipart/form-data') return { json: parseJson(data.toString('utf8')), files: [] };
  let form: FormData;
  try {
    form = await new Response(data, { headers: { 'content-type': contentType! } }).formData();
  } catch {
    throw invalidJson();
  }
  const files: UploadedFile[] = [];
  let json: unknown;
  for (const [field, value] of form.entries()) {
    if (typeof value === 'string') {
      if (field === 'payload_json') json = parseJson(value);
    } else {
      files.push({ field, filename: value.name, contentType: value.type, bytes: Buffer.from(await value.arrayBuffer()) });
    }
  }
  return { json, files };
}
