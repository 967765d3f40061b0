import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { decodeToRgb } from '../src/gpu/image.js';
import { formatDevice, parseDevice } from '../src/gpu/providers.js';
import { benchLoraMemory, benchLoraSwitch, benchPipeline, benchTriptych, type PipelineFigures } from './pipeline.js';
import { benchFloat16, benchSplits, sdxlMemory, STEPS_PER_TRIPTYCH } from './batches.js';
import { benchBot } from './bot.js';
import { benchQueue } from './queue.js';
import { benchTraining } from './training.js';
import { CARD_SIZES_GIB } from '../src/gpu/memory-estimate.js';
import { resolveRedis } from '../src/queue/redis.js';

// `npm run bench`: prints the figures and rewrites BENCHMARKS.md with them, the machine and the date.
// BENCH_DEVICES=cpu,webgpu,cuda on a GPU host also checks each device's image against the CPU's.

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TINY_MODEL_DIR = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-sdxl');
const TINY_LORA = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-sdxl-lora', 'tiny_sdxl_lora_kohya.safetensors');
/** A second LoRA version for the tiny model: the weights diffusers' script trained in case b1. */
const TRAINED_TINY_LORA = path.join(REPO_ROOT, 'test', 'fixtures', 'training-reference', 'b1', 'final', 'pytorch_lora_weights.safetensors');

function machine(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'unknown CPU'} × ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, `
    + `${os.type()} ${os.release()}, Node ${process.version}, onnxruntime-node ${ort.env.versions.node ?? '?'}`;
}

async function maxPixelDifference(a: Uint8Array, b: Uint8Array): Promise<number> {
  const [left, right] = await Promise.all([decodeToRgb(Buffer.from(a)), decodeToRgb(Buffer.from(b))]);
  let max = 0;
  for (let i = 0; i < left.rgb.length; i++) max = Math.max(max, Math.abs(left.rgb[i]! - right.rgb[i]!));
  return max;
}

const devices = (process.env['BENCH_DEVICES'] ?? 'cpu').split(',').map((spec) => parseDevice(spec));
const figures = new Map<string, PipelineFigures>();
for (const device of devices) figures.set(formatDevice(device), await benchPipeline(TINY_MODEL_DIR, device));

const cpu = figures.get('cpu');
const sections: string[] = [];
for (const [device, f] of figures) {
  const rows: Array<[string, string]> = [
    [`seconds per image (tiny SDXL, ${f.size}, ${f.steps} steps, guidance 13)`, f.secondsPerImage.toFixed(3)],
    ['of which inside onnxruntime run()', f.onnxSecondsPerImage.toFixed(3)],
    ['host overhead ratio (job wall time ÷ sum of run() times)', f.overheadRatio.toFixed(3)],
    ['pipeline overhead ratio (pipeline time in the inference thread ÷ run() times)', f.pipelineOverheadRatio.toFixed(3)],
  ];
  if (cpu && device !== 'cpu') rows.push(['max 8-bit difference from the CPU image', String(await maxPixelDifference(f.firstPng, cpu.firstPng))]);
  console.log(`[${device}]`);
  for (const [name, value] of rows) console.log(`  ${name}: ${value}`);
  sections.push(
    `### ${device}`,
    '',
    `Mean over ${f.images} images after one warm-up, through the inference thread as callers use it.`,
    '',
    '| figure | value |',
    '| --- | --- |',
    ...rows.map(([name, value]) => `| ${name} | ${value} |`),
    '',
  );
}

const triptych = await benchTriptych(TINY_MODEL_DIR, TINY_LORA);
const memory = await benchLoraMemory(TINY_MODEL_DIR, TINY_LORA);
const loraSwitch = await benchLoraSwitch(TINY_MODEL_DIR, [TINY_LORA, TRAINED_TINY_LORA]);
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const loraRows: Array<[string, string]> = [
  ['one image (LoRA, negative "wrong"), seconds', triptych.singleSeconds.toFixed(3)],
  ['triptych (3 panels in one batch), seconds', triptych.triptychSeconds.toFixed(3)],
  ['triptych ÷ single image', triptych.ratio.toFixed(2)],
  ['worker resident memory without LoRA', mib(memory.withoutLoraBytes)],
  ['worker resident memory with LoRA branches (2 slots, one LoRA fed)', mib(memory.withLoraBytes)],
  ['with ÷ without', memory.ratio.toFixed(3)],
  [`one-step 64x64 image that switches the LoRA version (median of ${loraSwitch.switches}), seconds`, loraSwitch.switchingSeconds.toFixed(3)],
  ['the same image, version unchanged, seconds', loraSwitch.stayingSeconds.toFixed(3)],
  ['cost of switching the served version (difference), seconds', (loraSwitch.switchingSeconds - loraSwitch.stayingSeconds).toFixed(3)],
];
console.log('[triptych and LoRA, cpu]');
for (const [name, value] of loraRows) console.log(`  ${name}: ${value}`);

