import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { runCli } from './support/cli.js';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { decodeToRgb } from '../src/gpu/image.js';
import { SdxlPipeline } from '../src/gpu/sdxl-pipeline.js';
import { WEIGHTING_SYNTAXES } from '../src/common/generation-limits.js';
import { fixturePath, readFixtureJson } from './support/fixtures.js';
import { writeSafetensors, type TensorToWrite } from './support/safetensors-writer.js';
import type { OptionSpec } from '../src/cli/options.js';
import { BOT_OPTIONS } from '../src/cli/bot.js';
import { COMPARE_OPTIONS } from '../src/cli/compare.js';
import { DOCTOR_OPTIONS } from '../src/cli/doctor.js';
import { DATASET_OPTIONS } from '../src/cli/dataset.js';
import { DEPLOY_OPTIONS } from '../src/cli/deploy-commands.js';
import { ENQUEUE_OPTIONS } from '../src/cli/enqueue.js';
import { GENERATE_OPTIONS } from '../src/cli/generate.js';
import { MODELS_OPTIONS } from '../src/cli/models.js';
import { NOISE_OPTIONS } from '../src/cli/noise.js';
import { SANDBOX_OPTIONS } from '../src/cli/sandbox.js';
import { START_OPTIONS } from '../src/cli/start.js';
import { TOKENIZE_OPTIONS } from '../src/cli/tokenize.js';
import { TRAIN_OPTIONS } from '../src/cli/train.js';
import { WORKER_OPTIONS } from '../src/cli/worker.js';

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-cli-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const MODEL = fixturePath('tiny-sdxl');
const GOOD = ['--model', MODEL, '--prompt', 'a cat', '--seed', '1', '--steps', '2', '--width', '64', '--height', '64'];

function generateWith(overrides: Record<string, string | null>): string[] {
  const args = new Map<string, string>();
  for (let i = 0; i < GOOD.length; i += 2) args.set(GOOD[i]!, GOOD[i + 1]!);
  for (const [flag, value] of Object.entries(overrides)) {
    if (value === null) args.delete(flag);
    else args.set(flag, value);
  }
  return ['generate', ...[...args].flat(), '--out', path.join(work, 'out.png')];
}

