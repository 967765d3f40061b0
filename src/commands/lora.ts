import {
  ApplicationCommandOptionType, InteractionContextType, MessageFlags, type ChatInputCommandInteraction,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { UserFacingError } from '../bot/errors.js';
import { ADMIN_PERMISSION, requireAdmin } from '../bot/members.js';
import { clip } from '../bot/views.js';
import { validateLoraVersion } from '../queue/contracts.js';
import { LoraVersionsError, type LoraVersion } from '../store/trainings.js';

// The LoRA versions: the one served to /wrong and /compare, the candidates /train made, and the switch between them.
// Promoting changes what the next jobs name; every worker serves any version, so nothing restarts.

const MAX_LISTED_VERSIONS = 20;
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
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

function describe(version: LoraVersion, served: string | null): string {
  const facts = [`\`${version.name}\``, version.name === served ? '**served**' : version.origin === 'trained' ? 'candidate' : 'from LORA_PATH'];
  if (version.origin === 'trained') {
    facts.push(`from ${version.parent === null ? 'scratch' : `\`${version.parent}\``}`, `${version.steps} steps`);
    if (version.finalLoss !== null) facts.push(`final loss ${version.finalLoss.toFixed(4)}`);
    facts.push(`by <@${version.createdBy}>`);
  }
  facts.push(`<t:${Math.floor(version.createdAt / 1000)}:R>`);
  return facts.join(' · ');
}

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  const subcommand = interaction.options.getSubcommand(true);
  requireAdmin(interaction, context.config, 'manage the LoRA versions');
  const { trainings } = context.store;
  try {
    switch (subcommand) {
      case 'list': {
        await interaction.deferReply({ flags: MessageFlags.Ephemeral });
        const versions = trainings.versions();
        const served = trainings.served();
        const lines = versions.slice(0, MAX_LISTED_VERSIONS).map((version) => describe(version, served));
        if (versions.length > MAX_LISTED_VERSIONS) lines.push(`… and ${versions.length - MAX_LISTED_VERSIONS} older`);
        await interaction.editReply({ content: lines.length === 0 ? 'There are no LoRA versions yet: set LORA_PATH, or /train one.' : clip(lines.join('\n'), MAX_MESSAGE_CHARS), allowedMentions: { parse: [] } });
        return;
      }
      case 'promote': {
        const version = validateLoraVersion('version', interaction.options.getString('version', true).trim());
        const { previous } = trainings.promote(version, interaction.user.id);
        context.log(`LoRA ${version} promoted by ${interaction.user.id} (was ${previous ?? 'none'})`);
        await interaction.reply(`✅ \`${version}\` is served to /wrong and /compare from now on${previous === null ? '' : ` (was \`${previous}\`; /lora rollback brings it back)`}.`);
        return;
      }
      case 'rollback': {
        const { previous, served } = trainings.rollback(interaction.user.id);
        context.log(`LoRA rolled back to ${served} by ${interaction.user.id} (was ${previous})`);
        await interaction.reply(`↩️ \`${served}\` is served again (was \`${previous}\`).`);
        return;
      }
      default:
        throw new UserFacingError(`/lora ${subcommand} is not a subcommand of this bot.`);
    }
  } catch (error) {
    if (error instanceof LoraVersionsError) throw new UserFacingError(`${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}.`);
    throw error;
  }
}
