import { SimulatedClock, SnowflakeFactory } from './clock.js';
import { ControlError, unknownChannel, unknownMessage, unknownUser } from './discord-errors.js';
import { TOKEN_LIFETIME_MS } from './limits.js';
import { ALL_PERMISSIONS, DEFAULT_EVERYONE_PERMISSIONS, Permission } from './permissions.js';

// The fixed world of the local Discord — one application and bot, one guild with two text channels and four roles,
// users made on first use — and the Discord-shaped JSON of each thing in it. Messages keep their attachments'
// bytes and their edit history so tests can check exactly what the bot delivered.

const BOT_USER_NAME = 'wrongbot';
const GUILD_NAME = 'Sandbox';
const CHANNEL_NAMES = ['general', 'art'] as const;
type ChannelName = typeof CHANNEL_NAMES[number];
const USER_NAME_PATTERN = /^[a-z0-9_]{1,32}$/;
const TEXT_CHANNEL_TYPE = 0;
/** A sandbox left running (`npm start`) must not grow without end: older messages go, with their attachment bytes. */
const MESSAGES_KEPT_PER_CHANNEL = 500;
/** Past its token's lifetime nobody can answer an interaction; the margin leaves it to inspect a while longer. */
const INTERACTION_KEPT_MS = TOKEN_LIFETIME_MS + 5 * 60 * 1000;

/** The locale every sandbox user and the guild report. */
export const SANDBOX_LOCALE = 'en-US';

/**
 * Roles a member may be given besides Admin, for a bot's admin checks other than Administrator: Manager has Manage
 * Server alone, Curator no permission at all (an admin only where a bot's settings name the role).
 */
export const EXTRA_ROLE_NAMES = ['Manager', 'Curator'] as const;
export type ExtraRoleName = typeof EXTRA_ROLE_NAMES[number];

export interface SandboxUser {
  readonly id: string;
  readonly name: string;
  readonly bot: boolean;
  readonly admin: boolean;
  readonly roles: readonly ExtraRoleName[];
  readonly joinedAt: number;
}

export interface StoredAttachment {
  readonly id: string;
  readonly filename: string;
  readonly contentType: string;
  readonly bytes: Buffer;
  readonly description: string | null;
  readonly width: number | null;
  readonly height: number | null;
}

interface MessageEdit { readonly at: number; readonly fields: string[] }

/** What a message says: set when it is created, replaced field by field when it is edited. */
export interface MessageFields {
  content: string;
  embeds: Record<string, unknown>[];
  components: Record<string, unknown>[];
  /** Changed only through World.replaceAttachments, which keeps the download index in step. */
  readonly attachments: StoredAttachment[];
  flags: number;
  mentions: string[];
}

export interface StoredMessage extends MessageFields {
  readonly id: string;
  readonly channelId: string;
  readonly authorId: string;
  /** Discord's message types: 20 for the original reply to a slash command, 19 for a reply to a message, else 0. */
  readonly type: number;
  readonly createdAt: number;
  /** The interaction this message answers; held here so the message keeps its metadata after World forgets it. */
  readonly interaction: InteractionRecord | null;
  /** Only this user sees the message (flag 64 on an interaction reply). */
  readonly ephemeralFor: string | null;
  readonly webhookId: string | null;
  readonly referencedMessageId: string | null;
  editedAt: number | null;
  readonly edits: MessageEdit[];
  /** Emoji → ids of the users who reacted with it, in reaction order. */
  readonly reactions: Map<string, Set<string>>;
}

export const InteractionType = { ApplicationCommand: 2, MessageComponent: 3 } as const;
export type InteractionKind = (typeof InteractionType)[keyof typeof InteractionType];

export interface InteractionRecord {
  readonly id: string;
  readonly token: string;
  readonly type: InteractionKind;
  readonly userId: string;
  readonly channelId: string;
  readonly createdAt: number;
  readonly commandName: string | null;
  /** For a button: the message the button was on, which callbacks 6 and 7 update. */
  readonly sourceMessageId: string | null;
  acknowledgedAt: number | null;
  callbackType: number | null;
  /** The message @original names once the interaction has been answered. */
  messageId: string | null;
  readonly followUpIds: string[];
}

