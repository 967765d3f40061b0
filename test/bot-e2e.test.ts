import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import { SafetensorsFile } from '../src/gpu/lora/safetensors.js';
import { QUEUE_NAMES } from '../src/queue/contracts.js';
import type { SandboxMessageView } from '../src/sandbox/control-client.js';
import { runCli } from './support/cli.js';
import { answerTo, startBotStack, type BotStack } from './support/bot-stack.js';
import { fixturePath } from './support/fixtures.js';
import { maxPixelDifference } from './support/pixels.js';
import { TEST_REDIS_URL, TINY_LORA, TINY_LORA_VERSION } from './support/worker-process.js';

// The product end to end: members use slash commands, buttons and reactions in the local Discord; the real bot
// process answers through Discord's REST API, a real worker draws on the tiny model, and every request the bot makes
// is checked against Discord's OpenAPI spec by the local Discord.

// Each test makes what it needs (its own images, votes and users) and puts back what it changes for the server
// (defaults, the served LoRA version), so that any one of them runs alone, and one failing leaves the others as they
// were. A trained candidate is made once, by the first test that needs one.

const INTERACTION_ACK_DEADLINE_MS = 3_000;
/** README: "At most one edit per message every 2 seconds"; the local Discord stamps edits in whole milliseconds. */
const EDIT_SPACING_MS = 2_000;
const STAMP_SLACK_MS = 50;
const THUMBS_DOWN = '👎';
/** A 👎 with a skin tone: a second reaction by the same member that is the same vote. */
const THUMBS_DOWN_MEDIUM = '👎🏽';
const MAX_TRAININGS_PER_DAY = 3;

let stack: BotStack;
before(async () => {
  stack = await startBotStack('bot', {
    botEnv: {
      VOTES_TO_CURATE: '2', MAX_QUEUED_PER_USER: '2', JUDGING_SEED: '7', AUTO_PROMOTE_WIN_RATE: '0.6', AUTO_PROMOTE_MIN_VOTES: '12',
      MAX_TRAININGS_PER_DAY: String(MAX_TRAININGS_PER_DAY),
    },
    workerEnv: { REFINER_DIR: fixturePath('tiny-sdxl-refiner') },
  });
  // Admins the tests share; a name not starting with "admin" would be made a plain member on first use.
  await stack.sandbox.createUser('grace', { admin: true });
  await stack.sandbox.createUser('adminhazel', { admin: true });
});
after(async () => {
  await stack?.close();
});

async function assertNoViolations(): Promise<void> {
  const violations = await stack.sandbox.violations();
  assert.deepEqual(violations, [], 'every request the bot made follows Discord’s OpenAPI spec and limits');
}

function hasImage(message: SandboxMessageView | undefined): message is SandboxMessageView {
  return message !== undefined && message.attachments.length > 0;
}

async function resultOf(interactionId: string, timeoutMs = 60_000): Promise<SandboxMessageView> {
  return stack.waitForMessages((messages) => {
    const answer = answerTo(messages, interactionId);
    return hasImage(answer) ? answer : null;
  }, `the result of interaction ${interactionId}`, { timeoutMs });
}

function attachment(message: SandboxMessageView, filename: string) {
  const found = message.attachments.find((candidate) => candidate.filename === filename);
  assert.ok(found, `${filename} among ${message.attachments.map((candidate) => candidate.filename).join(', ')}`);
  return found;
}

function field(message: SandboxMessageView, name: string): string {
  const fields = (message.embeds[0]?.['fields'] ?? []) as Array<{ name: string; value: string }>;
  const found = fields.find((candidate) => candidate.name === name);
  assert.ok(found, `embed field ${name}`);
  return found.value;
}

function buttons(message: SandboxMessageView): Array<{ custom_id: string; label: string }> {
  return message.components.flatMap((row) => (row['components'] as Array<{ custom_id: string; label: string }>));
}

async function ephemeralMessageTo(user: string, interactionId: string): Promise<SandboxMessageView> {
  return stack.waitForMessages((messages) => {
    return messages.find((message) => message.ephemeral && message.interactionId === interactionId && message.content !== '');
  }, `a private reply to ${user}`, { user, timeoutMs: 20_000 });
}

async function ephemeralReplyTo(user: string, interactionId: string): Promise<string> {
  return (await ephemeralMessageTo(user, interactionId)).content;
}

function jobIdOf(message: SandboxMessageView): string {
  const footer = (message.embeds[0]?.['footer'] as { text: string } | undefined)?.text ?? '';
  const jobId = /job ([0-9a-f-]{36})/.exec(footer)?.[1];
  assert.ok(jobId, `a job id in the footer "${footer}"`);
  return jobId;
}

async function idOf(user: string): Promise<string> {
  const found = (await stack.sandbox.state()).users.find((candidate) => candidate.name === user);
  assert.ok(found, `user ${user}`);
  return found.id;
}

/**
 * `user` adds (or removes) a reaction on the bot's single-image `message`; resolves with the bot's log line about it.
 * Reactions are handled apart from anything a test can ask the bot, so this line is what says it has been.
 */
async function reacted(user: string, message: SandboxMessageView, options: { emoji?: string; remove?: boolean } = {}): Promise<string> {
  const after = stack.bot.output().length;
  const emoji = options.emoji ?? THUMBS_DOWN;
  const change = options.remove ? await stack.sandbox.unreact(user, message.id, emoji) : await stack.sandbox.react(user, message.id, emoji);
  assert.ok(change.changed, `${user}'s ${emoji} ${options.remove ? 'removed' : 'added'}`);
  const verb = options.remove ? 'removed by' : 'by';
  return stack.bot.waitForLine(new RegExp(`👎 ${verb} ${await idOf(user)} on job ${jobIdOf(message)} panel 1: `), { after, timeoutMs: 20_000 });
}

