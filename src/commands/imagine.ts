import { InteractionContextType, type ChatInputCommandInteraction, type RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { originOf } from '../bot/members.js';
import {
  GUIDANCE_OPTION, NEGATIVE_OPTION, PROMPT_OPTION, SEED_OPTION, SIZE_OPTION, STEPS_OPTION, readGenerationSettings,
} from './generation-options.js';

export const definition = {
  name: 'imagine',
  description: 'Generate an image with SDXL',
  contexts: [InteractionContextType.Guild],
  options: [PROMPT_OPTION, NEGATIVE_OPTION, SEED_OPTION, STEPS_OPTION, GUIDANCE_OPTION, SIZE_OPTION],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  await interaction.deferReply();
  await context.submitter.submitGeneration(originOf(interaction), 'imagine', readGenerationSettings(interaction, context, true), null);
}
