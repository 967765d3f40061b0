import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import type { SandboxMessageView } from '../src/sandbox/control-client.js';
import { answerTo, startBotStack, type BotStack } from './support/bot-stack.js';

// The bot under load and through failures: many members at once with Discord answering some requests with 429, a
// worker killed mid-job, the bot restarted, and an interaction token that expires before the image is ready.

const INTERACTION_ACK_DEADLINE_MS = 3_000;
const TOKEN_LIFETIME_MS = 15 * 60_000;
const stacks: BotStack[] = [];
after(async () => {
  for (const stack of stacks) await stack.close();
});

async function stackFor(label: string, options: Parameters<typeof startBotStack>[1] = {}): Promise<BotStack> {
  const stack = await startBotStack(label, options);
  stacks.push(stack);
  return stack;
}

function imageMessages(messages: SandboxMessageView[]): SandboxMessageView[] {
  return messages.filter((message) => message.attachments.length > 0);
}

test('50 /imagine from 10 members at once: all acknowledged in time, the per-member limit explained, every accepted job answered once', async () => {
  const stack = await stackFor('load', { rateLimitEveryNth: 7, botEnv: { MAX_QUEUED_PER_USER: '2', MAX_QUEUED_PER_GUILD: '100' } });
  const members = Array.from({ length: 10 }, (_, i) => `member${i}`);
  const sent = await Promise.all(Array.from({ length: 50 }, (_, i) => {
    const user = members[i % members.length]!;
    return stack.sandbox.command({ user, command: 'imagine', options: { prompt: `test pattern ${i}`, seed: i, steps: 2, size: '64x64' } })
      .then((handle) => ({ ...handle, user }));
  }));
  // The local Discord refuses an acknowledgement after 3 s (10062), as Discord does; so all of them acknowledged
  // means all of them in time.
  const interactions = await stack.sandbox.waitFor(async () => {
    const views = await Promise.all(sent.map((handle) => stack.sandbox.interaction(handle.interactionId)));
    return views.every((view) => view.acknowledgedAt !== null) ? views : null;
  }, { what: 'all 50 interactions acknowledged', timeoutMs: 10_000 });
  for (const interaction of interactions) assert.ok(interaction.acknowledgedAt! - interaction.createdAt <= INTERACTION_ACK_DEADLINE_MS);
  // Each interaction ends either with its image or with a private note about the limit (its public reply deleted).
  const outcome = await stack.sandbox.waitFor(async () => {
    const outcomes = await Promise.all(sent.map(async (handle) => {
      const messages = await stack.sandbox.messages('general', { user: handle.user });
      if (imageMessages(messages).some((message) => message.interactionId === handle.interactionId)) return 'image';
      const note = messages.find((message) => message.ephemeral && message.interactionId === handle.interactionId);
      return note ? note.content : null;
    }));
    return outcomes.every((result) => result !== null) ? outcomes : null;
  }, { what: 'an answer to all 50 commands', timeoutMs: 240_000 });
  const refusals = outcome.filter((result) => result !== 'image');
  assert.ok(refusals.length > 0, 'five each at once is more than the limit of two waiting');
  for (const refusal of refusals) assert.match(refusal!, /you already have 2 jobs waiting/);
  const accepted = outcome.length - refusals.length;
  assert.ok(accepted >= 20, `at least two per member were accepted (${accepted})`);
  const images = imageMessages(await stack.sandbox.messages());
  assert.equal(images.length, accepted, 'exactly one image message per accepted job');
  assert.equal(new Set(images.map((message) => message.interactionId)).size, accepted);
  const requests = await stack.sandbox.requests();
  assert.ok(requests.some((request) => request.status === 429), 'some requests were rate limited and retried');
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('a worker killed mid-job: the member still gets exactly one result', async () => {
  const stack = await stackFor('kill');
  const [first] = stack.workers;
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'a slow one', seed: 3, steps: 150, size: '256x256' } });
  await stack.waitForMessages((messages) => answerTo(messages, interactionId)?.content.includes('step'), 'progress from the first worker');
  first!.child.kill('SIGKILL');
  await first!.exited;
  await stack.startWorker();
  const result = await stack.waitForMessages((messages) => {
    const answer = answerTo(messages, interactionId);
    return answer && answer.attachments.length > 0 ? answer : null;
  }, 'the result from the second worker', { timeoutMs: 120_000 });
  assert.equal(result.attachments.length, 1);
  assert.equal(imageMessages(await stack.sandbox.messages()).length, 1, 'one result message, not two');
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('the bot restarted: buttons on messages from before still work', async () => {
  const stack = await stackFor('restart');
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'a teapot', seed: 11, size: '64x64' } });
  const result = await stack.waitForMessages((messages) => {
    const answer = answerTo(messages, interactionId);
    return answer && answer.attachments.length > 0 ? answer : null;
  }, 'the first result');
  await stack.restartBot();
  const compareButton = result.components.flatMap((row) => row['components'] as Array<{ custom_id: string; label: string }>)
    .find((button) => button.label === 'Compare this seed')!;
  const pressed = await stack.sandbox.press('bob', result.id, compareButton.custom_id);
  const triptych = await stack.waitForMessages((messages) => {
    const answer = answerTo(messages, pressed.interactionId);
    return answer && answer.attachments.length > 0 ? answer : null;
  }, 'the triptych asked for after the restart');
  assert.equal(triptych.attachments[0]!.filename, 'triptych.png');
  const seed = (triptych.embeds[0]!['fields'] as Array<{ name: string; value: string }>).find((field) => field.name === 'Seed')!.value;
  assert.equal(seed, '11', 'the same seed as the message the button was on');
  assert.deepEqual(await stack.sandbox.violations(), []);
});