/** The training set's sidecars; the folder exists from the bot's first start, so a wrong path fails here. */
function datasetSidecars(): Array<Record<string, unknown>> {
  const dir = path.join(stack.dataDir, 'dataset');
  // The bot may remove an entry between the listing and the read: such a file is simply no longer in the set.
  return readdirSync(dir).filter((name) => name.endsWith('.json')).flatMap((name) => {
    try {
      return [JSON.parse(readFileSync(path.join(dir, name), 'utf8')) as Record<string, unknown>];
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw error;
    }
  });
}

/** The sidecar of one job's panel (0-based), or null when that panel is not in the training set. */
function datasetEntry(jobId: string, panelIndex: number): Record<string, unknown> | null {
  return datasetSidecars().find((entry) => {
    const provenance = entry['provenance'] as { jobId: string; panelIndex: number };
    return provenance.jobId === jobId && provenance.panelIndex === panelIndex;
  }) ?? null;
}

async function imagined(user: string, options: Record<string, string | number>): Promise<SandboxMessageView> {
  return resultOf((await stack.sandbox.command({ user, command: 'imagine', options: { size: '64x64', ...options } })).interactionId);
}

/** The version /wrong serves now, as /lora list marks it. */
async function servedVersion(): Promise<string> {
  const listed = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'list' });
  const served = /`([\w.-]+)` · \*\*served\*\*/.exec(await ephemeralReplyTo('grace', listed.interactionId))?.[1];
  assert.ok(served, 'a served version');
  return served;
}

/** Serves `version` again after a test that changed it, should the test have stopped before doing so itself. */
async function serveAgain(version: string): Promise<void> {
  if (await servedVersion() === version) return;
  const promoted = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'promote', options: { version } });
  await stack.waitForMessages((messages) => answerTo(messages, promoted.interactionId)?.content.includes(`\`${version}\` is served`), `${version} served again`);
}

interface Candidate {
  /** The /train's answer. */
  trained: SandboxMessageView;
  /** Its validation triptychs in the channel, one per validation prompt. */
  validations: SandboxMessageView[];
  version: string;
  /** The snapshot /train froze; the version is named by its number. */
  snapshot: number;
  /** The candidate's safetensors, as the workers get it from Redis. */
  file: string;
}

let candidate: Promise<Candidate> | null = null;

/** The candidate an admin's /train makes from one image members put in the set (3 steps, seed 4); made once. */
function trainedCandidate(): Promise<Candidate> {
  candidate ??= (async () => {
    const boat = await imagined('dave', { prompt: 'a blurry boat', seed: 8 });
    await reacted('alice', boat);
    assert.match(await reacted('bob', boat), /training set entry #\d+$/);
    const allowed = await stack.sandbox.command({ user: 'grace', command: 'train', options: { steps: 3, seed: 4 } });
    const trained = await stack.waitForMessages((messages) => {
      const answer = answerTo(messages, allowed.interactionId);
      // A failure ends the wait too, so the assertion below shows what the bot said.
      return answer && /Trained|failed|empty|not queued/.test(answer.content) ? answer : null;
    }, 'the trained candidate', { timeoutMs: 120_000 });
    const version = /✅ Trained candidate version `(wrong-v(\d+))`/.exec(trained.content);
    assert.ok(version, trained.content);
    // Waited for here, so that no test after sees them arrive.
    const validations = await stack.waitForMessages((messages) => {
      const found = messages.filter((message) => message.content.includes(`Validation of \`${version[1]}\``) && message.attachments.length === 4);
      return found.length === 3 ? found : null;
    }, 'three validation triptychs', { timeoutMs: 120_000 });
    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
    try {
      const tensors = await redis.getBuffer(`${stack.prefix}:wrongbot:lora:${version[1]}`);
      assert.ok(tensors !== null, 'the candidate\'s file is in Redis for every worker');
      const file = path.join(stack.dataDir, `${version[1]}.safetensors`);
      writeFileSync(file, tensors);
      return { trained, validations, version: version[1]!, snapshot: Number(version[2]), file };
    } finally {
      redis.disconnect();
    }
  })();
  return candidate;
}

test('/imagine: deferred within 3 s, progress edits at most every 2 s, and the image generate makes', async () => {
  // Long enough that the worker reports progress many times over: every report the bot showed at once would break the spacing.
  const options = { prompt: 'a lighthouse at dusk, oil painting', seed: 1234, steps: 100, size: '256x256', guidance: 7.5 };
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options });
  const result = await resultOf(interactionId);

  const interaction = await stack.sandbox.interaction(interactionId);
  assert.equal(interaction.callbackType, 5, 'a deferred reply');
  assert.ok(interaction.acknowledgedAt! - interaction.createdAt <= INTERACTION_ACK_DEADLINE_MS);
  const editTimes = result.edits.map((edit) => edit.at);
  assert.ok(editTimes.length >= 2, `its place or start, then the result: ${JSON.stringify(result.edits)}`);
  for (let i = 1; i < editTimes.length; i++) {
    assert.ok(editTimes[i]! - editTimes[i - 1]! >= EDIT_SPACING_MS - STAMP_SLACK_MS, `edit spacing ${editTimes[i]! - editTimes[i - 1]!} ms`);
  }

  const png = await stack.sandbox.download(attachment(result, 'panel-1.png').url);
  const cli = await runCli(['generate', '--model', fixturePath('tiny-sdxl'), '--prompt', options.prompt, '--seed', '1234', '--steps', '100',
    '--width', '256', '--height', '256', '--guidance', '7.5', '--out', path.join(stack.dataDir, 'imagine.png')]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.ok(png.equals(readFileSync(path.join(stack.dataDir, 'imagine.png'))), 'the delivered PNG is byte-identical to wrongbot generate');
  assert.equal(field(result, 'Seed'), '1234');
  assert.equal(field(result, 'Steps'), '100');
  assert.equal(field(result, 'Guidance'), '7.5');
  assert.equal(field(result, 'Size'), '256×256');
  assert.equal(field(result, 'Negative prompt'), 'none');
  assert.deepEqual(buttons(result).map((button) => button.label), ['New seed', 'Compare this seed']);
  await stack.waitForMessages((messages) => answerTo(messages, interactionId)?.reactions.some((reaction) => reaction.emoji === THUMBS_DOWN),
    'the bot’s own 👎 under the image, so voting is one click');
  await assertNoViolations();
});

