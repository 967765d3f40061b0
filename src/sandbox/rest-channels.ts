import { cannotEditOthersMessage, DiscordApiError, invalidFormBody } from './discord-errors.js';
import { LimitBreach } from './limits.js';
import { applyMessageEdit, fieldsForNewMessage } from './message-content.js';
import { addReaction, checkUnicodeEmoji, removeReaction } from './reactions.js';
import { MessageFlag } from './message-flags.js';
import { bodyObject, endpoint, noContent, ok, type RestAnswer, type RestRequest, type RestRoute } from './rest-types.js';
import type { SandboxServices } from './services.js';
import { compareSnowflakes, type StoredMessage } from './world.js';

// Channel routes the bot uses as itself: channel lookup, messages (list, send, fetch, edit, delete), its own
// reactions and the list of who reacted.

const REPLY_MESSAGE_TYPE = 19;
const DEFAULT_PAGE_SIZE = 50;
const missingPermissions = () => new DiscordApiError(403, 50013, 'Missing Permissions');

const channelOf = (services: SandboxServices, request: RestRequest) => services.world.channel(request.params['channel']!);

function messageOf(services: SandboxServices, request: RestRequest): StoredMessage {
  return services.world.messageIn(channelOf(services, request).id, request.params['message']!);
}

function pageSize(request: RestRequest): number {
  return Number(request.query.get('limit') ?? DEFAULT_PAGE_SIZE);
}

function listMessages(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const all = world.messagesIn(channelOf(services, request).id);
  const limit = pageSize(request);
  const before = request.query.get('before');
  const after = request.query.get('after');
  const around = request.query.get('around');
  let page: StoredMessage[];
  if (after !== null) {
    page = all.filter((message) => compareSnowflakes(message.id, after) > 0).slice(0, limit);
  } else if (around !== null) {
    const centre = all.findIndex((message) => compareSnowflakes(message.id, around) >= 0);
    const start = Math.max(0, (centre < 0 ? all.length : centre) - Math.floor(limit / 2));
    page = all.slice(start, start + limit);
  } else {
    const older = before === null ? all : all.filter((message) => compareSnowflakes(message.id, before) < 0);
    page = older.slice(-limit);
  }
  // Discord lists newest first.
  return ok(page.reverse().map((message) => world.messageJson(message)));
}

function createMessage(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const channel = channelOf(services, request);
  const body = bodyObject(request);
  const fields = fieldsForNewMessage(world, channel.id, body, request.files);
  const reference = body['message_reference'] as Record<string, unknown> | undefined | null;
  const referencedId = reference?.['message_id'] === undefined ? null : String(reference['message_id']);
  if (referencedId !== null && world.findMessage(referencedId)?.channelId !== channel.id) {
    const problem = `message_reference.message_id: ${referencedId} is not a message in channel ${channel.id}`;
    throw new LimitBreach(invalidFormBody([problem], 'MESSAGE_REFERENCE_UNKNOWN_MESSAGE'), [problem]);
  }
  const message = world.addMessage({
    ...fields, flags: fields.flags & ~MessageFlag.Ephemeral, channelId: channel.id, authorId: world.botUser.id,
    type: referencedId === null ? 0 : REPLY_MESSAGE_TYPE, interaction: null, ephemeralFor: null, webhookId: null,
    referencedMessageId: referencedId,
  });
  return ok(world.messageJson(message));
}

function editMessage(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const message = messageOf(services, request);
  if (message.authorId !== world.botUser.id) throw cannotEditOthersMessage();
  world.recordEdit(message, applyMessageEdit(world, message, bodyObject(request), request.files));
  return ok(world.messageJson(message));
}

function deleteMessage(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const message = messageOf(services, request);
  // @everyone lacks Manage Messages, so the bot may delete only its own messages.
  if (message.authorId !== world.botUser.id) throw missingPermissions();
  world.deleteMessage(message.id);
  return noContent;
}

function reactAsBot(services: SandboxServices, request: RestRequest): RestAnswer {
  addReaction(services, messageOf(services, request), services.world.botUser, checkUnicodeEmoji(request.params['emoji']!));
  return noContent;
}

function unreactAsBot(services: SandboxServices, request: RestRequest): RestAnswer {
  removeReaction(services, messageOf(services, request), services.world.botUser, checkUnicodeEmoji(request.params['emoji']!));
  return noContent;
}

function listReactors(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const after = request.query.get('after');
  const ids = [...messageOf(services, request).reactions.get(checkUnicodeEmoji(request.params['emoji']!)) ?? []]
    .sort(compareSnowflakes)
    .filter((id) => after === null || compareSnowflakes(id, after) > 0)
    .slice(0, Number(request.query.get('limit') ?? 25));
  return ok(ids.map((id) => world.userJson(world.userById(id))));
}

const MESSAGE = '/channels/:channel/messages/:message';
const MY_REACTION = `${MESSAGE}/reactions/:emoji/@me`;
/** Message and reaction routes are where the bot meets Discord's rate limits. */
const LIMITED = { rateLimited: true };

export const channelRoutes: RestRoute[] = [
  { method: 'GET', pattern: '/channels/:channel', handler: endpoint((services, request) => ok(services.world.channelJson(channelOf(services, request)))) },
  { method: 'POST', pattern: '/channels/:channel/typing', handler: endpoint(() => noContent) },
  { method: 'GET', pattern: '/channels/:channel/messages', handler: endpoint(listMessages, LIMITED) },
  { method: 'POST', pattern: '/channels/:channel/messages', handler: endpoint(createMessage, LIMITED) },
  { method: 'GET', pattern: MESSAGE, handler: endpoint((services, request) => ok(services.world.messageJson(messageOf(services, request))), LIMITED) },
  { method: 'PATCH', pattern: MESSAGE, handler: endpoint(editMessage, LIMITED) },
  { method: 'DELETE', pattern: MESSAGE, handler: endpoint(deleteMessage, LIMITED) },
  { method: 'PUT', pattern: MY_REACTION, handler: endpoint(reactAsBot, LIMITED) },
  { method: 'DELETE', pattern: MY_REACTION, handler: endpoint(unreactAsBot, LIMITED) },
  { method: 'GET', pattern: `${MESSAGE}/reactions/:emoji`, handler: endpoint(listReactors, LIMITED) },
];
