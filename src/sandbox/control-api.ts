import type { IncomingMessage, ServerResponse } from 'node:http';
import { checkInteger, checkObject, checkText, fail, InvalidRequestError } from '../common/validation.js';
import { ControlError, DiscordApiError } from './discord-errors.js';
import { CloseCode } from './gateway.js';
import { buildButtonInteraction, buildCommandInteraction, type BuiltInteraction } from './interaction-builder.js';
import { LimitBreach, TOKEN_LIFETIME_MS } from './limits.js';
import { addReaction, checkUnicodeEmoji, removeReaction } from './reactions.js';
import { parseJson, readBody } from './request-body.js';
import { matchRoute, pathKnown, sendJson, type Route } from './router.js';
import type { SandboxServices } from './services.js';
import { EXTRA_ROLE_NAMES, type ExtraRoleName, type SandboxUser, type StoredMessage } from './world.js';

// The control API (/_sandbox/…): what tests and the CLI use to play the humans — create users, run commands,
// press buttons, react — and to look at what the bot did: messages with their attachments, interactions,
// violations and the request log. Not Discord's API, so not validated against its spec. JSON in and out;
// refusals are {message} with a 4xx status.

export const CONTROL_PREFIX = '/_sandbox';
const MAX_CONTROL_BODY_BYTES = 1024 * 1024;
/** Names, ids and custom ids; Discord's longest of them, a custom id, is 100 characters. */
const MAX_TEXT_FIELD_CHARS = 100;
/** setTimeout's limit; a longer gateway hold would fire at once. */
const MAX_HOLD_MS = 2 ** 31 - 1;

interface ControlRequest {
  readonly params: Record<string, string>;
  readonly query: URLSearchParams;
  readonly body: Record<string, unknown>;
}

type ControlHandler = (services: SandboxServices, request: ControlRequest) => unknown;

const text = (body: Record<string, unknown>, field: string): string => checkText(field, body[field], MAX_TEXT_FIELD_CHARS);

function optionalText(body: Record<string, unknown>, field: string): string | undefined {
  return body[field] === undefined || body[field] === null ? undefined : text(body, field);
}

function optionalFlag(body: Record<string, unknown>, field: string): boolean | undefined {
  const value = body[field];
  if (value !== undefined && typeof value !== 'boolean') fail(field, value, 'must be true or false');
  return value;
}

/** A normal close or an application's code (Discord's are 4000–4014); ws.close throws on others such as 0, midway through. */
function closeCode(body: Record<string, unknown>): number {
  const code = body['code'] ?? CloseCode.UnknownError;
  if (typeof code === 'number' && (code === 1000 || (Number.isInteger(code) && code >= 3000 && code <= 4999))) return code;
  return fail('code', code, 'must be 1000 or a whole number from 3000 to 4999');
}

/** Users named in control requests are created on first use, like people joining the server. */
const userFrom = (services: SandboxServices, body: Record<string, unknown>): SandboxUser => services.world.ensureUser(text(body, 'user'));

export interface UserView { readonly id: string; readonly name: string; readonly admin: boolean; readonly bot: boolean; readonly roles: readonly ExtraRoleName[] }

function userView(user: SandboxUser): UserView {
  return { id: user.id, name: user.name, admin: user.admin, bot: user.bot, roles: user.roles };
}

function optionalRoles(body: Record<string, unknown>): ExtraRoleName[] | undefined {
  const roles = body['roles'];
  if (roles === undefined) return undefined;
  const known = (name: unknown): name is ExtraRoleName => EXTRA_ROLE_NAMES.includes(name as ExtraRoleName);
  if (!Array.isArray(roles) || !roles.every(known) || new Set(roles).size !== roles.length) {
    return fail('roles', roles, `must be a list of distinct role names among ${EXTRA_ROLE_NAMES.join(', ')}`);
  }
  return [...roles].sort();
}

function messageFrom(services: SandboxServices, body: Record<string, unknown>, viewer: SandboxUser): StoredMessage {
  const id = text(body, 'messageId');
  try {
    return services.world.message(id, viewer.id);
  } catch {
    throw new ControlError(404, `message ${id} does not exist (or ${viewer.name} cannot see it)`);
  }
}

