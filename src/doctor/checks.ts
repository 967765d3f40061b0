import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statfsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Redis } from 'ioredis';
import { optionalString, type Env } from '../common/environment.js';
import { bytesText, estimateInferenceMemory, readUnetArchitecture } from '../gpu/memory-estimate.js';
import { openSdxlModelFolder, type SdxlModelFolder } from '../gpu/model-folder.js';
import { dataTypeName, decodeModel, GraphField, readValueInfoElemType, readValueInfoName } from '../gpu/onnx/onnx-proto.js';
import { findLoraTargets } from '../gpu/onnx/lora-graph.js';
import { loadLora } from '../gpu/lora/lora-file.js';
import { EXECUTION_PROVIDERS, parseDevice, type DeviceKind } from '../gpu/providers.js';
import { modelFolderBytes, readBatchLimits } from '../gpu/unet-batches.js';
import { resolveLora, resolveModel } from '../models/resolve.js';

// `wrongbot doctor`: whether this box can serve, one line per thing that must be right, each failing one with its
// fix. `npm start` runs the same checks and stops on a failed one, before any process starts.

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'n/a';

export interface CheckLine {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What to do about a `warn` or `fail`. */
  fix?: string;
}

const MIN_NODE_MAJOR = 20;
const REDIS_TIMEOUT_MS = 2_000;
const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';
/** Less room than this on DATA_DIR's disk fills up with a few days of kept images and a training set. */
const MIN_FREE_DISK_BYTES = 1e9;
const CAPTION_FONT = 'DejaVu Sans';
const GB = 1e9;
const ROWS = { single: 2, triptych: 6 } as const;
const SDXL_SIZE_PATTERN = /^(\d+)x(\d+)$/;

const line = (name: string, status: CheckStatus, detail: string, fix?: string): CheckLine => ({ name, status, detail, ...(fix ? { fix } : {}) });

export function checkNode(version = process.versions.node): CheckLine {
  const major = Number(version.split('.')[0]);
  return major >= MIN_NODE_MAJOR
    ? line('node', 'ok', `Node ${version}`)
    : line('node', 'fail', `Node ${version} is older than ${MIN_NODE_MAJOR}`, `install Node ${MIN_NODE_MAJOR} or newer`);
}

/** The Redis wrongbot would use; with none running and no REDIS_URL, whether it can start its own. */
export async function checkRedis(env: Env): Promise<CheckLine> {
  const configured = optionalString(env, 'REDIS_URL');
  const redis = new Redis(configured ?? DEFAULT_REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 0, connectTimeout: REDIS_TIMEOUT_MS, retryStrategy: () => null });
  redis.on('error', () => {});
  try {
    await redis.connect();
    const [, policy] = (await redis.config('GET', 'maxmemory-policy')) as [string, string];
    const where = configured ?? DEFAULT_REDIS_URL.replace('redis://', '');
    return policy === 'noeviction'
      ? line('redis', 'ok', `${where} answers, eviction policy noeviction`)
      : line('redis', 'warn', `${where} answers, but its eviction policy is ${policy}: under memory pressure BullMQ loses jobs`, 'CONFIG SET maxmemory-policy noeviction (and in redis.conf)');
  } catch (error) {
    if (configured !== null) return line('redis', 'fail', `REDIS_URL ${configured} does not answer (${(error as Error).message})`, 'start that Redis, or unset REDIS_URL to let wrongbot run its own');
    return hasCommand('redis-server')
      ? line('redis', 'ok', 'none at 127.0.0.1:6379; wrongbot starts its own redis-server under DATA_DIR')
      : line('redis', 'fail', 'none at 127.0.0.1:6379, and no redis-server to start', 'apt install redis-server, or set REDIS_URL');
  } finally {
    redis.disconnect();
  }
}

// PATH and LD_LIBRARY_PATH are the system's, read as the shell and the dynamic loader read them: not settings of
// wrongbot's own, so they are not in .env.example.

function hasCommand(command: string): boolean {
  const { PATH: searchPath = '' } = process.env;
  return searchPath.split(path.delimiter).some((dir) => dir !== '' && existsSync(path.join(dir, command)));
}

