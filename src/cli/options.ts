import { parseArgs } from 'node:util';

// Command-line parsing shared by every subcommand: one line naming the option and its value on bad input.

export class UsageError extends Error {
  override name = 'UsageError';
}

/** Options take a value, or are flags; numbers are parsed by the helpers below so errors can name them. */
export type OptionSpec = Readonly<Record<string, { readonly type: 'string' | 'boolean' }>>;
export type OptionValues<T extends OptionSpec> = { [K in keyof T]?: T[K]['type'] extends 'boolean' ? boolean : string };

/** `--steps -5` reaches the range check (and its message) instead of parseArgs' "ambiguous argument" error. */
function joinNegativeNumbers(argv: string[]): string[] {
  const joined: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const next = argv[i + 1];
    if (argv[i]!.startsWith('--') && !argv[i]!.includes('=') && next !== undefined && /^-\d/.test(next)) {
      joined.push(`${argv[i]}=${next}`);
      i++;
    } else {
      joined.push(argv[i]!);
    }
  }
  return joined;
}

export function parseOptions<T extends OptionSpec>(argv: string[], options: T): OptionValues<T> {
  try {
    return parseArgs({ args: joinNegativeNumbers(argv), options, strict: true, allowPositionals: false }).values as OptionValues<T>;
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0]!);
  }
}

export function required(name: string, value: string | undefined): string {
  if (value === undefined || value === '') throw new UsageError(`--${name} is required`);
  return value;
}

export function integerOption(name: string, value: string | undefined, fallback?: number): number {
  if (value === undefined) {
    if (fallback === undefined) throw new UsageError(`--${name} is required`);
    return fallback;
  }
  if (!/^-?\d+$/.test(value.trim())) throw new UsageError(`--${name} ${JSON.stringify(value)} is not an integer`);
  return Number(value);
}

export function numberOption(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (value.trim() === '' || !Number.isFinite(parsed)) throw new UsageError(`--${name} ${JSON.stringify(value)} is not a finite number`);
  return parsed;
}

/** An option that falls back to an environment variable (from the shell or `.env`), naming whichever was bad. */
export function optionOrEnvironment(name: string, value: string | undefined, variable: string): string {
  const chosen = value ?? process.env[variable];
  if (chosen === undefined || chosen === '') throw new UsageError(`--${name} is required (or set ${variable})`);
  return chosen;
}
