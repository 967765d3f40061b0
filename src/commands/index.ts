import type { APIApplicationCommandOption, ChatInputCommandInteraction, RESTPostAPIChatInputApplicationCommandsJSONBody } from 'discord.js';
import type { BotContext } from '../bot/context.js';
import type { ImageSize } from '../bot/image-sizes.js';
import * as cancel from './cancel.js';
import * as compare from './compare.js';
import * as dataset from './dataset.js';
import * as defaults from './defaults.js';
import { SIZE_OPTION } from './generation-options.js';
import * as imagine from './imagine.js';
import * as judge from './judge.js';
import * as lora from './lora.js';
import * as queue from './queue.js';
import * as train from './train.js';
import * as wrong from './wrong.js';

// Every slash command: one module each, with its definition (what Discord shows) and a thin handler.

export interface CommandModule {
  readonly definition: RESTPostAPIChatInputApplicationCommandsJSONBody;
  execute(interaction: ChatInputCommandInteraction, context: BotContext): Promise<void>;
}

export const COMMANDS: readonly CommandModule[] = Object.freeze([imagine, wrong, compare, judge, queue, cancel, train, dataset, defaults, lora]);

export function findCommand(name: string): CommandModule | undefined {
  return COMMANDS.find((command) => command.definition.name === name);
}

/** The definitions as registered, with the size choices this server offers. */
export function commandDefinitions(sizes: readonly ImageSize[]): RESTPostAPIChatInputApplicationCommandsJSONBody[] {
  const sizeChoices = sizes.map((size) => ({ name: size.label, value: size.value }));
  return COMMANDS.map(({ definition }) => ({
    ...definition,
    options: definition.options?.map((option): APIApplicationCommandOption => (option.name === SIZE_OPTION.name && option.type === SIZE_OPTION.type
      ? { ...option, autocomplete: false, choices: sizeChoices }
      : option)),
  }));
}