const splits = await benchSplits(TINY_MODEL_DIR, TINY_LORA);
const float16 = benchFloat16();
const gbText = (bytes: number) => `${(bytes / 1e9).toFixed(1)} GB`;
const batchRows: Array<[string, string]> = [
  ...splits.map(({ rowsPerRun, runsPerStep, triptychSeconds, peakResidentBytes }): [string, string] => [
    `tiny triptych at 128x128, ${STEPS_PER_TRIPTYCH} steps, ${rowsPerRun} rows per run (${runsPerStep} run${runsPerStep === 1 ? '' : 's'} per step): seconds / peak resident memory`,
    `${triptychSeconds.toFixed(3)} / ${mib(peakResidentBytes)}`,
  ]),
  ...sdxlMemory().map(({ label, estimate, otherWeightBytes }): [string, string] => [
    `SDXL at 1024x1024 on paper, ${label} (${estimate.shape.rows} UNet rows): UNet weights + rows × per row + text encoders and VAE`,
    `${gbText(estimate.weightBytes)} + ${estimate.shape.rows} × ${gbText(estimate.perRowBytes)} + ${gbText(otherWeightBytes)} = ${gbText(estimate.totalBytes + otherWeightBytes)}`
      + ` (largest scores per row ${gbText(estimate.largestScores.bytes)}: ${estimate.largestScores.heads} heads × ${estimate.largestScores.tokens}² at ${estimate.largestScores.channels} channels)`,
  ]),
  [`float16 host cost per step of an fp16 UNet at SDXL's 1024² triptych (${float16.values.toLocaleString('en')} values in and out): encode / decode by table, ms`,
    `${float16.encodeMs.toFixed(2)} / ${float16.tableDecodeMs.toFixed(2)}`],
  ['the same decode value by value with powers of two (before the table), ms; table speed-up', `${float16.arithmeticDecodeMs.toFixed(2)}; ${(float16.arithmeticDecodeMs / float16.tableDecodeMs).toFixed(1)}×`],
];
console.log('[UNet batches and memory]');
for (const [name, value] of batchRows) console.log(`  ${name}: ${value}`);

