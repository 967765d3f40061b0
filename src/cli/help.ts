import type { OptionSpec } from './options.js';

// `wrongbot COMMAND --help`: the command's usage line and one line per option it declares, made from the same
// declarations its parser uses, so the help cannot list an option the command no longer takes, or miss one.

const HELP_FLAGS: readonly string[] = ['-h', '--help'];

/** Anywhere among a command's arguments: an option's value starting with a dash must be given as `--name=value` anyway. */
export function asksForHelp(argv: readonly string[]): boolean {
  return argv.some((arg) => HELP_FLAGS.includes(arg));
}

export function commandHelp(usage: string, options: OptionSpec): string {
  const rows: Array<[string, string]> = Object.entries(options).map(([name, option]) => option.type === 'boolean'
    ? [`--${name}`, option.description]
    : [`--${name} ${option.value}${option.multiple ? ' ...' : ''}`, option.description]);
  rows.push([HELP_FLAGS.join(', '), 'this help']);
  const width = Math.max(...rows.map(([flag]) => flag.length));
  return [`usage: ${usage}`, '', 'options:', ...rows.map(([flag, meaning]) => `  ${flag.padEnd(width)}  ${meaning}`)].join('\n');
}
