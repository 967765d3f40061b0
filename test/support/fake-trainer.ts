import { appendFileSync, copyFileSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { ExternalTraining } from '../../src/worker/trainer.js';

// Stands in for an hours-long external trainer (TRAINER_COMMAND) at its process boundary: it follows the trainer
// protocol (progress lines with a loss, the LoRA file at outPath), records when it held the GPU and the hashes of
// the images it was given, and "trains" by copying FAKE_TRAINER_LORA.

const STEP_MS = 300;
const job = JSON.parse(process.env['WRONGBOT_TRAIN_JOB']!) as ExternalTraining;
const record = (event: string) => appendFileSync(process.env['FAKE_TRAINER_LOG']!, `${event} ${Date.now()}\n`);

record('start');
const hashes = job.images.map((file) => createHash('sha256').update(readFileSync(file)).digest('hex'));
appendFileSync(process.env['FAKE_TRAINER_LOG']!, `images ${hashes.join(',')}\n`);
console.log('loading the dataset');
for (let step = 1; step <= job.steps; step++) {
  await new Promise((resolve) => setTimeout(resolve, STEP_MS));
  console.log(JSON.stringify({ progress: { step, totalSteps: job.steps, loss: 1 / step } }));
}
copyFileSync(process.env['FAKE_TRAINER_LORA']!, job.outPath);
record('end');
