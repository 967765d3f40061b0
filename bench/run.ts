import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { decodeToRgb } from '../src/gpu/image.js';
import { formatDevice, parseDevice } from '../src/gpu/providers.js';
import { benchPipeline, type PipelineFigures } from './pipeline.js';

// `npm run bench`: prints the figures and rewrites BENCHMARKS.md with them, the machine and the date.
// BENCH_DEVICES=cpu,webgpu,cuda on a GPU host also checks each device's image against the CPU's.

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TINY_MODEL_DIR = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-sdxl');

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
].join('\n');
await writeFile(path.join(REPO_ROOT, 'BENCHMARKS.md'), markdown);
console.log('wrote BENCHMARKS.md');
