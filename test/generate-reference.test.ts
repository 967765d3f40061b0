import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { runCli, type CliResult } from './support/cli.js';
import { fixturePath } from './support/fixtures.js';
import { maxPixelDifference } from './support/pixels.js';
import {
  BASE_REFERENCE_CASES, REFERENCE_CASES, REFINER_REFERENCE_CASES, RESCALE_REFERENCE_CASES, generateArgs, type ReferenceCase,
} from './support/reference-cases.js';
import { writeSafetensors, type TensorToWrite } from './support/safetensors-writer.js';

// The acceptance bar: `wrongbot generate` gives diffusers' image within one 8-bit level, on both export styles,
// with a LoRA in every key format users have, with the refiner hand-off and with guidance rescale. Every reference
// case runs in one process against diffusers' arrays in sdxl-pipeline.test.ts and refiner.test.ts; a model load
// costs far more than a generation, so the command runs only where its own part is at stake: the arguments it
// turns into a request, and one run per LoRA key format (lora-file.test.ts checks each format's weights exactly).

const outDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-generate-'));
test.after(() => rmSync(outDir, { recursive: true, force: true }));

async function generateMatches(args: string[], out: string, expectedPng: string): Promise<CliResult> {
  const result = await runCli(args);
  assert.equal(result.code, 0, result.stderr);
  assert.match(result.stdout, /timings: .*onnxruntime [\d.]+ s/);
  const difference = await maxPixelDifference(out, expectedPng);
  assert.ok(difference <= 1, `max 8-bit difference ${difference}`);
  return result;
}

test('the reference sets hold the cases these tests depend on', () => {
  assert.ok(BASE_REFERENCE_CASES.length >= 8, `only ${BASE_REFERENCE_CASES.length} base cases`);
  assert.equal(REFERENCE_CASES.filter((c) => c.lora).length, 2);
  assert.equal(REFINER_REFERENCE_CASES.length, 6);
  assert.equal(RESCALE_REFERENCE_CASES.length, 2);
});

function baseCase(what: string, matches: (c: ReferenceCase) => boolean): ReferenceCase {
  const found = BASE_REFERENCE_CASES.find(matches);
  assert.ok(found, `a base reference case with ${what}`);
  return found;
}

// No --negative (zeros) against --negative "" (encoded), and a width that is not the height, on both export styles.
const CLI_CASES: Array<[model: string, c: ReferenceCase]> = [
  ['tiny-sdxl', baseCase('no negative prompt and guidance', (c) => c.negative_prompt === null && c.guidance_scale > 1)],
  ['tiny-sdxl', baseCase('an empty negative prompt', (c) => c.negative_prompt === '')],
  ['tiny-sdxl-legacy-io', baseCase('width and height that differ', (c) => c.width !== c.height)],
];

for (const [model, c] of CLI_CASES) {
  test(`${model}: generate ${c.id} equals diffusers within 1/255`, async () => {
    const out = path.join(outDir, `${model}-${c.id}.png`);
    const result = await generateMatches(generateArgs(c, fixturePath(model), out), out, fixturePath('reference', c.dir, 'image.png'));
    assert.match(result.stdout, new RegExp(`^seed ${c.seed}$`, 'm'));
  });
}

test('generate --guidance-rescale reproduces diffusers\' guidance_rescale', async () => {
  const c = RESCALE_REFERENCE_CASES.find((candidate) => candidate.negative_prompt !== null)!;
  const out = path.join(outDir, `${c.dir}.png`);
  const rescale = ['--guidance-rescale', String(c.guidance_rescale)];
  await generateMatches(generateArgs(c, fixturePath('tiny-sdxl'), out, rescale), out, fixturePath('reference-rescale', c.dir, 'image.png'));
});

