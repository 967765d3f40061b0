import { serverDefaults } from '../commands/generation-options.js';
import type { JobRecord } from '../store/jobs.js';
import type { BotContext } from './context.js';

// After a training, the candidate is drawn with the validation prompts (/lora validation), each beside the base and
// the served version with the same seed, in the channel the training was asked for in: what an admin looks at before
// promoting it.

export async function queueValidation(context: BotContext, training: JobRecord, candidate: string): Promise<void> {
  const prompts = context.store.trainings.validationPrompts();
  if (prompts.length === 0) return;
  const served = context.store.trainings.served();
  const { size, steps, guidanceScale, loraStrength, denoisingEnd } = serverDefaults({ guildId: training.guildId }, context);
  const versions = [...(served !== null && served !== candidate ? [served] : []), candidate].map((version) => ({ version, strength: loraStrength }));
  const settings = prompts.map(({ prompt, seed }) => ({ prompt, seed, steps, guidanceScale, width: size.width, height: size.height, weighting: 'auto' as const, denoisingEnd }));
  const records = await context.submitter.submitValidation(training, settings, versions);
  context.log(`queued ${records.length} validation image(s) of ${candidate}`);
}