export type RegisteredCommand = Record<string, unknown> & { readonly id: string; readonly name: string };

interface Role { readonly id: string; readonly name: string; readonly permissions: bigint; readonly position: number }
interface TextChannel { readonly id: string; readonly name: ChannelName; readonly position: number }

export class World {
  readonly ids: SnowflakeFactory;
  readonly applicationId: string;
  readonly guildId: string;
  readonly botUser: SandboxUser;
  readonly ownerUser: SandboxUser;
  readonly adminRole: Role;
  readonly everyoneRole: Role;
  readonly extraRoles: Readonly<Record<ExtraRoleName, Role>>;
  readonly channels: readonly TextChannel[];
  readonly createdAt: number;
  readonly globalCommands: RegisteredCommand[] = [];
  readonly guildCommands: RegisteredCommand[] = [];
  readonly #usersById = new Map<string, SandboxUser>();
  readonly #usersByName = new Map<string, SandboxUser>();
  readonly #messages = new Map<string, StoredMessage>();
  /** Per channel, in creation order (which is id order). */
  readonly #messagesByChannel = new Map<string, Map<string, StoredMessage>>();
  /** Like Discord's last_message_id, it may name a message since deleted. */
  readonly #lastMessageIds = new Map<string, string>();
  /** Attachment id → the message that carries it, for downloads. */
  readonly #attachmentOwners = new Map<string, StoredMessage>();
  /** In creation order, so the expired ones are at the front. */
  readonly #interactions = new Map<string, InteractionRecord>();
  readonly #interactionsByToken = new Map<string, InteractionRecord>();

  /** `publicUrl` is where this server is reached (http://host:port); attachment URLs start with it. */
  constructor(readonly clock: SimulatedClock, readonly publicUrl: string) {
    this.ids = new SnowflakeFactory(clock);
    this.createdAt = clock.now();
    this.applicationId = this.ids.next();
    this.guildId = this.ids.next();
    // Discord's @everyone role shares the guild's id; discord.js's permission maths depends on it.
    this.everyoneRole = { id: this.guildId, name: '@everyone', permissions: DEFAULT_EVERYONE_PERMISSIONS, position: 0 };
    this.adminRole = { id: this.ids.next(), name: 'Admin', permissions: Permission.Administrator, position: 1 };
    this.extraRoles = {
      Manager: { id: this.ids.next(), name: 'Manager', permissions: Permission.ManageGuild, position: 2 },
      Curator: { id: this.ids.next(), name: 'Curator', permissions: 0n, position: 3 },
    };
    this.channels = CHANNEL_NAMES.map((name, position) => ({ id: this.ids.next(), name, position }));
    for (const channel of this.channels) this.#messagesByChannel.set(channel.id, new Map());
    // The bot user's id is the application's id, as for every Discord bot.
    this.botUser = this.#addUser({ id: this.applicationId, name: BOT_USER_NAME, bot: true, admin: false, roles: [], joinedAt: this.createdAt });
    this.ownerUser = this.ensureUser('owner', { admin: true });
  }

  // ——— users ———

  /** The user named `name`, created (as a guild member) on first use. */
  ensureUser(name: string, options: { admin?: boolean; bot?: boolean; roles?: readonly ExtraRoleName[] } = {}): SandboxUser {
    const existing = this.#usersByName.get(name);
    if (existing !== undefined) return existing;
    if (!USER_NAME_PATTERN.test(name)) {
      throw new ControlError(400, `user ${JSON.stringify(name)} is not a valid name: use 1 to 32 lowercase letters, digits or _`);
    }
    const admin = options.admin ?? name.startsWith('admin');
    return this.#addUser({ id: this.ids.next(), name, bot: options.bot ?? false, admin, roles: [...(options.roles ?? [])], joinedAt: this.clock.now() });
  }

