import type { Client, MessageReaction, PartialMessageReaction, PartialUser, User } from 'discord.js';
import type { BotContext } from './context.js';
import { whyNotAVote, type VoteOutcome } from './curation.js';
import { isTrainingServer, memberIsAdmin } from './members.js';
import { THUMBS_DOWN } from './views.js';

// 👎 reactions on the bot's single-image messages are votes; removing the reaction takes the vote back. A
// triptych's panels are voted on with its buttons, since a reaction cannot say which panel it means. Each 👎 on such a
// message is logged with what it did, counted or not and why: an admin can answer "why did my vote not count?", and
// the log shows when a reaction has been handled, as nothing else does when it changes nothing.

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
  const panels = context.curation.panelsOf(reaction.message.id);
  if (panels.length !== 1) return;
  const panel = panels[0]!;
  const logOutcome = (outcome: string) => {
    context.log(`👎 ${added ? 'by' : 'removed by'} ${user.id} on job ${panel.jobId} panel ${panel.panelIndex + 1}: ${outcome}`);
  };
  // Only the servers trusted with the training set curate it.
  if (!isTrainingServer(reaction.message.guildId, context.config)) {
    logOutcome('not a vote: this server does not curate the training set');
    return;
  }
  if (!added) {
    const outcome = context.curation.retract(panel, user.id);
    logOutcome(outcome.counted ? `taken back, ${tally(outcome)}` : 'no vote to take back');
    return;
  }
  const voter = user.partial ? await user.fetch() : user;
  const guildId = reaction.message.guildId;
  const member = guildId === null ? null : await client.guilds.cache.get(guildId)?.members.fetch(voter.id).catch(() => null);
  const isAdmin = member ? memberIsAdmin(member, context.config) : false;
  const authorId = reaction.message.author?.id ?? null;
  const refusal = whyNotAVote({ id: voter.id, isBot: voter.bot, isAdmin }, client.user.id, authorId);
  if (refusal !== null) {
    logOutcome(`not a vote: ${refusal}`);
    return;
  }
  const outcome = context.curation.vote(panel, { id: voter.id, isBot: voter.bot, isAdmin });
  if (!outcome.counted) logOutcome(`counted already, ${tally(outcome)}`);
  else if (outcome.rejected) logOutcome(`counted, but an admin took this image out of the training set, ${tally(outcome)}`);
  else logOutcome(`counted${isAdmin ? ' (an admin)' : ''}, ${tally(outcome)}`);
}

function tally(outcome: VoteOutcome): string {
  const votes = `${outcome.votes} of ${outcome.needed} vote(s)`;
  return outcome.entry === null ? votes : `${votes}, training set entry #${outcome.entry.id}`;
}
