import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import type { Worker } from 'node:worker_threads';
import { ImageGenerator } from '../src/gpu/image-generator.js';
import { decodeToRgb } from '../src/gpu/image.js';
import type { GenerationRequest } from '../src/gpu/request.js';
import type { StepProgress } from '../src/gpu/sdxl-pipeline.js';
import { fixturePath } from './support/fixtures.js';

// Native addons this thread loads. The worker thread has its own `process`, so a load there is not seen here.
const loadedHere: string[] = [];
const dlopen = process.dlopen.bind(process);
process.dlopen = (module: { exports: unknown }, filename: string, flags?: number) => {
  loadedHere.push(filename);
  return dlopen(module, filename, flags);
};

// The threads this process starts, so that a test can stop a real inference thread as a crash would. Builtin ES
// modules re-export the CommonJS module's properties once synced, so the generator's `new Worker` goes through this.
const threads: Worker[] = [];
const workerThreads = createRequire(import.meta.url)('node:worker_threads') as { Worker: typeof Worker };
const RealWorker = workerThreads.Worker;
workerThreads.Worker = class extends RealWorker {
  constructor(...args: ConstructorParameters<typeof RealWorker>) {
    super(...args);
    threads.push(this);
  }
};
syncBuiltinESMExports();

const generator = await ImageGenerator.start(fixturePath('tiny-sdxl'), { kind: 'cpu', index: 0 });
test.after(() => generator.close());

const request: GenerationRequest = {
  seed: 11, steps: 6, width: 64, height: 64,
  panels: [{ prompt: 'a lighthouse', negativePrompt: 'wrong', guidanceScale: 7.5, guidanceRescale: 0 }],
};

test('generation runs in another thread and reports every step', async () => {
  const progress: StepProgress[] = [];
  const result = await generator.generate(request, { onProgress: (p) => progress.push(p) });
  assert.deepEqual(progress.map((p) => p.step), [1, 2, 3, 4, 5, 6]);
  assert.ok(progress.every((p) => p.totalSteps === 6 && p.etaMs >= 0));
  assert.equal(progress.at(-1)!.etaMs, 0);
  const image = await decodeToRgb(Buffer.from(result.panels[0]!.png));
  assert.deepEqual([image.width, image.height], [64, 64]);
  assert.ok(result.timings.onnxRuns >= 6 + 2 + 1, `onnx runs ${result.timings.onnxRuns}`);
  assert.ok(result.timings.onnxMs <= result.timings.totalMs);
  assert.deepEqual(loadedHere.filter((file) => file.includes('onnxruntime')), [], 'onnxruntime loaded on the caller thread');
});

test('an abort stops a running generation between steps and the generator serves the next one', async () => {
  const controller = new AbortController();
  const seen: number[] = [];
  await assert.rejects(
    generator.generate({ ...request, steps: 30 }, {
      signal: controller.signal,
      onProgress: ({ step }) => {
        seen.push(step);
        if (step === 1) controller.abort();
      },
    }),
    { name: 'AbortError' },
  );
  assert.ok(seen.length < 30, `ran ${seen.length} steps after the abort`);
  const after = await generator.generate(request);
  assert.equal(after.panels.length, 1);
});

test('requests queue behind each other and give the same image as when run alone', async () => {
  const [a, b] = await Promise.all([generator.generate(request), generator.generate({ ...request, seed: 12 })]);
  const alone = await generator.generate(request);
  assert.deepEqual(a.panels[0]!.png, alone.panels[0]!.png);
  assert.notDeepEqual(a.panels[0]!.png, b.panels[0]!.png);
});

test('invalid requests are rejected with the pipeline\'s reason', async () => {
  await assert.rejects(generator.generate({ ...request, width: 65 }), { name: 'InvalidRequestError', message: /width = 65/ });
});

test('a model folder that cannot load rejects start() with the reason', async () => {
  await assert.rejects(ImageGenerator.start(fixturePath('does-not-exist'), { kind: 'cpu', index: 0 }), /does-not-exist does not exist/);
});

test('a thread that dies fails the generation it was given and every later one, at once', { timeout: 60_000 }, async () => {
  const dying = await ImageGenerator.start(fixturePath('tiny-sdxl'), { kind: 'cpu', index: 0 });
  const thread = threads.at(-1)!;
  const given = dying.generate({ ...request, steps: 200 });
  // Stopped before it reaches onnxruntime: a thread stopped inside run() takes the whole process down.
  await thread.terminate();
  await assert.rejects(given, { name: 'InferenceThreadError', message: 'the inference thread exited with code 1' });
  assert.equal((await dying.died).message, 'the inference thread exited with code 1');
  const started = performance.now();
  await assert.rejects(dying.generate(request), { name: 'InferenceThreadError', message: 'the inference thread exited with code 1' });
  assert.ok(performance.now() - started < 1000, 'a later call is refused at once');
  await dying.close();
});

test('a thread silent for longer than the step timeout is given up, every call fails from then on, and it stops once idle', { timeout: 60_000 }, async () => {
  // No step of any model finishes within a millisecond: the watchdog takes the thread for hung.
  const hung = await ImageGenerator.start(fixturePath('tiny-sdxl'), { kind: 'cpu', index: 0 }, {}, { stepTimeoutMs: 1 });
  const reason = 'the inference thread sent nothing for 1 ms (a step that never returns?); it is given up';
  await assert.rejects(hung.generate({ ...request, steps: 200 }), { name: 'InferenceThreadError', message: reason });
  assert.equal((await hung.died).message, reason);
  await assert.rejects(hung.generate(request), { name: 'InferenceThreadError', message: reason });
  // Slow rather than hung, the thread aborts between two steps; then it is idle and can be stopped safely.
  await hung.exited;
  await hung.close();
});
