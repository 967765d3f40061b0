import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { MAX_HEADER_BYTES, SafetensorsError, SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { fixturePath } from './support/fixtures.js';
import { safetensorsBytes, writeSafetensors } from './support/safetensors-writer.js';

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-safetensors-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

let fileNumber = 0;
async function writeBytes(bytes: Uint8Array): Promise<string> {
  const file = path.join(work, `file-${fileNumber++}.safetensors`);
  await writeFile(file, bytes);
  return file;
}

/** Opening `file` fails with a SafetensorsError whose message names the file and contains every fragment. */
async function assertRejected(file: string, ...fragments: string[]): Promise<void> {
  await assert.rejects(SafetensorsFile.open(file), (error: unknown) => {
    assert.ok(error instanceof SafetensorsError, `expected a SafetensorsError, got ${String(error)}`);
    for (const fragment of [file, ...fragments]) assert.ok(error.message.includes(fragment), error.message);
    return true;
  });
}

/** A header holding one tensor entry, with 8 bytes of data behind it. */
function oneTensor(entry: unknown): Uint8Array {
  return safetensorsBytes({ weight: entry }, new Uint8Array(8));
}

function bytesOf(array: Uint16Array | Float64Array): Uint8Array {
  return new Uint8Array(array.buffer);
}

test('the fixture LoRAs open and read tensor by tensor, each at the offset its header gives', async () => {
  for (const name of ['tiny_sdxl_lora_peft.safetensors', 'tiny_sdxl_lora_kohya.safetensors']) {
    const file = fixturePath('tiny-sdxl-lora', name);
    const raw = readFileSync(file);
    const headerLength = Number(raw.readBigUInt64LE(0));
    const header = JSON.parse(raw.subarray(8, 8 + headerLength).toString('utf8')) as
      Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    const safetensors = await SafetensorsFile.open(file);
    try {
      assert.equal(safetensors.metadata['format'], 'pt');
      assert.equal(safetensors.entries.size, Object.keys(header).length - 1);
      for (const [key, entry] of safetensors.entries) {
        const expected = header[key]!;
        assert.deepEqual(
          { name: entry.name, dtype: entry.dtype, shape: entry.shape, byteLength: entry.byteLength },
          { name: key, dtype: 'F32', shape: expected.shape, byteLength: expected.data_offsets[1] - expected.data_offsets[0] },
        );
        const [begin, end] = expected.data_offsets;
        const stored = raw.subarray(8 + headerLength + begin, 8 + headerLength + end);
        const values = await safetensors.readFloat32(key);
        assert.deepEqual(values, new Float32Array(Uint8Array.from(stored).buffer), key);
      }
    } finally {
      await safetensors.close();
    }
  }
  const kohya = await SafetensorsFile.open(fixturePath('tiny-sdxl-lora', 'tiny_sdxl_lora_kohya.safetensors'));
  try {
    assert.equal(kohya.metadata['ss_network_alpha'], '2.0');
    assert.equal(await kohya.readScalar('lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_k.alpha'), 2);
  } finally {
    await kohya.close();
  }
});

test('F16, BF16 and F64 convert to float32 exactly where float32 can hold the value', async () => {
  const f16 = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x8000, 0x7c00, 0xfc00, 0x3555, 0x7e00]);
  const bf16 = new Uint16Array([0x3f80, 0xc049, 0x4049, 0x0001, 0x7f7f, 0x8000, 0x7f80, 0xff80, 0x7fc0]);
  const f64 = new Float64Array([0.1, -1 / 3, 1e300, -1e-300, 65504, 2 ** -149]);
  const file = path.join(work, 'dtypes.safetensors');
  await writeSafetensors(file, {
    f16: { dtype: 'F16', shape: [2, 5], data: bytesOf(f16) },
    bf16: { dtype: 'BF16', shape: [bf16.length], data: bytesOf(bf16) },
    f64: { dtype: 'F64', shape: [3, 2], data: bytesOf(f64) },
  });
  const safetensors = await SafetensorsFile.open(file);
  try {
    assert.deepEqual([...await safetensors.readFloat32('f16')], [
      1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, -0, Infinity, -Infinity, 0.333251953125, NaN,
    ]);
    assert.deepEqual([...await safetensors.readFloat32('bf16')], [
      1, -3.140625, 3.140625, 2 ** -133, (1 + 127 / 128) * 2 ** 127, -0, Infinity, -Infinity, NaN,
    ]);
    assert.deepEqual([...await safetensors.readFloat32('f64')], [
      Math.fround(0.1), Math.fround(-1 / 3), Infinity, -0, 65504, 2 ** -149,
    ]);
  } finally {
    await safetensors.close();
  }
});

