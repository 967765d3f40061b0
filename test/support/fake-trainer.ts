import { appendFileSync, copyFileSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { ExternalTraining } from '../../src/worker/trainer.js';

// Stands in for an hours-long external trainer (TRAINER_COMMAND) at its process boundary, as it should behave and as
// it might misbehave. Its settings come as arguments, since the worker passes on only an allow-listed environment:
//   fake-trainer.js train LOG LORA     follows the protocol: progress lines with a loss, the LoRA file at outPath
//                                      (a copy of LORA); records in LOG when it held the GPU, the hashes of the
//                                      images it was given and the names of the environment variables it got
//   fake-trainer.js silent             prints its pid, reports one step, then nothing, for ever
//   fake-trainer.js flood              prints its pid, then 2 MiB without a line break, then nothing, for ever
//   fake-trainer.js bad-progress LORA  progress lines that do not add up among good ones, then succeeds
//   fake-trainer.js fail TOKEN         prints a traceback holding TOKEN on stderr and exits with code 3

const STEP_MS = 300;
const FLOOD_CHARS = 2 * 1024 * 1024;

const job = JSON.parse(process.env['WRONGBOT_TRAIN_JOB']!) as ExternalTraining;
const [mode, ...args] = process.argv.slice(2);
const progress = (step: unknown, totalSteps: unknown, loss?: unknown) => console.log(JSON.stringify({ progress: { step, totalSteps, loss } }));
const forever = () => setInterval(() => {}, 60_000);

switch (mode) {
  case 'train': {
    const [log, lora] = args as [string, string];
    const record = (event: string) => appendFileSync(log, `${event} ${Date.now()}\n`);
    record('start');
    const hashes = job.images.map((file) => createHash('sha256').update(readFileSync(file)).digest('hex'));
    appendFileSync(log, `images ${hashes.join(',')}\n`);
    appendFileSync(log, `env ${Object.keys(process.env).join(',')}\n`);
    console.log('loading the dataset');
    for (let step = 1; step <= job.steps; step++) {
      await new Promise((resolve) => setTimeout(resolve, STEP_MS));
      progress(step, job.steps, 1 / step);
    }
    copyFileSync(lora, job.outPath);
    record('end');
    break;
  }
  case 'silent':
    console.log(`pid ${process.pid}`);
    progress(1, job.steps, 0.5);
    forever();
    break;
  case 'flood':
    console.log(`pid ${process.pid}`);
    process.stdout.write('x'.repeat(FLOOD_CHARS));
    forever();
    break;
  case 'bad-progress':
    progress(1, 4, 0.5);
    progress(5, 4);
    progress(-1, 4);
    progress(2.5, 4);
    progress(2, 0);
    progress(2, 4, 'low');
    progress(3, 4, 0.25);
    copyFileSync(args[0]!, job.outPath);
    break;
  case 'fail':
    console.error('Traceback (most recent call last):');
    console.error(`huggingface_hub.errors.HfHubHTTPError: 401 Unauthorized for token ${args[0]}`);
    process.exitCode = 3;
    break;
  default:
    throw new Error(`unknown fake trainer mode ${JSON.stringify(mode)}`);
}