  #addUser(user: SandboxUser): SandboxUser {
    this.#usersById.set(user.id, user);
    this.#usersByName.set(user.name, user);
    return user;
  }

  users(): SandboxUser[] {
    return [...this.#usersById.values()];
  }

  userById(id: string): SandboxUser {
    const user = this.#usersById.get(id);
    if (user === undefined) throw unknownUser();
    return user;
  }

  findUser(idOrName: string): SandboxUser | undefined {
    return this.#usersByName.get(idOrName) ?? this.#usersById.get(idOrName);
  }

  roleIdsOf(user: SandboxUser): string[] {
    return this.#rolesOf(user).map((role) => role.id);
  }

  #rolesOf(user: SandboxUser): Role[] {
    return [...(user.admin ? [this.adminRole] : []), ...user.roles.map((name) => this.extraRoles[name])];
  }

  /** Guild-level permissions, as Discord computes them: the owner and Administrator get everything. */
  permissionsOf(user: SandboxUser): bigint {
    const bits = this.#rolesOf(user).reduce((all, role) => all | role.permissions, this.everyoneRole.permissions);
    return user.id === this.ownerUser.id || (bits & Permission.Administrator) !== 0n ? ALL_PERMISSIONS : bits;
  }

  // ——— channels ———

  /** A channel by id or by name ('general', '#art'). */
  channel(idOrName: string): TextChannel {
    const name = idOrName.replace(/^#/, '');
    const channel = this.channels.find((candidate) => candidate.id === idOrName || candidate.name === name);
    if (channel === undefined) throw unknownChannel();
    return channel;
  }

  // ——— messages ———

  addMessage(message: Omit<StoredMessage, 'id' | 'createdAt' | 'edits' | 'reactions' | 'editedAt'>): StoredMessage {
    const stored: StoredMessage = { ...message, id: this.ids.next(), createdAt: this.clock.now(), editedAt: null, edits: [], reactions: new Map() };
    const inChannel = this.#channelMessages(stored.channelId);
    inChannel.set(stored.id, stored);
    this.#messages.set(stored.id, stored);
    this.#indexAttachments(stored);
    if (stored.ephemeralFor === null) this.#lastMessageIds.set(stored.channelId, stored.id);
    if (inChannel.size > MESSAGES_KEPT_PER_CHANNEL) this.deleteMessage(inChannel.keys().next().value!);
    return stored;
  }

  #channelMessages(channelId: string): Map<string, StoredMessage> {
    const messages = this.#messagesByChannel.get(channelId);
    if (messages === undefined) throw unknownChannel();
    return messages;
  }

  #indexAttachments(message: StoredMessage): void {
    for (const attachment of message.attachments) this.#attachmentOwners.set(attachment.id, message);
  }

  #unindexAttachments(message: StoredMessage): void {
    for (const attachment of message.attachments) this.#attachmentOwners.delete(attachment.id);
  }

  replaceAttachments(message: StoredMessage, attachments: StoredAttachment[]): void {
    this.#unindexAttachments(message);
    (message as { attachments: StoredAttachment[] }).attachments = attachments;
    this.#indexAttachments(message);
  }

  /** A message as `viewerId` may see it (ephemeral messages exist only for their user), or undefined. */
  findMessage(id: string, viewerId?: string): StoredMessage | undefined {
    const message = this.#messages.get(id);
    return message === undefined || (message.ephemeralFor !== null && message.ephemeralFor !== viewerId) ? undefined : message;
  }

  message(id: string, viewerId?: string): StoredMessage {
    const message = this.findMessage(id, viewerId);
    if (message === undefined) throw unknownMessage();
    return message;
  }

  messageIn(channelId: string, messageId: string, viewerId?: string): StoredMessage {
    const message = this.message(messageId, viewerId);
    if (message.channelId !== channelId) throw unknownMessage();
    return message;
  }

  /** An attachment still on some message in the channel (ephemeral ones too: their URLs are not guessable). */
  findAttachment(channelId: string, attachmentId: string): StoredAttachment | undefined {
    const owner = this.#attachmentOwners.get(attachmentId);
    return owner?.channelId === channelId ? owner.attachments.find((attachment) => attachment.id === attachmentId) : undefined;
  }

  deleteMessage(id: string): void {
    const message = this.#messages.get(id);
    if (message === undefined) return;
    this.#messages.delete(id);
    this.#channelMessages(message.channelId).delete(id);
    this.#unindexAttachments(message);
  }

  /** Oldest first. */
  messagesIn(channelId: string, viewerId?: string): StoredMessage[] {
    return [...this.#channelMessages(channelId).values()].filter((message) => message.ephemeralFor === null || message.ephemeralFor === viewerId);
  }

  recordEdit(message: StoredMessage, fields: string[]): void {
    if (fields.length === 0) return;
    message.editedAt = this.clock.now();
    message.edits.push({ at: message.editedAt, fields });
  }

  // ——— interactions ———

  addInteraction(interaction: InteractionRecord): void {
    const keptSince = this.clock.now() - INTERACTION_KEPT_MS;
    for (const old of this.#interactions.values()) {
      if (old.createdAt >= keptSince) break;
      this.#interactions.delete(old.id);
      this.#interactionsByToken.delete(old.token);
    }
    this.#interactions.set(interaction.id, interaction);
    this.#interactionsByToken.set(interaction.token, interaction);
  }

  interaction(id: string): InteractionRecord | undefined {
    return this.#interactions.get(id);
  }

  interactionByToken(token: string): InteractionRecord | undefined {
    return this.#interactionsByToken.get(token);
  }

  // ——— Discord-shaped JSON ———

  userJson(user: SandboxUser): Record<string, unknown> {
    return {
      id: user.id, username: user.name, global_name: user.bot ? null : user.name, discriminator: user.bot ? '0000' : '0',
      avatar: null, bot: user.bot, system: false, public_flags: 0, flags: 0, banner: null, accent_color: null,
      avatar_decoration_data: null, primary_guild: null,
    };
  }

  memberJson(user: SandboxUser, withPermissions = false): Record<string, unknown> {
    const member: Record<string, unknown> = {
      user: this.userJson(user), roles: this.roleIdsOf(user), joined_at: isoTime(user.joinedAt), nick: null, avatar: null,
      banner: null, premium_since: null, deaf: false, mute: false, pending: false, flags: 0,
      communication_disabled_until: null, unusual_dm_activity_until: null,
    };
    if (withPermissions) member['permissions'] = this.permissionsOf(user).toString();
    return member;
  }

  rolesJson(): Record<string, unknown>[] {
    return [this.everyoneRole, this.adminRole, ...Object.values(this.extraRoles)].map((role) => ({
      id: role.id, name: role.name, permissions: role.permissions.toString(), position: role.position, color: 0,
      colors: { primary_color: 0, secondary_color: null, tertiary_color: null }, hoist: false, managed: false,
      mentionable: false, icon: null, unicode_emoji: null, flags: 0, description: null,
    }));
  }

  channelJson(channel: TextChannel): Record<string, unknown> {
    return {
      id: channel.id, type: TEXT_CHANNEL_TYPE, guild_id: this.guildId, name: channel.name, position: channel.position,
      permission_overwrites: [], parent_id: null, topic: null, nsfw: false, last_message_id: this.#lastMessageIds.get(channel.id) ?? null,
      rate_limit_per_user: 0, flags: 0,
    };
  }

  guildJson(): Record<string, unknown> {
    return {
      id: this.guildId, name: GUILD_NAME, icon: null, icon_hash: null, splash: null, discovery_splash: null, banner: null,
      description: null, owner_id: this.ownerUser.id, region: 'deprecated', afk_channel_id: null, afk_timeout: 300,
      widget_enabled: false, widget_channel_id: null, verification_level: 0, default_message_notifications: 0,
      explicit_content_filter: 0, roles: this.rolesJson(), emojis: [], stickers: [], features: [], mfa_level: 0,
      application_id: null, system_channel_id: this.channels[0]!.id, system_channel_flags: 0, rules_channel_id: null,
      public_updates_channel_id: null, safety_alerts_channel_id: null, max_presences: null, max_members: 500_000,
      vanity_url_code: null, premium_tier: 0, premium_subscription_count: 0, preferred_locale: SANDBOX_LOCALE,
      max_video_channel_users: 25, max_stage_video_channel_users: 50, nsfw_level: 0, nsfw: false,
      premium_progress_bar_enabled: false, incidents_data: null,
    };
  }

  /** The GUILD_CREATE payload: the guild plus what only the gateway sends (members, channels, joined_at …). */
  guildCreateJson(): Record<string, unknown> {
    const users = this.users();
    return {
      ...this.guildJson(), unavailable: false, joined_at: isoTime(this.createdAt), large: false, lazy: false,
      member_count: users.length, members: users.map((user) => this.memberJson(user)),
      channels: this.channels.map((channel) => this.channelJson(channel)), threads: [], presences: [], voice_states: [],
      stage_instances: [], guild_scheduled_events: [], soundboard_sounds: [], embedded_activities: [],
    };
  }

  applicationJson(): Record<string, unknown> {
    return {
      id: this.applicationId, name: BOT_USER_NAME, icon: null, description: 'wrongbot in the local Discord', summary: '',
      type: null, bot_public: false, bot_require_code_grant: false, verify_key: '0'.repeat(64), flags: 0, team: null,
      owner: this.userJson(this.ownerUser), bot: this.userJson(this.botUser), tags: [], approximate_guild_count: 1,
      redirect_uris: [], interactions_endpoint_url: null, install_params: null, integration_types_config: {},
    };
  }

  attachmentUrl(channelId: string, attachment: StoredAttachment): string {
    return `${this.publicUrl}/attachments/${channelId}/${attachment.id}/${encodeURIComponent(attachment.filename)}`;
  }

  attachmentJson(message: StoredMessage, attachment: StoredAttachment): Record<string, unknown> {
    const url = this.attachmentUrl(message.channelId, attachment);
    const json: Record<string, unknown> = {
      id: attachment.id, filename: attachment.filename, size: attachment.bytes.length, url, proxy_url: url,
      content_type: attachment.contentType, description: attachment.description ?? undefined,
    };
    if (attachment.width !== null) Object.assign(json, { width: attachment.width, height: attachment.height });
    if (message.ephemeralFor !== null) json['ephemeral'] = true;
    return json;
  }

  /** A message as the REST API and interaction payloads show it; `me` in reactions is the bot. */
  messageJson(message: StoredMessage): Record<string, unknown> {
    const author = this.userById(message.authorId);
    const json: Record<string, unknown> = {
      id: message.id, type: message.type, channel_id: message.channelId, author: this.userJson(author),
      content: message.content, timestamp: isoTime(message.createdAt),
      edited_timestamp: message.editedAt === null ? null : isoTime(message.editedAt), tts: false, mention_everyone: false,
      mentions: message.mentions.map((id) => this.userJson(this.userById(id))), mention_roles: [], mention_channels: [],
      attachments: message.attachments.map((attachment) => this.attachmentJson(message, attachment)),
      embeds: message.embeds, components: message.components, pinned: false, flags: message.flags,
    };
    const reactions = [...message.reactions].filter(([, users]) => users.size > 0).map(([emoji, users]) => ({
      emoji: { id: null, name: emoji }, count: users.size, count_details: { burst: 0, normal: users.size },
      burst_colors: [], me: users.has(this.botUser.id), me_burst: false,
    }));
    if (reactions.length > 0) json['reactions'] = reactions;
    if (message.webhookId !== null) Object.assign(json, { webhook_id: message.webhookId, application_id: this.applicationId });
    if (message.referencedMessageId !== null) {
      json['message_reference'] = { type: 0, message_id: message.referencedMessageId, channel_id: message.channelId, guild_id: this.guildId };
    }
    const { interaction } = message;
    if (interaction !== null) {
      const user = this.userJson(this.userById(interaction.userId));
      json['interaction_metadata'] = {
        id: interaction.id, type: interaction.type, user, authorizing_integration_owners: { '0': this.guildId },
        ...(interaction.commandName === null ? {} : { name: interaction.commandName, command_type: 1 }),
        ...(interaction.sourceMessageId === null ? {} : { interacted_message_id: interaction.sourceMessageId }),
      };
      // The older field Discord still sends on replies to commands.
      if (interaction.commandName !== null) json['interaction'] = { id: interaction.id, type: interaction.type, name: interaction.commandName, user };
    }
    return json;
  }
}

function isoTime(ms: number): string {
  return new Date(ms).toISOString().replace('Z', '+00:00');
}

export function compareSnowflakes(a: string, b: string): number {
  return a.length !== b.length ? a.length - b.length : a < b ? -1 : a > b ? 1 : 0;
}