test('the test writer stores float32 values as F16, BF16 and F64 that read back', async () => {
  const values = new Float32Array([0, 1, -2.5, 0.375, 1024, -0.0078125]);
  const file = path.join(work, 'round-trip.safetensors');
  await writeSafetensors(file, Object.fromEntries(['F32', 'F16', 'BF16', 'F64'].map(
    (dtype) => [dtype, { dtype, shape: [2, 3], data: values }],
  )), { note: 'round trip' });
  const safetensors = await SafetensorsFile.open(file);
  try {
    assert.deepEqual(safetensors.metadata, { note: 'round trip' });
    for (const dtype of ['F32', 'F16', 'BF16', 'F64']) assert.deepEqual(await safetensors.readFloat32(dtype), values, dtype);
  } finally {
    await safetensors.close();
  }
});

test('a scalar reads from any numeric dtype; integer and bool tensors are refused as float weights', async () => {
  const file = path.join(work, 'integers.safetensors');
  const int64 = new Uint8Array(new BigInt64Array([-8n]).buffer);
  await writeSafetensors(file, {
    alpha_i64: { dtype: 'I64', shape: [], data: int64 },
    alpha_u8: { dtype: 'U8', shape: [1], data: new Uint8Array([200]) },
    alpha_f16: { dtype: 'F16', shape: [1, 1], data: new Float32Array([0.5]) },
    weight_i32: { dtype: 'I32', shape: [2], data: new Uint8Array(8) },
    mask: { dtype: 'BOOL', shape: [3], data: new Uint8Array([1, 0, 1]) },
  });
  const safetensors = await SafetensorsFile.open(file);
  try {
    assert.equal(await safetensors.readScalar('alpha_i64'), -8);
    assert.equal(await safetensors.readScalar('alpha_u8'), 200);
    assert.equal(await safetensors.readScalar('alpha_f16'), 0.5);
    await assert.rejects(safetensors.readScalar('weight_i32'), /"weight_i32" has shape \[2\]; expected a single value/);
    await assert.rejects(safetensors.readFloat32('weight_i32'), /"weight_i32" has dtype I32, not a float dtype/);
    await assert.rejects(safetensors.readFloat32('mask'), /"mask" has dtype BOOL, not a float dtype/);
    await assert.rejects(safetensors.readFloat32('missing'), (error: Error) =>
      error instanceof SafetensorsError && error.message === `${file}: no tensor named "missing"`);
  } finally {
    await safetensors.close();
  }
});

test('a file shorter than the 8-byte length prefix', async () => {
  await assertRejected(await writeBytes(new Uint8Array([1, 2, 3])), 'file is 3 bytes, shorter than the 8-byte');
  await assertRejected(await writeBytes(new Uint8Array(0)), 'file is 0 bytes');
});

test('a header length past the end of the file', async () => {
  const bytes = safetensorsBytes('{}', new Uint8Array(0), 1000n);
  await assertRejected(await writeBytes(bytes), 'header length 1000 bytes runs past the end of the file (10 bytes)');
});

test('a header length of 4 GB or more is refused before anything is allocated', async () => {
  for (const claimed of [2n ** 32n, 2n ** 64n - 1n, BigInt(MAX_HEADER_BYTES) + 1n]) {
    await assertRejected(
      await writeBytes(safetensorsBytes('{}', new Uint8Array(0), claimed)),
      `header length ${claimed} bytes is over the ${MAX_HEADER_BYTES}-byte limit`,
    );
  }
});

test('a header that is not JSON, not UTF-8 or not an object', async () => {
  await assertRejected(await writeBytes(safetensorsBytes('{"weight": {"dtype": "F32",')), 'header is not valid UTF-8 JSON');
  await assertRejected(
    await writeBytes(Buffer.concat([safetensorsBytes('', undefined, 4n), Buffer.from([0x22, 0xff, 0xfe, 0x22])])),
    'header is not valid UTF-8 JSON',
  );
  await assertRejected(await writeBytes(safetensorsBytes('[1, 2]')), 'header is [1,2], not a JSON object');
  await assertRejected(await writeBytes(safetensorsBytes('null')), 'header is null, not a JSON object');
  await assertRejected(
    await writeBytes(safetensorsBytes({ __metadata__: { format: 'pt', steps: 1000 } })),
    '__metadata__ is {"format":"pt","steps":1000}, not an object of strings',
  );
  await assertRejected(await writeBytes(safetensorsBytes({ weight: [0, 4] })), 'tensor "weight": [0,4] is not an object');
});