/** Refusals of a webhook request (an interaction token's edit) since `since` on the local Discord's clock. */
async function refusedWebhookRequests(stack: BotStack, since: number) {
  return (await stack.sandbox.requests()).filter((request) => request.at >= since && request.route.startsWith('/webhooks/') && request.status >= 400);
}

/** Queues alice's /imagine with no worker running, then moves the local Discord's clock past its token's 15 minutes. */
async function queueThenExpire(stack: BotStack): Promise<{ interactionId: string; expiredAt: number }> {
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'a late one', seed: 8, size: '64x64' } });
  await stack.waitForMessages((messages) => answerTo(messages, interactionId)?.content.includes('Queued'), 'the queued message');
  const expiredAt = await stack.sandbox.advanceClock(TOKEN_LIFETIME_MS + 60_000);
  return { interactionId, expiredAt };
}

/** The result posted as a channel message that mentions alice, with the first reply pointing at it and no ❌ left. */
async function postedToTheChannel(stack: BotStack, interactionId: string): Promise<void> {
  const alice = (await stack.sandbox.state()).users.find((user) => user.name === 'alice')!;
  const posted = await stack.waitForMessages((messages) => imageMessages(messages).find((message) => message.interactionId === null), 'the result as a channel message');
  assert.ok(posted.content.includes(`<@${alice.id}>`), posted.content);
  assert.deepEqual(posted.mentions, [alice.id]);
  assert.equal(imageMessages(await stack.sandbox.messages()).length, 1);
  // The first reply no longer says "Queued" beside a live ❌: it points at the result.
  const original = await stack.waitForMessages((messages) => {
    const reply = answerTo(messages, interactionId);
    return reply?.content.startsWith('⤵️') ? reply : null;
  }, 'the first reply pointing at the result');
  assert.ok(original.content.endsWith(`/${posted.id}`), original.content);
  assert.deepEqual(original.components, [], 'no ❌ left on it');
}