/** A /wrong by alice of 'a cat', seed 7, at 0.75, checked against `generate --lora loraFile`; returns its LoRA field. */
async function wrongAsGenerateDraws(loraFile: string): Promise<string> {
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'wrong', options: { prompt: 'a cat', seed: 7, strength: 0.75, size: '64x64' } });
  const result = await resultOf(interactionId);
  assert.equal(field(result, 'Negative prompt'), '"wrong"');
  const out = path.join(stack.dataDir, 'wrong.png');
  // Steps and guidance as the embed shows them: the server's defaults, whatever they are.
  const cli = await runCli(['generate', '--model', fixturePath('tiny-sdxl'), '--prompt', 'a cat', '--negative', 'wrong', '--seed', '7', '--steps', field(result, 'Steps'),
    '--width', '64', '--height', '64', '--guidance', field(result, 'Guidance'), '--lora', loraFile, '--strength', '0.75', '--out', out]);
  assert.equal(cli.code, 0, cli.stderr);
  assert.ok((await stack.sandbox.download(attachment(result, 'panel-1.png').url)).equals(readFileSync(out)), `/wrong draws what generate --lora ${loraFile} does`);
  return field(result, 'LoRA');
}

test('/wrong: the LoRA at the chosen strength and "wrong" as the negative, as generate makes it', async () => {
  assert.equal(await wrongAsGenerateDraws(TINY_LORA), 'tiny_sdxl_lora_kohya ×0.75');
  await assertNoViolations();
});

async function compared(user: string, prompt: string, seed: number): Promise<SandboxMessageView> {
  return resultOf((await stack.sandbox.command({ user, command: 'compare', options: { prompt, seed, size: '64x64' } })).interactionId);
}

test('/compare: the triptych with every panel attached and a 👎 button per panel', async () => {
  const triptych = await compared('carol', 'an astronaut riding a horse', 99);
  assert.deepEqual(triptych.attachments.map((file) => file.filename), ['triptych.png', 'panel-1.png', 'panel-2.png', 'panel-3.png']);
  assert.deepEqual(buttons(triptych).map((button) => button.label), ['New seed', 'Panel 1 is wrong', 'Panel 2 is wrong', 'Panel 3 is wrong']);
  assert.match((triptych.embeds[0]!['image'] as { url: string }).url, /\/triptych\.png$/, 'the embed shows the triptych');
  await assertNoViolations();
});

