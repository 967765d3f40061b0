import { randomBytes } from 'node:crypto';
import { ControlError } from './discord-errors.js';
import { MAX_ATTACHMENT_BYTES } from './limits.js';
import { Permission, permissionNames } from './permissions.js';
import {
  InteractionType, SANDBOX_LOCALE, type InteractionKind, type InteractionRecord, type RegisteredCommand, type SandboxUser, type StoredMessage, type World,
} from './world.js';

// Builds INTERACTION_CREATE payloads the way Discord would for a member using the REGISTERED commands and the
// buttons on stored messages: option types, choices and ranges come from the registration, and what Discord
// itself would refuse (unknown command or option, a value out of range, a member without the command's
// default_member_permissions, a disabled button) is refused here with a message naming it.

const OptionType = { Subcommand: 1, SubcommandGroup: 2, String: 3, Integer: 4, Boolean: 5, User: 6, Channel: 7, Role: 8, Mentionable: 9, Number: 10, Attachment: 11 } as const;
const BUTTON_COMPONENT_TYPE = 2;

type CommandOption = Record<string, unknown> & { name: string; type: number };

interface CommandRequest {
  readonly user: SandboxUser;
  readonly command: string;
  readonly options: Record<string, unknown>;
  /** 'name', or 'group name' for a subcommand inside a group. */
  readonly subcommand: string | undefined;
  readonly channelId: string;
  /** Deliver even when the member lacks the command's default_member_permissions (to test the bot's own check). */
  readonly force: boolean;
}

export interface BuiltInteraction {
  readonly record: InteractionRecord;
  readonly payload: Record<string, unknown>;
}

const refuse = (message: string): never => {
  throw new ControlError(400, message);
};

function registeredCommand(world: World, name: string): RegisteredCommand {
  const command = world.guildCommands.find((candidate) => candidate.name === name) ?? world.globalCommands.find((candidate) => candidate.name === name);
  if (command !== undefined) return command;
  const known = [...world.guildCommands, ...world.globalCommands].map((candidate) => `/${candidate.name}`);
  return refuse(`command /${name} is not registered (registered: ${known.join(', ') || 'none'})`);
}

function checkMemberPermissions(world: World, user: SandboxUser, command: RegisteredCommand): void {
  const required = command['default_member_permissions'];
  if (required === null || required === undefined) return;
  const has = world.permissionsOf(user);
  // "0" means no member permission suffices: only administrators (who have every bit) may use it.
  const needed = BigInt(String(required)) === 0n ? Permission.Administrator : BigInt(String(required));
  if ((has & needed) === needed) return;
  throw new ControlError(403, `${user.name} lacks ${permissionNames(needed & ~has).join(', ')} that /${command.name} requires `
    + `(default_member_permissions ${JSON.stringify(required)}); Discord would not deliver it — pass force: true to deliver it anyway`);
}

function optionsOf(holder: Record<string, unknown>): CommandOption[] {
  return Array.isArray(holder['options']) ? holder['options'] as CommandOption[] : [];
}

/** The options list the values fill, wrapped in the subcommand (and group) options Discord nests them in. */
function selectSubcommand(command: RegisteredCommand, subcommand: string | undefined): { leaf: CommandOption[]; wrap: (options: unknown[]) => unknown[] } {
  const nested = optionsOf(command).filter((option) => option.type === OptionType.Subcommand || option.type === OptionType.SubcommandGroup);
  if (nested.length === 0) {
    if (subcommand !== undefined) refuse(`/${command.name} has no subcommands; got subcommand ${JSON.stringify(subcommand)}`);
    return { leaf: optionsOf(command), wrap: (options) => options };
  }
  const names = nested.flatMap((option) => option.type === OptionType.Subcommand ? [option.name] : optionsOf(option).map((sub) => `${option.name} ${sub.name}`));
  if (subcommand === undefined) return refuse(`/${command.name} needs a subcommand: one of ${names.join(', ')}`);
  const [first, second] = subcommand.trim().split(/\s+/);
  const top = nested.find((option) => option.name === first);
  if (top === undefined || (top.type === OptionType.SubcommandGroup) !== (second !== undefined)) {
    return refuse(`/${command.name} has no subcommand ${JSON.stringify(subcommand)}; one of ${names.join(', ')}`);
  }
  if (top.type === OptionType.Subcommand) return { leaf: optionsOf(top), wrap: (options) => [{ name: top.name, type: top.type, options }] };
  const sub = optionsOf(top).find((option) => option.name === second);
  if (sub === undefined) return refuse(`/${command.name} ${first} has no subcommand ${JSON.stringify(second)}; one of ${names.join(', ')}`);
  return { leaf: optionsOf(sub), wrap: (options) => [{ name: top.name, type: top.type, options: [{ name: sub.name, type: sub.type, options }] }] };
}

