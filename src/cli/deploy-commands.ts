import { REST, Routes, type APIApplication } from 'discord.js';
import { requiredString } from '../common/environment.js';
import { readBotConfig } from '../bot/config.js';
import { deployCommands } from '../bot/deploy.js';
import { commandDefinitions } from '../commands/index.js';
import { parseOptions } from './options.js';

export const DEPLOY_USAGE = 'wrongbot deploy-commands [--guild ID | --global]   (registers the slash commands; DISCORD_GUILD_ID is the default guild)';

export async function runDeployCommands(argv: string[]): Promise<void> {
  const values = parseOptions(argv, { guild: { type: 'string' }, global: { type: 'boolean' } });
  const token = requiredString(process.env, 'DISCORD_TOKEN', 'the bot token from the Discord developer portal');
  const config = readBotConfig(values.guild === undefined ? process.env : { ...process.env, DISCORD_GUILD_ID: values.guild }, token);
  const guildId = values.global ? null : config.guildId;
  const rest = new REST(config.apiUrl === null ? {} : { api: config.apiUrl }).setToken(token);
  const application = await rest.get(Routes.currentApplication()) as APIApplication;
  const count = await deployCommands(rest, application.id, guildId, commandDefinitions(config.imageSizes));
  console.log(`registered ${count} commands ${guildId === null ? 'globally (Discord may take up to an hour to show them)' : `for guild ${guildId}`}`);
}