test('a result after the interaction token expired, unknown to the bot: Discord refuses the edit and the result is posted to the channel', async () => {
  const stack = await stackFor('expiry', { workers: 0 });
  const { interactionId, expiredAt } = await queueThenExpire(stack);
  // No interaction since has shown the bot Discord's time: it takes the token for alive and learns otherwise.
  await stack.startWorker();
  await postedToTheChannel(stack, interactionId);
  await stack.bot.waitForLine(/its reply can no longer be edited \(.*Invalid Webhook Token/, { timeoutMs: 20_000 });
  assert.ok((await refusedWebhookRequests(stack, expiredAt)).length > 0, 'the bot tried the expired token');
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('a result after the interaction token expired, as the bot knows from a later interaction: posted to the channel without trying the token', async () => {
  const stack = await stackFor('expiry-known', { workers: 0 });
  const { interactionId, expiredAt } = await queueThenExpire(stack);
  // Bob's command, created at the moved time, shows the bot where Discord's clock stands.
  const queue = await stack.sandbox.command({ user: 'bob', command: 'queue' });
  await stack.waitForMessages((messages) => messages.find((message) => message.ephemeral && message.interactionId === queue.interactionId), 'the answer to bob', { user: 'bob' });
  await stack.startWorker();
  await postedToTheChannel(stack, interactionId);
  assert.deepEqual(await refusedWebhookRequests(stack, expiredAt), [], 'no edit with the expired token was tried');
  assert.doesNotMatch(stack.bot.output(), /can no longer be edited/);
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('/queue lists a member’s waiting jobs; ❌ and /cancel cancel them; a bad job id gets a private answer', async () => {
  const stack = await stackFor('cancel', { workers: 0 });
  const first = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'first', size: '64x64' } });
  const second = await stack.sandbox.command({ user: 'alice', command: 'wrong', options: { prompt: 'second', size: '64x64' } });
  const queuedFirst = await stack.waitForMessages((messages) => {
    const answer = answerTo(messages, first.interactionId);
    return answer?.content.includes('position 1') ? answer : null;
  }, 'the first job at position 1');
  await stack.waitForMessages((messages) => answerTo(messages, second.interactionId)?.content.includes('position 2'), 'the second job at position 2');

  const privateReply = async (user: string, interactionId: string) => stack.waitForMessages((messages) =>
    messages.find((message) => message.ephemeral && message.interactionId === interactionId && message.content !== '')?.content,
  `a private reply to ${user}`, { user });
  const queue = await stack.sandbox.command({ user: 'alice', command: 'queue' });
  const listing = await privateReply('alice', queue.interactionId);
  assert.match(listing, /\/imagine “first” — position 1/);
  assert.match(listing, /\/wrong “second” — position 2/);

  const cancelButton = queuedFirst.components.flatMap((row) => row['components'] as Array<{ custom_id: string; label: string }>)
    .find((button) => button.label === 'Cancel')!;
  const byBob = await stack.sandbox.press('bob', queuedFirst.id, cancelButton.custom_id);
  assert.match(await privateReply('bob', byBob.interactionId), /Only the member who asked/);
  const byAlice = await stack.sandbox.press('alice', queuedFirst.id, cancelButton.custom_id);
  assert.match(await privateReply('alice', byAlice.interactionId), /cancelled before it started/);
  await stack.waitForMessages((messages) => answerTo(messages, first.interactionId)?.content.includes('Cancelled'), 'the first job’s message to say so');

  const bad = await stack.sandbox.command({ user: 'alice', command: 'cancel', options: { job: 'no-such-job' } });
  assert.match(await privateReply('alice', bad.interactionId), /no job `no-such-job`/);
  const cancelAll = await stack.sandbox.command({ user: 'alice', command: 'cancel' });
  assert.match(await privateReply('alice', cancelAll.interactionId), /\/wrong “second” was cancelled before it started/);
  await stack.waitForMessages((messages) => answerTo(messages, second.interactionId)?.content.includes('Cancelled'), 'the second job’s message to say so');
  const after = await stack.sandbox.command({ user: 'alice', command: 'queue' });
  assert.match(await privateReply('alice', after.interactionId), /no jobs waiting or running/);

  // A job that can never succeed (this worker has no LoRA, and no worker put one in Redis) fails in public briefly,
  // with a short reason in private and the worker's words in the bot's log.
  await stack.startWorker({ LORA_PATH: '' });
  const doomed = await stack.sandbox.command({ user: 'alice', command: 'wrong', options: { prompt: 'third', size: '64x64' } });
  await stack.waitForMessages((messages) => answerTo(messages, doomed.interactionId)?.content === '⚠️ This job failed.', 'the failure');
  const why = await stack.waitForMessages((messages) =>
    messages.find((message) => message.ephemeral && message.interactionId === doomed.interactionId && message.content.startsWith('Why:'))?.content,
  'the private reason', { user: 'alice' });
  assert.match(why, /^Why: the worker could not make this image \(job [0-9a-f-]{36}\); an admin can find why in the bot's log\.$/);
  assert.doesNotMatch(why, /LORA_PATH|Redis/, 'no detail of the deployment reaches the member');
  await stack.bot.waitForLine(/LoRA version "tiny_sdxl_lora_kohya" is neither in Redis nor this worker's LORA_PATH/);
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('30 waiting jobs move up when one ends: their messages are edited at most 10 at a time, nearest the front first, until all are right', async () => {
  const stack = await stackFor('positions', { workers: 0, botEnv: { MAX_QUEUED_PER_GUILD: '100' } });
  const members = Array.from({ length: 30 }, (_, i) => `waiting${i}`);
  const sent: Array<{ user: string; interactionId: string }> = [];
  for (const user of members) sent.push({ user, ...(await stack.sandbox.command({ user, command: 'imagine', options: { prompt: `in line ${user}`, size: '64x64' } })) });
  const positionOf = (messages: SandboxMessageView[], interactionId: string) => Number(/position (\d+)/.exec(answerTo(messages, interactionId)?.content ?? '')?.[1] ?? NaN);
  // The bot takes the commands as they come, not necessarily in the order they were sent.
  const places = await stack.waitForMessages((messages) => {
    const shown = sent.map((handle) => positionOf(messages, handle.interactionId));
    return [...shown].sort((a, b) => a - b).every((position, i) => position === i + 1) ? shown : null;
  }, 'all 30 in line');
  const first = sent[places.indexOf(1)]!;
  const behind = sent.filter((handle) => handle !== first);

  const cancelledAt = await stack.sandbox.now();
  const cancel = await stack.sandbox.command({ user: first.user, command: 'cancel' });
  await stack.waitForMessages((messages) => behind.every((handle) => positionOf(messages, handle.interactionId) === places[sent.indexOf(handle)]! - 1),
    'every place moved up by one', { timeoutMs: 30_000 });
  const edits = (await stack.sandbox.requests())
    .filter((request) => request.at >= cancelledAt && request.method === 'PATCH' && request.route.includes('@original') && request.status < 300);
  // One refresh's edits go out together; any one second holds at most one refresh, and the cancel's own reply.
  for (const edit of edits) {
    const burst = edits.filter((other) => other.at >= edit.at && other.at < edit.at + 1_000).length;
    assert.ok(burst <= 11, `${burst} edits within a second of ${edit.at}`);
  }
  assert.ok(edits.length >= 29, `each of the 29 moved (${edits.length} edits)`);
  assert.match(await stack.waitForMessages((messages) => messages.find((message) => message.ephemeral && message.interactionId === cancel.interactionId)?.content, 'the cancel\'s answer', { user: first.user }), /cancelled before it started/);
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('a server not trusted with the training set generates only: no votes, no 👎 buttons, and every training command refused', async () => {
  // The sandbox's server is not among TRAINING_GUILD_IDS.
  const stack = await stackFor('untrusted', { botEnv: { TRAINING_GUILD_IDS: '999999999999999999', VOTES_TO_CURATE: '1' } });
  await stack.sandbox.createUser('adminzed', { admin: true });
  const single = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'a plain jug', seed: 2, size: '64x64' } });
  const triptych = await stack.sandbox.command({ user: 'bob', command: 'compare', options: { prompt: 'a plain jug', seed: 2, size: '64x64' } });
  const [image, compared] = await Promise.all([single, triptych].map((handle) => stack.waitForMessages((messages) => {
    const answer = answerTo(messages, handle.interactionId);
    return answer && answer.attachments.length > 0 ? answer : null;
  }, 'a result', { timeoutMs: 60_000 })));
  const labels = compared!.components.flatMap((row) => (row['components'] as Array<{ label: string }>).map((button) => button.label));
  assert.ok(!labels.some((label) => /is wrong/.test(label)), `no 👎 panel buttons: ${labels.join(', ')}`);
  assert.equal(image!.reactions.length, 0, 'the bot adds no 👎 of its own');
  const adminzed = (await stack.sandbox.state()).users.find((user) => user.name === 'adminzed')!;
  await stack.sandbox.react('adminzed', image!.id, '👎');
  await stack.bot.waitForLine(new RegExp(`👎 by ${adminzed.id} on job \\S+ panel 1: not a vote: this server does not curate the training set`), { timeoutMs: 20_000 });

  const privately = async (user: string, command: string, subcommand?: string) => {
    const { interactionId } = await stack.sandbox.command({ user, command, ...(subcommand ? { subcommand } : {}), options: {}, force: true });
    return stack.waitForMessages((messages) => messages.find((message) => message.ephemeral && message.interactionId === interactionId)?.content, `the answer to /${command}`, { user });
  };
  for (const [command, subcommand] of [['train'], ['judge'], ['dataset', 'stats'], ['lora', 'list']] as const) {
    assert.match(await privately('adminzed', command, subcommand), /This server does not take part in training the "wrong" LoRA/, `/${command}`);
  }
  assert.deepEqual(readdirSync(path.join(stack.dataDir, 'dataset')), [], 'an admin\'s 👎 curated nothing');
  assert.deepEqual(await stack.sandbox.violations(), []);
});
