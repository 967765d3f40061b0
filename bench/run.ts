import { writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { benchPipeline } from './pipeline.js';

// `npm run bench`: prints the figures and rewrites BENCHMARKS.md with them, the machine and the date.

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TINY_MODEL_DIR = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-sdxl');

function machine(): string {
  const cpus = os.cpus();
  return `${cpus[0]?.model ?? 'unknown CPU'} × ${cpus.length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, `
    + `${os.type()} ${os.release()}, Node ${process.version}, onnxruntime-node ${ort.env.versions.node ?? '?'}`;
}

const pipeline = await benchPipeline(TINY_MODEL_DIR);
const rows: Array<[string, string]> = [
  [`seconds per image (tiny SDXL, ${pipeline.size}, ${pipeline.steps} steps, CFG, CPU)`, pipeline.secondsPerImage.toFixed(3)],
  ['of which inside onnxruntime run()', pipeline.onnxSecondsPerImage.toFixed(3)],
  ['host overhead ratio (job wall time ÷ sum of run() times)', pipeline.overheadRatio.toFixed(3)],
  ['pipeline overhead ratio (pipeline time in the inference thread ÷ run() times)', pipeline.pipelineOverheadRatio.toFixed(3)],
];
for (const [name, value] of rows) console.log(`${name}: ${value}`);

const date = new Date().toISOString().slice(0, 10);
const markdown = [
  '# Benchmarks',
  '',
  'Written by `npm run bench`; numbers from one run on the machine below. They are measurements, not limits: tests never assert timings.',
  '',
  `- date: ${date}`,
  `- machine: ${machine()}`,
  '',
  '## Image pipeline',
  '',
  `Mean over ${pipeline.images} images after one warm-up, through the inference thread as callers use it.`,
  '',
  '| figure | value |',
  '| --- | --- |',
  ...rows.map(([name, value]) => `| ${name} | ${value} |`),
  '',
].join('\n');
await writeFile(path.join(REPO_ROOT, 'BENCHMARKS.md'), markdown);
console.log('wrote BENCHMARKS.md');
