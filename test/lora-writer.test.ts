import { test } from 'node:test';
import assert from 'node:assert/strict';
import { linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { loadLora } from '../src/gpu/lora/lora-file.js';
import { diffusersLoraBytes, LoraWriteError, writeDiffusersLora, type LoraWeights } from '../src/gpu/lora/lora-writer.js';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { safetensorsBytes, SafetensorsWriteError, type TensorToWrite } from '../src/gpu/lora/safetensors-writer.js';
import { findLoraTargets } from '../src/gpu/onnx/lora-graph.js';
import { fixturePath } from './support/fixtures.js';

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-lora-writer-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

const targets = findLoraTargets(readFileSync(fixturePath('tiny-sdxl', 'unet', 'model.onnx')));

/** Distinct, reproducible values: a wrong offset or a swapped tensor reads back as different numbers. */
function values(count: number, seed: number): Float32Array {
  return Float32Array.from({ length: count }, (_, index) => Math.sin(seed * 1000 + index));
}

function bitsOf(array: Float32Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

function fileWith(name: string, bytes: Uint8Array): string {
  const file = path.join(work, name);
  writeFileSync(file, bytes);
  return file;
}

async function readAll(file: string): Promise<{ metadata: Record<string, string>; tensors: Map<string, Float32Array> }> {
  const safetensors = await SafetensorsFile.open(file);
  try {
    const tensors = new Map<string, Float32Array>();
    for (const name of safetensors.entries.keys()) tensors.set(name, await safetensors.readFloat32(name));
    return { metadata: { ...safetensors.metadata }, tensors };
  } finally {
    await safetensors.close();
  }
}

/** The header's key order, its length, and the bytes padding it. */
function rawHeader(bytes: Uint8Array): { keys: string[]; length: number; text: string } {
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + length));
  return { keys: Object.keys(JSON.parse(text) as object), length, text };
}

test('F32 tensors read back bit for bit, with their metadata, in the order given', async () => {
  const special = new Float32Array(new Uint32Array([0x7fc00001, 0xffc00000, 0x80000000, 0x00000001, 0x7f800000, 0x3f800000]).buffer);
  const tensors: [string, TensorToWrite][] = [
    ['weight', { dtype: 'F32', shape: [3, 5], data: values(15, 1) }],
    ['__proto__', { dtype: 'F32', shape: [2, 3], data: special }],
    ['scalar', { dtype: 'F32', shape: [], data: new Float32Array([0.25]) }],
    ['empty', { dtype: 'F32', shape: [0, 4], data: new Float32Array(0) }],
    ['offset view', { dtype: 'F32', shape: [4], data: values(10, 2).subarray(3, 7) }],
  ];
  const bytes = safetensorsBytes(tensors, { note: 'round trip', 'ünïcode': 'välue' });
  assert.deepEqual(rawHeader(bytes).keys, ['__metadata__', ...tensors.map(([name]) => name)]);
  const { metadata, tensors: read } = await readAll(fileWith('f32.safetensors', bytes));
  assert.deepEqual(metadata, { note: 'round trip', 'ünïcode': 'välue' });
  assert.deepEqual([...read.keys()], tensors.map(([name]) => name));
  for (const [name, { data }] of tensors) assert.deepEqual(bitsOf(read.get(name)!), bitsOf(data as Float32Array), name);
});

test('the header is padded with spaces to a multiple of 8 bytes, whatever its length', () => {
  const lengths = new Set<number>();
  for (let extra = 0; extra < 8; extra++) {
    const bytes = safetensorsBytes([[`w${'x'.repeat(extra)}`, { dtype: 'F32', shape: [1], data: new Float32Array([1]) }]]);
    const { length, text } = rawHeader(bytes);
    assert.equal(length % 8, 0, text);
    assert.match(text, /^\{.*\} *$/);
    assert.equal(JSON.stringify(JSON.parse(text)), text.trimEnd(), 'nothing but spaces after the JSON');
    assert.equal(bytes.byteLength, 8 + length + 4);
    lengths.add(text.length - text.trimEnd().length);
  }
  assert.equal(lengths.size, 8, 'every amount of padding from 0 to 7 was exercised');
});

