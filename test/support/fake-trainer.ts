import { appendFileSync } from 'node:fs';

// Stands in for the hours-long LoRA trainer at its process boundary: it follows the trainer protocol
// (progress and done as JSON lines) and records when it held the GPU.

const STEPS = 5;
const STEP_MS = 300;
const job = JSON.parse(process.env['WRONGBOT_TRAIN_JOB'] ?? '{}') as { steps?: number };
const record = (event: string) => appendFileSync(process.env['FAKE_TRAINER_LOG']!, `${event} ${Date.now()}\n`);

record('start');
console.log('loading the dataset');
for (let step = 1; step <= STEPS; step++) {
  await new Promise((resolve) => setTimeout(resolve, STEP_MS));
  console.log(JSON.stringify({ progress: { step, totalSteps: STEPS } }));
}
record('end');
console.log(JSON.stringify({ done: { loraVersion: `wrong-trained-${job.steps}`, loraPath: '/nowhere/wrong-trained.safetensors' } }));