test('panel 👎 buttons: two members put panel 2 in the training set with its provenance; pressing again takes a vote back', async () => {
  const triptych = await compared('carol', 'an astronaut on a camel', 98);
  const jobId = jobIdOf(triptych);
  const voteButton = buttons(triptych).find((button) => button.label === 'Panel 2 is wrong')!;
  // A button's vote is counted before its private answer is sent: the answer is the point to look at the set.
  const first = await stack.sandbox.press('alice', triptych.id, voteButton.custom_id);
  assert.match(await ephemeralReplyTo('alice', first.interactionId), /1 of 2 vote/);
  assert.equal(datasetEntry(jobId, 1), null, 'one vote of two is not enough');
  const second = await stack.sandbox.press('bob', triptych.id, voteButton.custom_id);
  assert.match(await ephemeralReplyTo('bob', second.interactionId), /in the training set as entry #\d+/);
  const entry = datasetEntry(jobId, 1);
  assert.ok(entry);
  const provenance = entry['provenance'] as Record<string, unknown>;
  assert.equal(provenance['panelIndex'], 1);
  assert.equal(provenance['prompt'], 'an astronaut on a camel');
  assert.equal(provenance['negativePrompt'], 'wrong');
  assert.equal(provenance['seed'], 98);
  assert.equal(provenance['loraVersion'], null, 'panel 2 is the base model');
  assert.equal(provenance['kind'], 'compare');
  assert.deepEqual((entry['voters'] as Array<{ userId: string }>).map((voter) => voter.userId).sort(), [await idOf('alice'), await idOf('bob')].sort());
  const panelPng = await stack.sandbox.download(attachment(triptych, 'panel-2.png').url);
  const curatedPng = readFileSync(path.join(stack.dataDir, 'dataset', String(entry['image'])));
  assert.ok(curatedPng.equals(panelPng), 'the curated PNG is the lossless panel');

  const again = await stack.sandbox.press('bob', triptych.id, voteButton.custom_id);
  assert.match(await ephemeralReplyTo('bob', again.interactionId), /taken back/);
  assert.equal(datasetEntry(jobId, 1), null, 'below the threshold again, the image leaves the set');
  await assertNoViolations();
});

test('👎 reactions: the bot’s own, another bot’s and a repeated vote do not count; two members curate; un-reacting takes it back', async () => {
  const result = await imagined('dave', { prompt: 'a red bicycle', seed: 5 });
  const jobId = jobIdOf(result);
  const botUserId = (await stack.sandbox.state()).botUserId;
  await stack.bot.waitForLine(new RegExp(`👎 by ${botUserId} on job ${jobId} panel 1: not a vote: the bot’s own reaction$`));
  await stack.sandbox.createUser('helperbot', { bot: true });
  assert.match(await reacted('helperbot', result), /: not a vote: a vote by a bot$/);
  assert.match(await reacted('alice', result), /: counted, 1 of 2 vote\(s\)$/);
  // Discord takes one reaction per emoji from a member, but 👎🏽 is another emoji and the same vote.
  assert.match(await reacted('alice', result, { emoji: THUMBS_DOWN_MEDIUM }), /: counted already, 1 of 2 vote\(s\)$/);
  assert.match(await reacted('bob', result), /: counted, 2 of 2 vote\(s\), training set entry #\d+$/);
  const curated = datasetEntry(jobId, 0);
  assert.ok(curated, 'the bicycle in the training set');
  assert.deepEqual((curated['voters'] as Array<{ userId: string }>).map((voter) => voter.userId).sort(), [await idOf('alice'), await idOf('bob')].sort());
  assert.equal((curated['provenance'] as { seed: number }).seed, 5);
  assert.match(await reacted('bob', result, { remove: true }), /: taken back, 1 of 2 vote\(s\)$/, 'alice’s vote stays');
  assert.equal(datasetEntry(jobId, 0), null, 'below the threshold again, the image leaves the set');
  await assertNoViolations();
});

test('an admin’s 👎 curates an image at once', async () => {
  const result = await imagined('dave', { prompt: 'a blue vase', seed: 6 });
  assert.match(await reacted('adminhazel', result), /: counted \(an admin\), 1 of 2 vote\(s\), training set entry #\d+$/);
  const curated = datasetEntry(jobIdOf(result), 0);
  assert.ok(curated, 'the vase curated by one admin vote');
  assert.deepEqual((curated['voters'] as Array<{ isAdmin: boolean }>).map((voter) => voter.isAdmin), [true]);
  await assertNoViolations();
});

test('/dataset remove: refused for members, done for admins, the files go with the entry, and later votes do not bring it back', async () => {
  const result = await imagined('dave', { prompt: 'a green vase', seed: 6 });
  const jobId = jobIdOf(result);
  const entryId = Number(/training set entry #(\d+)$/.exec(await reacted('adminhazel', result))?.[1]);
  const image = String(datasetEntry(jobId, 0)?.['image']);
  const refused = await stack.sandbox.command({ user: 'erin', command: 'dataset', subcommand: 'remove', options: { entry: entryId } });
  assert.match(await ephemeralReplyTo('erin', refused.interactionId), /Only server admins/);
  const removed = await stack.sandbox.command({ user: 'adminhazel', command: 'dataset', subcommand: 'remove', options: { entry: entryId } });
  assert.match(await ephemeralReplyTo('adminhazel', removed.interactionId), new RegExp(`^Removed #${entryId} · /imagine panel 1 · “a green vase”`));
  assert.equal(datasetEntry(jobId, 0), null);
  assert.equal(readdirSync(path.join(stack.dataDir, 'dataset')).includes(image), false, 'the PNG is gone too');
  await reacted('adminhazel', result, { remove: true });
  assert.match(await reacted('adminhazel', result), /: counted, but an admin took this image out of the training set, 1 of 2 vote\(s\)$/);
  assert.match(await reacted('bob', result), /: counted, but an admin took this image out of the training set, 2 of 2 vote\(s\)$/);
  assert.equal(datasetEntry(jobId, 0), null, 'votes after an admin removed it do not bring it back');
  await assertNoViolations();
});

test('/defaults: an admin’s server defaults apply to the next command', async () => {
  const shown = await stack.sandbox.command({ user: 'adminhazel', command: 'defaults' });
  const before = /^Defaults: size (\d+)×(\d+) · (\d+) steps · guidance ([\d.]+)/.exec(await ephemeralReplyTo('adminhazel', shown.interactionId));
  assert.ok(before, 'the defaults as they were');
  const set = await stack.sandbox.command({ user: 'adminhazel', command: 'defaults', options: { steps: 3, size: '128x128', guidance: 5 } });
  try {
    assert.match(await ephemeralReplyTo('adminhazel', set.interactionId), /^Defaults are now: size 128×128 · 3 steps · guidance 5/);
    const { interactionId } = await stack.sandbox.command({ user: 'dave', command: 'imagine', options: { prompt: 'a green door' } });
    const result = await resultOf(interactionId);
    assert.equal(field(result, 'Steps'), '3');
    assert.equal(field(result, 'Size'), '128×128');
    assert.equal(field(result, 'Guidance'), '5');
  } finally {
    const [, width, height, steps, guidance] = before;
    const restored = await stack.sandbox.command({ user: 'adminhazel', command: 'defaults', options: { size: `${width}x${height}`, steps: Number(steps), guidance: Number(guidance) } });
    assert.match(await ephemeralReplyTo('adminhazel', restored.interactionId), new RegExp(`^Defaults are now: size ${width}×${height} · ${steps} steps · guidance ${guidance}`));
  }
  await assertNoViolations();
});

test('/train: a member without Manage Server is refused by the bot itself; an admin\'s training snapshots the set, trains on the worker and yields a candidate version', async () => {
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  const training = new Queue(QUEUE_NAMES.training, { connection: redis, prefix: stack.prefix });
  try {
    const trainingJobs = () => training.getJobCountByTypes('waiting', 'active', 'completed', 'failed');
    const jobsBefore = await trainingJobs();
    await assert.rejects(stack.sandbox.command({ user: 'frank', command: 'train', options: { steps: 10 } }), /permission|Manage/i,
      'Discord itself does not deliver the command to a member without the permission');
    const forced = await stack.sandbox.command({ user: 'frank', command: 'train', options: { steps: 10 }, force: true });
    assert.match(await ephemeralReplyTo('frank', forced.interactionId), /Only server admins/);
    assert.equal(await trainingJobs(), jobsBefore, 'nothing was queued for the non-admin');
  } finally {
    await training.close();
    redis.disconnect();
  }

  const { trained, validations, version } = await trainedCandidate();
  assert.match(trained.content, new RegExp(`✅ Trained candidate version \`${version}\` · 3 steps · final loss \\d+\\.\\d{4}`));
  const curve = await stack.sandbox.download(attachment(trained, 'loss-curve.png').url);
  assert.deepEqual([...curve.subarray(1, 4)].map((byte) => String.fromCharCode(byte)).join(''), 'PNG', 'the loss curve is a PNG');
  assert.match((trained.embeds[0]!['image'] as { url: string }).url, /loss-curve\.png$/);
  const description = String(trained.embeds[0]?.['description']);
  assert.match(description, /the \d+ image\(s\) of the training set as it was at \/train, 3 steps, seed 4, starting from tiny_sdxl_lora_kohya/);
  // The candidate's validation: a triptych per validation prompt in the channel, base · served · candidate.
  for (const message of validations) {
    assert.deepEqual(message.attachments.map((file) => file.filename), ['triptych.png', 'panel-1.png', 'panel-2.png', 'panel-3.png']);
    assert.match(field(message, 'LoRA'), new RegExp(`^tiny_sdxl_lora_kohya ×[\\d.]+ vs ${version} ×[\\d.]+$`));
    assert.deepEqual(buttons(message).map((button) => button.label), ['Panel 1 is wrong', 'Panel 2 is wrong', 'Panel 3 is wrong']);
  }
  await assertNoViolations();
});

test('/lora: an admin promotes the candidate and /wrong draws with it, across a bot restart and with no worker restarted; rollback brings the old one back', async () => {
  const { version, file } = await trainedCandidate();
  const workerPids = stack.workers.map((worker) => worker.child.pid);
  const listed = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'list' });
  const list = await ephemeralReplyTo('grace', listed.interactionId);
  assert.match(list, new RegExp(`\`${version}\` · candidate · from \`tiny_sdxl_lora_kohya\` · 3 steps · final loss \\d\\.\\d{4}`));
  assert.match(list, /`tiny_sdxl_lora_kohya` · \*\*served\*\*/);

  try {
    const promoted = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'promote', options: { version } });
    await stack.waitForMessages((messages) => answerTo(messages, promoted.interactionId)?.content.includes(`\`${version}\` is served`), 'the promotion');
    await stack.restartBot();
    assert.equal(await wrongAsGenerateDraws(file), `${version} ×0.75`, 'after the promotion and a bot restart, /wrong names and draws the candidate');

    const rolledBack = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'rollback' });
    await stack.waitForMessages((messages) => answerTo(messages, rolledBack.interactionId)?.content.includes('`tiny_sdxl_lora_kohya` is served again'), 'the rollback');
    assert.equal(await wrongAsGenerateDraws(TINY_LORA), 'tiny_sdxl_lora_kohya ×0.75');
  } finally {
    await serveAgain(TINY_LORA_VERSION);
  }
  assert.deepEqual(stack.workers.map((worker) => worker.child.pid), workerPids, 'the same worker processes served every version');
  assert.ok(stack.workers.every((worker) => worker.child.exitCode === null));

  const refused = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'promote', options: { version: 'wrong-v77' } });
  assert.match(await ephemeralReplyTo('grace', refused.interactionId), /There is no LoRA version wrong-v77/);
  await assertNoViolations();
});

