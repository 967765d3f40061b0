import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { LoraFileError, loadLora } from '../src/gpu/lora/lora-file.js';
import type { LoadedLora, LoraTarget } from '../src/gpu/lora/lora-types.js';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { fixturePath, readFixtureJson } from './support/fixtures.js';
import { writeSafetensors, type TensorToWrite } from './support/safetensors-writer.js';

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-lora-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const info = readFixtureJson<{ rank: number; modules: string[] }>('tiny-sdxl-lora', 'lora_info.json');
const PEFT_FILE = fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_peft.safetensors');
const KOHYA_FILE = fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_kohya.safetensors');
/** Every projection of the tiny UNet's attention is 64 wide (checked against the fixture's shapes below). */
const WIDTH = 64;

const targets: LoraTarget[] = info.modules.map((module) => ({
  module,
  // The graph's scope: '.' becomes '/' except before a ModuleList index (IO.md).
  nodeName: `/${module.replace(/\.(?!\d)/g, '/')}/MatMul`,
  inFeatures: WIDTH,
  outFeatures: WIDTH,
}));

/** The fixture's tiny UNet in SGM block names (layers_per_block 2): only these blocks hold attentions. */
const SGM_BLOCKS: Record<string, string> = {
  'down_blocks.1.attentions.0': 'input_blocks.4.1',
  'down_blocks.1.attentions.1': 'input_blocks.5.1',
  'mid_block.attentions.0': 'middle_block.1',
  'up_blocks.0.attentions.0': 'output_blocks.0.1',
  'up_blocks.0.attentions.1': 'output_blocks.1.1',
  'up_blocks.0.attentions.2': 'output_blocks.2.1',
};

interface PeftPair { down: Float32Array; up: Float32Array }

/** The peft fixture's lora_A / lora_B for each module, read once. */
const peftPairs: Promise<Map<string, PeftPair>> = (async () => {
  const file = await SafetensorsFile.open(PEFT_FILE);
  try {
    const pairs = new Map<string, PeftPair>();
    for (const module of info.modules) {
      pairs.set(module, {
        down: await file.readFloat32(`unet.${module}.lora_A.weight`),
        up: await file.readFloat32(`unet.${module}.lora_B.weight`),
      });
    }
    return pairs;
  } finally {
    await file.close();
  }
})();

/** ΔW = scale · up · down, [out, in] row-major. */
function delta(module: { rank: number; inFeatures: number; outFeatures: number; down: Float32Array; up: Float32Array; scale: number }): Float64Array {
  const { rank, inFeatures, outFeatures, down, up, scale } = module;
  const out = new Float64Array(outFeatures * inFeatures);
  for (let o = 0; o < outFeatures; o++) {
    for (let i = 0; i < inFeatures; i++) {
      let sum = 0;
      for (let r = 0; r < rank; r++) sum += up[o * rank + r]! * down[r * inFeatures + i]!;
      out[o * inFeatures + i] = scale * sum;
    }
  }
  return out;
}

/** Each of the 96 modules is loaded once and its ΔW is the peft fixture's, within `tolerance`. */
async function assertPeftDeltas(lora: LoadedLora, tolerance = 1e-6): Promise<void> {
  const pairs = await peftPairs;
  assert.deepEqual(lora.modules.map((module) => module.module).sort(), [...info.modules].sort());
  for (const module of lora.modules) {
    assert.equal(module.rank, info.rank, module.module);
    const pair = pairs.get(module.module)!;
    const expected = delta({ rank: info.rank, inFeatures: WIDTH, outFeatures: WIDTH, scale: 1, ...pair });
    const actual = delta(module);
    let worst = 0;
    for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
    assert.ok(worst <= tolerance, `${module.module}: ΔW differs by ${worst}`);
  }
}

/** Writes the peft fixture's tensors under other names: `keys` gives each module's tensors. */
async function writeFromPeft(
  name: string,
  keys: (module: string, pair: PeftPair) => Record<string, TensorToWrite>,
): Promise<string> {
  const pairs = await peftPairs;
  const tensors: Record<string, TensorToWrite> = {};
  for (const [module, pair] of pairs) Object.assign(tensors, keys(module, pair));
  const file = path.join(work, `${name}.safetensors`);
  await writeSafetensors(file, tensors);
  return file;
}

