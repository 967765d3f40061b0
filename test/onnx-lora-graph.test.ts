import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import ort from 'onnxruntime-node';
import type { LoraModule } from '../src/gpu/lora/lora-types.js';
import { loraBranchValues } from '../src/gpu/lora/lora-feeds.js';
import { addLoraBranches, findLoraTargets, LORA_STRENGTH_INPUT, loraWeightInputs } from '../src/gpu/onnx/lora-graph.js';
import { buildTrainingForward } from '../src/gpu/onnx/training-graph.js';
import { DataType, decodeModel, encodeModel, encodeNode, encodeTensor, encodeTensorValueInfo, GraphField } from '../src/gpu/onnx/onnx-proto.js';
import { decodeMessage, joinChunks, lengthDelimitedField, stringField, varintField } from '../src/gpu/onnx/protobuf.js';
import { float16BitsToFloat32, toFloat16Array } from '../src/gpu/float16.js';
import { fixturePath, readFixtureJson, readFloat32Fixture } from './support/fixtures.js';

const UNET_DIR = fixturePath('tiny-sdxl', 'unet');
const LEGACY_UNET_DIR = fixturePath('tiny-sdxl-legacy-io', 'unet');
const unetBytes = readFileSync(fixturePath('tiny-sdxl', 'unet', 'model.onnx'));
const legacyUnetBytes = readFileSync(fixturePath('tiny-sdxl-legacy-io', 'unet', 'model.onnx'));
const CASE_DIR = 'pub07_cat_lora_peft_1.0_64';

// Bytes instead of a path, so the external weights need their folder named.
function createSession(bytes: Uint8Array, folder: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, { logSeverityLevel: 3, extra: { session: { model_external_initializers_file_folder_path: folder } } });
}

/** PEFT keys of the tiny fixture, read here so this test does not depend on the LoRA file reader. */
function readPeftLora(): LoraModule[] {
  const file = readFileSync(fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_peft.safetensors'));
  const headerLength = Number(file.readBigUInt64LE(0));
  const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const tensor = (key: string): { shape: number[]; values: Float32Array } => {
    const entry = header[key];
    assert.ok(entry !== undefined && entry.dtype === 'F32', `${key} in the fixture`);
    const [begin, end] = entry.data_offsets;
    const bytes = file.subarray(8 + headerLength + begin, 8 + headerLength + end);
    return { shape: entry.shape, values: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) };
  };
  return Object.keys(header)
    .filter((key) => key.endsWith('.lora_A.weight'))
    .map((key) => {
      const module = key.slice('unet.'.length, -'.lora_A.weight'.length);
      const down = tensor(key);
      const up = tensor(`unet.${module}.lora_B.weight`);
      return { module, rank: down.shape[0]!, inFeatures: down.shape[1]!, outFeatures: up.shape[0]!, down: down.values, up: up.values, scale: 1 };
    });
}

interface CaseJson {
  unet_step0_timestep: number;
  arrays: Record<string, { shape: number[] }>;
}

const caseJson = readFixtureJson<CaseJson>('reference', CASE_DIR, 'case.json');

function step0Tensor(name: string): ort.Tensor {
  return new ort.Tensor('float32', readFloat32Fixture('reference', CASE_DIR, `unet_step0_${name}.bin`), caseJson.arrays[`unet_step0_${name}`]!.shape);
}

function step0Feeds(timestep: ort.Tensor, strength?: readonly number[]): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {
    sample: step0Tensor('sample'),
    timestep,
    encoder_hidden_states: step0Tensor('encoder_hidden_states'),
    text_embeds: step0Tensor('text_embeds'),
    time_ids: step0Tensor('time_ids'),
  };
  if (strength !== undefined) feeds[LORA_STRENGTH_INPUT] = new ort.Tensor('float32', Float32Array.from(strength), [strength.length]);
  return feeds;
}

const timestep = new ort.Tensor('float32', Float32Array.of(caseJson.unet_step0_timestep), []);
const legacyTimestep = new ort.Tensor('int64', BigInt64Array.of(BigInt(caseJson.unet_step0_timestep)), [1]);
const referenceOut = readFloat32Fixture('reference', CASE_DIR, 'unet_step0_out_sample.bin');