function numeric(option: CommandOption, value: unknown, integer: boolean): number {
  const parsed = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof parsed !== 'number' || !Number.isFinite(parsed) || (integer && !Number.isInteger(parsed))) {
    return refuse(`option ${option.name} = ${JSON.stringify(value)} must be ${integer ? 'an integer' : 'a number'}`);
  }
  const min = option['min_value'];
  const max = option['max_value'];
  if (typeof min === 'number' && parsed < min) refuse(`option ${option.name} = ${parsed} is below its min_value ${min}`);
  if (typeof max === 'number' && parsed > max) refuse(`option ${option.name} = ${parsed} is above its max_value ${max}`);
  return parsed;
}

function text(option: CommandOption, value: unknown): string {
  if (typeof value !== 'string') return refuse(`option ${option.name} = ${JSON.stringify(value)} must be text`);
  const min = option['min_length'];
  const max = option['max_length'];
  if (typeof min === 'number' && value.length < min) refuse(`option ${option.name} is ${value.length} characters; min_length is ${min}`);
  if (typeof max === 'number' && value.length > max) refuse(`option ${option.name} is ${value.length} characters; max_length is ${max}`);
  return value;
}

interface Resolved { users: Record<string, unknown>; members: Record<string, unknown>; channels: Record<string, unknown>; roles: Record<string, unknown> }

/** One option's typed value, adding what it refers to (users, channels, roles) to `resolved` as Discord does. */
function optionValue(world: World, option: CommandOption, value: unknown, resolved: Resolved): unknown {
  const addUser = (user: SandboxUser) => {
    resolved.users[user.id] = world.userJson(user);
    const { user: _omitted, ...member } = world.memberJson(user, true);
    resolved.members[user.id] = member;
    return user.id;
  };
  const role = (nameOrId: string) => world.rolesJson().find((candidate) => candidate['id'] === nameOrId || candidate['name'] === nameOrId);
  switch (option.type) {
    case OptionType.String:
      return text(option, value);
    case OptionType.Integer:
      return numeric(option, value, true);
    case OptionType.Number:
      return numeric(option, value, false);
    case OptionType.Boolean:
      if (value === true || value === 'true') return true;
      if (value === false || value === 'false') return false;
      return refuse(`option ${option.name} = ${JSON.stringify(value)} must be true or false`);
    case OptionType.User:
      return addUser(world.findUser(String(value)) ?? world.ensureUser(String(value)));
    case OptionType.Channel: {
      const channel = world.channel(String(value));
      resolved.channels[channel.id] = { ...world.channelJson(channel), permissions: world.permissionsOf(world.botUser).toString() };
      return channel.id;
    }
    case OptionType.Role:
    case OptionType.Mentionable: {
      const found = role(String(value));
      if (found !== undefined) {
        resolved.roles[String(found['id'])] = found;
        return found['id'];
      }
      if (option.type === OptionType.Role) return refuse(`option ${option.name} = ${JSON.stringify(value)} is not a role (Admin, @everyone)`);
      return addUser(world.findUser(String(value)) ?? world.ensureUser(String(value)));
    }
    default:
      return refuse(`option ${option.name} has type ${option.type}, which the sandbox cannot fill`);
  }
}

function commandOptions(world: World, command: RegisteredCommand, request: CommandRequest): { options: unknown[]; resolved: Resolved } {
  const { leaf, wrap } = selectSubcommand(command, request.subcommand);
  for (const name of Object.keys(request.options)) {
    if (!leaf.some((option) => option.name === name)) {
      refuse(`/${command.name} has no option ${JSON.stringify(name)}; its options are ${leaf.map((option) => option.name).join(', ') || 'none'}`);
    }
  }
  const resolved: Resolved = { users: {}, members: {}, channels: {}, roles: {} };
  const options = leaf.flatMap((option) => {
    const given = request.options[option.name];
    if (given === undefined || given === null) {
      if (option['required'] === true) refuse(`/${command.name} needs option ${option.name}`);
      return [];
    }
    const value = optionValue(world, option, given, resolved);
    const choices = option['choices'];
    if (Array.isArray(choices) && choices.length > 0 && !choices.some((choice: { value: unknown }) => choice.value === value)) {
      refuse(`option ${option.name} = ${JSON.stringify(value)} is not one of its choices: ${choices.map((choice: { value: unknown }) => JSON.stringify(choice.value)).join(', ')}`);
    }
    return [{ name: option.name, type: option.type, value }];
  });
  return { options: wrap(options), resolved };
}

