import {
  ApplicationCommandOptionType, InteractionContextType, type ChatInputCommandInteraction,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import type { BotContext } from '../bot/context.js';
import { UserFacingError } from '../bot/errors.js';
import { drawPair } from '../bot/judging.js';
import { originOf, requireTrainingServer } from '../bot/members.js';
import { MAX_PROMPT_CHARS } from '../common/generation-limits.js';
import { checkText } from '../common/validation.js';
import { SEED_OPTION } from './generation-options.js';

export const definition = {
  name: 'judge',
  description: 'Judge blind: the served "wrong" LoRA against the newest candidate, on one prompt and seed',
  contexts: [InteractionContextType.Guild],
  options: [
    { type: ApplicationCommandOptionType.String, name: 'prompt', description: 'What to draw (default: the validation prompts in turn)', max_length: MAX_PROMPT_CHARS },
    SEED_OPTION,
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  requireTrainingServer(interaction, context.config, 'judge LoRA versions');
  await interaction.deferReply();
  const prompt = interaction.options.getString('prompt');
  if (prompt !== null && prompt.trim() === '') throw new UserFacingError('The prompt is empty.');
  await drawPair(context, originOf(interaction), {
    prompt: prompt === null ? null : checkText('prompt', prompt, MAX_PROMPT_CHARS),
    seed: interaction.options.getInteger(SEED_OPTION.name),
  });
}