const downOf = (pair: PeftPair): TensorToWrite => ({ dtype: 'F32', shape: [info.rank, WIDTH], data: pair.down });
const upOf = (pair: PeftPair, factor = 1): TensorToWrite =>
  ({ dtype: 'F32', shape: [WIDTH, info.rank], data: pair.up.map((value) => value * factor) });
const scalar = (value: number): TensorToWrite => ({ dtype: 'F32', shape: [], data: new Float32Array([value]) });

test('the fixture stores [rank, 64] downs and [64, rank] ups', async () => {
  const file = await SafetensorsFile.open(PEFT_FILE);
  try {
    for (const module of info.modules) {
      assert.deepEqual(file.entries.get(`unet.${module}.lora_A.weight`)?.shape, [info.rank, WIDTH]);
      assert.deepEqual(file.entries.get(`unet.${module}.lora_B.weight`)?.shape, [WIDTH, info.rank]);
    }
  } finally {
    await file.close();
  }
});

test('the peft and kohya fixtures give the same ΔW for all 96 modules', async () => {
  const peft = await loadLora(PEFT_FILE, targets);
  const kohya = await loadLora(KOHYA_FILE, targets);
  assert.deepEqual(peft.skipped, []);
  assert.deepEqual(kohya.skipped, []);
  assert.equal(peft.path, PEFT_FILE);
  // No alpha in the peft file: alpha = rank. The kohya file stores alpha 2 over rank 4, with its up scaled to match.
  assert.ok(peft.modules.every((module) => module.scale === 1));
  assert.ok(kohya.modules.every((module) => module.scale === 0.5));
  assert.notDeepEqual(kohya.modules[0]!.up, peft.modules.find((module) => module.module === kohya.modules[0]!.module)!.up);
  await assertPeftDeltas(peft, 0);
  await assertPeftDeltas(kohya);
});

test('diffusers lora.down / lora.up keys', async () => {
  const file = await writeFromPeft('diffusers', (module, pair) => ({
    [`unet.${module}.lora.down.weight`]: downOf(pair),
    [`unet.${module}.lora.up.weight`]: upOf(pair),
  }));
  const lora = await loadLora(file, targets);
  assert.deepEqual(lora.skipped, []);
  await assertPeftDeltas(lora, 0);
});

test('the 2023 attention-processor keys, to_out_lora being to_out.0', async () => {
  const file = await writeFromPeft('processor', (module, pair) => {
    const [, block, projection] = /^(.+)\.(to_q|to_k|to_v|to_out)(?:\.0)?$/.exec(module)!;
    return {
      [`unet.${block}.processor.${projection}_lora.down.weight`]: downOf(pair),
      [`unet.${block}.processor.${projection}_lora.up.weight`]: upOf(pair),
    };
  });
  const lora = await loadLora(file, targets);
  assert.deepEqual(lora.skipped, []);
  await assertPeftDeltas(lora, 0);
});

test('PEFT keys without the unet. prefix or under base_model.model., with an alpha', async () => {
  const bare = await writeFromPeft('peft-bare', (module, pair) => ({
    [`${module}.lora_A.weight`]: downOf(pair),
    [`${module}.lora_B.weight`]: upOf(pair, 1 / 4),
    [`${module}.alpha`]: scalar(16),
  }));
  await assertPeftDeltas(await loadLora(bare, targets), 0);
  const wrapped = await writeFromPeft('peft-wrapped', (module, pair) => ({
    [`base_model.model.${module}.lora_A.weight`]: downOf(pair),
    [`base_model.model.${module}.lora_B.weight`]: upOf(pair),
  }));
  await assertPeftDeltas(await loadLora(wrapped, targets), 0);
});

