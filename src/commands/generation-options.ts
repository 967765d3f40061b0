import {
  ApplicationCommandOptionType, type APIApplicationCommandBasicOption, type ChatInputCommandInteraction,
} from 'discord.js';
import { MAX_LORA_STRENGTH, MAX_PROMPT_CHARS, MAX_SEED } from '../common/generation-limits.js';
import { fail } from '../common/validation.js';
import type { LoraChoice } from '../queue/contracts.js';
import type { BotContext } from '../bot/context.js';
import { SDXL_IMAGE_SIZES } from '../bot/image-sizes.js';
import { UserFacingError } from '../bot/errors.js';
import type { GenerationSettings } from '../bot/job-submitter.js';

// The options /imagine, /wrong and /compare share, and how a command's options become job settings with the
// server's defaults filled in.

/** More steps than this buys nothing visible with SDXL's Euler scheduler and ties up the GPU for everyone. */
export const MAX_COMMAND_STEPS = 150;
export const MAX_COMMAND_GUIDANCE = 30;

export const PROMPT_OPTION = {
  type: ApplicationCommandOptionType.String, name: 'prompt', description: 'What to draw', required: true,
  min_length: 1, max_length: MAX_PROMPT_CHARS,
} as const satisfies APIApplicationCommandBasicOption;

export const NEGATIVE_OPTION = {
  type: ApplicationCommandOptionType.String, name: 'negative', description: 'What to steer away from (negative prompt)',
  max_length: MAX_PROMPT_CHARS,
} as const satisfies APIApplicationCommandBasicOption;

export const SEED_OPTION = {
  type: ApplicationCommandOptionType.Integer, name: 'seed', description: 'Seed for a repeatable image (random if left out)',
  min_value: 0, max_value: MAX_SEED,
} as const satisfies APIApplicationCommandBasicOption;

export const STEPS_OPTION = {
  type: ApplicationCommandOptionType.Integer, name: 'steps', description: 'Denoising steps (server default if left out)',
  min_value: 1, max_value: MAX_COMMAND_STEPS,
} as const satisfies APIApplicationCommandBasicOption;

export const GUIDANCE_OPTION = {
  type: ApplicationCommandOptionType.Number, name: 'guidance', description: 'Guidance scale (server default if left out)',
  min_value: 0, max_value: MAX_COMMAND_GUIDANCE,
} as const satisfies APIApplicationCommandBasicOption;

/** The choices here are SDXL's; a server with IMAGE_SIZES set registers its own (see commandDefinitions). */
export const SIZE_OPTION = {
  type: ApplicationCommandOptionType.String, name: 'size', description: 'Width × height (server default if left out)',
  choices: SDXL_IMAGE_SIZES.map((size) => ({ name: size.label, value: size.value })),
} as const satisfies APIApplicationCommandBasicOption;

export const STRENGTH_OPTION = {
  type: ApplicationCommandOptionType.Number, name: 'strength', description: 'How strongly the "wrong" LoRA applies (server default if left out)',
  min_value: -MAX_LORA_STRENGTH, max_value: MAX_LORA_STRENGTH,
} as const satisfies APIApplicationCommandBasicOption;

/** The server's defaults: what an admin set with /defaults, else the bot's configuration. */
export function serverDefaults(interaction: ChatInputCommandInteraction | { guildId: string | null }, context: BotContext) {
  const { defaults, imageSizes } = context.config;
  const stored = interaction.guildId === null ? null : context.store.guilds.get(interaction.guildId);
  const size = imageSizes.find((candidate) => candidate.value === stored?.size) ?? defaults.size;
  return {
    size,
    steps: stored?.steps ?? defaults.steps,
    guidanceScale: stored?.guidanceScale ?? defaults.guidanceScale,
    loraStrength: stored?.loraStrength ?? defaults.loraStrength,
    /** Where the refiner takes over (Woolf's ensemble of experts); null: the base model alone. */
    denoisingEnd: stored?.refinerHandoff ?? null,
  };
}

export function readGenerationSettings(interaction: ChatInputCommandInteraction, context: BotContext, withNegative: boolean): GenerationSettings {
  const defaults = serverDefaults(interaction, context);
  const sizeValue = interaction.options.getString(SIZE_OPTION.name);
  const size = sizeValue === null ? defaults.size : context.config.imageSizes.find((candidate) => candidate.value === sizeValue);
  if (size === undefined) {
    fail('size', sizeValue, `is not offered on this server; choose one of ${context.config.imageSizes.map((choice) => choice.label).join(', ')}`);
  }
  return {
    prompt: interaction.options.getString(PROMPT_OPTION.name, true),
    ...(withNegative ? { negativePrompt: interaction.options.getString(NEGATIVE_OPTION.name) } : {}),
    seed: interaction.options.getInteger(SEED_OPTION.name),
    steps: interaction.options.getInteger(STEPS_OPTION.name) ?? defaults.steps,
    guidanceScale: interaction.options.getNumber(GUIDANCE_OPTION.name) ?? defaults.guidanceScale,
    width: size.width,
    height: size.height,
    weighting: 'auto',
    denoisingEnd: defaults.denoisingEnd,
  };
}

/** The served LoRA version at the requested (or the server's) strength; /wrong and /compare cannot run without one. */
export function loraChoice(context: BotContext, strength: number): LoraChoice {
  const version = context.store.trainings.served();
  if (version === null) {
    throw new UserFacingError('No "wrong" LoRA is served on this bot yet, so /wrong and /compare are unavailable (an admin sets LORA_PATH, or trains and promotes one).');
  }
  return { version, strength };
}
