import path from 'node:path';
import { cannotSendEmpty } from './discord-errors.js';
import { breach, checkAttachmentLimits, checkMessageLimits, LimitBreach } from './limits.js';
import { MessageFlag } from './message-flags.js';
import type { MessageFields, StoredAttachment, StoredMessage, World } from './world.js';

// Turns a message create/edit payload (JSON, or multipart payload_json + files[n]) into what a stored message
// holds, the way Discord interprets it: `attachments` entries name new files by their files[n] index and keep
// existing attachments by id; `attachment://name` in embeds points at an uploaded file; mentions follow
// allowed_mentions.

export interface UploadedFile {
  readonly field: string;
  readonly filename: string;
  readonly contentType: string;
  readonly bytes: Buffer;
}

/** Flags a sender may set when creating a message. */
const CREATE_FLAGS = MessageFlag.SuppressEmbeds | MessageFlag.Ephemeral | MessageFlag.SuppressNotifications | MessageFlag.IsComponentsV2;
/** Flags an edit may change; the rest stay as they were. */
const EDIT_FLAGS = MessageFlag.SuppressEmbeds | MessageFlag.IsComponentsV2;

export const isEphemeral = (body: Record<string, unknown>): boolean => ((Number(body['flags'] ?? 0)) & MessageFlag.Ephemeral) !== 0;

const CONTENT_TYPES: Record<string, string> = {
  '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.webp': 'image/webp',
  '.txt': 'text/plain; charset=utf-8', '.json': 'application/json; charset=utf-8',
};

function contentTypeOf(file: UploadedFile): string {
  if (file.contentType !== '' && file.contentType !== 'application/octet-stream') return file.contentType;
  return CONTENT_TYPES[path.extname(file.filename).toLowerCase()] ?? 'application/octet-stream';
}

/** Width and height from a PNG's IHDR chunk, which Discord reports for images. */
function pngSize(bytes: Buffer): { width: number; height: number } | null {
  const isPng = bytes.length >= 24 && bytes.readUInt32BE(0) === 0x89504e47 && bytes.toString('latin1', 12, 16) === 'IHDR';
  return isPng ? { width: bytes.readUInt32BE(16), height: bytes.readUInt32BE(20) } : null;
}

function storeFile(world: World, file: UploadedFile, entry: Record<string, unknown> | undefined): StoredAttachment {
  const size = pngSize(file.bytes);
  const filename = typeof entry?.['filename'] === 'string' && entry['filename'] !== '' ? entry['filename'] : file.filename;
  return {
    id: world.ids.next(), filename, contentType: contentTypeOf(file), bytes: file.bytes,
    description: typeof entry?.['description'] === 'string' ? entry['description'] : null,
    width: size?.width ?? null, height: size?.height ?? null,
  };
}

/**
 * The attachments after this payload: without an `attachments` list every file is added to what was there; with
 * one, only the listed existing attachments stay and listed indexes pick files.
 */
function resolveAttachments(world: World, body: Record<string, unknown>, files: UploadedFile[], existing: StoredAttachment[]): StoredAttachment[] {
  const listed = body['attachments'];
  if (!Array.isArray(listed)) return [...existing, ...files.map((file) => storeFile(world, file, undefined))];
  const kept = new Map(existing.map((attachment) => [attachment.id, attachment]));
  const filesByIndex = new Map(files.map((file) => [file.field.match(/^files\[(\d+)\]$/)?.[1] ?? file.field, file]));
  const used = new Set<UploadedFile>();
  const result = (listed as Record<string, unknown>[]).map((entry, i) => {
    const id = String(entry['id']);
    const keep = kept.get(id);
    if (keep !== undefined) return keep;
    const file = filesByIndex.get(id);
    if (file === undefined) throw breach([`attachments[${i}].id: ${JSON.stringify(entry['id'])} is neither an existing attachment nor an uploaded files[n] index`]);
    used.add(file);
    return storeFile(world, file, entry);
  });
  // Discord adds uploaded files that the list does not mention, too.
  return [...result, ...files.filter((file) => !used.has(file)).map((file) => storeFile(world, file, undefined))];
}

