import { PermissionFlagsBits, PermissionsBitField, type GuildMember, type Interaction, type RepliableInteraction } from 'discord.js';
import type { BotConfig } from './config.js';
import { PermissionDeniedError } from './errors.js';
import type { JobOrigin } from './job-submitter.js';

// Who a member is to the bot: an admin or not, and where their jobs answer.

/** Admin commands are registered for members who can manage the server (Administrator implies it). */
export const ADMIN_PERMISSION = PermissionFlagsBits.ManageGuild;

type InteractionMember = NonNullable<Interaction['member']>;

function roleIdsOf(member: GuildMember | InteractionMember): string[] {
  return Array.isArray(member.roles) ? member.roles : [...member.roles.cache.keys()];
}

export function isAdmin(permissions: Readonly<PermissionsBitField> | null, roleIds: Iterable<string>, config: Pick<BotConfig, 'adminRoleIds'>): boolean {
  if (permissions?.has(ADMIN_PERMISSION)) return true;
  for (const roleId of roleIds) if (config.adminRoleIds.includes(roleId)) return true;
  return false;
}

/**
 * Discord hides admin commands from other members, but server owners can change who sees them and a forged or stale
 * client can still send one: the bot decides again from the member's own permissions and roles.
 */
export function interactionIsFromAdmin(interaction: Interaction, config: Pick<BotConfig, 'adminRoleIds'>): boolean {
  if (interaction.member === null) return false;
  return isAdmin(interaction.memberPermissions, roleIdsOf(interaction.member), config);
}

export function memberIsAdmin(member: GuildMember, config: Pick<BotConfig, 'adminRoleIds'>): boolean {
  return isAdmin(member.permissions, roleIdsOf(member), config);
}

export function requireAdmin(interaction: Interaction, config: Pick<BotConfig, 'adminRoleIds'>, action: string): void {
  if (!interactionIsFromAdmin(interaction, config)) {
    throw new PermissionDeniedError(`Only server admins (Manage Server, or an admin role) can ${action}.`);
  }
}

export function isTrainingServer(guildId: string | null, config: Pick<BotConfig, 'trainingGuildIds'>): boolean {
  return guildId !== null && config.trainingGuildIds.includes(guildId);
}

/** Curating, training, judging and choosing the served version belong to the servers trusted with the training set. */
export function requireTrainingServer(interaction: Interaction, config: Pick<BotConfig, 'trainingGuildIds'>, action: string): void {
  if (!isTrainingServer(interaction.guildId, config)) {
    throw new PermissionDeniedError(`This server does not take part in training the "wrong" LoRA, so members here cannot ${action} (the bot's operator lists the servers that do in TRAINING_GUILD_IDS).`);
  }
}

export function originOf(interaction: RepliableInteraction): JobOrigin {
  const member = interaction.member;
  const memberName = member && 'displayName' in member ? member.displayName : null;
  return {
    userId: interaction.user.id,
    userName: memberName ?? interaction.user.globalName ?? interaction.user.username,
    guildId: interaction.guildId,
    channelId: interaction.channelId,
    applicationId: interaction.applicationId,
    interactionToken: interaction.token,
    interactionCreatedAt: interaction.createdTimestamp,
  };
}
