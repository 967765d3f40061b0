import {
  MessageFlags, type ChatInputCommandInteraction, type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import { describe } from '../bot/cancelling.js';
import type { BotContext } from '../bot/context.js';
import { formatDuration } from '../bot/views.js';

export const definition = {
  name: 'queue',
  description: 'Your jobs that are waiting or running, with their place in the queue',
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  await interaction.deferReply({ flags: MessageFlags.Ephemeral });
  const jobs = context.store.jobs.activeForUser(interaction.user.id);
  if (jobs.length === 0) {
    await interaction.editReply('You have no jobs waiting or running.');
    return;
  }
  const lines: string[] = [];
  for (const job of jobs) {
    const standing = job.kind === 'train' ? null : await context.producer.standing(job.jobId);
    let where = 'queued';
    if (standing?.state === 'waiting') where = `position ${standing.position}${standing.etaMs === null ? '' : `, about ${formatDuration(standing.etaMs)}`}`;
    else if (standing?.state === 'running') where = `running${standing.etaMs === null ? '' : `, about ${formatDuration(standing.etaMs)} left`}`;
    lines.push(`• ${describe(job)} — ${where} (\`${job.jobId}\`)`);
  }
  lines.push('Cancel one with its ❌ button or `/cancel job:<id>`; `/cancel` alone cancels them all.');
  await interaction.editReply(lines.join('\n'));
}