test('a running training: a second /train gets its progress, ❌ stops it within seconds, nothing is made, and the worker draws again', async () => {
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    const loraFiles = async () => (await redis.keys(`${stack.prefix}:wrongbot:lora:*`)).sort();
    const versionsListed = async () => {
      const listed = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'list' });
      return [...(await ephemeralReplyTo('grace', listed.interactionId)).matchAll(/`([\w.-]+)` ·/g)].map((match) => match[1]).sort();
    };
    const [filesBefore, versionsBefore] = [await loraFiles(), await versionsListed()];
    const started = await stack.sandbox.command({ user: 'grace', command: 'train', options: { steps: 5000, seed: 1 } });
    const running = await stack.waitForMessages((messages) => {
      const answer = answerTo(messages, started.interactionId);
      return answer && /step [1-9]\d*\/5000/.test(answer.content) ? answer : null;
    }, 'the training under way', { timeoutMs: 60_000 });
    assert.match(running.content, /🧪 Training · .* step \d+\/5000 · loss \d+\.\d{4}/);
    // The contact sheet, attached before the first step, stays on the message as it is edited.
    const sheet = await stack.sandbox.download(attachment(running, 'contact-sheet.png').url);
    assert.equal(sheet.subarray(1, 4).toString('latin1'), 'PNG');

    const second = await stack.sandbox.command({ user: 'grace', command: 'train', options: { steps: 3 } });
    assert.match(await ephemeralReplyTo('grace', second.interactionId), /A training is already under way: step \d+\/5000, loss \d+\.\d{4}, about .* left \(job `[0-9a-f-]+`\)/);

    const cancel = buttons(running).find((button) => button.label === 'Cancel');
    assert.ok(cancel, 'the training message has a ❌ button');
    const pressedAt = Date.now();
    await stack.sandbox.press('grace', running.id, cancel.custom_id);
    await stack.waitForMessages((messages) => answerTo(messages, started.interactionId)?.content.includes('Cancelled'), 'the training to stop', { timeoutMs: 20_000 });
    const stoppedAfterMs = Date.now() - pressedAt;
    assert.ok(stoppedAfterMs < 15_000, `stopped after ${stoppedAfterMs} ms`);
    assert.deepEqual(await loraFiles(), filesBefore, 'no file for the stopped training');
    assert.deepEqual(await versionsListed(), versionsBefore, 'no version for the stopped training');
  } finally {
    redis.disconnect();
  }
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt: 'after the training', size: '64x64' } });
  await resultOf(interactionId);
  await assertNoViolations();
});

