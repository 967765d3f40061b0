#!/usr/bin/env node
import dotenv from 'dotenv';
import { asksForHelp, commandHelp } from './help.js';
import { UsageError, type OptionSpec } from './options.js';

// The wrongbot command: one entry point, one error handler. Bad input exits 2 with one line; any other failure 1.
// Each command's module loads only when it runs: `wrongbot bot` must not load onnxruntime or sharp, which the
// image commands need.

interface CommandEntry {
  run: (argv: string[]) => Promise<void>;
  usage: string;
  /** What `run` parses its arguments with, listed by `--help`. */
  options: OptionSpec;
}

const COMMANDS: Readonly<Record<string, () => Promise<CommandEntry>>> = Object.freeze({
  start: () => import('./start.js').then((m) => ({ run: m.runStart, usage: m.START_USAGE, options: m.START_OPTIONS })),
  bot: () => import('./bot.js').then((m) => ({ run: m.runBot, usage: m.BOT_USAGE, options: m.BOT_OPTIONS })),
  'deploy-commands': () => import('./deploy-commands.js').then((m) => ({ run: m.runDeployCommands, usage: m.DEPLOY_USAGE, options: m.DEPLOY_OPTIONS })),
  sandbox: () => import('./sandbox.js').then((m) => ({ run: m.sandboxCommand, usage: m.SANDBOX_USAGE, options: m.SANDBOX_OPTIONS })),
  generate: () => import('./generate.js').then((m) => ({ run: m.runGenerate, usage: m.GENERATE_USAGE, options: m.GENERATE_OPTIONS })),
  compare: () => import('./compare.js').then((m) => ({ run: m.runCompare, usage: m.COMPARE_USAGE, options: m.COMPARE_OPTIONS })),
  noise: () => import('./noise.js').then((m) => ({ run: m.runNoise, usage: m.NOISE_USAGE, options: m.NOISE_OPTIONS })),
  tokenize: () => import('./tokenize.js').then((m) => ({ run: m.runTokenize, usage: m.TOKENIZE_USAGE, options: m.TOKENIZE_OPTIONS })),
  train: () => import('./train.js').then((m) => ({ run: m.runTrain, usage: m.TRAIN_USAGE, options: m.TRAIN_OPTIONS })),
  worker: () => import('./worker.js').then((m) => ({ run: m.runWorker, usage: m.WORKER_USAGE, options: m.WORKER_OPTIONS })),
  enqueue: () => import('./enqueue.js').then((m) => ({ run: m.runEnqueue, usage: m.ENQUEUE_USAGE, options: m.ENQUEUE_OPTIONS })),
  doctor: () => import('./doctor.js').then((m) => ({ run: m.runDoctor, usage: m.DOCTOR_USAGE, options: m.DOCTOR_OPTIONS })),
  dataset: () => import('./dataset.js').then((m) => ({ run: m.runDataset, usage: m.DATASET_USAGE, options: m.DATASET_OPTIONS })),
  models: () => import('./models.js').then((m) => ({ run: m.runModels, usage: m.MODELS_USAGE, options: m.MODELS_OPTIONS })),
});

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

async function usage(): Promise<string> {
  const entries = await Promise.all(Object.values(COMMANDS).map((load) => load()));
  return ['usage:', ...entries.map((entry) => `  ${entry.usage}`), '', 'wrongbot COMMAND --help (or -h) lists that command\'s options.'].join('\n');
}

async function main(argv: string[]): Promise<void> {
  dotenv.config({ quiet: true });
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || asksForHelp([name])) {
    console.log(await usage());
    return;
  }
  const load = COMMANDS[name];
  if (!load) throw new UsageError(`unknown command ${JSON.stringify(name)}\n${await usage()}`);
  const command = await load();
  if (asksForHelp(rest)) {
    console.log(commandHelp(command.usage, command.options));
    return;
  }
  await command.run(rest);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(`wrongbot: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = error instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
});
