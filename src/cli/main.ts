#!/usr/bin/env node
import dotenv from 'dotenv';
import { UsageError } from './options.js';

// The wrongbot command: one entry point, one error handler. Bad input exits 2 with one line; any other failure 1.
// Each command's module loads only when it runs: `wrongbot bot` must not load onnxruntime or sharp, which the
// image commands need.

interface CommandEntry {
  run: (argv: string[]) => Promise<void>;
  usage: string;
}

const COMMANDS: Readonly<Record<string, () => Promise<CommandEntry>>> = Object.freeze({
  start: () => import('./start.js').then((m) => ({ run: m.runStart, usage: m.START_USAGE })),
  bot: () => import('./bot.js').then((m) => ({ run: m.runBot, usage: m.BOT_USAGE })),
  'deploy-commands': () => import('./deploy-commands.js').then((m) => ({ run: m.runDeployCommands, usage: m.DEPLOY_USAGE })),
  sandbox: () => import('./sandbox.js').then((m) => ({ run: m.sandboxCommand, usage: m.SANDBOX_USAGE })),
  generate: () => import('./generate.js').then((m) => ({ run: m.runGenerate, usage: m.GENERATE_USAGE })),
  compare: () => import('./compare.js').then((m) => ({ run: m.runCompare, usage: m.COMPARE_USAGE })),
  noise: () => import('./noise.js').then((m) => ({ run: m.runNoise, usage: m.NOISE_USAGE })),
  tokenize: () => import('./tokenize.js').then((m) => ({ run: m.runTokenize, usage: m.TOKENIZE_USAGE })),
  train: () => import('./train.js').then((m) => ({ run: m.runTrain, usage: m.TRAIN_USAGE })),
  worker: () => import('./worker.js').then((m) => ({ run: m.runWorker, usage: m.WORKER_USAGE })),
  enqueue: () => import('./enqueue.js').then((m) => ({ run: m.runEnqueue, usage: m.ENQUEUE_USAGE })),
  dataset: () => import('./dataset.js').then((m) => ({ run: m.runDataset, usage: m.DATASET_USAGE })),
});

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

async function usage(): Promise<string> {
  const entries = await Promise.all(Object.values(COMMANDS).map((load) => load()));
  return ['usage:', ...entries.map((entry) => `  ${entry.usage}`)].join('\n');
}

async function main(argv: string[]): Promise<void> {
  dotenv.config({ quiet: true });
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === 'help') {
    console.log(await usage());
    return;
  }
  const load = COMMANDS[name];
  if (!load) throw new UsageError(`unknown command ${JSON.stringify(name)}\n${await usage()}`);
  await (await load()).run(rest);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(`wrongbot: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = error instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
});