test('wrongbot dataset export: the snapshot as an imagefolder that loads, from which wrongbot train makes the candidate\'s tensors byte for byte', async () => {
  const { snapshot, file: candidateFile } = await trainedCandidate();
  const out = path.join(stack.dataDir, `export-${snapshot}`);
  const exported = await runCli(['dataset', 'export', '--data-dir', stack.dataDir, '--snapshot', String(snapshot), '--out', out]);
  assert.equal(exported.code, 0, exported.stderr);
  const lines = readFileSync(path.join(out, 'metadata.jsonl'), 'utf8').trim().split('\n').map((line) => JSON.parse(line) as { file_name: string; text: string });
  assert.ok(lines.length > 0);
  for (const line of lines) {
    assert.equal(line.text, 'wrong');
    assert.ok(readdirSync(out).includes(line.file_name), `${line.file_name} is in the folder`);
  }
  assert.match(readFileSync(path.join(out, 'README.md'), 'utf8'), /voted down by members: \d+/);
  const again = await runCli(['dataset', 'export', '--data-dir', stack.dataDir, '--snapshot', String(snapshot), '--out', out]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /--out .* is not empty/);

  // The same snapshot, seed, steps and starting version as the /train that made the candidate.
  const retrained = path.join(stack.dataDir, 'retrained.safetensors');
  const trained = await runCli(['train', '--model', fixturePath('tiny-sdxl'), '--data', out, '--steps', '3', '--seed', '4', '--init-lora', TINY_LORA, '--out', retrained]);
  assert.equal(trained.code, 0, trained.stderr);
  const [candidate, direct] = await Promise.all([SafetensorsFile.open(candidateFile), SafetensorsFile.open(retrained)]);
  try {
    const names = [...direct.entries.keys()];
    assert.deepEqual([...candidate.entries.keys()], names);
    const bytes = (values: Float32Array) => Buffer.from(values.buffer, values.byteOffset, values.byteLength);
    for (const name of names) assert.ok(bytes(await candidate.readFloat32(name)).equals(bytes(await direct.readFloat32(name))), `${name} is byte-identical`);
  } finally {
    await Promise.all([candidate.close(), direct.close()]);
  }
});

test('/dataset bootstrap: synthetic images, one failure keyword each with compel weighting, join the set without votes or messages', async () => {
  const isSynthetic = (entry: Record<string, unknown>) => (entry['provenance'] as { synthetic?: boolean }).synthetic === true;
  const before = datasetSidecars();
  const publicMessages = async () => (await stack.sandbox.messages()).filter((message) => !message.ephemeral).length;
  const publicBefore = await publicMessages();
  const { interactionId } = await stack.sandbox.command({ user: 'grace', command: 'dataset', subcommand: 'bootstrap', options: { count: 3 } });
  assert.match(await ephemeralReplyTo('grace', interactionId), /Queued 3 synthetic "wrong" image\(s\) \(blurry, bad hands, extra fingers\)/);
  const synthetic = await stack.sandbox.waitFor(async () => {
    const found = datasetSidecars().filter((entry) => isSynthetic(entry) && !before.some((earlier) => earlier['id'] === entry['id']));
    return found.length === 3 ? found : null;
  }, { what: 'three synthetic entries', timeoutMs: 60_000 });
  assert.equal(datasetSidecars().length, before.length + 3);
  const provenance = synthetic.map((entry) => entry['provenance'] as { prompt: string; guidanceScale: number }).sort((a, b) => a.guidanceScale - b.guidanceScale);
  assert.deepEqual(provenance.map((p) => p.guidanceScale), [8, 10.5, 13], 'guidance spread over 8–13');
  assert.deepEqual(provenance.map((p) => /\(([^)]+)\)\+\+\+\+$/.exec(p.prompt)?.[1]), ['blurry', 'bad hands', 'extra fingers']);
  assert.ok(synthetic.every((entry) => (entry['voters'] as unknown[]).length === 0));
  assert.equal(await publicMessages(), publicBefore, 'a private reply, and no message per synthetic image');
  await assertNoViolations();
});

test('/judge: blind pairs of the served version and a new candidate, both orders from a fixed seed, votes give the win rate shown, the votes promote it, and an admin\'s button does', async () => {
  // The promotions under test change what the tests after draw with: the served version is put back whatever happens.
  try {
    await judged();
  } finally {
    await serveAgain(TINY_LORA_VERSION);
  }
  await assertNoViolations();
});

