import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidRequestError } from '../src/common/validation.js';
import { validateJobData } from '../src/queue/contracts.js';
import { planGeneration } from '../src/worker/generation-job.js';

// Contracts the bot checks before enqueueing and every worker again before running: the train job's, the blind
// pair's, and what the worker makes of a pair.

const HASH_A = 'a'.repeat(64);
const HASH_B = 'b'.repeat(64);
const trainJob = (overrides: Record<string, unknown> = {}) => ({
  requester: { userId: 'admin', displayName: 'Admin', guildId: 'guild-1' },
  replyTo: { channelId: 'channel-1' },
  snapshot: { id: 4, images: [HASH_A, HASH_B] },
  version: 'wrong-v4',
  baseVersion: null,
  steps: 30,
  seed: 7,
  ...overrides,
});

test('a train job names its snapshot\'s images by sorted, distinct sha256 and the version it makes', () => {
  assert.deepEqual(validateJobData('train', trainJob()), trainJob());
  const refused = (overrides: Record<string, unknown>, field: RegExp) =>
    assert.throws(() => validateJobData('train', trainJob(overrides)), (error: Error) => error instanceof InvalidRequestError && field.test(error.message));
  refused({ snapshot: { id: 4, images: [HASH_B, HASH_A] } }, /snapshot\.images .*sorted and distinct/);
  refused({ snapshot: { id: 4, images: [HASH_A, HASH_A] } }, /snapshot\.images .*sorted and distinct/);
  refused({ snapshot: { id: 4, images: [HASH_A, 'B'.repeat(64)] } }, /snapshot\.images\[1\].*lowercase hex sha256/);
  refused({ snapshot: { id: 4, images: [] } }, /snapshot\.images .*1 to/);
  refused({ snapshot: { id: 0, images: [HASH_A] } }, /snapshot\.id/);
  refused({ version: '../wrong' }, /version/);
  refused({ seed: -1 }, /seed/);
  refused({ loraVersion: 'wrong-v4' }, /data\.loraVersion .*not part of this job/);
});

const judgeJob = (overrides: Record<string, unknown> = {}) => ({
  requester: { userId: 'member', displayName: 'Member', guildId: 'guild-1' },
  replyTo: { channelId: 'channel-1' },
  settings: { prompt: 'a red bicycle', seed: 5, steps: 4, guidanceScale: 13, width: 64, height: 64, weighting: 'auto' },
  sides: [{ version: 'wrong-v2', strength: 0.75 }, { version: 'wrong-v1', strength: 0.75 }],
  ...overrides,
});

test('a judge job is two different sides, left then right, each a version or the base model', () => {
  assert.deepEqual(validateJobData('judge', judgeJob()), judgeJob());
  assert.deepEqual(validateJobData('judge', judgeJob({ sides: [null, { version: 'wrong-v1', strength: 1 }] })).sides, [null, { version: 'wrong-v1', strength: 1 }]);
  const refused = (overrides: Record<string, unknown>, field: RegExp) =>
    assert.throws(() => validateJobData('judge', judgeJob(overrides)), (error: Error) => error instanceof InvalidRequestError && field.test(error.message));
  refused({ sides: [{ version: 'wrong-v1', strength: 1 }] }, /^sides .*must list 2 sides/);
  refused({ sides: [{ version: 'wrong-v1', strength: 1 }, { version: 'wrong-v1', strength: 0.5 }] }, /^sides = "wrong-v1" must be two different versions/);
  refused({ sides: [null, null] }, /^sides = null must be two different versions/);
  refused({ sides: [{ version: '../x', strength: 1 }, null] }, /^lora\.version/);
  refused({ settings: { ...judgeJob().settings, negativePrompt: 'x' } }, /settings\.negativePrompt .*not part of this job/);
});

test('a judge job is one batch of two panels with "wrong" as the negative, each version on its own slot, and no name in any caption', () => {
  const plan = planGeneration('judge', judgeJob({ sides: [{ version: 'wrong-v2', strength: 0.75 }, null] }));
  assert.deepEqual(plan.request.panels.map(({ negativePrompt, loraStrength, loraSlot }) => ({ negativePrompt, loraStrength, loraSlot })), [
    { negativePrompt: 'wrong', loraStrength: 0.75, loraSlot: 0 },
    { negativePrompt: 'wrong', loraStrength: 0, loraSlot: 0 },
  ]);
  assert.deepEqual(plan.loras, [{ version: 'wrong-v2', strength: 0.75 }]);
  const both = planGeneration('judge', judgeJob());
  assert.deepEqual(both.request.panels.map((panel) => panel.loraSlot), [0, 1]);
  assert.deepEqual(both.loras.map((lora) => lora.version), ['wrong-v2', 'wrong-v1']);
  assert.deepEqual(both.panels.map((panel) => panel.caption), ['Left', 'Right']);
  assert.equal(both.request.seed, 5);
  assert.equal(both.lora, null);
  assert.doesNotMatch(both.compositeFooter!, /wrong-v|LoRA/, 'the composite names no version');
  assert.match(both.compositeFooter!, /seed 5 · 4 steps · guidance 13 · 64x64 · "a red bicycle"/);
});

test('job text with control characters or a blank prompt is refused by name; interaction tokens never travel in job data', () => {
  const refused = (overrides: Record<string, unknown>, message: RegExp) =>
    assert.throws(() => validateJobData('judge', judgeJob(overrides)), (error: Error) => error instanceof InvalidRequestError && message.test(error.message));
  refused({ settings: { ...judgeJob().settings, prompt: '\u0001cat' } }, /^settings\.prompt = "\\u0001cat" contains the control character U\+0001 at position 0/);
  refused({ settings: { ...judgeJob().settings, prompt: 'a cat\u001b[31m' } }, /control character U\+001B at position 5/);
  refused({ settings: { ...judgeJob().settings, prompt: 'half \ud83d' } }, /control character U\+D83D/);
  refused({ settings: { ...judgeJob().settings, prompt: '  \n ' } }, /^settings\.prompt = "  \\n " is empty; say what to draw/);
  const multiline = validateJobData('judge', judgeJob({ settings: { ...judgeJob().settings, prompt: 'a cat,\n\tby night 🐱' } }));
  assert.equal(multiline.settings.prompt, 'a cat,\n\tby night 🐱', 'tabs, line breaks and emoji are text');
  // A job queued by an older bot carries the interaction's token; it is dropped, not handed on.
  const legacy = validateJobData('judge', judgeJob({ replyTo: { channelId: 'channel-1', interactionToken: 'secret-token', tokenExpiresAt: 1 } }));
  assert.deepEqual(legacy.replyTo, { channelId: 'channel-1' });
});
