import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { QueueKeys } from '../src/queue/keys.js';
import { QUEUE_NAMES } from '../src/queue/contracts.js';
import type { SandboxMessageView } from '../src/sandbox/control-client.js';
import { answerTo, startBotStack, type BotStack, type StackOptions } from './support/bot-stack.js';
import { cleanUpTestRedis, startTestRedis, type TestRedisServer } from './support/redis-server.js';
import { TEST_REDIS_URL } from './support/worker-process.js';

// What the README promises members and admins, each in a stack of its own where it needs one: who counts as an
// admin, the buttons on a result, what a waiting job is told, and what happens while Redis or the bot is down.

/** README: "At most one edit per message every 2 seconds". */
const EDIT_SPACING_MS = 2_000;
/** README (Progress): a job's progress is "published at most every 500 ms". */
const PROGRESS_SPACING_MS = 500;
/** The local Discord and Redis stamp times in whole milliseconds, after the sender's own clock decided. */
const STAMP_SLACK_MS = 50;
const THUMBS_DOWN = '👎';

const stacks: BotStack[] = [];
after(async () => {
  for (const stack of stacks) await stack.close();
  await cleanUpTestRedis();
});

async function stackFor(label: string, options: StackOptions = {}): Promise<BotStack> {
  const stack = await startBotStack(label, options);
  stacks.push(stack);
  return stack;
}

function buttons(message: SandboxMessageView): Array<{ custom_id: string; label: string }> {
  return message.components.flatMap((row) => row['components'] as Array<{ custom_id: string; label: string }>);
}

function button(message: SandboxMessageView, label: string): string {
  const found = buttons(message).find((candidate) => candidate.label === label);
  assert.ok(found, `a ${label} button among ${buttons(message).map((candidate) => candidate.label).join(', ')}`);
  return found.custom_id;
}

function field(message: SandboxMessageView, name: string): string {
  const found = (message.embeds[0]?.['fields'] as Array<{ name: string; value: string }> | undefined)?.find((candidate) => candidate.name === name);
  assert.ok(found, `embed field ${name}`);
  return found.value;
}

function jobIdOf(message: SandboxMessageView): string {
  const footer = (message.embeds[0]?.['footer'] as { text: string } | undefined)?.text ?? '';
  const jobId = /job ([0-9a-f-]{36})/.exec(footer)?.[1];
  assert.ok(jobId, `a job id in the footer "${footer}"`);
  return jobId;
}

async function reply(stack: BotStack, interactionId: string, show: (content: string) => boolean = () => true): Promise<SandboxMessageView> {
  return stack.waitForMessages((messages) => {
    const answer = answerTo(messages, interactionId);
    return answer && show(answer.content) ? answer : null;
  }, `the reply to interaction ${interactionId}`);
}

async function result(stack: BotStack, interactionId: string): Promise<SandboxMessageView> {
  return stack.waitForMessages((messages) => {
    const answer = answerTo(messages, interactionId);
    return answer && answer.attachments.length > 0 ? answer : null;
  }, `the result of interaction ${interactionId}`);
}

async function privateReply(stack: BotStack, user: string, interactionId: string): Promise<string> {
  return stack.waitForMessages((messages) => messages.find((message) => message.ephemeral && message.interactionId === interactionId && message.content !== '')?.content,
    `a private reply to ${user}`, { user, timeoutMs: 20_000 });
}

/** One stack for the admin tests and the buttons: a Curator role counts as admin here, a vote alone does not curate. */
let shared: Promise<BotStack> | null = null;
function sharedStack(): Promise<BotStack> {
  shared ??= (async () => {
    const stack = await stackFor('promises', { botEnv: (state) => ({ ADMIN_ROLE_IDS: state.roles['Curator']!, VOTES_TO_CURATE: '2' }) });
    await stack.sandbox.createUser('manny', { roles: ['Manager'] });
    await stack.sandbox.createUser('cora', { roles: ['Curator'] });
    await stack.sandbox.createUser('plain');
    return stack;
  })();
  return shared;
}

