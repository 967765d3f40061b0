#!/usr/bin/env node
import dotenv from 'dotenv';
import { BOT_USAGE, runBot } from './bot.js';
import { COMPARE_USAGE, runCompare } from './compare.js';
import { DEPLOY_USAGE, runDeployCommands } from './deploy-commands.js';
import { ENQUEUE_USAGE, runEnqueue } from './enqueue.js';
import { GENERATE_USAGE, runGenerate } from './generate.js';
import { NOISE_USAGE, runNoise } from './noise.js';
import { SANDBOX_USAGE, sandboxCommand } from './sandbox.js';
import { START_USAGE, runStart } from './start.js';
import { TOKENIZE_USAGE, runTokenize } from './tokenize.js';
import { WORKER_USAGE, runWorker } from './worker.js';
import { UsageError } from './options.js';

// The wrongbot command: one entry point, one error handler. Bad input exits 2 with one line; any other failure 1.

const COMMANDS: Readonly<Record<string, { run: (argv: string[]) => Promise<void>; usage: string }>> = Object.freeze({
  start: { run: runStart, usage: START_USAGE },
  bot: { run: runBot, usage: BOT_USAGE },
  'deploy-commands': { run: runDeployCommands, usage: DEPLOY_USAGE },
  sandbox: { run: sandboxCommand, usage: SANDBOX_USAGE },
  generate: { run: runGenerate, usage: GENERATE_USAGE },
  compare: { run: runCompare, usage: COMPARE_USAGE },
  noise: { run: runNoise, usage: NOISE_USAGE },
  tokenize: { run: runTokenize, usage: TOKENIZE_USAGE },
  worker: { run: runWorker, usage: WORKER_USAGE },
  enqueue: { run: runEnqueue, usage: ENQUEUE_USAGE },
});

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function usage(): string {
  return ['usage:', ...Object.values(COMMANDS).map((command) => `  ${command.usage}`)].join('\n');
}

async function main(argv: string[]): Promise<void> {
  dotenv.config({ quiet: true });
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === 'help') {
    console.log(usage());
    return;
  }
  const command = COMMANDS[name];
  if (!command) throw new UsageError(`unknown command ${JSON.stringify(name)}\n${usage()}`);
  await command.run(rest);
}

main(process.argv.slice(2)).catch((error: unknown) => {
  console.error(`wrongbot: ${error instanceof Error ? error.message : String(error)}`);
  process.exitCode = error instanceof UsageError ? EXIT_USAGE : EXIT_FAILURE;
});