async function runUnet(session: ort.InferenceSession, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const result = await session.run(feeds);
  return result['out_sample']!.data as Float32Array;
}

function maxAbsDifference(actual: Float32Array, expected: Float32Array): number {
  assert.equal(actual.length, expected.length, 'length');
  let max = 0;
  for (let i = 0; i < expected.length; i++) max = Math.max(max, Math.abs(actual[i]! - expected[i]!));
  return max;
}

const RANK = 4;

/** The UNet with fed branches on every projection, and the feeds that give those branches `modules`' weights. */
function withFedLora(bytes: Uint8Array, modules: readonly LoraModule[], rank = RANK): { bytes: Uint8Array; feeds: Record<string, ort.Tensor> } {
  const targets = findLoraTargets(bytes);
  const values = loraBranchValues(modules, targets, rank);
  const feeds: Record<string, ort.Tensor> = {};
  for (const target of targets) {
    const names = loraWeightInputs(target.module);
    const { downT, upT } = values.get(target.module)!;
    feeds[names.downT] = new ort.Tensor('float32', downT, [target.inFeatures, rank]);
    feeds[names.upT] = new ort.Tensor('float32', upT, [rank, target.outFeatures]);
  }
  return { bytes: addLoraBranches(bytes, { purpose: 'inference', rank, modules: targets.map((target) => target.module) }), feeds };
}

function half(values: Float32Array, row: 0 | 1): Float32Array {
  const size = values.length / 2;
  return values.subarray(row * size, (row + 1) * size);
}

test('findLoraTargets finds the 96 attention projections the tiny LoRA targets, each 64→64', () => {
  const expected = readFixtureJson<{ modules: string[] }>('tiny-sdxl-lora', 'lora_info.json').modules;
  for (const bytes of [unetBytes, legacyUnetBytes]) {
    const targets = findLoraTargets(bytes);
    assert.equal(targets.length, 96);
    assert.deepEqual(targets.map((t) => t.module).sort(), [...expected].sort());
    for (const target of targets) {
      assert.equal(target.nodeName, `/${target.module.replace(/\.(?!\d)/g, '/')}/MatMul`);
      assert.equal(target.inFeatures, 64, target.module);
      assert.equal(target.outFeatures, 64, target.module);
    }
  }
});

test('decoding and re-encoding every graph message gives the same bytes, which onnxruntime runs identically', async () => {
  const model = decodeModel(unetBytes);
  const graph = model.graph.flatMap((field) =>
    field.wireType === 2 && field.number !== GraphField.name
      ? lengthDelimitedField(field.number, decodeMessage(field.payload).map((inner) => inner.encoded))
      : [field.encoded],
  );
  const rewritten = encodeModel(model, graph);
  assert.ok(Buffer.from(rewritten).equals(unetBytes), 'the round trip changed bytes');

  const [original, roundTripped] = await Promise.all([createSession(unetBytes, UNET_DIR), createSession(rewritten, UNET_DIR)]);
  try {
    assert.deepEqual(await runUnet(roundTripped, step0Feeds(timestep)), await runUnet(original, step0Feeds(timestep)));
  } finally {
    await Promise.all([original.release(), roundTripped.release()]);
  }
});

test('the rewritten UNet matches the base at strength 0 and diffusers\' fused LoRA at strength 1, per batch entry', async (t) => {
  const lora = readPeftLora();
  assert.equal(lora.length, 96);
  const fed = withFedLora(unetBytes, lora);
  const [base, withLora] = await Promise.all([createSession(unetBytes, UNET_DIR), createSession(fed.bytes, UNET_DIR)]);
  try {
    assert.deepEqual([...withLora.inputNames].sort(), [...base.inputNames, LORA_STRENGTH_INPUT, ...Object.keys(fed.feeds)].sort());
    const baseOut = await runUnet(base, step0Feeds(timestep));
    const off = await runUnet(withLora, { ...step0Feeds(timestep, [0, 0]), ...fed.feeds });
    const on = await runUnet(withLora, { ...step0Feeds(timestep, [1, 1]), ...fed.feeds });
    const mixed = await runUnet(withLora, { ...step0Feeds(timestep, [0, 1]), ...fed.feeds });

    const offDifference = maxAbsDifference(off, baseOut);
    const onDifference = maxAbsDifference(on, referenceOut);
    const baseVsReference = maxAbsDifference(baseOut, referenceOut);
    const mixedBase = maxAbsDifference(half(mixed, 0), half(baseOut, 0));
    const mixedLora = maxAbsDifference(half(mixed, 1), half(on, 1));
    t.diagnostic(`strength 0 vs base ${offDifference}; strength 1 vs diffusers ${onDifference} (base vs diffusers ${baseVsReference}); [0, 1]: row 0 vs base ${mixedBase}, row 1 vs strength 1 ${mixedLora}`);

    assert.equal(offDifference, 0);
    assert.ok(onDifference <= 1e-4, `strength 1 differs from diffusers by ${onDifference}`);
    assert.ok(baseVsReference > 1e-2, `the LoRA should change the output, base is within ${baseVsReference} of it`);
    assert.equal(mixedBase, 0);
    assert.equal(mixedLora, 0);
  } finally {
    await Promise.all([base.release(), withLora.release()]);
  }
});

