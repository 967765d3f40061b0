import { requiredString } from '../common/environment.js';
import { startBot } from '../bot/bot.js';
import { readBotConfig } from '../bot/config.js';
import { resolveRedis } from '../queue/redis.js';
import { parseOptions, type OptionSpec } from './options.js';
import { timestamped } from './log.js';
import { stopSignal } from './signals.js';

export const BOT_USAGE = 'wrongbot bot      (the Discord bot alone; settings from the environment: DISCORD_TOKEN, REDIS_URL, DATA_DIR, …)';
/** None: every setting comes from the environment. */
export const BOT_OPTIONS: OptionSpec = {};

/** Runs the bot until SIGTERM or SIGINT. */
export async function runBot(argv: string[]): Promise<void> {
  parseOptions(argv, BOT_OPTIONS);
  const token = requiredString(process.env, 'DISCORD_TOKEN', 'the bot token from the Discord developer portal (or run `npm start` without one for the local sandbox)');
  const config = readBotConfig(process.env, token);
  const redis = await resolveRedis(process.env);
  for (const warning of redis.warnings) timestamped(`warning: ${warning}`);
  // One bad interaction or a Discord hiccup must not take the bot down; it is logged and the bot carries on.
  process.on('unhandledRejection', (reason) => timestamped(`unhandled: ${reason instanceof Error ? reason.stack : String(reason)}`));
  let bot;
  try {
    bot = await startBot(config, redis.url, timestamped);
  } catch (error) {
    await redis.privateServer?.stop();
    throw error;
  }
  timestamped(`${await stopSignal(timestamped)}: stopping the bot`);
  await bot.close();
  await redis.privateServer?.stop();
  timestamped('bot stopped');
}
