import {
  ApplicationCommandOptionType, InteractionContextType, MessageFlags, type ChatInputCommandInteraction, type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { UserFacingError } from '../bot/errors.js';
import { ADMIN_PERMISSION, requireAdmin } from '../bot/members.js';
import { GUIDANCE_OPTION, SIZE_OPTION, STEPS_OPTION, STRENGTH_OPTION, serverDefaults } from './generation-options.js';

/** Past this the refiner would get almost nothing to do. */
const MAX_REFINER_HANDOFF = 0.99;

export const definition = {
  name: 'defaults',
  description: 'Admins: this server’s default size, steps, guidance, LoRA strength, refiner (no options: show them)',
  contexts: [InteractionContextType.Guild],
  default_member_permissions: String(ADMIN_PERMISSION),
  options: [
    SIZE_OPTION, STEPS_OPTION, GUIDANCE_OPTION, STRENGTH_OPTION,
    {
      type: ApplicationCommandOptionType.Number, name: 'refiner', min_value: 0, max_value: MAX_REFINER_HANDOFF,
      description: 'Hand the last steps to the SDXL refiner from this share of the schedule (Woolf: 0.8; 0: off)',
    },
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  requireAdmin(interaction, context.config, 'change the server defaults');
  if (interaction.guildId === null) throw new UserFacingError('Defaults belong to a server; run /defaults in one.');
  await interaction.deferReply({ flags: MessageFlags.Ephemeral });
  const size = interaction.options.getString(SIZE_OPTION.name);
  if (size !== null && !context.config.imageSizes.some((choice) => choice.value === size)) {
    throw new UserFacingError(`The size ${size} is not offered on this server.`);
  }
  const changes = {
    ...(size === null ? {} : { size }),
    ...optional('steps', interaction.options.getInteger(STEPS_OPTION.name)),
    ...optional('guidanceScale', interaction.options.getNumber(GUIDANCE_OPTION.name)),
    ...optional('loraStrength', interaction.options.getNumber(STRENGTH_OPTION.name)),
    ...refinerChange(interaction.options.getNumber('refiner')),
  };
  if (Object.keys(changes).length > 0) context.store.guilds.set(interaction.guildId, changes, interaction.user.id);
  const current = serverDefaults(interaction, context);
  const verb = Object.keys(changes).length > 0 ? 'Defaults are now' : 'Defaults';
  const refiner = current.denoisingEnd === null ? 'no refiner' : `refiner from ${current.denoisingEnd}`;
  await interaction.editReply(`${verb}: size ${current.size.label} · ${current.steps} steps · guidance ${current.guidanceScale} · LoRA strength ${current.loraStrength} · ${refiner}`);
}

/** 0 turns the refiner off; a share hands the rest of the schedule to it (the workers need REFINER_DIR). */
function refinerChange(handoff: number | null): { refinerHandoff?: number | null } {
  if (handoff === null) return {};
  return { refinerHandoff: handoff === 0 ? null : handoff };
}

function optional<K extends string>(key: K, value: number | null): Partial<Record<K, number>> {
  return value === null ? {} : ({ [key]: value } as Record<K, number>);
}
