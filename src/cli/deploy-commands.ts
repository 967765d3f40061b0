import { REST, Routes, type APIApplication } from 'discord.js';
import { requiredString } from '../common/environment.js';
import { readBotConfig } from '../bot/config.js';
import { deployCommands } from '../bot/deploy.js';
import { commandDefinitions } from '../commands/index.js';
import { parseOptions, type OptionSpec } from './options.js';

export const DEPLOY_USAGE = 'wrongbot deploy-commands [--guild ID | --global]   (registers the slash commands; DISCORD_GUILD_ID is the default guild)';
export const DEPLOY_OPTIONS = {
  guild: { type: 'string', value: 'ID', description: 'register for this server only, at once (default: DISCORD_GUILD_ID)' },
  global: { type: 'boolean', description: 'register for every server (Discord takes up to an hour to show them)' },
} as const satisfies OptionSpec;

export async function runDeployCommands(argv: string[]): Promise<void> {
  const values = parseOptions(argv, DEPLOY_OPTIONS);
  const token = requiredString(process.env, 'DISCORD_TOKEN', 'the bot token from the Discord developer portal');
  const config = readBotConfig(values.guild === undefined ? process.env : { ...process.env, DISCORD_GUILD_ID: values.guild }, token);
  const guildId = values.global ? null : config.guildId;
  const rest = new REST(config.apiUrl === null ? {} : { api: config.apiUrl }).setToken(token);
  const application = await rest.get(Routes.currentApplication()) as APIApplication;
  const count = await deployCommands(rest, application.id, guildId, commandDefinitions(config.imageSizes));
  console.log(`registered ${count} commands ${guildId === null ? 'globally (Discord may take up to an hour to show them)' : `for guild ${guildId}`}`);
}
