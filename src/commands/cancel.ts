import {
  ApplicationCommandOptionType, MessageFlags, type ChatInputCommandInteraction,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import { cancelJob } from '../bot/cancelling.js';
import type { BotContext } from '../bot/context.js';
import { UserFacingError } from '../bot/errors.js';
import { interactionIsFromAdmin } from '../bot/members.js';

export const definition = {
  name: 'cancel',
  description: 'Cancel your waiting or running jobs',
  options: [
    { type: ApplicationCommandOptionType.String, name: 'job', description: 'The job id (from /queue); all of yours if left out', max_length: 36 },
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  await interaction.deferReply({ flags: MessageFlags.Ephemeral });
  const jobId = interaction.options.getString('job');
  const by = { userId: interaction.user.id, isAdmin: interactionIsFromAdmin(interaction, context.config), guildId: interaction.guildId };
  let jobs;
  if (jobId === null) {
    // A training is stopped only by naming it: "/cancel" alone means a member's own generations.
    jobs = context.store.jobs.activeForUser(interaction.user.id).filter((job) => job.kind !== 'train');
  } else {
    const job = context.store.jobs.get(jobId.trim());
    if (job === null) throw new UserFacingError(`There is no job \`${jobId}\`; /queue lists yours.`);
    jobs = [job];
  }
  if (jobs.length === 0) {
    await interaction.editReply('You have no jobs waiting or running.');
    return;
  }
  const outcomes: string[] = [];
  for (const job of jobs) outcomes.push(await cancelJob(context, job, by));
  await interaction.editReply(outcomes.join('\n'));
}
