import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Queue, UnrecoverableError, WaitingError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { composePanels } from '../src/gpu/compose.js';
import { encodePng } from '../src/gpu/image.js';
import { InferenceThreadError } from '../src/gpu/image-generator.js';
import { DataType } from '../src/gpu/onnx/onnx-proto.js';
import { OnnxModel, RunClock } from '../src/gpu/onnx-session.js';
import ort from 'onnxruntime-node';
import { validateJobData } from '../src/queue/contracts.js';
import { LoraVersionError } from '../src/worker/lora-versions.js';
import { classifyFailure, jobFailure, MAX_REASON_CHARS } from '../src/worker/failures.js';
import { encodeTestModel } from './support/onnx-model.js';
import { startTestRedis } from './support/redis-server.js';
import { deletePrefix, testPrefix, TEST_REDIS_URL } from './support/worker-process.js';

// The one place that tells a job's permanent failures from passing ones, fed the errors the real components raise.

const work = mkdtempSync(path.join(tmpdir(), 'wrongbot-failures-'));
test.after(() => rmSync(work, { recursive: true, force: true }));

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error('expected a rejection');
}

function final(error: unknown): string {
  const failure = classifyFailure(error);
  assert.equal(failure.kind, 'final', `${(error as Error).name}: ${(error as Error).message} is permanent`);
  return (failure as { reason: string }).reason;
}

/** ConstantOfShape: fills a tensor of the shape given, so a shape decides between a model error and out-of-memory. */
async function constantOfShapeModel(): Promise<OnnxModel> {
  const bytes = encodeTestModel({
    opset: 17,
    inputs: [{ name: 'shape', dims: [3], elemType: DataType.int64 }],
    nodes: [{ name: 'fill', opType: 'ConstantOfShape', input: ['shape'], output: ['filled'] }],
    outputs: [{ name: 'filled', dims: null }],
  });
  return OnnxModel.load('unet', { bytes, externalDataDir: work }, { kind: 'cpu', index: 0 }, new RunClock());
}

test('invalid input, an unknown LoRA version and a caption that cannot be drawn fail at once, with one clear line', async () => {
  let invalid: unknown;
  try {
    validateJobData('imagine', { requester: { userId: 'u', displayName: 'u', guildId: null }, replyTo: {}, settings: { steps: 'many' } });
  } catch (error) {
    invalid = error;
  }
  assert.match(final(invalid), /^invalid input: \S+ = .* must be/);
  assert.equal(final(new LoraVersionError('LoRA version "wrong-v9" is neither in Redis nor this worker\'s LORA_PATH')),
    'LoRA version "wrong-v9" is neither in Redis nor this worker\'s LORA_PATH');

  const png = new Uint8Array(await encodePng(new Uint8Array(16 * 16 * 3), 16, 16));
  // A vertical tab is not allowed in XML, so librsvg refuses the caption's SVG.
  const composition = await rejection(composePanels([{ png, caption: 'base' }, { png, caption: 'lora' }], 'a\u000bcat'));
  assert.equal(composition.name, 'CompositionError');
  assert.match(final(composition), /^cannot draw the panels and captions: .*XML parse error/);
});

test('onnxruntime\'s model errors and out-of-memory are permanent; out-of-memory says so', async () => {
  const model = await constantOfShapeModel();
  try {
    const run = (dims: bigint[]) => model.run({ shape: new ort.Tensor('int64', BigInt64Array.from(dims), [3]) }, ['filled']);
    const graphError = await rejection(run([-1n, 2n, 2n]));
    assert.equal(graphError.name, 'OnnxRunError');
    const reason = final(graphError);
    assert.match(reason, /^model error: unet failed: Non-zero status code returned while running ConstantOfShape node/);
    assert.ok(!reason.includes('\n') && reason.length <= MAX_REASON_CHARS, reason);

    const outOfMemory = await rejection(run([100_000n, 100_000n, 100n]));
    assert.equal(final(outOfMemory), 'out of memory at this size (Failed to allocate memory for requested buffer of size 4000000000000); a smaller image or fewer panels may fit');
  } finally {
    await model.dispose();
  }
  assert.match(final(new RangeError('Array buffer allocation failed')), /^out of memory at this size/);
});

test('a lost lock, a lost or full Redis, a shutdown and a dead inference thread are retried', async (t) => {
  const prefix = testPrefix('failures');
  t.after(() => deletePrefix(prefix));
  const connection = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: null });
  const queue = new Queue('failures', { connection, prefix });
  const worker = new Worker('failures', null, { connection, prefix, autorun: false });
  try {
    await queue.add('job', {});
    const job = (await worker.getNextJob('token'))!;
    await connection.del(`${prefix}:failures:${job.id}:lock`);
    const lostLock = await rejection(job.moveToCompleted('done', 'token', false));
    assert.match(lostLock.message, /^Missing lock for job/);
    assert.deepEqual(classifyFailure(lostLock), { kind: 'retry' });
  } finally {
    await worker.close();
    await queue.close();
    connection.disconnect();
  }

  const closed = new Redis(TEST_REDIS_URL, { lazyConnect: true });
  closed.disconnect();
  assert.deepEqual(classifyFailure(await rejection(closed.set('key', 'value'))), { kind: 'retry' });

  // Redis's own out-of-memory is about Redis, not about the job's size.
  const server = await startTestRedis({ args: ['--maxmemory', '1mb', '--maxmemory-policy', 'noeviction'] });
  const full = new Redis(server.url);
  try {
    const refused = await rejection(full.set('big', 'x'.repeat(4 * 1024 * 1024)));
    assert.match(refused.message, /^OOM command not allowed/);
    assert.deepEqual(classifyFailure(refused), { kind: 'retry' });
  } finally {
    full.disconnect();
    await server.stop();
  }

  for (const error of [new WaitingError(), new InferenceThreadError('the inference thread exited with code 1'), new Error('EIO: i/o error, write')]) {
    assert.deepEqual(classifyFailure(error), { kind: 'retry' }, error.message);
    assert.equal(jobFailure(error), error, 'a retried failure reaches BullMQ as it is');
  }
});

test('the reason is one line of bounded length, and an UnrecoverableError passes unchanged', () => {
  const failed = jobFailure(new LoraVersionError(`LoRA version "${'v'.repeat(1000)}" is nowhere\nsecond line`));
  assert.ok(failed instanceof UnrecoverableError);
  assert.ok(!failed.message.includes('\n') && failed.message.length === MAX_REASON_CHARS && failed.message.endsWith('…'), failed.message);
  const cancelled = new UnrecoverableError('cancelled');
  assert.equal(jobFailure(cancelled), cancelled);
});