function newInteraction(world: World, type: InteractionKind, user: SandboxUser, channelId: string, details: { commandName: string | null; sourceMessageId: string | null }): InteractionRecord {
  if (user.bot) refuse(`${user.name} is a bot; bots cannot use commands or buttons`);
  const id = world.ids.next();
  // Shaped like Discord's tokens (base64 of "interaction:<id>:<secret>"), long and unguessable.
  const token = Buffer.from(`interaction:${id}:${randomBytes(32).toString('hex')}`).toString('base64url');
  return {
    id, token, type, userId: user.id, channelId, createdAt: world.clock.now(), ...details,
    acknowledgedAt: null, callbackType: null, messageId: null, followUpIds: [],
  };
}

/** The fields every guild interaction carries; discord.js refuses one without entitlements and integration owners. */
function interactionPayload(world: World, record: InteractionRecord, extra: Record<string, unknown>): Record<string, unknown> {
  const user = world.userById(record.userId);
  const channel = world.channel(record.channelId);
  const appPermissions = world.permissionsOf(world.botUser).toString();
  return {
    id: record.id, application_id: world.applicationId, type: record.type, token: record.token, version: 1,
    guild_id: world.guildId, guild: { id: world.guildId, locale: SANDBOX_LOCALE, features: [] },
    channel_id: channel.id, channel: { ...world.channelJson(channel), permissions: world.permissionsOf(user).toString() },
    member: world.memberJson(user, true), app_permissions: appPermissions, locale: SANDBOX_LOCALE, guild_locale: SANDBOX_LOCALE,
    entitlements: [], authorizing_integration_owners: { '0': world.guildId }, context: 0,
    attachment_size_limit: MAX_ATTACHMENT_BYTES, ...extra,
  };
}

export function buildCommandInteraction(world: World, request: CommandRequest): BuiltInteraction {
  const command = registeredCommand(world, request.command);
  if (!request.force) checkMemberPermissions(world, request.user, command);
  const { options, resolved } = commandOptions(world, command, request);
  const record = newInteraction(world, InteractionType.ApplicationCommand, request.user, request.channelId, { commandName: command.name, sourceMessageId: null });
  const data: Record<string, unknown> = { id: command.id, name: command.name, type: command['type'] ?? 1 };
  if (command['guild_id'] !== undefined) data['guild_id'] = command['guild_id'];
  if (options.length > 0) data['options'] = options;
  const used = Object.entries(resolved).filter(([, entries]) => Object.keys(entries).length > 0);
  if (used.length > 0) data['resolved'] = Object.fromEntries(used);
  return { record, payload: interactionPayload(world, record, { data }) };
}

/** Every component that has a custom id, at any depth, in order. */
function componentsWithCustomIds(components: unknown[]): Record<string, unknown>[] {
  return (components as Record<string, unknown>[]).flatMap((component) => [
    ...(typeof component['custom_id'] === 'string' ? [component] : []),
    ...(Array.isArray(component['components']) ? componentsWithCustomIds(component['components']) : []),
  ]);
}

export function buildButtonInteraction(world: World, user: SandboxUser, message: StoredMessage, customId: string): BuiltInteraction {
  const components = componentsWithCustomIds(message.components);
  const button = components.find((component) => component['custom_id'] === customId && component['type'] === BUTTON_COMPONENT_TYPE);
  if (button === undefined) {
    const ids = components.map((component) => component['custom_id']);
    return refuse(`message ${message.id} has no button ${JSON.stringify(customId)} (its custom ids: ${ids.join(', ') || 'none'})`);
  }
  if (button['disabled'] === true) refuse(`button ${JSON.stringify(customId)} on message ${message.id} is disabled`);
  const record = newInteraction(world, InteractionType.MessageComponent, user, message.channelId, { commandName: null, sourceMessageId: message.id });
  return {
    record,
    payload: interactionPayload(world, record, { data: { custom_id: customId, component_type: BUTTON_COMPONENT_TYPE }, message: world.messageJson(message) }),
  };
}
