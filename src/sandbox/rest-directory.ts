import { unknownApplication, unknownGuild } from './discord-errors.js';
import { breach, commandLimitProblems } from './limits.js';
import { endpoint, ok, type RestAnswer, type RestRequest, type RestRoute } from './rest-types.js';
import type { SandboxServices } from './services.js';
import { SANDBOX_LOCALE, type RegisteredCommand } from './world.js';

// Everything else the bot reads or sets up: the gateway address, users, the guild and its members and roles, the
// application, and slash-command registration (bulk overwrite keeps a command's id when its name stays).

/** /gateway/bot's session_start_limit: plenty, so reconnect-heavy tests never run out. */
const SESSION_START_LIMIT = { total: 1000, remaining: 1000, reset_after: 0, max_concurrency: 1 };

function checkGuild(services: SandboxServices, request: RestRequest): void {
  if (request.params['guild'] !== services.world.guildId) throw unknownGuild();
}

function checkApplication(services: SandboxServices, request: RestRequest): void {
  if (request.params['application'] !== services.world.applicationId) throw unknownApplication();
}

function getMember(services: SandboxServices, request: RestRequest): RestAnswer {
  checkGuild(services, request);
  const { world } = services;
  return ok(world.memberJson(world.userById(request.params['user']!)));
}

function commandList(services: SandboxServices, request: RestRequest): RegisteredCommand[] {
  checkApplication(services, request);
  if (request.params['guild'] === undefined) return services.world.globalCommands;
  checkGuild(services, request);
  return services.world.guildCommands;
}

function overwriteCommands(services: SandboxServices, request: RestRequest): RestAnswer {
  const { world } = services;
  const list = commandList(services, request);
  const submitted = (Array.isArray(request.body) ? request.body : []) as Record<string, unknown>[];
  const problems = submitted.flatMap((command, i) => commandLimitProblems(command, `[${i}]`));
  const seen = new Set<string>();
  submitted.forEach((command, i) => {
    const key = `${command['type'] ?? 1}:${String(command['name'])}`;
    if (seen.has(key)) problems.push(`[${i}].name: ${JSON.stringify(command['name'])} is registered twice`);
    seen.add(key);
  });
  if (problems.length > 0) throw breach(problems);
  const guildId = request.params['guild'];
  const registered = submitted.map((command): RegisteredCommand => {
    const type = Number(command['type'] ?? 1);
    const existing = list.find((old) => old['type'] === type && old.name === command['name']);
    const permissions = command['default_member_permissions'];
    return {
      name_localizations: null, description_localizations: null, options: [], nsfw: false, integration_types: [0], contexts: null,
      ...command,
      id: existing?.id ?? world.ids.next(), application_id: world.applicationId, version: world.ids.next(), type,
      name: String(command['name']), description: command['description'] ?? '',
      default_member_permissions: permissions === undefined || permissions === null ? null : String(permissions),
      ...(guildId === undefined ? { dm_permission: command['dm_permission'] ?? true } : { guild_id: guildId }),
    };
  });
  list.splice(0, list.length, ...registered);
  services.log(`commands: registered ${registered.map((command) => `/${command.name}`).join(' ')}${guildId === undefined ? ' (global)' : ' (guild)'}`);
  return ok(registered);
}

export const directoryRoutes: RestRoute[] = [
  {
    method: 'GET', pattern: '/gateway/bot',
    handler: endpoint((services) => ok({ url: services.gateway.url, shards: 1, session_start_limit: SESSION_START_LIMIT })),
  },
  {
    method: 'GET', pattern: '/users/@me',
    handler: endpoint(({ world }) => ok({ ...world.userJson(world.botUser), verified: true, mfa_enabled: false, email: null, locale: SANDBOX_LOCALE })),
  },
  { method: 'GET', pattern: '/users/:user', handler: endpoint(({ world }, request) => ok(world.userJson(world.userById(request.params['user']!)))) },
  {
    method: 'GET', pattern: '/guilds/:guild',
    handler: endpoint((services, request) => {
      checkGuild(services, request);
      const { world } = services;
      const counts = request.query.get('with_counts') === 'true'
        ? { approximate_member_count: world.users().length, approximate_presence_count: 0 } : {};
      return ok({ ...world.guildJson(), ...counts });
    }),
  },
  {
    method: 'GET', pattern: '/guilds/:guild/channels',
    handler: endpoint((services, request) => {
      checkGuild(services, request);
      return ok(services.world.channels.map((channel) => services.world.channelJson(channel)));
    }),
  },
  { method: 'GET', pattern: '/guilds/:guild/members/:user', handler: endpoint(getMember) },
  { method: 'GET', pattern: '/guilds/:guild/roles', handler: endpoint((services, request) => (checkGuild(services, request), ok(services.world.rolesJson()))) },
  { method: 'GET', pattern: '/applications/@me', handler: endpoint(({ world }) => ok(world.applicationJson())) },
  { method: 'GET', pattern: '/applications/:application/commands', handler: endpoint((services, request) => ok(commandList(services, request))) },
  { method: 'PUT', pattern: '/applications/:application/commands', handler: endpoint(overwriteCommands) },
  { method: 'GET', pattern: '/applications/:application/guilds/:guild/commands', handler: endpoint((services, request) => ok(commandList(services, request))) },
  { method: 'PUT', pattern: '/applications/:application/guilds/:guild/commands', handler: endpoint(overwriteCommands) },
];
