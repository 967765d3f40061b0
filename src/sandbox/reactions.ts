import { unknownEmoji } from './discord-errors.js';
import { Intent } from './gateway.js';
import type { SandboxServices } from './services.js';
import type { SandboxUser, StoredMessage } from './world.js';

// Reactions change the stored message and reach the bot as MESSAGE_REACTION_ADD/REMOVE — also when the bot
// itself reacted through REST, as Discord does.

/** The emoji of a reaction route: only Unicode emoji exist here (the guild has no custom ones). */
export function checkUnicodeEmoji(emoji: string): string {
  if (emoji === '' || /^[\w-]+:\d+$/.test(emoji) || /^[\x20-\x7e]+$/.test(emoji)) throw unknownEmoji();
  return emoji;
}

/** False when the user had already reacted with this emoji (nothing is dispatched then). */
export function addReaction(services: SandboxServices, message: StoredMessage, user: SandboxUser, emoji: string): boolean {
  const { world } = services;
  const users = message.reactions.get(emoji) ?? new Set<string>();
  if (users.has(user.id)) return false;
  users.add(user.id);
  message.reactions.set(emoji, users);
  services.gateway.dispatch('MESSAGE_REACTION_ADD', {
    user_id: user.id, channel_id: message.channelId, message_id: message.id, guild_id: world.guildId,
    member: world.memberJson(user), emoji: { id: null, name: emoji }, message_author_id: message.authorId,
    burst: false, burst_colors: [], type: 0,
  }, Intent.GuildMessageReactions);
  return true;
}

/** False when the user had not reacted with this emoji. */
export function removeReaction(services: SandboxServices, message: StoredMessage, user: SandboxUser, emoji: string): boolean {
  const users = message.reactions.get(emoji);
  if (users === undefined || !users.delete(user.id)) return false;
  if (users.size === 0) message.reactions.delete(emoji);
  services.gateway.dispatch('MESSAGE_REACTION_REMOVE', {
    user_id: user.id, channel_id: message.channelId, message_id: message.id, guild_id: services.world.guildId,
    emoji: { id: null, name: emoji }, burst: false, type: 0,
  }, Intent.GuildMessageReactions);
  return true;
}
