import { InteractionContextType, type ChatInputCommandInteraction, type RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { originOf } from '../bot/members.js';
import {
  GUIDANCE_OPTION, PROMPT_OPTION, SEED_OPTION, SIZE_OPTION, STEPS_OPTION, STRENGTH_OPTION, loraChoice,
  readGenerationSettings, serverDefaults,
} from './generation-options.js';

export const definition = {
  name: 'wrong',
  description: 'Generate with the "wrong" LoRA loaded and "wrong" as the negative prompt',
  contexts: [InteractionContextType.Guild],
  options: [PROMPT_OPTION, SEED_OPTION, STEPS_OPTION, GUIDANCE_OPTION, SIZE_OPTION, STRENGTH_OPTION],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  await interaction.deferReply();
  const strength = interaction.options.getNumber(STRENGTH_OPTION.name) ?? serverDefaults(interaction, context).loraStrength;
  await context.submitter.submitGeneration(originOf(interaction), 'wrong', readGenerationSettings(interaction, context, false), loraChoice(context, strength));
}
