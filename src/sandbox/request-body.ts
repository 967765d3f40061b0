import type { IncomingMessage } from 'node:http';
import { invalidJson } from './discord-errors.js';
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

/** Parses JSON, refusing anything else as Discord does (50109). */
export function parseJson(text: string): unknown {
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