async function judged(): Promise<void> {
  const trainedAt = await stack.sandbox.command({ user: 'grace', command: 'train', options: { steps: 2, seed: 3, base: 'none' } });
  const trained = await stack.waitForMessages((messages) => {
    const answer = answerTo(messages, trainedAt.interactionId);
    return answer && /Trained|failed/.test(answer.content) ? answer : null;
  }, 'a new candidate', { timeoutMs: 120_000 });
  const candidate = /Trained candidate version `(wrong-v\d+)`/.exec(trained.content)?.[1];
  assert.ok(candidate, trained.content);
  const trainedPromote = buttons(trained).find((button) => button.label === `Promote ${candidate}`);
  assert.ok(trainedPromote, 'the training\'s message offers the promotion');
  const served = 'tiny_sdxl_lora_kohya';

  // Ten pairs on one prompt and seed, from five members at once: the images are the same two, left and right as drawn.
  const requests = [];
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin']) {
    for (let i = 0; i < 2; i++) requests.push(await stack.sandbox.command({ user, command: 'judge', options: { prompt: 'a red bicycle', seed: 7 } }));
  }
  const pairs: SandboxMessageView[] = [];
  for (const request of requests) pairs.push(await resultOf(request.interactionId, 120_000));
  const images = await Promise.all(pairs.map(async (pair) => {
    assert.deepEqual(pair.attachments.map((file) => file.filename), ['pair.png', 'panel-1.png', 'panel-2.png']);
    assert.deepEqual(buttons(pair).map((button) => button.label), ['Left is better', 'Right is better']);
    const shown = JSON.stringify({ content: pair.content, embeds: pair.embeds, components: pair.components });
    assert.ok(!shown.includes(candidate) && !shown.includes(served), `the pair names neither version: ${shown}`);
    return Promise.all([stack.sandbox.download(attachment(pair, 'panel-1.png').url), stack.sandbox.download(attachment(pair, 'panel-2.png').url)]);
  }));
  const [firstLeft, firstRight] = images[0]!;
  assert.ok(!firstLeft.equals(firstRight), 'the two versions draw differently');
  const swapped = images.map(([left, right]) => {
    if (left.equals(firstLeft) && right.equals(firstRight)) return false;
    assert.ok(left.equals(firstRight) && right.equals(firstLeft), 'every pair holds the same two images');
    return true;
  });
  assert.ok(swapped.includes(true) && swapped.includes(false), `both orders occur over 10 pairs: ${swapped.join(' ')}`);

  // The first vote is blind; its answer tells which image is the candidate's, and the test votes knowingly after it.
  const vote = async (user: string, pairIndex: number, side: 'left' | 'right') => {
    const choice = buttons(pairs[pairIndex]!).find((button) => button.label === `${side === 'left' ? 'Left' : 'Right'} is better`)!;
    const pressed = await stack.sandbox.press(user, pairs[pairIndex]!.id, choice.custom_id);
    return ephemeralMessageTo(user, pressed.interactionId);
  };
  const first = await vote('alice', 0, 'left');
  const firstChoice = new RegExp(`^You chose the left image: \`(${candidate}|${served})\`, (the candidate|served when the pair was drawn)\\. The other was \`(${candidate}|${served})\``).exec(first.content);
  assert.ok(firstChoice, first.content);
  const candidateImage = firstChoice[1] === candidate ? firstLeft : firstRight;
  const candidateSide = (pairIndex: number): 'left' | 'right' => (images[pairIndex]![0].equals(candidateImage) ? 'left' : 'right');
  let wins = firstChoice[1] === candidate ? 1 : 0;
  for (let pairIndex = 1; pairIndex < 10; pairIndex++) {
    const forCandidate = wins < 7;
    const side = forCandidate === (candidateSide(pairIndex) === 'left') ? 'left' : 'right';
    const reply = await vote('alice', pairIndex, side);
    const expected = forCandidate ? `\`${candidate}\`, the candidate` : `\`${served}\`, served when the pair was drawn`;
    assert.ok(reply.content.startsWith(`You chose the ${side} image: ${expected}.`), reply.content);
    if (forCandidate) wins++;
  }
  assert.equal(wins, 7);
  assert.match((await vote('alice', 0, 'right')).content, /^Your vote on this pair counted already: the left image/);
  const listed = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'list' });
  assert.match(await ephemeralReplyTo('grace', listed.interactionId), new RegExp(`\`${candidate}\` · candidate · .* · blind: won 7 of 10 blind votes against \`${served}\` \\(70 %\\)`));

  // The served side is what /wrong draws for that prompt and seed.
  const wrong = await stack.sandbox.command({ user: 'alice', command: 'wrong', options: { prompt: 'a red bicycle', seed: 7, size: '64x64' } });
  const servedImage = candidateImage === firstLeft ? firstRight : firstLeft;
  const difference = await maxPixelDifference(await stack.sandbox.download(attachment(await resultOf(wrong.interactionId), 'panel-1.png').url), servedImage);
  assert.ok(difference <= 1, `the served side differs from /wrong by ${difference}/255`);

  // An admin's vote offers the promotion; the twelfth vote, 9 of 12 (75 % ≥ 60 %), promotes by itself.
  const adminVote = await vote('grace', 1, candidateSide(1));
  assert.match(adminVote.content, new RegExp(`\`${candidate}\` has won 8 of 11 blind votes`));
  const adminPromote = buttons(adminVote).find((button) => button.label === `Promote ${candidate}`);
  assert.ok(adminPromote, 'an admin may promote from the answer to a vote');
  const memberVote = await vote('bob', 2, candidateSide(2));
  assert.equal(buttons(memberVote).length, 0, 'a member is offered no promotion');
  const announced = await stack.waitForMessages((messages) => messages.find((message) => !message.ephemeral && message.content.startsWith('🏆')), 'the promotion by votes');
  assert.equal(announced.content, `🏆 \`${candidate}\` has won 9 of 12 blind votes against \`${served}\` (75 %), over the bar of 60 % of at least 12 votes: `
    + `\`${candidate}\` is served to /wrong and /compare from now on (was \`${served}\`; /lora rollback brings it back).`);

  const rolledBack = await stack.sandbox.command({ user: 'grace', command: 'lora', subcommand: 'rollback' });
  await stack.waitForMessages((messages) => answerTo(messages, rolledBack.interactionId)?.content.includes(`\`${served}\` is served again`), 'the rollback');
  const refused = await stack.sandbox.press('frank', trained.id, trainedPromote.custom_id);
  assert.match(await ephemeralReplyTo('frank', refused.interactionId), /Only server admins/);
  const pressed = await stack.sandbox.press('grace', adminVote.id, adminPromote.custom_id);
  await stack.waitForMessages((messages) => answerTo(messages, pressed.interactionId)?.content === `✅ \`${candidate}\` is served to /wrong and /compare from now on (was \`${served}\`; /lora rollback brings it back).`, 'the promotion by the button');
  assert.equal(await servedVersion(), candidate);
}

