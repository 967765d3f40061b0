// What `wrongbot start` hands its worker: its own environment without Discord's settings. The worker only talks to
// Redis, and runs code a token should not reach (a TRAINER_COMMAND, onnxruntime's providers); a Discord
// credential other than the token (a client secret kept in .env) is dropped by the same rule.

const DISCORD_PREFIX = 'DISCORD_';

export function workerEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  // Upper-cased because Windows reads environment names case-insensitively: discord_token is DISCORD_TOKEN there.
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.toUpperCase().startsWith(DISCORD_PREFIX)));
}