const training = await benchTraining(TINY_MODEL_DIR);
const speedRows = training.speed.map((f) => [
  `${f.side}x${f.side}, batch ${f.batchSize}`, f.stepSeconds.toFixed(3), f.unetSeconds.toFixed(3), f.ratio.toFixed(2), `${(f.hostShare * 100).toFixed(1)} %`,
  f.checkpointedStepSeconds.toFixed(3), (f.checkpointedStepSeconds / f.stepSeconds).toFixed(2),
]);
const gb = (bytes: number) => (bytes / 1e9).toFixed(1);
const [largestCard] = CARD_SIZES_GIB;
const fitsLargestCard = (bytes: number) => (bytes <= largestCard * 2 ** 30 ? 'yes' : 'no');
const { heldOut } = training;
const trainingRows: Array<[string, string]> = [
  ...training.memory.flatMap(({ side, batchSize, peakBytes, estimate }): Array<[string, string]> => {
    const at = `${side}x${side}, batch ${batchSize}`;
    return [
      [`peak resident memory, fresh process, one UNet forward at ${at}`, mib(peakBytes.inference)],
      [`peak resident memory, fresh process, one training step at ${at}`, mib(peakBytes.training)],
      [`peak resident memory, fresh process, one training step with gradient checkpointing at ${at}`, mib(peakBytes['training-checkpointed'])],
      [`training ÷ inference at ${at}, without / with checkpointing`,
        `${(peakBytes.training / peakBytes.inference).toFixed(2)} / ${(peakBytes['training-checkpointed'] / peakBytes.inference).toFixed(2)}`],
      [`paper estimate for the tiny UNet at ${at}: activations kept without checkpointing / held + largest segment with it`,
        `${mib(estimate.keptActivationBytes)} / ${mib(estimate.checkpointBytes)} + ${mib(estimate.largestSegmentBytes)}`],
    ];
  }),
  [`held-out loss over ${heldOut.triples} fixed triples before → after 200 steps at lr 1e-3, 128x128, case b1's images`,
    `${heldOut.before.toFixed(4)} → ${heldOut.after.toFixed(4)} (${(100 * heldOut.drop).toFixed(2)} % lower; torch and diffusers: 1.1723 → 1.1492, 2.0 %)`],
  ...training.sdxl.flatMap((e): Array<[string, string]> => {
    const at = `SDXL UNet on paper, ${e.shape.resolution}x${e.shape.resolution}, batch ${e.shape.batchSize}, float32`;
    return [
      [`${at}: weights + kept activations + largest transient + LoRA state (GB)`,
        `${gb(e.weightBytes)} + ${gb(e.keptActivationBytes)} + ${gb(e.transientBytes)} + ${gb(e.loraBytes)} = ${gb(e.totalBytes)}`],
      [`${at}: attention probabilities among the kept activations (GB)`, gb(e.attentionProbabilityBytes)],
      [`${at}: fits a ${largestCard} GB card`, fitsLargestCard(e.totalBytes)],
      [`${at}, gradient checkpointing: weights + held + largest segment + largest transient + LoRA state (GB)`,
        `${gb(e.weightBytes)} + ${gb(e.checkpointBytes)} + ${gb(e.largestSegmentBytes)} + ${gb(e.transientBytes)} + ${gb(e.loraBytes)} = ${gb(e.checkpointedTotalBytes)}`],
      [`${at}, gradient checkpointing: fits a ${largestCard} GB card`, fitsLargestCard(e.checkpointedTotalBytes)],
    ];
  }),
];
console.log('[training, tiny SDXL, cpu]');
for (const [size, step, unet, ratio, host, checkpointed, cost] of speedRows) {
  console.log(`  ${size}: step ${step} s, UNet forward ${unet} s, ratio ${ratio}, host share ${host}; with checkpointing ${checkpointed} s (${cost}×)`);
}
for (const [name, value] of trainingRows) console.log(`  ${name}: ${value}`);

const redis = await resolveRedis(process.env);
const queue = await benchQueue(redis.url);
const bot = await benchBot(redis.url, TINY_MODEL_DIR);
await redis.privateServer?.stop();
const queueRows: Array<[string, string]> = [
  [`enqueue → pick-up latency, idle worker, p50 (${queue.latencySamples} jobs, ms)`, queue.pickupP50Ms.toFixed(2)],
  ['enqueue → pick-up latency, idle worker, p99 (ms)', queue.pickupP99Ms.toFixed(2)],
  [`jobs per second, one worker, no-op processor (${queue.throughputJobs} jobs)`, queue.jobsPerSecond.toFixed(0)],
];
console.log('[queue, no-op processor]');
for (const [name, value] of queueRows) console.log(`  ${name}: ${value}`);

const botRows: Array<[string, string]> = [
  [`slash command → acknowledged, one at a time, p50 (${bot.sequentialCommands} commands, ms)`, String(bot.ackP50Ms)],
  ['slash command → acknowledged, one at a time, p99 (ms)', String(bot.ackP99Ms)],
  ['slash command → image in the channel, idle worker, p50 (ms)', String(bot.deliveredP50Ms)],
  ['slash command → image in the channel, idle worker, p99 (ms)', String(bot.deliveredP99Ms)],
  [`${bot.burstCommands} commands at once → acknowledged, p50 (ms)`, String(bot.burstAckP50Ms)],
  [`${bot.burstCommands} commands at once → acknowledged, slowest (ms; Discord allows 3000)`, String(bot.burstAckMaxMs)],
];
console.log('[bot, local Discord]');
for (const [name, value] of botRows) console.log(`  ${name}: ${value}`);