export interface ModelFacts {
  folder: SdxlModelFolder;
  /** Bytes per element of the UNet's weights: 4 for fp32, 2 for fp16. */
  unetElementBytes: number;
  weightBytes: number;
}

/** Graph input types, read from the graph alone (external weights are not touched). */
async function inputTypes(modelFile: string): Promise<Map<string, string>> {
  const model = decodeModel(new Uint8Array(await readFile(modelFile)));
  const inputs = model.graph.filter((field) => field.number === GraphField.input);
  return new Map(inputs.map((input) => [readValueInfoName(input.payload), dataTypeName(readValueInfoElemType(input.payload))]));
}

export async function checkModel(env: Env): Promise<{ line: CheckLine; facts: ModelFacts | null }> {
  const modelDir = optionalString(env, 'MODEL_DIR');
  const pull = 'npx wrongbot models pull sdxl-base, then MODEL_DIR=stabilityai/stable-diffusion-xl-base-1.0 (or a folder with an optimum ONNX export)';
  if (modelDir === null) return { line: line('model', 'fail', 'MODEL_DIR is not set', pull), facts: null };
  let folder: SdxlModelFolder;
  try {
    folder = openSdxlModelFolder(resolveModel(modelDir, 'MODEL_DIR').path);
  } catch (error) {
    return { line: line('model', 'fail', (error as Error).message, pull), facts: null };
  }
  const files = Object.values(folder.paths).filter((file) => file.endsWith('.onnx'));
  const unet = await inputTypes(folder.paths.unet);
  const vae = await inputTypes(folder.paths.vaeDecoder);
  const unetType = unet.get('sample') ?? 'unknown';
  const vaeType = vae.get('latent_sample') ?? 'unknown';
  const weightBytes = files.reduce((sum, file) => sum + modelFolderBytes(file), 0);
  const facts = { folder, unetElementBytes: unetType === 'float16' ? 2 : 4, weightBytes };
  const detail = `${modelDir}: ${files.length} ONNX models, ${bytesText(weightBytes)}, UNet ${unetType}, VAE decoder ${vaeType}, sides multiples of ${folder.sizeMultiple}`;
  if (vaeType === 'float16') {
    return {
      line: line('model', 'warn', `${detail}: a float16 VAE decoder overflows unless it is the fp16-fix one (the stock SDXL VAE turns images black)`,
        'use an fp32 vae_decoder, or madebyollin/sdxl-vae-fp16-fix exported to ONNX'),
      facts,
    };
  }
  return { line: line('model', 'ok', detail), facts };
}

export async function checkLora(env: Env, model: ModelFacts | null): Promise<CheckLine> {
  const setting = optionalString(env, 'LORA_PATH');
  if (setting === null) return line('lora', 'n/a', 'LORA_PATH is not set: no LoRA until one is trained and promoted');
  let loraPath: string;
  try {
    loraPath = resolveLora(setting, 'LORA_PATH').path;
  } catch (error) {
    return line('lora', 'fail', (error as Error).message, 'npx wrongbot models pull wrong-lora, or fix the path');
  }
  if (!existsSync(loraPath)) return line('lora', 'fail', `LORA_PATH ${loraPath} does not exist`, 'npx wrongbot models pull wrong-lora, or fix the path');
  if (model === null) return line('lora', 'n/a', `${loraPath}: not checked against a UNet (the model failed)`);
  try {
    const targets = findLoraTargets(new Uint8Array(await readFile(model.folder.paths.unet)));
    const lora = await loadLora(loraPath, targets);
    const kinds = [...new Set(lora.modules.map((module) => /\.(to_[a-z]+)(\.\d+)?$/.exec(module.module)?.[1] ?? module.module))].sort().join(', ');
    const skipped = lora.skipped.length === 0 ? '' : `; ${lora.skipped.length} key(s) not applied`;
    return line('lora', 'ok', `${loraPath}: patches ${lora.modules.length} UNet projections (${kinds})${skipped}`);
  } catch (error) {
    return line('lora', 'fail', `${loraPath}: ${(error as Error).message}`, 'use a diffusers or kohya SDXL LoRA in .safetensors');
  }
}