test('the legacy opset-14 UNet with inline weights takes the same branches', async (t) => {
  const fed = withFedLora(legacyUnetBytes, readPeftLora());
  const session = await createSession(fed.bytes, LEGACY_UNET_DIR);
  try {
    const difference = maxAbsDifference(await runUnet(session, { ...step0Feeds(legacyTimestep, [1, 1]), ...fed.feeds }), referenceOut);
    t.diagnostic(`legacy UNet, strength 1 vs diffusers ${difference}`);
    assert.ok(difference <= 1e-4, `strength 1 differs from diffusers by ${difference}`);
  } finally {
    await session.release();
  }
});

test('a module the graph lacks, wrong shapes, a rank above the branches\' and a second rewrite are errors naming what is wrong', () => {
  const [first] = readPeftLora();
  assert.ok(first !== undefined);
  const targets = findLoraTargets(unetBytes);
  const fed = (modules: LoraModule[], rank = RANK) => () => loraBranchValues(modules, targets, rank);
  const missing = { ...first, module: 'down_blocks.1.attentions.0.transformer_blocks.0.ff.net.2' };
  assert.throws(fed([missing]), /LoRA module down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.ff\.net\.2 is not a projection/);
  assert.throws(() => addLoraBranches(unetBytes, { purpose: 'inference', rank: RANK, modules: [missing.module] }), /LoRA module down_blocks\.1\.attentions\.0\.transformer_blocks\.0\.ff\.net\.2 is not a projection/);
  const escaped = first.module.replaceAll('.', '\\.');
  assert.throws(fed([{ ...first, inFeatures: 32, down: first.down.subarray(0, 4 * 32) }]), new RegExp(`LoRA module ${escaped} is 32→64 but .* is 64→64`));
  assert.throws(fed([{ ...first, up: first.up.subarray(1) }]), new RegExp(`LoRA module ${escaped}: up has 255 values`));
  assert.throws(fed([first, first]), /listed twice/);
  assert.throws(fed([first], 2), new RegExp(`LoRA module ${escaped} has rank 4, more than the 2 this UNet's LoRA branches were built for`));
  const once = addLoraBranches(unetBytes, { purpose: 'inference', rank: RANK, modules: [first.module] });
  assert.throws(() => addLoraBranches(once, { purpose: 'inference', rank: RANK, modules: [first.module] }), /already has an input named lora_strength/);
});

test('a LoRA of lower rank than the branches, padded with zeros, gives what it gives at its own rank', async () => {
  const lora = readPeftLora();
  const [own, padded] = [withFedLora(unetBytes, lora, RANK), withFedLora(unetBytes, lora, RANK + 4)];
  const sessions = await Promise.all([own, padded].map((fed) => createSession(fed.bytes, UNET_DIR)));
  try {
    const outputs = await Promise.all(sessions.map((session, i) => runUnet(session, { ...step0Feeds(timestep, [1, 1]), ...[own, padded][i]!.feeds })));
    assert.ok(maxAbsDifference(outputs[1]!, outputs[0]!) <= 1e-6, `padding moved the output by ${maxAbsDifference(outputs[1]!, outputs[0]!)}`);
  } finally {
    await Promise.all(sessions.map((session) => session.release()));
  }
});