test('float32 values stored as F16, BF16 and F64 read back; raw bytes are stored as given', async () => {
  const exact = new Float32Array([0, 1, -2.5, 0.375, 1024, -0.0078125]);
  const int64 = new Uint8Array(new BigInt64Array([-8n]).buffer);
  const file = fileWith('dtypes.safetensors', safetensorsBytes([
    ...['F32', 'F16', 'BF16', 'F64'].map((dtype): [string, TensorToWrite] => [dtype, { dtype, shape: [2, 3], data: exact }]),
    // bfloat16 keeps 8 bits of mantissa: 1 + 2⁻⁸ is a tie that rounds to even (1), 1 + 3·2⁻⁸ one that rounds up.
    ['bf16 rounding', { dtype: 'BF16', shape: [2], data: new Float32Array([1 + 2 ** -8, 1 + 3 * 2 ** -8]) }],
    // A NaN whose payload sits only in the dropped half must not round into infinity.
    ['bf16 nan', { dtype: 'BF16', shape: [1], data: new Float32Array(new Uint32Array([0x7f800001]).buffer) }],
    ['alpha', { dtype: 'I64', shape: [], data: int64 }],
  ]));
  const safetensors = await SafetensorsFile.open(file);
  try {
    for (const dtype of ['F32', 'F16', 'BF16', 'F64']) {
      assert.equal(safetensors.entries.get(dtype)?.dtype, dtype);
      assert.deepEqual(await safetensors.readFloat32(dtype), exact, dtype);
    }
    assert.deepEqual([...await safetensors.readFloat32('bf16 rounding')], [1, 1 + 4 * 2 ** -8]);
    assert.deepEqual([...await safetensors.readFloat32('bf16 nan')], [NaN]);
    assert.equal(await safetensors.readScalar('alpha'), -8);
  } finally {
    await safetensors.close();
  }
});

test('bad tensors and metadata are refused, naming the tensor or key', () => {
  const good: TensorToWrite = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
  const refused = (tensors: [string, TensorToWrite][], message: string, metadata?: Record<string, string>) =>
    assert.throws(() => safetensorsBytes(tensors, metadata), (error: Error) => {
      assert.ok(error instanceof SafetensorsWriteError, String(error));
      assert.equal(error.message, message);
      return true;
    });
  refused([['w', { dtype: 'F32', shape: [2, 3], data: new Float32Array(5) }]],
    'tensor "w": shape [2,3] holds 6 values but data has 5');
  refused([['w', { dtype: 'I32', shape: [2], data: new Uint8Array(7) }]],
    'tensor "w": shape [2] of I32 needs 8 bytes but data has 7');
  refused([['w', good], ['v', good], ['w', good]], 'tensor name "w" is given twice');
  refused([['__metadata__', good]], 'tensor name __metadata__ is reserved for the file\'s metadata');
  refused([['w', good]], 'metadata "steps" is 1000 (number); metadata values must be strings',
    { format: 'pt', steps: 1000 as unknown as string });
  refused([['w', { dtype: 'F12', shape: [2], data: new Float32Array(2) }]], 'tensor "w": dtype "F12" is not a safetensors dtype');
  refused([['w', { dtype: 'I64', shape: [2], data: new Float32Array(2) }]],
    'tensor "w": float32 values cannot be stored as I64; pass its bytes instead');
  refused([['w', { dtype: 'F32', shape: [2, -1], data: new Float32Array(2) }]],
    'tensor "w": shape [2,-1] is not a list of non-negative integers');
  refused([['w', { dtype: 'F32', shape: [NaN], data: new Float32Array(0) }]],
    'tensor "w": shape [NaN] is not a list of non-negative integers');
});

/** A rank-`rank` LoRA over every projection of the tiny UNet, each module's values its own. */
function tinyLora(rank: number): LoraWeights[] {
  return targets.map(({ module, inFeatures, outFeatures }, index) => ({
    module, rank, inFeatures, outFeatures,
    down: values(rank * inFeatures, 2 * index + 1),
    up: values(outFeatures * rank, 2 * index + 2),
  }));
}

test('a written LoRA loads back through loadLora with the same factors and scale 1', async () => {
  assert.equal(targets.length, 96);
  const modules = tinyLora(4);
  const file = path.join(work, 'tiny.safetensors');
  writeDiffusersLora(file, modules, { trainer: 'wrongbot' });
  const lora = await loadLora(file, targets);
  assert.deepEqual(lora.skipped, []);
  assert.equal(lora.modules.length, modules.length);
  const written = new Map(modules.map((module) => [module.module, module]));
  for (const loaded of lora.modules) {
    const expected = written.get(loaded.module);
    assert.ok(expected !== undefined, loaded.module);
    assert.equal(loaded.scale, 1, loaded.module);
    assert.deepEqual(
      { rank: loaded.rank, inFeatures: loaded.inFeatures, outFeatures: loaded.outFeatures },
      { rank: 4, inFeatures: expected.inFeatures, outFeatures: expected.outFeatures },
    );
    assert.deepEqual(bitsOf(loaded.down), bitsOf(expected.down), `${loaded.module} down`);
    assert.deepEqual(bitsOf(loaded.up), bitsOf(expected.up), `${loaded.module} up`);
  }
});