function resolveEmbeds(world: World, channelId: string, embeds: unknown, attachments: StoredAttachment[]): Record<string, unknown>[] {
  if (!Array.isArray(embeds)) return [];
  const resolveMedia = (media: unknown): unknown => {
    const url = (media as Record<string, unknown> | undefined)?.['url'];
    if (typeof url !== 'string' || !url.startsWith('attachment://')) return media;
    const attachment = attachments.find((candidate) => candidate.filename === url.slice('attachment://'.length));
    if (attachment === undefined) return media;
    const resolved = world.attachmentUrl(channelId, attachment);
    return { ...(media as object), url: resolved, proxy_url: resolved, width: attachment.width ?? undefined, height: attachment.height ?? undefined };
  };
  return (embeds as Record<string, unknown>[]).map((embed) => {
    const stored: Record<string, unknown> = { type: 'rich', ...embed };
    for (const key of ['image', 'thumbnail']) if (stored[key] !== undefined) stored[key] = resolveMedia(stored[key]);
    return stored;
  });
}

/** User ids mentioned by `<@id>` in the content that allowed_mentions lets through. */
function resolveMentions(world: World, content: string, allowed: unknown): string[] {
  const ids = [...new Set([...content.matchAll(/<@!?(\d+)>/g)].map((match) => match[1]!))].filter((id) => world.findUser(id) !== undefined);
  if (allowed === undefined || allowed === null) return ids;
  const rules = allowed as { parse?: unknown; users?: unknown };
  const parsesUsers = Array.isArray(rules.parse) && rules.parse.includes('users');
  const listed = Array.isArray(rules.users) ? rules.users.map(String) : [];
  return ids.filter((id) => parsesUsers || listed.includes(id));
}

function checkFiles(files: UploadedFile[], attachmentCount: number): void {
  checkAttachmentLimits(attachmentCount, files.map((file) => ({ field: file.field, bytes: file.bytes.length })));
}

export function fieldsForNewMessage(world: World, channelId: string, body: Record<string, unknown>, files: UploadedFile[]): MessageFields {
  checkMessageLimits(body);
  const attachments = resolveAttachments(world, body, files, []);
  checkFiles(files, attachments.length);
  const content = typeof body['content'] === 'string' ? body['content'] : '';
  const fields: MessageFields = {
    content, attachments, embeds: resolveEmbeds(world, channelId, body['embeds'], attachments),
    components: Array.isArray(body['components']) ? body['components'] as Record<string, unknown>[] : [],
    flags: Number(body['flags'] ?? 0) & CREATE_FLAGS, mentions: resolveMentions(world, content, body['allowed_mentions']),
  };
  const hasSomething = content !== '' || fields.embeds.length > 0 || fields.components.length > 0 || attachments.length > 0;
  if (!hasSomething) throw new LimitBreach(cannotSendEmpty(), ['body: an empty message (no content, embeds, components or files)']);
  return fields;
}

/** Applies an edit; fields absent from the payload stay. Returns the names of the fields that changed. */
export function applyMessageEdit(world: World, message: StoredMessage, body: Record<string, unknown>, files: UploadedFile[]): string[] {
  checkMessageLimits(body);
  const changed: string[] = [];
  const attachments = body['attachments'] !== undefined || files.length > 0 ? resolveAttachments(world, body, files, message.attachments) : message.attachments;
  checkFiles(files, attachments.length);
  if (attachments !== message.attachments) {
    const before = message.attachments.map((attachment) => attachment.id).join();
    world.replaceAttachments(message, attachments);
    if (attachments.map((attachment) => attachment.id).join() !== before) changed.push('attachments');
  }
  if (body['content'] !== undefined) {
    const content = typeof body['content'] === 'string' ? body['content'] : '';
    if (content !== message.content) changed.push('content');
    message.content = content;
    message.mentions = resolveMentions(world, content, body['allowed_mentions']);
  }
  if (body['embeds'] !== undefined) {
    const embeds = resolveEmbeds(world, message.channelId, body['embeds'], message.attachments);
    if (JSON.stringify(embeds) !== JSON.stringify(message.embeds)) changed.push('embeds');
    message.embeds = embeds;
  }
  if (body['components'] !== undefined) {
    const components = Array.isArray(body['components']) ? body['components'] as Record<string, unknown>[] : [];
    if (JSON.stringify(components) !== JSON.stringify(message.components)) changed.push('components');
    message.components = components;
  }
  if (body['flags'] !== undefined && body['flags'] !== null) {
    const flags = (message.flags & ~EDIT_FLAGS) | (Number(body['flags']) & EDIT_FLAGS);
    if (flags !== message.flags) changed.push('flags');
    message.flags = flags;
  }
  return changed;
}
