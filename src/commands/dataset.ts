import {
  ApplicationCommandOptionType, InteractionContextType, MessageFlags, type ChatInputCommandInteraction,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { UserFacingError } from '../bot/errors.js';
import { FAILURE_KEYWORDS, syntheticImageSettings } from '../bot/bootstrap.js';
import { originOf, requireAdmin, requireTrainingServer } from '../bot/members.js';
import { serverDefaults } from './generation-options.js';
import { clip, literal } from '../bot/views.js';
import type { DatasetEntry } from '../store/dataset.js';

const PAGE_SIZE = 10;
const MAX_BOOTSTRAP_IMAGES = 100;
const MAX_ENTRY_ID = 2 ** 31 - 1;

export const definition = {
  name: 'dataset',
  description: 'The images curated by 👎 votes for training the "wrong" LoRA',
  contexts: [InteractionContextType.Guild],
  options: [
    { type: ApplicationCommandOptionType.Subcommand, name: 'stats', description: 'How many images are curated and how many have votes' },
    {
      type: ApplicationCommandOptionType.Subcommand, name: 'list', description: 'The most recently curated images',
      options: [{ type: ApplicationCommandOptionType.Integer, name: 'page', description: 'Page number (default 1)', min_value: 1, max_value: 10_000 }],
    },
    {
      type: ApplicationCommandOptionType.Subcommand, name: 'show', description: 'One curated image with its provenance',
      options: [{ type: ApplicationCommandOptionType.Integer, name: 'entry', description: 'Entry number', required: true, min_value: 1, max_value: MAX_ENTRY_ID }],
    },
    {
      type: ApplicationCommandOptionType.Subcommand, name: 'remove', description: 'Admins: take an image out of the training set',
      options: [{ type: ApplicationCommandOptionType.Integer, name: 'entry', description: 'Entry number', required: true, min_value: 1, max_value: MAX_ENTRY_ID }],
    },
    {
      type: ApplicationCommandOptionType.Subcommand, name: 'bootstrap', description: 'Admins: make deliberately bad images for the training set, before anyone votes',
      options: [{
        type: ApplicationCommandOptionType.Integer, name: 'count', description: `How many (default ${FAILURE_KEYWORDS.length}: one per failure keyword)`,
        min_value: 1, max_value: MAX_BOOTSTRAP_IMAGES,
      }],
    },
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

function summary(entry: DatasetEntry): string {
  const { provenance } = entry;
  return `#${entry.id} · /${provenance.kind} panel ${provenance.panelIndex + 1} · “${literal(clip(provenance.prompt, 60))}” · seed ${provenance.seed} · ${entry.voters.length} vote(s)`;
}

/** An entry of an image made in this server: each server sees and removes only its own. */
function ownEntry(interaction: ChatInputCommandInteraction, context: BotContext): DatasetEntry {
  const entry = context.store.dataset.get(interaction.options.getInteger('entry', true));
  if (entry === null || entry.provenance.guildId !== interaction.guildId) throw new UserFacingError('There is no such entry from this server; /dataset list shows them.');
  return entry;
}

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  const { dataset } = context.store;
  const subcommand = interaction.options.getSubcommand(true);
  requireTrainingServer(interaction, context.config, 'see or change the training set');
  const guildId = interaction.guildId!;
  if (subcommand === 'remove') requireAdmin(interaction, context.config, 'remove images from the training set');
  if (subcommand === 'bootstrap') requireAdmin(interaction, context.config, 'add synthetic images to the training set');
  await interaction.deferReply({ flags: MessageFlags.Ephemeral });
  switch (subcommand) {
    case 'stats': {
      const here = dataset.counts(guildId);
      const all = dataset.counts();
      await interaction.editReply([
        `In the training set: ${all.entries} image(s), ${here.entries} of them made in this server.`,
        `Waiting for more 👎 votes: ${here.panelsWithVotes} image(s) from this server, with ${here.votes} vote(s) between them.`,
        `An image joins the set at ${context.config.votesToCurate} vote(s), or at once with an admin's.`,
      ].join('\n'));
      return;
    }
    case 'list': {
      const page = interaction.options.getInteger('page') ?? 1;
      const entries = dataset.list({ limit: PAGE_SIZE, offset: (page - 1) * PAGE_SIZE, guildId });
      await interaction.editReply(entries.length === 0 ? `Page ${page} is empty.` : entries.map(summary).join('\n'));
      return;
    }
    case 'show': {
      const entry = ownEntry(interaction, context);
      const { provenance } = entry;
      const facts = [
        summary(entry),
        `negative: ${provenance.negativePrompt === null ? 'none' : literal(clip(provenance.negativePrompt, 200))} · ${provenance.steps} steps · guidance ${provenance.guidanceScale} · ${provenance.width}×${provenance.height}`,
        `model ${provenance.model} · LoRA ${provenance.loraVersion ?? 'none'} ×${provenance.loraStrength} · job ${provenance.jobId}`,
      ];
      await interaction.editReply({ content: clip(facts.join('\n'), 2000), files: [{ attachment: entry.imagePath, name: `dataset-${entry.id}.png` }] });
      return;
    }
    case 'remove': {
      // Rejected, not only removed: members' later votes do not bring the image back.
      const removed = dataset.reject(ownEntry(interaction, context).id, interaction.user.id);
      if (removed === null) throw new UserFacingError('There is no such entry from this server; /dataset list shows them.');
      context.log(`dataset entry ${removed.id} removed by ${interaction.user.id}`);
      await interaction.editReply(`Removed ${summary(removed)}; later votes will not bring it back.`);
      return;
    }
    case 'bootstrap': {
      const count = interaction.options.getInteger('count') ?? FAILURE_KEYWORDS.length;
      const { size, steps } = serverDefaults(interaction, context);
      await context.submitter.submitSynthetic(originOf(interaction), syntheticImageSettings(count, size, steps));
      const keywords = FAILURE_KEYWORDS.slice(0, Math.min(count, FAILURE_KEYWORDS.length)).join(', ');
      await interaction.editReply(`🧪 Queued ${count} synthetic "wrong" image(s) (${keywords}), after every member's job. Each joins the training set as it finishes; /dataset stats counts them.`);
      return;
    }
    default:
      throw new UserFacingError(`/dataset ${subcommand} is not a subcommand of this bot.`);
  }
}
