import { InteractionContextType, type ChatInputCommandInteraction, type RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { originOf } from '../bot/members.js';
import {
  GUIDANCE_OPTION, PROMPT_OPTION, SEED_OPTION, SIZE_OPTION, STEPS_OPTION, loraChoice, readGenerationSettings,
  serverDefaults,
} from './generation-options.js';

export const definition = {
  name: 'compare',
  description: 'Same prompt and seed three ways: base · negative "wrong" · "wrong" LoRA + negative "wrong"',
  contexts: [InteractionContextType.Guild],
  options: [PROMPT_OPTION, SEED_OPTION, STEPS_OPTION, GUIDANCE_OPTION, SIZE_OPTION],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  await interaction.deferReply();
  const lora = loraChoice(context, serverDefaults(interaction, context).loraStrength);
  await context.submitter.submitGeneration(originOf(interaction), 'compare', readGenerationSettings(interaction, context, false), lora);
}