for (const c of REFERENCE_CASES.filter((candidate) => candidate.lora)) {
  test(`generate --lora ${c.lora!.file} reproduces ${c.id}`, async () => {
    const out = path.join(outDir, `${c.id}.png`);
    const lora = ['--lora', fixturePath('tiny-sdxl-lora', c.lora!.file), '--strength', String(c.lora!.scale)];
    await generateMatches(generateArgs(c, fixturePath('tiny-sdxl'), out, lora), out, fixturePath('reference', c.dir, 'image.png'));
  });
}

/** SGM (original Stability) block names for the diffusers attention modules of the tiny UNet. */
function sgmName(module: string): string {
  return module
    .replace(/^down_blocks\.(\d+)\.attentions\.(\d+)/, (_, block, attention) => `input_blocks.${Number(block) * 3 + Number(attention) + 1}.1`)
    .replace(/^up_blocks\.(\d+)\.attentions\.(\d+)/, (_, block, attention) => `output_blocks.${Number(block) * 3 + Number(attention)}.1`)
    .replace(/^mid_block\.attentions\.0/, 'middle_block.1');
}

const KEY_FORMATS: Record<string, (module: string, part: 'down' | 'up') => string> = {
  'diffusers lora.down/up': (module, part) => `unet.${module}.lora.${part}.weight`,
  'attention processor (2023)': (module, part) => {
    const [, block, projection] = /^(.*)\.(to_q|to_k|to_v|to_out\.0)$/.exec(module)!;
    return `unet.${block}.processor.${projection!.replace('.0', '')}_lora.${part}.weight`;
  },
  'kohya with SGM block names': (module, part) => `lora_unet_${sgmName(module).replaceAll('.', '_')}.lora_${part}.weight`,
};

for (const [format, keyOf] of Object.entries(KEY_FORMATS)) {
  test(`generate --lora in the ${format} key format reproduces the PEFT reference case`, async () => {
    const c = REFERENCE_CASES.find((candidate) => candidate.lora?.file.includes('peft'))!;
    const peft = await SafetensorsFile.open(fixturePath('tiny-sdxl-lora', c.lora!.file));
    const tensors: Record<string, TensorToWrite> = {};
    try {
      for (const [name, entry] of peft.entries) {
        const match = /^unet\.(.+)\.lora_(A|B)\.weight$/.exec(name);
        assert.ok(match, `unexpected key ${name}`);
        tensors[keyOf(match[1]!, match[2] === 'A' ? 'down' : 'up')] = { dtype: 'F32', shape: entry.shape, data: await peft.readFloat32(name) };
      }
    } finally {
      await peft.close();
    }
    const file = path.join(outDir, `${format.replace(/\W+/g, '-')}.safetensors`);
    await writeSafetensors(file, tensors);
    const out = path.join(outDir, `${c.id}-${format.replace(/\W+/g, '-')}.png`);
    const lora = ['--lora', file, '--strength', String(c.lora!.scale)];
    await generateMatches(generateArgs(c, fixturePath('tiny-sdxl'), out, lora), out, fixturePath('reference', c.dir, 'image.png'));
  });
}

// One hand-off with a LoRA on the base, one without guidance in a wide image: --refiner, --denoising-end and --lora
// together reach the pipeline.
for (const c of [REFINER_REFERENCE_CASES.find((r) => r.lora)!, REFINER_REFERENCE_CASES.find((r) => !r.lora && r.width !== r.height)!]) {
  test(`generate --refiner reproduces ${c.id}`, async () => {
    const out = path.join(outDir, `${c.id}.png`);
    const extra = [
      '--refiner', fixturePath('tiny-sdxl-refiner'), '--denoising-end', String(c.high_noise_frac),
      ...(c.lora ? ['--lora', fixturePath('tiny-sdxl-lora', c.lora.file), '--strength', String(c.lora.scale)] : []),
    ];
    await generateMatches(generateArgs(c, fixturePath('tiny-sdxl'), out, extra), out, fixturePath('reference-refiner', c.dir, 'image.png'));
  });
}