test('bad generate arguments exit non-zero with one line naming the argument and its value', async () => {
  const cases: Array<[Record<string, string | null>, RegExp]> = [
    [{ '--width': '104' }, /--width 104 must be a multiple of 16/],
    [{ '--height': '0' }, /--height 0 must be an integer from 16 to 4096/],
    [{ '--steps': '0' }, /--steps 0 must be an integer from 1 to 500/],
    [{ '--steps': '-5' }, /--steps -5 must be an integer/],
    [{ '--steps': 'ten' }, /--steps "ten" is not an integer/],
    [{ '--guidance': 'NaN' }, /--guidance "NaN" is not a finite number/],
    [{ '--seed': '-1' }, /--seed -1 must be an integer from 0/],
    [{ '--provider': 'tpu' }, /device "tpu" is not supported; choose one of cpu, cuda, cuda:N, webgpu/],
    [{ '--provider': 'cpu:1' }, /cpu takes no device index/],
    [{ '--model': path.join(work, 'no-such-model') }, /model folder .*no-such-model does not exist/],
    [{ '--prompt': null }, /--prompt is required/],
    [{ '--model': null }, /--model is required \(or set MODEL_DIR\)/],
    [{ '--strength': '0.5' }, /--strength needs --lora FILE/],
    [{ '--denoising-end': '0.8' }, /--denoising-end needs --refiner DIR/],
    [{ '--lora': path.join(work, 'missing.safetensors') }, /--lora .*missing\.safetensors does not exist/],
    [{ '--lora': fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_peft.safetensors'), '--strength': '9' }, /--strength 9 must be a number from -4 to 4/],
    [{ '--refiner': MODEL }, /is not an SDXL refiner/],
    [{ '--refiner': fixturePath('tiny-sdxl-refiner'), '--denoising-end': '1.2' }, /--denoising-end 1.2 must be a number between 0 and 1/],
    [{ '--weighting': 'fancy' }, /--weighting "fancy" must be one of auto, compel, a1111, none/],
  ];
  for (const [overrides, message] of cases) {
    const result = await runCli(generateWith(overrides));
    assert.notEqual(result.code, 0, `${JSON.stringify(overrides)} should fail`);
    const lines = result.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line for ${JSON.stringify(overrides)}: ${result.stderr}`);
    assert.match(lines[0]!, message);
  }
});

test('a model folder with a missing file or an unreadable ONNX graph is named in the error', async () => {
  const broken = path.join(work, 'broken-model');
  cpSync(MODEL, broken, { recursive: true });
  rmSync(path.join(broken, 'vae_decoder', 'model.onnx'));
  let result = await runCli(generateWith({ '--model': broken }));
  assert.notEqual(result.code, 0);
  assert.match(result.stderr.trim(), /^wrongbot: model file .*vae_decoder\/model\.onnx is missing$/);

  cpSync(path.join(MODEL, 'vae_decoder'), path.join(broken, 'vae_decoder'), { recursive: true });
  writeFileSync(path.join(broken, 'unet', 'model.onnx'), 'this is not a protobuf');
  result = await runCli(generateWith({ '--model': broken }));
  assert.notEqual(result.code, 0);
  assert.match(result.stderr.trim(), /^wrongbot: unet: cannot load .*unet\/model\.onnx: /);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
});

test('a LoRA file that is not a safetensors file is refused with the reason, and unapplied keys are reported', async () => {
  const hostile = path.join(work, 'hostile.safetensors');
  const header = Buffer.alloc(8);
  header.writeBigUInt64LE(4n * 2n ** 30n);
  writeFileSync(hostile, header);
  let result = await runCli(generateWith({ '--lora': hostile }));
  assert.notEqual(result.code, 0);
  assert.match(result.stderr, /hostile\.safetensors: .*4294967296/);

  const mixed = path.join(work, 'mixed.safetensors');
  const peft = await SafetensorsFile.open(fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_peft.safetensors'));
  const tensors: Record<string, TensorToWrite> = {};
  try {
    for (const [name, entry] of peft.entries) tensors[name] = { dtype: 'F32', shape: entry.shape, data: await peft.readFloat32(name) };
  } finally {
    await peft.close();
  }
  tensors['lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight'] = { dtype: 'F32', shape: [4, 32], data: new Float32Array(128) };
  tensors['lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight'] = { dtype: 'F32', shape: [37, 4], data: new Float32Array(148) };
  await writeSafetensors(mixed, tensors);
  result = await runCli(generateWith({ '--lora': mixed }));
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stderr, /note: LoRA .*mixed\.safetensors: 96 UNet projections patched/);
  assert.match(result.stderr, /note: 2 LoRA keys not applied: text-encoder LoRA is not supported.*lora_te1_text_model_encoder_layers_0_mlp_fc1/);
});

test('the CUDA provider without its libraries says how to install them', async (t) => {
  const result = await runCli(generateWith({ '--provider': 'cuda' }));
  if (result.code === 0) return t.skip('this host has the CUDA provider installed');
  assert.match(result.stderr, /npm run setup:cuda.*CUDA 12 and cuDNN 9/);
});

test('MODEL_DIR and WORKER_DEVICE stand in for --model and --provider, and a bad value names the variable', async () => {
  const args = generateWith({ '--model': null, '--steps': '1' });
  const fromEnvironment = await runCli(args, { MODEL_DIR: MODEL });
  assert.equal(fromEnvironment.code, 0, fromEnvironment.stderr);
  const badDevice = await runCli(args, { MODEL_DIR: MODEL, WORKER_DEVICE: 'tpu' });
  assert.notEqual(badDevice.code, 0);
  assert.match(badDevice.stderr.trim(), /^wrongbot: WORKER_DEVICE: device "tpu" is not supported/);
});

test('WebGPU without a GPU adapter says what it needs', async (t) => {
  const result = await runCli(generateWith({ '--provider': 'webgpu' }));
  if (result.code === 0) return t.skip('this host has a WebGPU adapter');
  assert.match(result.stderr, /WebGPU provider failed to start \(.*adapter.*\): it needs a GPU with a Vulkan, Metal or D3D12 driver/);
});

test('an unknown command prints usage and fails', async () => {
  const result = await runCli(['paint']);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /unknown command "paint"/);
  assert.match(result.stderr, /wrongbot generate \[--model DIR\]/);
});

const DECLARED_OPTIONS: Readonly<Record<string, OptionSpec>> = {
  start: START_OPTIONS, bot: BOT_OPTIONS, 'deploy-commands': DEPLOY_OPTIONS, sandbox: SANDBOX_OPTIONS, generate: GENERATE_OPTIONS,
  compare: COMPARE_OPTIONS, noise: NOISE_OPTIONS, tokenize: TOKENIZE_OPTIONS, train: TRAIN_OPTIONS, worker: WORKER_OPTIONS,
  enqueue: ENQUEUE_OPTIONS, dataset: DATASET_OPTIONS, doctor: DOCTOR_OPTIONS, models: MODELS_OPTIONS,
};

test('--help or -h after any command prints its usage and each option it takes, one line each, and exits 0', async () => {
  const overview = await runCli(['--help']);
  assert.equal(overview.code, 0, overview.stderr);
  const commands = [...overview.stdout.matchAll(/^ {2}wrongbot (\S+)/gm)].map((match) => match[1]!);
  assert.deepEqual([...new Set(commands)].sort(), Object.keys(DECLARED_OPTIONS).sort(), 'every command listed has its options here');
  for (const command of Object.keys(DECLARED_OPTIONS)) {
    const help = await runCli([command, '--help']);
    assert.equal(help.code, 0, `${command} --help: ${help.stderr}`);
    assert.equal(help.stderr, '', command);
    assert.match(help.stdout, new RegExp(`^usage: wrongbot ${command} `), command);
    const lines = help.stdout.split('\n');
    for (const [name, option] of Object.entries(DECLARED_OPTIONS[command]!)) {
      const flag = option.type === 'boolean' ? `--${name}` : `--${name} ${option.value}`;
      assert.ok(lines.some((line) => line.startsWith(`  ${flag} `) && line.endsWith(` ${option.description}`)), `${command} --help lists ${flag}:\n${help.stdout}`);
    }
    assert.ok(lines.some((line) => /^ {2}-h, --help +this help$/.test(line)), `${command} --help:\n${help.stdout}`);
  }
  // Among other arguments, -h wins: nothing runs, and options that would be required or wrong are not looked at.
  const short = await runCli(['generate', '--prompt', 'a cat', '--steps', 'ten', '-h']);
  assert.equal(short.code, 0, short.stderr);
  assert.equal(short.stdout, (await runCli(['generate', '--help'])).stdout);
  const nested = await runCli(['sandbox', 'press', '123', '-h'], { SANDBOX_URL: 'http://127.0.0.1:9/_sandbox' });
  assert.equal(nested.code, 0, nested.stderr);
  assert.match(nested.stdout, /^ {2}--emoji E +the reaction/m);
});

test('noise writes torch.randn as little-endian float32', async () => {
  interface RandnCase { shape: number[]; seed: number; sha256_f32le: string }
  const cases = readFixtureJson<{ cases: RandnCase[] }>('torch-randn.json').cases;
  for (const c of cases) {
    const out = path.join(work, `noise-${c.seed}.bin`);
    const result = await runCli(['noise', '--seed', String(c.seed), '--shape', c.shape.join(','), '--out', out]);
    assert.equal(result.code, 0, result.stderr);
    const digest = createHash('sha256').update(readFileSync(out)).digest('hex');
    assert.equal(digest, c.sha256_f32le, `seed ${c.seed} shape ${c.shape}`);
  }
  const bad = await runCli(['noise', '--seed', '1', '--shape', '1,x,8', '--out', path.join(work, 'bad.bin')]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /--shape "1,x,8" must be positive integers/);
});

test('tokenize prints the 77 ids each text encoder receives', async () => {
  interface TokenCase { text: string; input_ids_tokenizer: number[]; input_ids_tokenizer_2: number[] }
  const cases = readFixtureJson<{ cases: TokenCase[] }>('clip-tokens.json').cases;
  for (const c of cases.slice(0, 4)) {
    const result = await runCli(['tokenize', '--model', MODEL, '--text', c.text]);
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(JSON.parse(result.stdout), { tokenizer: c.input_ids_tokenizer, tokenizer_2: c.input_ids_tokenizer_2 });
  }
});

test('--negative "" is an empty prompt and differs from no --negative', async () => {
  const withEmpty = path.join(work, 'negative-empty.png');
  const without = path.join(work, 'negative-none.png');
  const base = ['generate', ...GOOD, '--guidance', '7.5'];
  assert.equal((await runCli([...base, '--negative', '', '--out', withEmpty])).code, 0);
  assert.equal((await runCli([...base, '--out', without])).code, 0);
  assert.notDeepEqual(readFileSync(withEmpty), readFileSync(without));
});

test('a missing seed is picked and printed so the image can be made again', async () => {
  const first = path.join(work, 'random-seed.png');
  const args = generateWith({ '--seed': null }).slice(0, -2);
  const result = await runCli([...args, '--out', first]);
  assert.equal(result.code, 0, result.stderr);
  const seed = /^seed (\d+)$/m.exec(result.stdout)?.[1];
  assert.ok(seed, result.stdout);
  const again = path.join(work, 'same-seed.png');
  assert.equal((await runCli([...args, '--seed', seed, '--out', again])).code, 0);
  assert.deepEqual(readFileSync(again), readFileSync(first));
});

test('--weighting: the command draws what the pipeline draws in each mode, and the modes read a weighted prompt differently', async () => {
  // A1111's (word:weight) makes auto choose A1111; compel reads "dog++" as a weight instead, none reads it all as text.
  const prompt = 'a photo of a (cat:1.5), dog++';
  const syntaxUsed: Record<string, string | null> = { auto: 'a1111', compel: 'compel', a1111: 'a1111', none: null };
  const settings = { '--prompt': prompt, '--negative': 'wrong', '--steps': '4', '--guidance': '7.5' };
  const pipeline = await SdxlPipeline.load(MODEL, { kind: 'cpu', index: 0 });
  const images = new Map<string, Uint8Array>();
  try {
    for (const weighting of WEIGHTING_SYNTAXES) {
      const out = path.join(work, `weighting-${weighting}.png`);
      const result = await runCli([...generateWith({ ...settings, '--weighting': weighting }).slice(0, -2), '--out', out]);
      assert.equal(result.code, 0, result.stderr);
      const used = syntaxUsed[weighting];
      assert.deepEqual(result.stderr.match(/^note: prompt uses .*$/gm) ?? [], used === null ? [] : [`note: prompt uses ${used} weighting`], weighting);
      const inProcess = await pipeline.generate({
        seed: 1, steps: 4, width: 64, height: 64, weighting,
        panels: [{ prompt, negativePrompt: 'wrong', guidanceScale: 7.5, guidanceRescale: 0 }],
      });
      const { rgb } = await decodeToRgb(out);
      assert.ok(Buffer.from(rgb).equals(inProcess.panels[0]!.rgb), `${weighting}: the command's image is the pipeline's`);
      images.set(weighting, rgb);
    }
  } finally {
    await pipeline.dispose();
  }
  assert.ok(Buffer.from(images.get('auto')!).equals(images.get('a1111')!), 'auto is A1111 for this prompt');
  // The tiny VAE shrinks what the text changes; the modes still differ well past the one level taken as equal elsewhere.
  for (const [a, b] of [['a1111', 'compel'], ['a1111', 'none'], ['compel', 'none']] as const) {
    const [first, second] = [images.get(a)!, images.get(b)!];
    const difference = first.reduce((max, value, i) => Math.max(max, Math.abs(value - second[i]!)), 0);
    assert.ok(difference > 4, `${a} and ${b} differ by only ${difference} levels`);
  }
});
