import {
  ApplicationCommandOptionType, InteractionContextType, MessageFlags, type ChatInputCommandInteraction,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { UserFacingError } from '../bot/errors.js';
import { ADMIN_PERMISSION, requireAdmin, requireTrainingServer } from '../bot/members.js';
import { winRateText } from '../bot/judging.js';
import { promoteVersion, rollBackVersion } from '../bot/promotion.js';
import { clip, literal } from '../bot/views.js';
import { MAX_PROMPT_CHARS, MAX_SEED } from '../common/generation-limits.js';
import { checkText } from '../common/validation.js';
import { validateLoraVersion } from '../queue/contracts.js';
import { randomSeed } from '../queue/producer.js';
import type { JudgingTally } from '../store/judging.js';
import type { LoraVersion } from '../store/trainings.js';

// The LoRA versions: the one served to /wrong and /compare, the candidates /train made, and the switch between them.
// Promoting changes what the next jobs name; every worker serves any version, so nothing restarts.

const MAX_LISTED_VERSIONS = 20;
const MAX_PROMPT_ID = 2 ** 31 - 1;
const MAX_MESSAGE_CHARS = 2000;

export const definition = {
  name: 'lora',
  description: 'Admins: the "wrong" LoRA versions, and which one is served',
  contexts: [InteractionContextType.Guild],
  default_member_permissions: String(ADMIN_PERMISSION),
  options: [
    { type: ApplicationCommandOptionType.Subcommand, name: 'list', description: 'Every version, newest first, and which one is served' },
    {
      type: ApplicationCommandOptionType.Subcommand, name: 'promote', description: 'Serve this version to /wrong and /compare from now on',
      options: [{ type: ApplicationCommandOptionType.String, name: 'version', description: 'A version from /lora list', required: true, max_length: 64 }],
    },
    { type: ApplicationCommandOptionType.Subcommand, name: 'rollback', description: 'Serve the version served before the current one again' },
    {
      type: ApplicationCommandOptionType.SubcommandGroup, name: 'validation', description: 'The prompts every new candidate is drawn with, beside the served version',
      options: [
        { type: ApplicationCommandOptionType.Subcommand, name: 'list', description: 'The validation prompts and their seeds' },
        {
          type: ApplicationCommandOptionType.Subcommand, name: 'add', description: 'Draw every new candidate with this prompt too',
          options: [
            { type: ApplicationCommandOptionType.String, name: 'prompt', description: 'The prompt', required: true, max_length: MAX_PROMPT_CHARS },
            { type: ApplicationCommandOptionType.Integer, name: 'seed', description: 'Its fixed seed (default: random, then fixed)', min_value: 0, max_value: MAX_SEED },
          ],
        },
        {
          type: ApplicationCommandOptionType.Subcommand, name: 'remove', description: 'Stop drawing candidates with this prompt',
          options: [{ type: ApplicationCommandOptionType.Integer, name: 'id', description: 'Its number in /lora validation list', required: true, min_value: 1, max_value: MAX_PROMPT_ID }],
        },
      ],
    },
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

function describe(version: LoraVersion, served: string | null, tallies: readonly JudgingTally[]): string {
  const facts = [`\`${version.name}\``, version.name === served ? '**served**' : version.origin === 'trained' ? 'candidate' : 'from LORA_PATH'];
  if (version.origin === 'trained') {
    facts.push(`from ${version.parent === null ? 'scratch' : `\`${version.parent}\``}`, `${version.steps} steps`);
    if (version.finalLoss !== null) facts.push(`final loss ${version.finalLoss.toFixed(4)}`);
    facts.push(`by <@${version.createdBy}>`);
  }
  facts.push(`<t:${Math.floor(version.createdAt / 1000)}:R>`);
  for (const tally of tallies) if (tally.candidate === version.name) facts.push(`blind: ${winRateText(tally)}`);
  return facts.join(' · ');
}

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  const subcommand = interaction.options.getSubcommand(true);
  requireTrainingServer(interaction, context.config, 'manage the LoRA versions');
  requireAdmin(interaction, context.config, 'manage the LoRA versions');
  if (interaction.options.getSubcommandGroup() === 'validation') {
    await validation(interaction, context, subcommand);
    return;
  }
  const { trainings, judging } = context.store;
  switch (subcommand) {
    case 'list': {
      await interaction.deferReply({ flags: MessageFlags.Ephemeral });
      const versions = trainings.versions();
      const served = trainings.served();
      const tallies = judging.tallies();
      const lines = versions.slice(0, MAX_LISTED_VERSIONS).map((version) => describe(version, served, tallies));
      if (versions.length > MAX_LISTED_VERSIONS) lines.push(`… and ${versions.length - MAX_LISTED_VERSIONS} older`);
      await interaction.editReply({ content: lines.length === 0 ? 'There are no LoRA versions yet: set LORA_PATH, or /train one.' : clip(lines.join('\n'), MAX_MESSAGE_CHARS), allowedMentions: { parse: [] } });
      return;
    }
    case 'promote': {
      const version = validateLoraVersion('version', interaction.options.getString('version', true).trim());
      await interaction.reply({ content: `✅ ${promoteVersion(context, version, interaction.user.id)}`, allowedMentions: { parse: [] } });
      return;
    }
    case 'rollback':
      await interaction.reply({ content: `↩️ ${rollBackVersion(context, interaction.user.id)}`, allowedMentions: { parse: [] } });
      return;
    default:
      throw new UserFacingError(`/lora ${subcommand} is not a subcommand of this bot.`);
  }
}

async function validation(interaction: ChatInputCommandInteraction, context: BotContext, subcommand: string): Promise<void> {
  const { trainings } = context.store;
  await interaction.deferReply({ flags: MessageFlags.Ephemeral });
  switch (subcommand) {
    case 'list': {
      const prompts = trainings.validationPrompts();
      await interaction.editReply(prompts.length === 0
        ? 'There are no validation prompts: new candidates are not drawn. /lora validation add puts one in.'
        : clip(prompts.map((prompt) => `#${prompt.id} · seed ${prompt.seed} · “${literal(prompt.prompt)}”`).join('\n'), MAX_MESSAGE_CHARS));
      return;
    }
    case 'add': {
      const prompt = checkText('prompt', interaction.options.getString('prompt', true).trim(), MAX_PROMPT_CHARS);
      if (prompt === '') throw new UserFacingError('The prompt is empty.');
      const added = trainings.addValidationPrompt(prompt, interaction.options.getInteger('seed') ?? randomSeed(), interaction.user.id);
      await interaction.editReply(`Validation prompt #${added.id} (seed ${added.seed}) draws every new candidate from now on.`);
      return;
    }
    case 'remove': {
      const removed = trainings.removeValidationPrompt(interaction.options.getInteger('id', true));
      if (removed === null) throw new UserFacingError('There is no such validation prompt; /lora validation list shows them.');
      await interaction.editReply(`Removed validation prompt #${removed.id} “${literal(clip(removed.prompt, 80))}”.`);
      return;
    }
    default:
      throw new UserFacingError(`/lora validation ${subcommand} is not a subcommand of this bot.`);
  }
}