/** y = x · Wᵀ as a torch Linear exports it, all float16, weights inline. */
function float16ProjectionModel(weightT: Float32Array, inFeatures: number, outFeatures: number): Uint8Array {
  const weightRaw = toFloat16Array(weightT);
  const node = '/attn1/to_q/MatMul';
  const graph = [
    ...lengthDelimitedField(GraphField.node, encodeNode({ name: node, opType: 'MatMul', input: ['x', 'weight'], output: ['y'] })),
    ...stringField(GraphField.name, 'projection'),
    ...lengthDelimitedField(GraphField.initializer, encodeTensor('weight', DataType.float16, [inFeatures, outFeatures], new Uint8Array(weightRaw.buffer))),
    ...lengthDelimitedField(GraphField.input, encodeTensorValueInfo('x', DataType.float16, ['batch_size', 'tokens', inFeatures])),
    ...lengthDelimitedField(GraphField.output, encodeTensorValueInfo('y', DataType.float16, ['batch_size', 'tokens', outFeatures])),
  ];
  const opset = [...stringField(1, ''), ...varintField(2, 17)];
  return joinChunks([...varintField(1, 8), ...lengthDelimitedField(8, opset), ...lengthDelimitedField(7, graph)]);
}

test('a float16 model gets float16 branch inputs and a Cast of the float32 strength', async () => {
  const inFeatures = 3;
  const outFeatures = 2;
  const rank = 2;
  const weightT = Float32Array.of(0.5, -1, 0.25, 2, 1, 0);
  const down = Float32Array.of(1, 0, 0.5, 0, 1, -1);
  const up = Float32Array.of(1, 2, -0.5, 0.25);
  const scale = 0.5;
  const module = 'attn1.to_q';
  const bytes = float16ProjectionModel(weightT, inFeatures, outFeatures);
  assert.deepEqual(findLoraTargets(bytes), [{ module, nodeName: '/attn1/to_q/MatMul', inFeatures, outFeatures }]);
  const session = await ort.InferenceSession.create(addLoraBranches(bytes, { purpose: 'inference', rank, modules: [module] }), { logSeverityLevel: 3 });
  try {
    const x = Float32Array.of(1, 2, 3, -1, 0.5, 0);
    const strength = [0, 0.5];
    const { downT, upT } = loraBranchValues([{ module, rank, inFeatures, outFeatures, down, up, scale }], findLoraTargets(bytes), rank).get(module)!;
    const names = loraWeightInputs(module);
    const result = await session.run({
      x: new ort.Tensor('float16', toFloat16Array(x), [2, 1, inFeatures]),
      [LORA_STRENGTH_INPUT]: new ort.Tensor('float32', Float32Array.from(strength), [2]),
      [names.downT]: new ort.Tensor('float16', toFloat16Array(downT), [inFeatures, rank]),
      [names.upT]: new ort.Tensor('float16', toFloat16Array(upT), [rank, outFeatures]),
    });
    const y = Array.from(result['y']!.data as Uint16Array, float16BitsToFloat32);
    const expected: number[] = [];
    for (let b = 0; b < 2; b++) {
      for (let o = 0; o < outFeatures; o++) {
        let value = 0;
        for (let i = 0; i < inFeatures; i++) {
          let delta = 0;
          for (let k = 0; k < rank; k++) delta += up[o * rank + k]! * down[k * inFeatures + i]!;
          value += x[b * inFeatures + i]! * (weightT[i * outFeatures + o]! + strength[b]! * scale * delta);
        }
        expected.push(value);
      }
    }
    for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(y[i]! - expected[i]!) <= 1e-2, `y[${i}] = ${y[i]}, expected ${expected[i]}`);
  } finally {
    await session.release();
  }
});

test('training refuses a float16 UNet, naming the projection and what to use instead', () => {
  const bytes = float16ProjectionModel(Float32Array.of(0.5, -1, 0.25, 2, 1, 0), 3, 2);
  assert.throws(
    () => addLoraBranches(bytes, { purpose: 'training', rank: 2, modules: ['attn1.to_q'] }),
    /the UNet's weight for \/attn1\/to_q\/MatMul is float16: training needs a float32 UNet/,
  );
  assert.throws(() => buildTrainingForward(bytes, { rank: 2, modules: ['attn1.to_q'] }), /training needs a float32 UNet/);
});
