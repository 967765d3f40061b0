import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidRequestError } from '../src/common/validation.js';
import { validateJobData } from '../src/queue/contracts.js';

// The train job's contract, which the bot checks before enqueueing and every worker again before training.

const HASH_A = 'a'.repeat(64);
const HASH_B = 'b'.repeat(64);
const trainJob = (overrides: Record<string, unknown> = {}) => ({
  requester: { userId: 'admin', displayName: 'Admin', guildId: 'guild-1' },
  replyTo: { channelId: 'channel-1', interactionToken: null, tokenExpiresAt: null },
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