test('admins: Manage Server alone, or a role in ADMIN_ROLE_IDS without it, makes one; their 👎 curates at once and /dataset remove is theirs', async () => {
  const stack = await sharedStack();
  const images = new Map<string, SandboxMessageView>();
  for (const voter of ['manny', 'cora', 'plain']) {
    const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: `voted by ${voter}`, seed: 3, size: '64x64' } });
    images.set(voter, await result(stack, interactionId));
  }
  const users = (await stack.sandbox.state()).users;
  const idOf = (name: string) => users.find((user) => user.name === name)!.id;
  const outcomes = new Map<string, string>();
  for (const [voter, image] of images) {
    const after = stack.bot.output().length;
    await stack.sandbox.react(voter, image.id, THUMBS_DOWN);
    outcomes.set(voter, await stack.bot.waitForLine(new RegExp(`👎 by ${idOf(voter)} on job ${jobIdOf(image)} panel 1: `), { after, timeoutMs: 20_000 }));
  }
  assert.match(outcomes.get('manny')!, /: counted \(an admin\), 1 of 2 vote\(s\), training set entry #\d+$/, 'Manage Server');
  assert.match(outcomes.get('cora')!, /: counted \(an admin\), 1 of 2 vote\(s\), training set entry #\d+$/, 'a role in ADMIN_ROLE_IDS');
  assert.match(outcomes.get('plain')!, /: counted, 1 of 2 vote\(s\)$/, 'a member with neither');

  const entryOf = (voter: string) => Number(/entry #(\d+)$/.exec(outcomes.get(voter)!)![1]);
  const refused = await stack.sandbox.command({ user: 'plain', command: 'dataset', subcommand: 'remove', options: { entry: entryOf('manny') } });
  assert.match(await privateReply(stack, 'plain', refused.interactionId), /Only server admins/);
  for (const [admin, entry] of [['cora', entryOf('manny')], ['manny', entryOf('cora')]] as const) {
    const removed = await stack.sandbox.command({ user: admin, command: 'dataset', subcommand: 'remove', options: { entry } });
    assert.match(await privateReply(stack, admin, removed.interactionId), new RegExp(`^Removed #${entry} `), admin);
  }
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('❌: another member is refused, an admin cancels a member\'s waiting job and, by Manage Server, the running one; progress edits and the worker\'s reports keep their spacing', async () => {
  const stack = await sharedStack();
  // As long a job as a member may ask for: it is stopped once the test has seen what it waits for.
  const long = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'a long one', seed: 1, steps: 150, size: '256x256' } });
  const behind = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'behind it', seed: 2, size: '64x64' } });
  const stepOf = (content: string) => Number(/step (\d+)\/150/.exec(content)?.[1] ?? NaN);
  const first = await reply(stack, long.interactionId, (content) => stepOf(content) > 0);
  const running = await reply(stack, long.interactionId, (content) => stepOf(content) > stepOf(first.content));
  const waiting = await reply(stack, behind.interactionId, (content) => content.includes('position 1'));

  const byBob = await stack.sandbox.press('bob', running.id, button(running, 'Cancel'));
  assert.match(await privateReply(stack, 'bob', byBob.interactionId), /Only the member who asked for this job, or an admin of the server it was asked in/);
  const byCora = await stack.sandbox.press('cora', waiting.id, button(waiting, 'Cancel'));
  assert.match(await privateReply(stack, 'cora', byCora.interactionId), /“behind it” was cancelled before it started/);
  const byManny = await stack.sandbox.press('manny', running.id, button(running, 'Cancel'));
  assert.match(await privateReply(stack, 'manny', byManny.interactionId), /“a long one” is stopping/);
  const cancelled = await reply(stack, long.interactionId, (content) => content.includes('Cancelled'));
  assert.equal(cancelled.attachments.length, 0);
  assert.ok((await reply(stack, behind.interactionId)).content.includes('Cancelled'));

  const editTimes = cancelled.edits.map((edit) => edit.at);
  assert.ok(editTimes.length >= 3, `two progress edits and the end at least: ${JSON.stringify(cancelled.edits)}`);
  for (let i = 1; i < editTimes.length; i++) {
    assert.ok(editTimes[i]! - editTimes[i - 1]! >= EDIT_SPACING_MS - STAMP_SLACK_MS, `edit spacing ${editTimes[i]! - editTimes[i - 1]!} ms`);
  }
  // The worker's reports, as Redis stamped them in the queue's event stream.
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    const jobId = jobIdOf(cancelled);
    const events = await redis.xrange(`${stack.prefix}:${QUEUE_NAMES.generation}:events`, '-', '+');
    const reports = events.filter(([, fields]) => fields[fields.indexOf('event') + 1] === 'progress' && fields[fields.indexOf('jobId') + 1] === jobId)
      .map(([id]) => Number(id.split('-')[0]));
    assert.ok(reports.length >= 3, `${reports.length} progress reports`);
    for (let i = 1; i < reports.length; i++) {
      assert.ok(reports[i]! - reports[i - 1]! >= PROGRESS_SPACING_MS - STAMP_SLACK_MS, `progress reports ${reports[i]! - reports[i - 1]!} ms apart`);
    }
  } finally {
    redis.disconnect();
  }
  // The worker is free again.
  const next = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'after the cancel', size: '64x64' } });
  await result(stack, next.interactionId);
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('🔁 New seed: the same prompt and settings drawn with another seed', async () => {
  const stack = await sharedStack();
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'a brass lamp', negative: 'dust', seed: 5, steps: 3, size: '128x128' } });
  const first = await result(stack, interactionId);
  const pressed = await stack.sandbox.press('bob', first.id, button(first, 'New seed'));
  const second = await result(stack, pressed.interactionId);
  assert.equal(second.embeds[0]!['description'], 'a brass lamp');
  for (const name of ['Negative prompt', 'Steps', 'Size', 'Guidance']) assert.equal(field(second, name), field(first, name), name);
  assert.notEqual(field(second, 'Seed'), '5');
  const [before, again] = await Promise.all([first, second].map((message) => stack.sandbox.download(message.attachments[0]!.url)));
  assert.ok(!before!.equals(again!), 'another seed draws another image');
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('waiting jobs are told their place and an estimate from the workers\' mean durations', async () => {
  const stack = await stackFor('estimate', { workers: 0 });
  // What workers record after each job: durations whose mean (8 s) is neither their median nor the latest.
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    await redis.rpush(new QueueKeys(stack.prefix).durations('imagine'), '3000', '9000', '12000');
  } finally {
    redis.disconnect();
  }
  const first = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'first in line', size: '64x64' } });
  assert.match((await reply(stack, first.interactionId, (content) => content.startsWith('⏳'))).content, /^⏳ Queued · position 1 · about 8 s$/);
  const second = await stack.sandbox.command({ user: 'bob', command: 'imagine', options: { prompt: 'second in line', size: '64x64' } });
  assert.match((await reply(stack, second.interactionId, (content) => content.startsWith('⏳'))).content, /^⏳ Queued · position 2 · about 16 s$/,
    'its own mean duration after the one ahead');
  const empty = await stack.sandbox.command({ user: 'adminzoe', command: 'train', options: { steps: 3 } });
  assert.match(await privateReply(stack, 'adminzoe', empty.interactionId), /The training set is empty/, 'nothing was curated in this stack');
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('a job finished while the bot was down is delivered, in its reply, when the bot comes back', async () => {
  const stack = await stackFor('downtime', { workers: 0 });
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'made meanwhile', seed: 4, size: '64x64' } });
  const jobId = jobIdOf(await reply(stack, interactionId, (content) => content.includes('Queued')));
  await stack.stopBot();
  const worker = await stack.startWorker();
  await worker.waitForLine(new RegExp(`job ${jobId} \\(imagine\\) done`));
  await stack.startBot();
  // Well before the periodic check (60 s): the start itself looks for what finished meanwhile.
  const delivered = await stack.waitForMessages((messages) => {
    const answer = answerTo(messages, interactionId);
    return answer && answer.attachments.length > 0 ? answer : null;
  }, 'the result after the restart', { timeoutMs: 30_000 });
  assert.equal(jobIdOf(delivered), jobId);
  assert.equal((await stack.sandbox.messages()).filter((message) => message.attachments.length > 0).length, 1, 'one result');
  assert.deepEqual(await stack.sandbox.violations(), []);
});

