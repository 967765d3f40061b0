import { ComponentType, MessageFlags, type ButtonInteraction } from 'discord.js';
import type { JobRecord } from '../store/jobs.js';
import { cancelJob } from './cancelling.js';
import type { BotContext } from './context.js';
import { decodeButton } from './custom-ids.js';
import { UserFacingError } from './errors.js';
import { recordVote } from './judging.js';
import { interactionIsFromAdmin, originOf, requireAdmin, requireTrainingServer } from './members.js';
import { promoteVersion } from './promotion.js';
import { promoteButton, type GenerationRequestRecord } from './views.js';
import { serverDefaults } from '../commands/generation-options.js';

// The buttons on job messages. Each reads its job from the database by the id in its custom_id, so buttons on
// messages from before a restart work the same.

function jobOf(context: BotContext, jobId: string): JobRecord {
  const job = context.store.jobs.get(jobId);
  if (job === null) throw new UserFacingError('This job is no longer known to the bot (its record was cleaned up).');
  return job;
}

export async function handleButton(interaction: ButtonInteraction, context: BotContext): Promise<void> {
  const action = decodeButton(interaction.customId);
  switch (action.kind) {
    case 'judge': {
      requireTrainingServer(interaction, context.config, 'judge LoRA versions');
      await interaction.deferReply({ flags: MessageFlags.Ephemeral });
      if (interaction.user.bot) throw new UserFacingError('Votes by bots do not count.');
      const reply = recordVote(context, action.jobId, { id: interaction.user.id, isAdmin: interactionIsFromAdmin(interaction, context.config) }, action.side);
      await interaction.editReply({
        content: reply.content,
        components: reply.promotable === null ? [] : [{ type: ComponentType.ActionRow, components: [promoteButton(action.jobId, reply.promotable)] }],
        allowedMentions: { parse: [] },
      });
      if (reply.announcement !== null) await interaction.followUp({ content: reply.announcement, allowedMentions: { parse: [] } });
      return;
    }
    case 'promote': {
      requireTrainingServer(interaction, context.config, 'serve a LoRA version');
      requireAdmin(interaction, context.config, 'serve a LoRA version');
      const version = context.store.judging.pairOfJob(action.jobId)?.candidate ?? context.store.trainings.snapshotOfJob(action.jobId)?.version;
      if (version === undefined) throw new UserFacingError('This button no longer names a LoRA version the bot knows; /lora list shows them.');
      await interaction.deferReply();
      await interaction.editReply({ content: `✅ ${promoteVersion(context, version, interaction.user.id)}`, allowedMentions: { parse: [] } });
      return;
    }
    case 'rerun':
    case 'compare': {
      const job = jobOf(context, action.jobId);
      if (job.kind === 'train') throw new UserFacingError('Training jobs cannot be re-run from a button.');
      const { settings, lora } = job.request as unknown as GenerationRequestRecord;
      await interaction.deferReply();
      const kind = action.kind === 'compare' ? 'compare' : job.kind;
      const seed = action.kind === 'compare' ? settings.seed : null;
      // The version the old job used, so its buttons keep meaning what they did after a promotion (every version
      // stays in Redis); 🆚 on an /imagine takes the version served now.
      let loraChoice = null;
      if (kind !== 'imagine') {
        const version = lora?.version ?? context.store.trainings.served();
        if (version === null) throw new UserFacingError('No "wrong" LoRA is served on this bot, so there is nothing to compare with.');
        loraChoice = { version, strength: lora?.strength ?? serverDefaults(interaction, context).loraStrength };
      }
      await context.submitter.submitGeneration(originOf(interaction), kind, { ...settings, weighting: 'auto', seed }, loraChoice);
      return;
    }
    case 'cancel': {
      const job = jobOf(context, action.jobId);
      await interaction.deferReply({ flags: MessageFlags.Ephemeral });
      const outcome = await cancelJob(context, job, { userId: interaction.user.id, isAdmin: interactionIsFromAdmin(interaction, context.config), guildId: interaction.guildId });
      await interaction.editReply(outcome);
      return;
    }
    case 'vote': {
      requireTrainingServer(interaction, context.config, 'curate the training set');
      await interaction.deferReply({ flags: MessageFlags.Ephemeral });
      const panel = context.store.images.get(action.jobId, action.panelIndex);
      if (panel === null) {
        throw new UserFacingError(`This image is no longer kept (results are kept ${context.config.imageRetentionDays} days), so it cannot be voted on.`);
      }
      if (interaction.user.bot) throw new UserFacingError('Votes by bots do not count.');
      const voter = { id: interaction.user.id, isBot: interaction.user.bot, isAdmin: interactionIsFromAdmin(interaction, context.config) };
      const already = context.store.votes.of(action.jobId, action.panelIndex).some((vote) => vote.userId === voter.id);
      // The button toggles: a second press takes the vote back, like removing a reaction.
      const outcome = already ? context.curation.retract(panel, voter.id) : context.curation.vote(panel, voter);
      const panelName = `panel ${action.panelIndex + 1}`;
      let reply = already ? `Your 👎 on ${panelName} is taken back.` : `Your 👎 on ${panelName} counts.`;
      if (outcome.entry) reply += ` It is in the training set as entry #${outcome.entry.id}.`;
      else if (outcome.rejected) reply += ' An admin has taken this image out of the training set, so it stays out.';
      else reply += ` ${outcome.votes} of ${outcome.needed} vote(s) needed for the training set.`;
      await interaction.editReply(reply);
      return;
    }
  }
}
