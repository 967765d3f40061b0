import { alreadyAcknowledged, DiscordApiError, invalidFormBody, invalidWebhookToken, unknownInteraction, unknownMessage, unknownWebhook } from './discord-errors.js';
import { ACKNOWLEDGE_DEADLINE_MS, LimitBreach, TOKEN_LIFETIME_MS } from './limits.js';
import { applyMessageEdit, fieldsForNewMessage, isEphemeral } from './message-content.js';
import { MessageFlag } from './message-flags.js';
import { bodyObject, endpoint, noContent, ok, type RestAnswer, type RestRequest, type RestRoute } from './rest-types.js';
import type { SandboxServices } from './services.js';
import { InteractionType, type InteractionRecord, type MessageFields, type StoredMessage } from './world.js';

// Answering interactions: the callback (within 3 s, once) and the webhook routes an interaction token opens for
// 15 minutes (@original, follow-ups).

const CallbackType = { Reply: 4, DeferredReply: 5, DeferredUpdate: 6, Update: 7 } as const;
const CHAT_INPUT_COMMAND_MESSAGE_TYPE = 20;

/** A message the bot posts through the interaction's webhook: the original answer, or a follow-up. */
function addInteractionMessage(services: SandboxServices, interaction: InteractionRecord, fields: MessageFields, isOriginal: boolean): StoredMessage {
  const { world } = services;
  const answersCommand = isOriginal && interaction.type === InteractionType.ApplicationCommand;
  return world.addMessage({
    ...fields, channelId: interaction.channelId, authorId: world.botUser.id, type: answersCommand ? CHAT_INPUT_COMMAND_MESSAGE_TYPE : 0,
    interaction, ephemeralFor: (fields.flags & MessageFlag.Ephemeral) !== 0 ? interaction.userId : null, webhookId: world.applicationId, referencedMessageId: null,
  });
}

function componentOnly(interaction: InteractionRecord, type: number): StoredMessage['id'] {
  if (interaction.sourceMessageId === null) {
    const problem = `type: callback type ${type} updates the message of a component interaction; interaction ${interaction.id} is a command`;
    throw new LimitBreach(invalidFormBody([problem], 'INTERACTION_RESPONSE_TYPE_INVALID'), [problem]);
  }
  return interaction.sourceMessageId;
}

function callback(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world, clock } = services;
  const interaction = world.interaction(request.params['interaction']!);
  if (interaction === undefined || interaction.token !== request.params['token']) throw unknownInteraction();
  if (interaction.acknowledgedAt !== null) throw alreadyAcknowledged();
  const ageMs = clock.now() - interaction.createdAt;
  if (ageMs > ACKNOWLEDGE_DEADLINE_MS) {
    throw new LimitBreach(unknownInteraction(), [`interaction ${interaction.id}: first response ${ageMs} ms after it was created; the deadline is ${ACKNOWLEDGE_DEADLINE_MS} ms`]);
  }
  const body = bodyObject(request);
  const type = Number(body['type']);
  const data = (body['data'] ?? {}) as Record<string, unknown>;
  let messageId: string;
  switch (type) {
    case CallbackType.Reply:
      messageId = addInteractionMessage(services, interaction, fieldsForNewMessage(world, interaction.channelId, data, request.files), true).id;
      break;
    case CallbackType.DeferredReply: {
      // Discord shows a deferred reply as "thinking…" until it is edited.
      const flags = MessageFlag.Loading | (isEphemeral(data) ? MessageFlag.Ephemeral : 0);
      const fields = { content: '', embeds: [], components: [], attachments: [], mentions: [], flags };
      messageId = addInteractionMessage(services, interaction, fields, true).id;
      break;
    }
    case CallbackType.DeferredUpdate:
      messageId = componentOnly(interaction, type);
      break;
    case CallbackType.Update: {
      messageId = componentOnly(interaction, type);
      const message = world.message(messageId, interaction.userId);
      world.recordEdit(message, applyMessageEdit(world, message, data, request.files));
      break;
    }
    default:
      throw new DiscordApiError(400, 50035, `Interaction callback type ${type} is not supported by the sandbox`);
  }
  interaction.acknowledgedAt = clock.now();
  interaction.callbackType = type;
  interaction.messageId = messageId;
  if (request.query.get('with_response') !== 'true') return noContent;
  const message = world.message(messageId, interaction.userId);
  return ok({
    interaction: {
      id: interaction.id, type: interaction.type, response_message_id: message.id,
      response_message_loading: (message.flags & MessageFlag.Loading) !== 0, response_message_ephemeral: message.ephemeralFor !== null,
    },
    resource: { type, message: world.messageJson(message) },
  });
}

