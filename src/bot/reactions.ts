import type { Client, MessageReaction, PartialMessageReaction, PartialUser, User } from 'discord.js';
import type { BotContext } from './context.js';
import { whyNotAVote } from './curation.js';
import { isTrainingServer, memberIsAdmin } from './members.js';
import { THUMBS_DOWN } from './views.js';

// 👎 reactions on the bot's single-image messages are votes; removing the reaction takes the vote back. A
// triptych's panels are voted on with its buttons, since a reaction cannot say which panel it means.

const SKIN_TONE_MODIFIERS = /[\u{1F3FB}-\u{1F3FF}]/gu;

export function listenForVotes(client: Client<true>, context: BotContext): void {
  const handle = (added: boolean) => (reaction: MessageReaction | PartialMessageReaction, user: User | PartialUser) => {
    onReaction(client, context, reaction, user, added).catch((error: Error) => context.log(`reaction on ${reaction.message.id}: ${error.message}`));
  };
  client.on('messageReactionAdd', handle(true));
  client.on('messageReactionRemove', handle(false));
}

async function onReaction(
  client: Client<true>,
  context: BotContext,
  reaction: MessageReaction | PartialMessageReaction,
  user: User | PartialUser,
  added: boolean,
): Promise<void> {
  // 👎🏽 is a 👎 too: skin tones are modifiers after the base emoji.
  if (reaction.emoji.name?.replace(SKIN_TONE_MODIFIERS, '') !== THUMBS_DOWN) return;
  // Only the servers trusted with the training set curate it.
  if (!isTrainingServer(reaction.message.guildId, context.config)) return;
  const panels = context.curation.panelsOf(reaction.message.id);
  if (panels.length !== 1) return;
  const panel = panels[0]!;
  if (!added) {
    context.curation.retract(panel, user.id);
    return;
  }
  const voter = user.partial ? await user.fetch() : user;
  const guildId = reaction.message.guildId;
  const member = guildId === null ? null : await client.guilds.cache.get(guildId)?.members.fetch(voter.id).catch(() => null);
  const isAdmin = member ? memberIsAdmin(member, context.config) : false;
  const authorId = reaction.message.author?.id ?? null;
  const refusal = whyNotAVote({ id: voter.id, isBot: voter.bot, isAdmin }, client.user.id, authorId);
  if (refusal !== null) return;
  context.curation.vote(panel, { id: voter.id, isBot: voter.bot, isAdmin });
}