test('keys, shapes, order and metadata are those of diffusers\' save_lora_weights', async () => {
  // in ≠ out, so a swapped pair of features cannot pass.
  const modules: LoraWeights[] = [
    { module: 'up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k', rank: 2, inFeatures: 3, outFeatures: 5, down: values(6, 1), up: values(10, 2) },
    { module: 'down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0', rank: 2, inFeatures: 3, outFeatures: 5, down: values(6, 3), up: values(10, 4) },
  ];
  const bytes = diffusersLoraBytes(modules, { trainer: 'wrongbot' });
  const prefixes = ['unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0', 'unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k'];
  const keys = prefixes.flatMap((prefix) => [`${prefix}.lora.down.weight`, `${prefix}.lora.up.weight`]);
  assert.deepEqual(rawHeader(bytes).keys, ['__metadata__', ...keys]);
  const file = fileWith('diffusers-layout.safetensors', bytes);
  const safetensors = await SafetensorsFile.open(file);
  try {
    assert.deepEqual(safetensors.metadata, { format: 'pt', trainer: 'wrongbot' });
    for (const [index, key] of keys.entries()) {
      const entry = safetensors.entries.get(key)!;
      assert.deepEqual({ dtype: entry.dtype, shape: entry.shape }, { dtype: 'F32', shape: key.endsWith('down.weight') ? [2, 3] : [5, 2] }, key);
      const module = modules[1 - Math.floor(index / 2)]!;
      assert.deepEqual(await safetensors.readFloat32(key), key.endsWith('down.weight') ? module.down : module.up, key);
    }
  } finally {
    await safetensors.close();
  }
});

test('bad LoRA modules are refused, naming the module or key', () => {
  const [first, second] = tinyLora(2);
  const refused = (modules: LoraWeights[], kind: new (message: string) => Error, message: string, metadata: Record<string, string> = {}) =>
    assert.throws(() => diffusersLoraBytes(modules, metadata), (error: Error) => {
      assert.ok(error instanceof kind, String(error));
      assert.equal(error.message, message);
      return true;
    });
  refused([], LoraWriteError, 'modules is empty: a LoRA file needs at least one module');
  refused([first!, { ...second!, rank: 0, down: new Float32Array(0), up: new Float32Array(0) }], LoraWriteError,
    `module ${second!.module}: rank 0 is not a positive integer`);
  refused([first!, { ...second!, down: second!.down.subarray(1) }], SafetensorsWriteError,
    `tensor "unet.${second!.module}.lora.down.weight": shape [2,64] holds 128 values but data has 127`);
  refused([first!, { ...second!, outFeatures: 32 }], SafetensorsWriteError,
    `tensor "unet.${second!.module}.lora.up.weight": shape [32,2] holds 64 values but data has 128`);
  refused([first!, second!, first!], SafetensorsWriteError, `tensor name "unet.${first!.module}.lora.down.weight" is given twice`);
  refused([first!], SafetensorsWriteError, 'metadata "steps" is 500 (number); metadata values must be strings',
    { steps: 500 as unknown as string });
});

test('a failed write leaves no partial file, and the file that was there survives', () => {
  const folder = path.join(work, 'failed-writes');
  mkdirSync(folder);
  const modules = tinyLora(2);
  const file = path.join(folder, 'lora.safetensors');
  writeDiffusersLora(file, modules, { version: '1' });
  const before = readFileSync(file);

  // Bad input: refused before anything touches the disk.
  assert.throws(() => writeDiffusersLora(file, [{ ...modules[0]!, up: new Float32Array(3) }], { version: '2' }), SafetensorsWriteError);
  // The rename fails after the bytes were written under a temporary name: the target is a folder.
  const folderTarget = path.join(folder, 'taken.safetensors');
  mkdirSync(folderTarget);
  writeFileSync(path.join(folderTarget, 'inside'), 'kept');
  assert.throws(() => writeDiffusersLora(folderTarget, modules, { version: '2' }), /EISDIR|EEXIST|ENOTEMPTY|EPERM/);
  // No temporary file can even be opened: the folder does not exist.
  const missing = path.join(folder, 'missing', 'lora.safetensors');
  assert.throws(() => writeDiffusersLora(missing, modules, {}), /ENOENT/);

  assert.deepEqual(readFileSync(file), before);
  assert.deepEqual(readdirSync(folder).sort(), ['lora.safetensors', 'taken.safetensors']);
  assert.deepEqual(readdirSync(folderTarget), ['inside']);
  assert.equal(readFileSync(path.join(folderTarget, 'inside'), 'utf8'), 'kept');

  // A write that succeeds puts a new file in place rather than rewriting the old one, so a reader that opened the old
  // one (here a hard link to it) never sees it torn; and it leaves nothing beside it.
  const reader = path.join(work, 'opened-before.safetensors');
  linkSync(file, reader);
  writeDiffusersLora(file, modules, { version: '2' });
  assert.deepEqual(readFileSync(file), Buffer.from(diffusersLoraBytes(modules, { version: '2' })));
  assert.notDeepEqual(readFileSync(file), before);
  assert.deepEqual(readFileSync(reader), before);
  assert.deepEqual(readdirSync(folder).sort(), ['lora.safetensors', 'taken.safetensors']);
});