/** Which shared libraries the dynamic loader knows, by file name. */
function loaderLibraries(env: Env): string[] {
  const { LD_LIBRARY_PATH: libraryPath = '' } = env;
  const fromPath = libraryPath.split(':').filter((dir) => dir !== '' && existsSync(dir))
    .flatMap((dir) => { try { return readdirSync(dir); } catch { return []; } });
  let cache: string[] = [];
  try {
    cache = execFileSync('ldconfig', ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').map((entry) => entry.trim().split(' ')[0] ?? '');
  } catch {
    // No ldconfig (not Linux, or not on PATH): only LD_LIBRARY_PATH tells.
  }
  return [...fromPath, ...cache];
}

const PROVIDER_LIBRARIES: Readonly<Record<Exclude<DeviceKind, 'cpu'>, ReadonlyArray<{ library: RegExp; what: string; fix: string }>>> = Object.freeze({
  cuda: [
    { library: /^libcudart\.so\.12/, what: 'CUDA 12 runtime', fix: 'install CUDA 12 and put its lib64 on LD_LIBRARY_PATH' },
    { library: /^libcudnn\.so\.9/, what: 'cuDNN 9', fix: 'install cuDNN 9 for CUDA 12 and put it on LD_LIBRARY_PATH' },
  ],
  webgpu: [{ library: /^libvulkan\.so\.1/, what: 'the Vulkan loader', fix: 'apt install libvulkan1 and the GPU\'s Vulkan driver' }],
});

export function checkProvider(env: Env): CheckLine[] {
  const spec = optionalString(env, 'WORKER_DEVICE') ?? 'cpu';
  let kind: DeviceKind;
  try {
    kind = parseDevice(spec).kind;
  } catch (error) {
    return [line('device', 'fail', (error as Error).message, 'set WORKER_DEVICE to cpu, cuda, cuda:N or webgpu')];
  }
  const lines = [line('device', 'ok', `WORKER_DEVICE ${spec}`)];
  const libraries = kind === 'cpu' ? [] : loaderLibraries(env);
  for (const provider of ['cuda', 'webgpu'] as const) {
    if (provider !== kind) {
      lines.push(line(provider, 'n/a', `not configured (WORKER_DEVICE ${spec})`));
      continue;
    }
    try {
      EXECUTION_PROVIDERS[provider].checkInstalled();
    } catch (error) {
      lines.push(line(provider, 'fail', (error as Error).message, 'npm run setup:cuda'));
      continue;
    }
    const missing = PROVIDER_LIBRARIES[provider].filter(({ library }) => !libraries.some((name) => library.test(name)));
    lines.push(missing.length === 0
      ? line(provider, 'ok', `${PROVIDER_LIBRARIES[provider].map(({ what }) => what).join(', ')} found`)
      : line(provider, 'fail', `${missing.map(({ what }) => what).join(', ')} not found by the dynamic loader`, missing.map(({ fix }) => fix).join('; ')));
  }
  return lines;
}

/** Free memory of the GPU WORKER_DEVICE names, where nvidia-smi can tell; null where nothing can. */
function freeGpuBytes(env: Env): number | null {
  const spec = optionalString(env, 'WORKER_DEVICE') ?? 'cpu';
  const device = parseDevice(spec);
  if (device.kind !== 'cuda' || !hasCommand('nvidia-smi')) return null;
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.free', '--format=csv,noheader,nounits', `--id=${device.index}`], { encoding: 'utf8' });
    return Number(out.trim()) * 2 ** 20;
  } catch {
    return null;
  }
}

export function checkGpuMemory(env: Env): CheckLine {
  const free = freeGpuBytes(env);
  return free === null ? line('gpu memory', 'n/a', 'not readable here (CUDA devices with nvidia-smi only)') : line('gpu memory', 'ok', `${(free / GB).toFixed(1)} GB free`);
}

