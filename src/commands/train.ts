import {
  ApplicationCommandOptionType, InteractionContextType, type ChatInputCommandInteraction,
  type RESTPostAPIChatInputApplicationCommandsJSONBody,
} from 'discord.js';
import { MAX_SEED } from '../common/generation-limits.js';
import type { BotContext } from '../bot/context.js';
import { ADMIN_PERMISSION, originOf, requireAdmin, requireTrainingServer } from '../bot/members.js';
import { MAX_TRAIN_STEPS, validateLoraVersion } from '../queue/contracts.js';

/** diffusers' DreamBooth LoRA examples train SDXL for about this many steps. */
export const DEFAULT_TRAIN_STEPS = 500;
/** What `base` takes to train from scratch (peft's initialisation) instead of continuing a version. */
export const FROM_SCRATCH = 'none';

export const definition = {
  name: 'train',
  description: 'Admins: train a new "wrong" LoRA version from the curated images',
  contexts: [InteractionContextType.Guild],
  default_member_permissions: String(ADMIN_PERMISSION),
  options: [
    { type: ApplicationCommandOptionType.Integer, name: 'steps', description: `Training steps (default ${DEFAULT_TRAIN_STEPS})`, min_value: 1, max_value: MAX_TRAIN_STEPS },
    { type: ApplicationCommandOptionType.Integer, name: 'seed', description: 'Seed of the training\'s random draws (default: random)', min_value: 0, max_value: MAX_SEED },
    { type: ApplicationCommandOptionType.String, name: 'base', description: `LoRA version to continue from (default: the served one; "${FROM_SCRATCH}": from scratch)`, max_length: 64 },
  ],
} as const satisfies RESTPostAPIChatInputApplicationCommandsJSONBody;

export async function execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void> {
  // Checked before anything is deferred or queued: a refused member gets only a private message.
  requireTrainingServer(interaction, context.config, 'train a new LoRA version');
  requireAdmin(interaction, context.config, 'train a new LoRA version');
  const base = interaction.options.getString('base')?.trim() ?? null;
  const baseVersion = base === null ? context.store.trainings.served() : base === FROM_SCRATCH ? null : validateLoraVersion('base', base);
  await interaction.deferReply();
  await context.submitter.submitTraining(originOf(interaction), {
    maxPerDay: context.config.maxTrainingsPerDay,
    baseVersion,
    steps: interaction.options.getInteger('steps') ?? DEFAULT_TRAIN_STEPS,
    seed: interaction.options.getInteger('seed'),
  });
}