const markdown = [
  '# Benchmarks',
  '',
  'Written by `npm run bench`; numbers from one run on the machine below. They are measurements, not limits: tests never assert timings.',
  '',
  `- date: ${new Date().toISOString().slice(0, 10)}`,
  `- machine: ${machine()}`,
  '',
  '## Image pipeline',
  '',
  ...sections,
  '## Triptych and LoRA branch',
  '',
  'Tiny SDXL on CPU, 128x128, 20 steps, guidance 13, the kohya test LoRA. Memory: resident set of a fresh process after loading and one image, median of 5 processes each. Switching: a worker-style pipeline (LoRA branches, no LoRA at start) alternates between the kohya test LoRA and the weights diffusers trained in case b1, feeding other weights to the same session.',
  '',
  '| figure | value |',
  '| --- | --- |',
  ...loraRows.map(([name, value]) => `| ${name} | ${value} |`),
  '',
  '## UNet batches and memory',
  '',
  'A triptych is one UNet batch of six rows per step (an unconditional and a text row per panel). `WORKER_MAX_BATCH` (or a `WORKER_MEMORY_GB` budget, through the estimate) splits it into runs of fewer rows; the images are the same within 1/255 (test/compare.test.ts). Tiny model on CPU with the kohya test LoRA: the mean of 3 triptychs after a warm-up, and the peak resident memory of a fresh process that makes one (median of 3). SDXL: `src/gpu/memory-estimate.ts`\'s inference estimate from the UNet\'s config (three copies of the largest attention\'s scores and the skip connections per row), not a measurement; a 24 GB card takes the fp32 triptych in runs of two rows. The float16 figures are the conversions around each UNet run of an fp16 export, median of 20.',
  '',
  '| figure | value |',
  '| --- | --- |',
  ...batchRows.map(([name, value]) => `| ${name} | ${value} |`),
  '',
  '## Training',
  '',
  `Tiny SDXL on CPU, LoRA rank 4 on every attention projection. A training step is what \`wrongbot train\` does per step (the training graph's forward and backward pass, gradient clipping, AdamW on the host); the UNet forward is one run of the plain UNet over the same rows. Median of ${training.steps} of each after warm-up. Host share: the step's time outside onnxruntime's run(). Gradient checkpointing (\`--gradient-checkpointing\`) recomputes each resnet's and transformer block's forward values during the backward pass instead of keeping them. Peak resident memory: the resident high-water mark of a fresh process that loads the model and takes one step, median of ${training.memorySamples} processes each; it is Linux's VmHWM, because \`process.resourceUsage().maxRSS\` of a child carries over the high-water mark of the benchmark process that forked it. The paper estimates are \`src/gpu/memory-estimate.ts\`'s, from the UNet's config, not measurements; the held-out figure is the experiment of test/support/held-out.ts.`,
  '',
  '| size, batch | training step (s) | UNet forward (s) | step ÷ forward | host share of the step | step with checkpointing (s) | checkpointing ÷ without |',
  '| --- | --- | --- | --- | --- | --- | --- |',
  ...speedRows.map((cells) => `| ${cells.join(' | ')} |`),
  '',
  '| figure | value |',
  '| --- | --- |',
  ...trainingRows.map(([name, value]) => `| ${name} | ${value} |`),
  '',
  '## Job queue',
  '',
  'BullMQ on the Redis the benchmark finds (REDIS_URL, else 127.0.0.1:6379, else a private server), with a processor that does nothing: the queue\'s own share of a job\'s time.',
  '',
  '| figure | value |',
  '| --- | --- |',
  ...queueRows.map(([name, value]) => `| ${name} | ${value} |`),
  '',
  '## Bot',
  '',
  'The real bot and worker processes against the local Discord (times from its clock), /imagine on the tiny model at 64x64 with 2 steps. An image waits at least 2 s after the first "queued" edit, since a message is edited at most every 2 s.',
  '',
  '| figure | value |',
  '| --- | --- |',
  ...botRows.map(([name, value]) => `| ${name} | ${value} |`),
  '',
].join('\n');
// The test suite's times are measured by running the suite, not by this benchmark: its section is carried over.
const benchmarksFile = path.join(REPO_ROOT, 'BENCHMARKS.md');
const previous = existsSync(benchmarksFile) ? readFileSync(benchmarksFile, 'utf8') : '';
const suiteSection = /^## Test suite\n[\s\S]*?(?=^## |(?![\s\S]))/m.exec(previous)?.[0] ?? '';
await writeFile(benchmarksFile, suiteSection === '' ? markdown : `${markdown}\n${suiteSection.trimEnd()}\n`);
console.log('wrote BENCHMARKS.md');
