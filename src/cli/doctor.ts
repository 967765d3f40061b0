import { formatChecks, runChecks } from '../doctor/checks.js';
import { parseOptions, type OptionSpec } from './options.js';

export const DOCTOR_USAGE = 'wrongbot doctor   (whether this box can serve: Node, Redis, model, LoRA, GPU libraries, memory, disk, font)';
/** None: it checks the settings the bot and worker would read, from the environment. */
export const DOCTOR_OPTIONS: OptionSpec = {};

/** Prints one line per check; exits 1 when any fails, so scripts (and `npm start`) can stop on it. */
export async function runDoctor(argv: string[]): Promise<void> {
  parseOptions(argv, DOCTOR_OPTIONS);
  const lines = await runChecks(process.env);
  console.log(formatChecks(lines));
  const failed = lines.filter((entry) => entry.status === 'fail');
  if (failed.length > 0) {
    console.log(`\n${failed.length} check(s) failed: ${failed.map((entry) => entry.name).join(', ')}`);
    process.exitCode = 1;
  }
}