test('PEFT files take alpha from diffusers\' lora_adapter_metadata: lora_alpha, then alpha_pattern', async () => {
  const pairs = await peftPairs;
  const patterned = info.modules[0]!;
  const tensors: Record<string, TensorToWrite> = {};
  for (const [module, pair] of pairs) {
    tensors[`unet.${module}.lora_A.weight`] = downOf(pair);
    // Stored up scaled down by alpha / rank, so the loaded ΔW equals the fixture's only if alpha is read.
    tensors[`unet.${module}.lora_B.weight`] = upOf(pair, module === patterned ? 1 / 3 : 1 / 2);
  }
  const file = path.join(work, 'peft-metadata-alpha.safetensors');
  const config = { 'unet.r': 4, 'unet.lora_alpha': 8, 'unet.alpha_pattern': { [patterned]: 12 } };
  await writeSafetensors(file, tensors, { format: 'pt', lora_adapter_metadata: JSON.stringify(config) });
  await assertPeftDeltas(await loadLora(file, targets));

  const broken = path.join(work, 'peft-metadata-broken.safetensors');
  await writeSafetensors(broken, tensors, { lora_adapter_metadata: '{"unet.lora_alpha": "eight"}' });
  await assert.rejects(loadLora(broken, targets), /lora_adapter_metadata has lora_alpha "eight"/);
});

test('kohya keys in SGM block names, with an alpha that is not the rank', async () => {
  const file = await writeFromPeft('kohya-sgm', (module, pair) => {
    const [, block, rest] = /^(\w+\.\d+\.attentions\.\d+|mid_block\.attentions\.0)\.(.+)$/.exec(module)!;
    const stem = `lora_unet_${`${SGM_BLOCKS[block!]!}.${rest!}`.replaceAll('.', '_')}`;
    return {
      [`${stem}.alpha`]: scalar(8),
      [`${stem}.lora_down.weight`]: downOf(pair),
      [`${stem}.lora_up.weight`]: upOf(pair, 1 / 2),
    };
  });
  const lora = await loadLora(file, targets);
  assert.deepEqual(lora.skipped, []);
  assert.ok(lora.modules.every((module) => module.scale === 2));
  await assertPeftDeltas(lora, 0);
});

test('SGM block numbers follow layers_per_block', async () => {
  const pair = (await peftPairs).get('down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q')!;
  const file = path.join(work, 'sgm-one-layer.safetensors');
  const stem = 'lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q';
  await writeSafetensors(file, { [`${stem}.lora_down.weight`]: downOf(pair), [`${stem}.lora_up.weight`]: upOf(pair) });
  const lora = await loadLora(file, targets, { layersPerBlock: 1 });
  assert.deepEqual(lora.modules.map((module) => module.module), ['down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q']);
  // With SDXL's two layers per block, input_blocks.3 is a downsampler.
  await assert.rejects(loadLora(file, targets), LoraFileError);
});