test('an unknown dtype is named', async () => {
  await assertRejected(
    await writeBytes(oneTensor({ dtype: 'F17', shape: [2], data_offsets: [0, 8] })),
    'tensor "weight": unknown dtype "F17"',
  );
  // A prototype property must not pass for a dtype.
  await assertRejected(
    await writeBytes(oneTensor({ dtype: 'constructor', shape: [2], data_offsets: [0, 8] })),
    'unknown dtype "constructor"',
  );
  await assertRejected(await writeBytes(oneTensor({ shape: [2], data_offsets: [0, 8] })), 'unknown dtype undefined');
});

test('a shape that is not a list of non-negative integers', async () => {
  for (const shape of [[-2], [1.5, 2], '2', [2 ** 53], null, [[2]]]) {
    await assertRejected(
      await writeBytes(oneTensor({ dtype: 'F32', shape, data_offsets: [0, 8] })),
      `tensor "weight": shape ${JSON.stringify(shape)} is not a list of non-negative integers`,
    );
  }
});

test('data_offsets that are not two integers, end before they begin or run past the data', async () => {
  for (const offsets of [[0], [0, 4, 8], ['0', '8'], [-4, 4], [0, 8.5], undefined]) {
    await assertRejected(
      await writeBytes(oneTensor({ dtype: 'F32', shape: [2], data_offsets: offsets })),
      `tensor "weight": data_offsets ${JSON.stringify(offsets)} is not two non-negative integers`,
    );
  }
  await assertRejected(
    await writeBytes(oneTensor({ dtype: 'F32', shape: [0], data_offsets: [8, 4] })),
    'tensor "weight": data_offsets [8, 4] end before they begin',
  );
  await assertRejected(
    await writeBytes(oneTensor({ dtype: 'F32', shape: [3], data_offsets: [0, 12] })),
    'tensor "weight": data_offsets [0, 12] run past the end of the data (8 bytes)',
  );
  await assertRejected(
    await writeBytes(oneTensor({ dtype: 'F32', shape: [2 ** 40], data_offsets: [0, 2 ** 42] })),
    'run past the end of the data (8 bytes)',
  );
});

test('a byte length that does not match the shape and dtype', async () => {
  await assertRejected(
    await writeBytes(oneTensor({ dtype: 'F16', shape: [2, 3], data_offsets: [0, 8] })),
    'tensor "weight": shape [2,3] of F16 needs 12 bytes but data_offsets [0, 8] hold 8',
  );
  await assertRejected(
    await writeBytes(oneTensor({ dtype: 'F32', shape: [2 ** 30, 2 ** 30, 2 ** 30], data_offsets: [0, 8] })),
    `needs ${2 ** 92} bytes but data_offsets [0, 8] hold 8`,
  );
});

test('overlapping tensors', async () => {
  const bytes = safetensorsBytes({
    a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
    empty: { dtype: 'F32', shape: [0], data_offsets: [4, 4] },
    b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] },
  }, new Uint8Array(12));
  await assertRejected(await writeBytes(bytes), 'tensors "a" and "b" overlap in the data section');
});

test('a file that shrinks after it was opened is an error, not short data', async () => {
  const file = path.join(work, 'shrinks.safetensors');
  await writeSafetensors(file, { weight: { dtype: 'F32', shape: [4], data: new Float32Array([1, 2, 3, 4]) } });
  const safetensors = await SafetensorsFile.open(file);
  try {
    await writeFile(file, readFileSync(file).subarray(0, -4));
    await assert.rejects(safetensors.readFloat32('weight'), /file ended at byte \d+ while reading 16 bytes/);
  } finally {
    await safetensors.close();
  }
});

test('a long hostile name is quoted only in part', async () => {
  const name = 'x'.repeat(100_000);
  await assertRejected(
    await writeBytes(safetensorsBytes({ [name]: { dtype: 'Q', shape: [], data_offsets: [0, 0] } })),
    `tensor "${'x'.repeat(119)}…: unknown dtype "Q"`,
  );
});