function messageView(services: SandboxServices, message: StoredMessage) {
  const { world } = services;
  const author = world.userById(message.authorId);
  const nameOf = (id: string) => world.findUser(id)?.name ?? id;
  return {
    id: message.id, author: { id: author.id, name: author.name, bot: author.bot }, content: message.content,
    embeds: message.embeds, components: message.components,
    attachments: message.attachments.map((attachment) => ({
      id: attachment.id, filename: attachment.filename, size: attachment.bytes.length, contentType: attachment.contentType,
      url: world.attachmentUrl(message.channelId, attachment),
    })),
    reactions: [...message.reactions].map(([emoji, users]) => ({ emoji, users: [...users].map(nameOf) })),
    flags: message.flags, ephemeral: message.ephemeralFor !== null, interactionId: message.interaction?.id ?? null,
    createdAt: message.createdAt, edits: message.edits, mentions: message.mentions,
  };
}

function deliver(services: SandboxServices, built: BuiltInteraction) {
  services.world.addInteraction(built.record);
  services.gateway.dispatch('INTERACTION_CREATE', built.payload);
  return { interactionId: built.record.id, token: built.record.token };
}

function runCommand(services: SandboxServices, { body }: ControlRequest) {
  const { world } = services;
  const options = body['options'] ?? {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new ControlError(400, `options = ${JSON.stringify(options)} must be an object {name: value}`);
  }
  return deliver(services, buildCommandInteraction(world, {
    user: userFrom(services, body), command: text(body, 'command').replace(/^\//, ''), options: options as Record<string, unknown>,
    subcommand: optionalText(body, 'subcommand'), channelId: world.channel(optionalText(body, 'channel') ?? 'general').id,
    force: optionalFlag(body, 'force') ?? false,
  }));
}

function pressButton(services: SandboxServices, { body }: ControlRequest) {
  const user = userFrom(services, body);
  return deliver(services, buildButtonInteraction(services.world, user, messageFrom(services, body, user), text(body, 'customId')));
}

function react(services: SandboxServices, { body }: ControlRequest, add: boolean) {
  const user = userFrom(services, body);
  const message = messageFrom(services, body, user);
  if (message.ephemeralFor !== null) throw new ControlError(400, `message ${message.id} is ephemeral; it cannot have reactions`);
  const emoji = text(body, 'emoji');
  try {
    checkUnicodeEmoji(emoji);
  } catch {
    throw new ControlError(400, `emoji ${JSON.stringify(emoji)} is not a Unicode emoji (the sandbox guild has no custom emoji)`);
  }
  const changed = add ? addReaction(services, message, user, emoji) : removeReaction(services, message, user, emoji);
  return { changed, message: messageView(services, message) };
}

function interactionView(services: SandboxServices, { params }: ControlRequest) {
  const interaction = services.world.interaction(params['id']!);
  if (interaction === undefined) throw new ControlError(404, `interaction ${params['id']} does not exist`);
  return {
    id: interaction.id, type: interaction.type, user: services.world.userById(interaction.userId).name,
    createdAt: interaction.createdAt, acknowledgedAt: interaction.acknowledgedAt, callbackType: interaction.callbackType,
    messageId: interaction.messageId, followUpIds: interaction.followUpIds, tokenExpiresAt: interaction.createdAt + TOKEN_LIFETIME_MS,
  };
}

const routes: Route<ControlHandler>[] = [
  {
    method: 'GET', pattern: '/state',
    handler: (services) => {
      const { world } = services;
      return {
        applicationId: world.applicationId, botUserId: world.botUser.id, guildId: world.guildId,
        channels: Object.fromEntries(world.channels.map((channel) => [channel.name, channel.id])),
        roles: Object.fromEntries([world.adminRole, ...Object.values(world.extraRoles)].map((role) => [role.name, role.id])),
        users: world.users().map((user) => userView(user)),
        commands: [...world.guildCommands, ...world.globalCommands],
        gatewaySessions: services.gateway.connectedSessions(), rateLimitEveryNth: services.rateLimiter.everyNth,
      };
    },
  },
  {
    method: 'POST', pattern: '/users',
    handler: (services, { body }) => {
      const name = text(body, 'name');
      const options = { admin: optionalFlag(body, 'admin'), bot: optionalFlag(body, 'bot'), roles: optionalRoles(body) };
      const existing = services.world.findUser(name);
      if (existing !== undefined && ((options.admin ?? existing.admin) !== existing.admin || (options.bot ?? existing.bot) !== existing.bot
        || (options.roles ?? existing.roles).join() !== [...existing.roles].sort().join())) {
        throw new ControlError(409, `user ${name} already exists with admin ${existing.admin}, bot ${existing.bot}, roles [${existing.roles.join(', ')}]`);
      }
      return userView(services.world.ensureUser(name, options));
    },
  },
  { method: 'POST', pattern: '/commands', handler: runCommand },
  { method: 'POST', pattern: '/buttons', handler: pressButton },
  { method: 'POST', pattern: '/reactions', handler: (services, request) => react(services, request, true) },
  { method: 'DELETE', pattern: '/reactions', handler: (services, request) => react(services, request, false) },
  {
    method: 'GET', pattern: '/channels/:channel/messages',
    handler: (services, { params, query }) => {
      const { world } = services;
      const viewer = query.get('user');
      const viewerId = viewer === null ? undefined : world.findUser(viewer)?.id;
      return world.messagesIn(world.channel(params['channel']!).id, viewerId).map((message) => messageView(services, message));
    },
  },
  { method: 'GET', pattern: '/interactions/:id', handler: interactionView },
  { method: 'GET', pattern: '/violations', handler: (services) => services.recorder.violations() },
  { method: 'DELETE', pattern: '/violations', handler: (services) => (services.recorder.clearViolations(), []) },
  { method: 'GET', pattern: '/requests', handler: (services) => services.recorder.requests() },
  { method: 'GET', pattern: '/clock', handler: (services) => ({ now: services.clock.now() }) },
  { method: 'POST', pattern: '/clock', handler: (services, { body }) => ({ now: services.clock.advance(checkInteger('advanceMs', body['advanceMs'], 0, Number.MAX_SAFE_INTEGER)) }) },
  { method: 'GET', pattern: '/rate-limit', handler: (services) => ({ everyNth: services.rateLimiter.everyNth }) },
  {
    method: 'POST', pattern: '/rate-limit',
    handler: (services, { body }) => {
      services.rateLimiter.setEveryNth(checkInteger('everyNth', body['everyNth'], 0, Number.MAX_SAFE_INTEGER));
      return { everyNth: services.rateLimiter.everyNth };
    },
  },
  {
    method: 'POST', pattern: '/gateway/disconnect',
    handler: (services, { body }) => ({
      dropped: services.gateway.disconnect(closeCode(body), checkInteger('holdMs', body['holdMs'] ?? 0, 0, MAX_HOLD_MS)),
    }),
  },
];

export async function handleControl(services: SandboxServices, request: IncomingMessage, response: ServerResponse, url: URL): Promise<void> {
  const method = request.method ?? 'GET';
  const path = url.pathname.slice(CONTROL_PREFIX.length) || '/';
  try {
    const { data, bytes } = await readBody(request, MAX_CONTROL_BODY_BYTES);
    if (bytes > MAX_CONTROL_BODY_BYTES) throw new ControlError(413, `body of ${bytes} bytes; the control API takes at most ${MAX_CONTROL_BODY_BYTES}`);
    const body = checkObject('body', data.length > 0 ? parseJson(data.toString('utf8')) : {});
    const match = matchRoute(routes, method, path);
    if (match === null) {
      throw new ControlError(pathKnown(routes, path) ? 405 : 404, `no control endpoint ${method} ${CONTROL_PREFIX}${path}; see src/sandbox/README.md`);
    }
    sendJson(response, 200, match.route.handler(services, { params: match.params, query: url.searchParams, body }));
  } catch (error) {
    if (error instanceof ControlError) sendJson(response, error.status, { message: error.message });
    else if (error instanceof InvalidRequestError) sendJson(response, 400, { message: error.message });
    // A body nested too deep; violations are the bot's requests, so it is only refused.
    else if (error instanceof LimitBreach) sendJson(response, error.answer.status, { message: error.message });
    // A Discord error here means a body that is not JSON, or an unknown channel/user/message named in the request.
    else if (error instanceof DiscordApiError) sendJson(response, error.status, { message: `${error.message} (${url.pathname})` });
    else {
      services.log(`control ${method} ${path} failed: ${(error as Error).stack ?? String(error)}`);
      sendJson(response, 500, { message: (error as Error).message });
    }
  }
}
