import { MessageFlags, type Interaction, type RepliableInteraction } from 'discord.js';
import { InvalidRequestError } from '../common/validation.js';
import { QueueLimitError } from '../queue/producer.js';
import { RedisUnavailableError } from '../queue/redis.js';
import { findCommand } from '../commands/index.js';
import { handleButton } from './buttons.js';
import type { BotContext } from './context.js';
import { UserFacingError } from './errors.js';

// The one entry point for interactions and its one error handler: whatever a handler throws reaches the member as a
// short private message, and the bot carries on.

export async function handleInteraction(interaction: Interaction, context: BotContext): Promise<void> {
  try {
    if (interaction.isChatInputCommand()) {
      const command = findCommand(interaction.commandName);
      if (!command) throw new UserFacingError(`/${interaction.commandName} is not a command of this bot (the command list may be out of date).`);
      await command.execute(interaction, context);
    } else if (interaction.isButton()) {
      await handleButton(interaction, context);
    }
  } catch (error) {
    if (interaction.isRepliable()) await reportError(interaction, error, context.log);
    else context.log(`interaction ${interaction.id}: ${(error as Error).message}`);
  }
}

function userMessage(error: unknown): string {
  if (error instanceof UserFacingError || error instanceof QueueLimitError) return error.message;
  if (error instanceof InvalidRequestError) return `That can’t be done: ${error.message}.`;
  if (error instanceof RedisUnavailableError) return 'The image queue is unreachable right now; please try again in a minute.';
  return 'Something went wrong on the bot’s side; the admins can find the details in its log.';
}

async function reportError(interaction: RepliableInteraction, error: unknown, log: (line: string) => void): Promise<void> {
  const expected = error instanceof UserFacingError || error instanceof QueueLimitError || error instanceof InvalidRequestError;
  const name = interaction.isChatInputCommand() ? `/${interaction.commandName}` : interaction.isButton() ? `button ${interaction.customId}` : interaction.type;
  log(`${name} by ${interaction.user.id}: ${expected ? (error as Error).message : (error as Error)?.stack ?? String(error)}`);
  const content = userMessage(error);
  try {
    if (interaction.deferred && !interaction.ephemeral) {
      // The public "thinking…" message would otherwise stay forever: replace it with a private note.
      await interaction.deleteReply();
      await interaction.followUp({ content, flags: MessageFlags.Ephemeral });
    } else if (interaction.deferred || interaction.replied) {
      await interaction.editReply({ content });
    } else {
      await interaction.reply({ content, flags: MessageFlags.Ephemeral });
    }
  } catch (replyError) {
    log(`could not tell ${interaction.user.id} about the error: ${(replyError as Error).message}`);
  }
}