test('keys that cannot be applied are reported by name with the reason', async () => {
  const pairs = await peftPairs;
  const toQ = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q';
  const toK = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k';
  const toV = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v';
  const toOut = 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0';
  const attn2 = 'down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q';
  const pair = pairs.get(toQ)!;
  const tensors: Record<string, TensorToWrite> = {
    [`unet.${toQ}.lora_A.weight`]: downOf(pair),
    [`unet.${toQ}.lora_B.weight`]: upOf(pair),
    // Text encoders, in kohya and diffusers names.
    'lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight': downOf(pair),
    'lora_te2_text_model_encoder_layers_0_self_attn_q_proj.alpha': scalar(4),
    'text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight': downOf(pair),
    'text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight': upOf(pair),
    // A projection the graph does not offer, and a convolution.
    'unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.lora_A.weight': downOf(pair),
    'unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.lora_B.weight': upOf(pair),
    'lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight': { dtype: 'F32', shape: [4, 32, 3, 3], data: new Float32Array(4 * 32 * 9) },
    'lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight': { dtype: 'F32', shape: [32, 4, 1, 1], data: new Float32Array(32 * 4) },
    // A down of the wrong width; a down without its up; the same module twice; DoRA; an unknown suffix.
    [`unet.${toK}.lora_A.weight`]: { dtype: 'F32', shape: [4, 32], data: new Float32Array(4 * 32) },
    [`unet.${toK}.lora_B.weight`]: upOf(pair),
    [`unet.${toV}.lora_A.weight`]: downOf(pair),
    [`lora_unet_${toQ.replaceAll('.', '_')}.lora_down.weight`]: downOf(pair),
    [`lora_unet_${toQ.replaceAll('.', '_')}.lora_up.weight`]: upOf(pair),
    [`unet.${toOut}.lora_A.weight`]: downOf(pair),
    [`unet.${toOut}.lora_B.weight`]: upOf(pair),
    [`unet.${toOut}.lora_magnitude_vector`]: { dtype: 'F32', shape: [WIDTH], data: new Float32Array(WIDTH) },
    [`lora_unet_${attn2.replaceAll('.', '_')}.hada_w1_a`]: downOf(pair),
  };
  const file = path.join(work, 'mixed.safetensors');
  await writeSafetensors(file, tensors);
  const lora = await loadLora(file, targets);
  assert.deepEqual(lora.modules.map((module) => module.module), [toQ]);
  const reasons = new Map(lora.skipped.map(({ key, reason }) => [key, reason]));
  const expect = (key: string, reason: RegExp): void => {
    assert.ok(reasons.has(key), `${key} is not in skipped`);
    assert.match(reasons.get(key)!, reason, key);
    reasons.delete(key);
  };
  for (const key of [
    'lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight',
    'lora_te2_text_model_encoder_layers_0_self_attn_q_proj.alpha',
    'text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight',
    'text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight',
  ]) expect(key, /^text-encoder LoRA is not supported/);
  for (const role of ['A', 'B']) {
    expect(`unet.down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2.lora_${role}.weight`,
      /the UNet graph has no LoRA-patchable projection down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.ff\.net\.2$/);
    expect(`unet.${toOut}.lora_${role}.weight`, /^DoRA/);
    expect(`lora_unet_${toQ.replaceAll('.', '_')}.lora_${role === 'A' ? 'down' : 'up'}.weight`,
      new RegExp(`module ${toQ.replaceAll('.', '\\.')} is already loaded from unet\\.${toQ.replaceAll('.', '\\.')}\\.lora_A\\.weight`));
    expect(`unet.${toK}.lora_${role}.weight`, /^down \[4,32\] and up \[64,4\] do not fit .*attn1\.to_k \(expected down \[rank, 64\] and up \[64, rank\]\)$/);
  }
  for (const part of ['down', 'up']) expect(`lora_unet_down_blocks_0_resnets_0_conv1.lora_${part}.weight`, /^convolution LoRA \(LoCon\) is not supported/);
  expect(`unet.${toOut}.lora_magnitude_vector`, /^DoRA/);
  expect(`unet.${toV}.lora_A.weight`, /attn1\.to_v has no up weight to pair with$/);
  expect(`lora_unet_${attn2.replaceAll('.', '_')}.hada_w1_a`, /^not a LoRA down\/up\/alpha key in any known format/);
  assert.deepEqual([...reasons.keys()], [], 'every skipped key is expected');
  // Every key is either applied (to_q's pair) or skipped: none vanishes.
  assert.equal(lora.skipped.length + 2, Object.keys(tensors).length);
});

test('a file with no UNet LoRA key is an error that shows some of its keys', async () => {
  const pair = (await peftPairs).values().next().value!;
  const file = path.join(work, 'text-encoder-only.safetensors');
  await writeSafetensors(file, {
    'lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight': downOf(pair),
    'lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight': upOf(pair),
  });
  await assert.rejects(loadLora(file, targets), (error: unknown) => {
    assert.ok(error instanceof LoraFileError);
    assert.equal(error.message, `${file}: none of its 2 tensors is a LoRA weight for a projection of this UNet; e.g. `
      + '"lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight" (text-encoder LoRA is not supported: '
      + 'only the UNet is patched); "lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight" '
      + '(text-encoder LoRA is not supported: only the UNet is patched)');
    return true;
  });
  const empty = path.join(work, 'empty.safetensors');
  await writeSafetensors(empty, {});
  await assert.rejects(loadLora(empty, targets), { name: 'LoraFileError', message: `${empty}: none of its 0 tensors is a LoRA weight for a projection of this UNet` });
});
