// Settings that come from the environment (or `.env`), read and checked in one place so that a bad value stops the
// process at start with a message naming the variable, not minutes later somewhere deep.

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export type Env = Readonly<Record<string, string | undefined>>;

function present(env: Env, key: string): string | undefined {
  const value = env[key]?.trim();
  return value === undefined || value === '' ? undefined : value;
}

export function optionalString(env: Env, key: string): string | null {
  return present(env, key) ?? null;
}

export function requiredString(env: Env, key: string, hint: string): string {
  const value = present(env, key);
  if (value === undefined) throw new ConfigError(`${key} is not set: ${hint}`);
  return value;
}

export function integerSetting(env: Env, key: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const text = present(env, key);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^-?\d+$/.test(text) || value < min || value > max) {
    throw new ConfigError(`${key} = ${JSON.stringify(text)} must be an integer from ${min} to ${max}`);
  }
  return value;
}

const BOOLEANS: Readonly<Record<string, boolean>> = { '1': true, true: true, yes: true, '0': false, false: false, no: false };

export function booleanSetting(env: Env, key: string, fallback: boolean): boolean {
  const text = present(env, key);
  if (text === undefined) return fallback;
  const value = BOOLEANS[text.toLowerCase()];
  if (value === undefined) throw new ConfigError(`${key} = ${JSON.stringify(text)} must be one of ${Object.keys(BOOLEANS).join(', ')}`);
  return value;
}

const PREFIX_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/;

/** BullMQ's key prefix: one per deployment (or per test), so several can share a Redis. */
export function queuePrefix(env: Env): string {
  const prefix = present(env, 'QUEUE_PREFIX') ?? 'wrongbot';
  if (!PREFIX_PATTERN.test(prefix)) {
    throw new ConfigError(`QUEUE_PREFIX = ${JSON.stringify(prefix)} must be 1–64 letters, digits, dots, dashes or underscores`);
  }
  return prefix;
}