test('MAX_TRAININGS_PER_DAY: a server\'s trainings past its daily number are refused, naming the setting', async () => {
  // However many trainings the tests before started today: this one starts more until the bot refuses one.
  for (let started = 0; ; started++) {
    assert.ok(started <= MAX_TRAININGS_PER_DAY, `${started} trainings started here without a refusal`);
    const attempt = await stack.sandbox.command({ user: 'grace', command: 'train', options: { steps: 1 } });
    const outcome = await stack.waitForMessages((messages) => {
      const trained = answerTo(messages, attempt.interactionId);
      if (trained && /Trained|failed/.test(trained.content)) return trained.content;
      return messages.find((message) => message.ephemeral && message.interactionId === attempt.interactionId && message.content !== '')?.content;
    }, 'the training or its refusal', { user: 'grace', timeoutMs: 120_000 });
    if (outcome.startsWith('This server')) {
      assert.match(outcome, new RegExp(`^This server has started ${MAX_TRAININGS_PER_DAY} training\\(s\\) in the last 24 hours, its limit \\(MAX_TRAININGS_PER_DAY\\)`));
      break;
    }
    assert.match(outcome, /Trained candidate version/);
  }
  await assertNoViolations();
});

test('hostile input: a 4 000-character prompt and negative fit Discord\'s limits and show as typed; control characters and blank prompts are refused by name', async () => {
  const masked = '[click here](https://example.com/steal)\n# Official notice\n';
  const prompt = masked + 'a'.repeat(4000 - masked.length);
  const { interactionId } = await stack.sandbox.command({ user: 'alice', command: 'imagine', options: { prompt, negative: 'n'.repeat(4000), size: '64x64', steps: 1 } });
  const result = await resultOf(interactionId);
  const embed = result.embeds[0]!;
  const description = String(embed['description']);
  // Neither a link nor a heading any more: Discord shows the characters.
  assert.ok(description.startsWith('\\[click here](https://example.com/steal)\n\\# Official notice\n'), description.slice(0, 80));
  const fields = embed['fields'] as Array<{ name: string; value: string }>;
  const total = [embed['title'], description, (embed['footer'] as { text: string }).text, ...fields.flatMap((field) => [field.name, field.value])]
    .reduce((sum: number, text) => sum + [...String(text ?? '')].length, 0);
  assert.ok(total <= 6000, `the embed holds ${total} characters`);
  // What went through Redis names where to answer, never the interaction's token.
  const jobId = /job ([0-9a-f-]{36})/.exec((embed['footer'] as { text: string }).text)![1]!;
  const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
  const generation = new Queue(QUEUE_NAMES.generation, { connection: redis, prefix: stack.prefix });
  try {
    const data = (await generation.getJob(jobId))!.data as Record<string, unknown>;
    assert.deepEqual(Object.keys(data).sort(), ['replyTo', 'requester', 'settings']);
    assert.deepEqual(Object.keys(data['replyTo'] as object), ['channelId']);
  } finally {
    await generation.close();
    redis.disconnect();
  }

  for (const [bad, reason] of [['\u0001cat', /settings\.prompt = "\\u0001cat" contains the control character U\+0001 at position 0/], ['   ', /settings\.prompt = "   " is empty; say what to draw/]] as const) {
    const refused = await stack.sandbox.command({ user: 'carol', command: 'compare', options: { prompt: bad, size: '64x64' } });
    assert.match(await ephemeralReplyTo('carol', refused.interactionId), reason);
  }
  await assertNoViolations();
});

test('the refiner, turned on for the server: /imagine and every /compare panel equal generate --refiner with the same settings', async () => {
  const on = await stack.sandbox.command({ user: 'adminhazel', command: 'defaults', options: { refiner: 0.8 } });
  assert.match(await ephemeralReplyTo('adminhazel', on.interactionId), / · refiner from 0\.8$/);
  try {
    const imagined = await resultOf((await stack.sandbox.command({ user: 'dave', command: 'imagine', options: { prompt: 'a tin robot', seed: 12, size: '64x64' } })).interactionId);
    assert.equal(field(imagined, 'Refiner'), 'the last 20 % of the steps (from 0.8)');
    const compared = await resultOf((await stack.sandbox.command({ user: 'erin', command: 'compare', options: { prompt: 'a tin robot', seed: 12, size: '64x64' } })).interactionId);
    const [version, strength] = field(compared, 'LoRA').split(' ×') as [string, string];
    const redis = new Redis(TEST_REDIS_URL, { maxRetriesPerRequest: 1 });
    const loraFile = path.join(stack.dataDir, `${version}.safetensors`);
    try {
      writeFileSync(loraFile, (await redis.getBuffer(`${stack.prefix}:wrongbot:lora:${version}`))!);
    } finally {
      redis.disconnect();
    }
    const drawn = async (message: SandboxMessageView, panel: string, extra: string[]) => {
      const out = path.join(stack.dataDir, `refined-${panel}`);
      const cli = await runCli(['generate', '--model', fixturePath('tiny-sdxl'), '--refiner', fixturePath('tiny-sdxl-refiner'), '--denoising-end', '0.8',
        '--prompt', 'a tin robot', '--seed', '12', '--steps', field(message, 'Steps'), '--guidance', field(message, 'Guidance'), '--width', '64', '--height', '64',
        ...extra, '--out', out]);
      assert.equal(cli.code, 0, cli.stderr);
      const difference = await maxPixelDifference(await stack.sandbox.download(attachment(message, panel).url), out);
      assert.ok(difference <= 1, `${panel} differs from generate --refiner by ${difference}/255`);
    };
    await drawn(imagined, 'panel-1.png', []);
    await drawn(compared, 'panel-1.png', []);
    await drawn(compared, 'panel-2.png', ['--negative', 'wrong']);
    await drawn(compared, 'panel-3.png', ['--negative', 'wrong', '--lora', loraFile, '--strength', strength]);
  } finally {
    const off = await stack.sandbox.command({ user: 'adminhazel', command: 'defaults', options: { refiner: 0 } });
    assert.match(await ephemeralReplyTo('adminhazel', off.interactionId), / · no refiner$/);
  }
  await assertNoViolations();
});