/** The interaction behind a webhook route's token, refusing tokens past their 15 minutes. */
function tokenInteraction(services: SandboxServices, request: RestRequest): InteractionRecord {
  const { world, clock } = services;
  if (request.params['application'] !== world.applicationId) throw unknownWebhook();
  const interaction = world.interactionByToken(request.params['token']!);
  if (interaction === undefined) throw invalidWebhookToken();
  // Not a violation: a bot learns that a token expired from this answer (and cannot see the simulated clock).
  if (clock.now() - interaction.createdAt > TOKEN_LIFETIME_MS) throw invalidWebhookToken();
  return interaction;
}

/** The message a webhook route names: @original (once answered) or one of the interaction's follow-ups. */
function webhookMessage(services: SandboxServices, request: RestRequest): { interaction: InteractionRecord; message: StoredMessage } {
  const interaction = tokenInteraction(services, request);
  const wanted = request.params['message'] ?? interaction.messageId;
  const ownMessages = [interaction.messageId, ...interaction.followUpIds];
  if (wanted === null || !ownMessages.includes(wanted)) throw unknownMessage();
  return { interaction, message: services.world.message(wanted, interaction.userId) };
}

function getMessage(services: SandboxServices, request: RestRequest): RestAnswer {
  return ok(services.world.messageJson(webhookMessage(services, request).message));
}

function editMessage(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const { message } = webhookMessage(services, request);
  const changed = applyMessageEdit(world, message, bodyObject(request), request.files);
  if ((message.flags & MessageFlag.Loading) !== 0) {
    message.flags &= ~MessageFlag.Loading;
    changed.push('flags');
  }
  world.recordEdit(message, changed);
  return ok(world.messageJson(message));
}

function deleteMessage(services: SandboxServices, request: RestRequest): RestAnswer {
  services.world.deleteMessage(webhookMessage(services, request).message.id);
  return noContent;
}

/** The deferred reply of this interaction while it still shows "thinking…". */
function loadingOriginal(services: SandboxServices, interaction: InteractionRecord): StoredMessage | null {
  if (interaction.callbackType !== CallbackType.DeferredReply || interaction.messageId === null) return null;
  try {
    const original = services.world.message(interaction.messageId, interaction.userId);
    return (original.flags & MessageFlag.Loading) !== 0 ? original : null;
  } catch {
    return null;
  }
}

function followUp(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const interaction = tokenInteraction(services, request);
  // Discord opens the webhook only once the interaction has been answered.
  if (interaction.acknowledgedAt === null) throw unknownWebhook();
  const body = bodyObject(request);
  let message = loadingOriginal(services, interaction);
  if (message !== null) {
    // Discord fills a still-loading deferred reply with the first follow-up (keeping the deferral's
    // ephemerality) instead of posting a second message; it does not show as edited.
    applyMessageEdit(world, message, body, request.files);
    message.flags &= ~MessageFlag.Loading;
  } else {
    message = addInteractionMessage(services, interaction, fieldsForNewMessage(world, interaction.channelId, body, request.files), false);
    interaction.followUpIds.push(message.id);
  }
  return request.query.get('wait') === 'true' ? ok(world.messageJson(message)) : noContent;
}

const ORIGINAL = '/webhooks/:application/:token/messages/@original';
const BY_ID = '/webhooks/:application/:token/messages/:message';

/** The interaction's id and token in the path authorise these routes. */
const BY_TOKEN = { auth: false };
const BY_TOKEN_LIMITED = { auth: false, rateLimited: true };

export const interactionRoutes: RestRoute[] = [
  { method: 'POST', pattern: '/interactions/:interaction/:token/callback', handler: endpoint(callback, BY_TOKEN) },
  { method: 'GET', pattern: ORIGINAL, handler: endpoint(getMessage, BY_TOKEN) },
  { method: 'PATCH', pattern: ORIGINAL, handler: endpoint(editMessage, BY_TOKEN_LIMITED) },
  { method: 'DELETE', pattern: ORIGINAL, handler: endpoint(deleteMessage, BY_TOKEN_LIMITED) },
  { method: 'GET', pattern: BY_ID, handler: endpoint(getMessage, BY_TOKEN) },
  { method: 'PATCH', pattern: BY_ID, handler: endpoint(editMessage, BY_TOKEN_LIMITED) },
  { method: 'DELETE', pattern: BY_ID, handler: endpoint(deleteMessage, BY_TOKEN_LIMITED) },
  { method: 'POST', pattern: '/webhooks/:application/:token', handler: endpoint(followUp, BY_TOKEN_LIMITED) },
];
