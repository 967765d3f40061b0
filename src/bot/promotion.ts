import { LoraVersionsError } from '../store/trainings.js';
import type { BotContext } from './context.js';
import { UserFacingError } from './errors.js';

// Changing the served LoRA version, whoever asks: /lora promote and rollback, the promote buttons, and the judges'
// votes. Every worker serves any version, so the next job simply names the new one.

/** A refused change (unknown version, nothing to roll back to) told as it is to the admin. */
function asAdminsChange<T>(change: () => T): T {
  try {
    return change();
  } catch (error) {
    if (error instanceof LoraVersionsError) throw new UserFacingError(`${error.message.charAt(0).toUpperCase()}${error.message.slice(1)}.`);
    throw error;
  }
}

/** Serves `version` from now on; `byUserId` null when the votes did. Returns the line that tells the channel. */
export function promoteVersion(context: BotContext, version: string, byUserId: string | null): string {
  const { previous } = asAdminsChange(() => context.store.trainings.promote(version, byUserId));
  context.log(`LoRA ${version} promoted by ${byUserId ?? 'the judges\' votes'} (was ${previous ?? 'none'})`);
  return `\`${version}\` is served to /wrong and /compare from now on${previous === null ? '' : ` (was \`${previous}\`; /lora rollback brings it back)`}.`;
}

export function rollBackVersion(context: BotContext, byUserId: string): string {
  const { previous, served } = asAdminsChange(() => context.store.trainings.rollback(byUserId));
  context.log(`LoRA rolled back to ${served} by ${byUserId} (was ${previous})`);
  return `\`${served}\` is served again (was \`${previous}\`).`;
}