export function checkDisk(env: Env): CheckLine {
  const dataDir = path.resolve(optionalString(env, 'DATA_DIR') ?? 'data');
  // The disk it will be on, whether or not it exists yet.
  let existing = dataDir;
  while (!existsSync(existing)) existing = path.dirname(existing);
  const stats = statfsSync(existing);
  const free = stats.bavail * stats.bsize;
  const detail = `${(free / GB).toFixed(1)} GB free for DATA_DIR ${dataDir}`;
  return free >= MIN_FREE_DISK_BYTES ? line('disk', 'ok', detail) : line('disk', 'warn', detail, 'free some space, or point DATA_DIR at a larger disk');
}

export function checkFont(): CheckLine {
  if (!hasCommand('fc-list')) return line('font', 'warn', 'fc-list is missing, so the captions\' font cannot be checked', 'apt install fontconfig fonts-dejavu-core');
  const fonts = execFileSync('fc-list', [':family'], { encoding: 'utf8' });
  return fonts.includes(CAPTION_FONT)
    ? line('font', 'ok', `${CAPTION_FONT} for the triptych captions`)
    : line('font', 'warn', `${CAPTION_FONT} is not installed: triptych captions fall back to another font`, 'apt install fonts-dejavu-core');
}

/** The memory estimate of one image and of a triptych at the largest size the bot offers, against the budget. */
export function checkMemoryEstimate(env: Env, model: ModelFacts | null): CheckLine {
  if (model === null) return line('memory', 'n/a', 'no model to estimate');
  const sizes = (optionalString(env, 'IMAGE_SIZES') ?? '').split(',').map((entry) => SDXL_SIZE_PATTERN.exec(entry.trim())).filter((match) => match !== null)
    .map((match) => ({ width: Number(match[1]), height: Number(match[2]) }));
  const side = model.folder.defaultImageSizePx;
  const largest = sizes.length === 0 ? { width: side, height: side } : sizes.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
  const unet = readUnetArchitecture(path.join(path.dirname(model.folder.paths.unet), 'config.json'));
  // The models' files are their weights on the device; each UNet row adds what the estimate gives it.
  const { perRowBytes } = estimateInferenceMemory(unet, { ...largest, vaeScaleFactor: model.folder.vae.scaleFactor, rows: 1, elementBytes: model.unetElementBytes });
  const [single, triptych] = [ROWS.single, ROWS.triptych].map((rows) => model.weightBytes + rows * perRowBytes) as [number, number];
  const detail = `at ${largest.width}x${largest.height}: one image about ${bytesText(single)}, a triptych about ${bytesText(triptych)} (weights and the UNet's peak, estimated from its config)`;
  const { budgetBytes, maxRows } = readBatchLimits(env);
  const room = budgetBytes ?? freeGpuBytes(env);
  if (room === null || triptych <= room || maxRows !== null || budgetBytes !== null) return line('memory', 'ok', detail);
  return line('memory', 'warn', `${detail}, more than the ${(room / GB).toFixed(1)} GB free`, 'set WORKER_MEMORY_GB to the card\'s memory (or WORKER_MAX_BATCH=2)');
}

export async function runChecks(env: Env): Promise<CheckLine[]> {
  const model = await checkModel(env);
  return [
    checkNode(),
    await checkRedis(env),
    model.line,
    await checkLora(env, model.facts),
    ...checkProvider(env),
    checkGpuMemory(env),
    checkDisk(env),
    checkFont(),
    checkMemoryEstimate(env, model.facts),
  ];
}

export function formatChecks(lines: readonly CheckLine[]): string {
  const mark: Readonly<Record<CheckStatus, string>> = { ok: '✔', warn: '!', fail: '✘', 'n/a': '–' };
  const width = Math.max(...lines.map((entry) => entry.name.length));
  return lines.map((entry) => `${mark[entry.status]} ${entry.name.padEnd(width)}  ${entry.detail}${entry.fix ? `\n  ${' '.repeat(width)}  fix: ${entry.fix}` : ''}`).join('\n');
}