test('with Redis unreachable a command gets a private "queue unreachable" and nothing public; once Redis is back the next one is queued; the bot stops while Redis is away', async () => {
  let redis: TestRedisServer | null = await startTestRedis();
  const { port, dir, url } = redis;
  const stack = await stackFor('unreachable', { workers: 0, redisUrl: url });
  const stopRedis = async () => {
    await redis!.stop();
    redis = null;
  };
  const startRedis = async () => {
    redis = await startTestRedis({ port, dir });
  };
  try {
    await stopRedis();
    const refused = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'while Redis is away', size: '64x64' } });
    assert.equal(await privateReply(stack, 'alice', refused.interactionId), 'The image queue is unreachable right now; please try again in a minute.');
    assert.equal(answerTo(await stack.sandbox.messages(), refused.interactionId), undefined, 'the public "thinking…" reply is gone');

    await startRedis();
    // The bot's connection comes back after a backoff of its own: the member tries again until a try is queued, each
    // try ending in its public reply or a private note.
    const tryOnce = async (): Promise<'queued' | 'refused'> => {
      const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'Redis is back', size: '64x64' } });
      return stack.waitForMessages((messages) => {
        if (answerTo(messages, interactionId)?.content.includes('Queued')) return 'queued';
        return messages.some((message) => message.ephemeral && message.interactionId === interactionId && message.content !== '') ? 'refused' : null;
      }, 'an answer to the try', { user: 'alice', timeoutMs: 20_000 });
    };
    await stack.sandbox.waitFor(async () => (await tryOnce()) === 'queued', { what: 'a try queued once Redis is back', timeoutMs: 60_000 });
    assert.deepEqual(await stack.sandbox.violations(), []);

    await stopRedis();
    stack.bot.child.kill('SIGTERM');
    const STOP_BOUND_MS = 60_000;
    const stopped = await Promise.race([stack.bot.exited, new Promise((resolve) => setTimeout(resolve, STOP_BOUND_MS, 'still running').unref())]);
    assert.deepEqual(stopped, { code: 0, signal: null }, 'SIGTERM stops the bot while its Redis is away');
  } finally {
    // Whatever happened: no bot left waiting for its Redis, and a Redis for the stack's teardown.
    if (stack.bot.child.exitCode === null && stack.bot.child.signalCode === null) stack.bot.child.kill('SIGKILL');
    if (redis === null) await startRedis();
  }
});
