import { parseArgs } from 'node:util';

// Command-line parsing shared by every subcommand: one line naming the option and its value on bad input.

export class UsageError extends Error {
  override name = 'UsageError';
}

/**
 * An option as a command declares it: a flag, or an option with a value (`value` names it in `--help`, e.g. DIR),
 * given once or, with `multiple`, any number of times. `description` is its line in `--help`, so every option has
 * one. Numbers are parsed by the helpers below so errors can name them.
 */
export type OptionDeclaration =
  | { readonly type: 'boolean'; readonly description: string }
  | { readonly type: 'string'; readonly value: string; readonly description: string; readonly multiple?: true };
export type OptionSpec = Readonly<Record<string, OptionDeclaration>>;
export type OptionValues<T extends OptionSpec> = {
  [K in keyof T]?: T[K] extends { readonly type: 'boolean' } ? boolean : T[K] extends { readonly multiple: true } ? string[] : string
};

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
  return parse(argv, options, false).values;
}

/** For commands that also take arguments (`wrongbot models pull NAME…`): the options, and the arguments in order. */
export function parseOptionsAndArguments<T extends OptionSpec>(argv: string[], options: T): { values: OptionValues<T>; positionals: string[] } {
  return parse(argv, options, true);
}

function parse<T extends OptionSpec>(argv: string[], options: T, allowPositionals: boolean): { values: OptionValues<T>; positionals: string[] } {
  try {
    const config = Object.fromEntries(Object.entries(options).map(([name, option]) => [
      name, { type: option.type, multiple: option.type === 'string' && option.multiple === true },
    ]));
    const parsed = parseArgs({ args: joinNegativeNumbers(argv), options: config, strict: true, allowPositionals });
    return { values: parsed.values as OptionValues<T>, positionals: parsed.positionals };
  } catch (error) {
    throw new UsageError((error as Error).message.split('\n')[0]!);
  }
}

/** The options of a command's subcommand, out of the command's declarations. */
export function pickOptions<T extends OptionSpec, K extends keyof T & string>(options: T, names: readonly K[]): Pick<T, K> {
  return Object.fromEntries(names.map((name) => [name, options[name]])) as Pick<T, K>;
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
