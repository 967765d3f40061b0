import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readBotConfig } from '../src/bot/config.js';
import { mayCancel } from '../src/bot/cancelling.js';
import { workerFailureForMembers } from '../src/bot/delivery.js';
import { progressView } from '../src/bot/views.js';
import { decodeButton, encodeButton, type ButtonAction } from '../src/bot/custom-ids.js';
import { qualifies, whyNotAVote } from '../src/bot/curation.js';
import { parseImageSizes, SDXL_IMAGE_SIZES } from '../src/bot/image-sizes.js';
import { COMMANDS, commandDefinitions } from '../src/commands/index.js';
import { ConfigError } from '../src/common/environment.js';
import { seedAt, seededShuffle } from '../src/common/seeded-shuffle.js';
import { InvalidRequestError } from '../src/common/validation.js';

// The bot's rules that need no Discord: button ids, vote rules, sizes, settings and command definitions.

const JOB_ID = '0f8fad5b-d9cb-469f-a165-70867728950e';
const BOT_ID = '100000000000000001';

test('every button action survives encoding and fits Discord’s 100-character custom_id', () => {
  const actions: ButtonAction[] = [
    { kind: 'rerun', jobId: JOB_ID }, { kind: 'compare', jobId: JOB_ID }, { kind: 'cancel', jobId: JOB_ID },
    { kind: 'vote', jobId: JOB_ID, panelIndex: 0 }, { kind: 'vote', jobId: JOB_ID, panelIndex: 2 },
    { kind: 'judge', jobId: JOB_ID, side: 'left' }, { kind: 'judge', jobId: JOB_ID, side: 'right' }, { kind: 'promote', jobId: JOB_ID },
  ];
  for (const action of actions) {
    const customId = encodeButton(action);
    assert.ok(customId.length <= 100, customId);
    assert.deepEqual(decodeButton(customId), action);
  }
});

test('custom ids this bot never made are refused, naming the id', () => {
  for (const customId of ['', 'wb1:zz:' + JOB_ID, 'wb1:rr:not-a-uuid', 'wb2:rr:' + JOB_ID, `wb1:v:${JOB_ID}:99`, `wb1:v:${JOB_ID}`, `wb1:rr:${JOB_ID}:1`,
    `wb1:j:${JOB_ID}`, `wb1:j:${JOB_ID}:x`, `wb1:j:${JOB_ID}:0`, `wb1:up:${JOB_ID}:l`]) {
    assert.throws(() => decodeButton(customId), (error: unknown) => error instanceof InvalidRequestError && error.field === 'custom_id', customId);
  }
});

test('votes by the bot itself, by other bots and on others’ messages do not count', () => {
  const member = { id: '200000000000000002', isBot: false, isAdmin: false };
  assert.equal(whyNotAVote(member, BOT_ID, BOT_ID), null);
  assert.equal(whyNotAVote(member, BOT_ID, null), null);
  assert.match(whyNotAVote({ ...member, id: BOT_ID, isBot: true }, BOT_ID, BOT_ID)!, /own/);
  assert.match(whyNotAVote({ ...member, isBot: true }, BOT_ID, BOT_ID)!, /bot/);
  assert.match(whyNotAVote(member, BOT_ID, '300000000000000003')!, /did not write/);
});

test('an image qualifies at VOTES_TO_CURATE distinct votes, or at once with an admin’s vote', () => {
  const vote = (userId: string, isAdmin = false) => ({ userId, isAdmin, votedAt: 0 });
  assert.equal(qualifies([vote('a')], 2), false);
  assert.equal(qualifies([vote('a'), vote('b')], 2), true);
  assert.equal(qualifies([vote('a', true)], 5), true);
  assert.equal(qualifies([], 1), false);
});

test('IMAGE_SIZES: bad entries are named', () => {
  assert.deepEqual(parseImageSizes('128x96, 64x64', 4096).map((size) => [size.width, size.height]), [[128, 96], [64, 64]]);
  assert.throws(() => parseImageSizes('1024x1000x3', 4096), /"1024x1000x3" is not WIDTHxHEIGHT/);
  assert.throws(() => parseImageSizes('1020x1024', 4096), /"1020x1024": each side must be a multiple of 8/);
  assert.throws(() => parseImageSizes('64x64,64x64', 4096), /listed twice/);
  assert.equal(SDXL_IMAGE_SIZES.length, 7);
});

test('bot settings: each bad value stops the start with its variable named', () => {
  const base = { DATA_DIR: '/tmp/x' };
  const cases: Array<[Record<string, string>, RegExp]> = [
    [{ VOTES_TO_CURATE: '0' }, /^VOTES_TO_CURATE = "0"/],
    [{ IMAGE_RETENTION_DAYS: 'two' }, /^IMAGE_RETENTION_DAYS = "two"/],
    [{ ADMIN_ROLE_IDS: '123,abc' }, /^ADMIN_ROLE_IDS = .*"123" is not a Discord id/],
    [{ DISCORD_API_URL: 'localhost:8787' }, /^DISCORD_API_URL = "localhost:8787"/],
    [{ DISCORD_API_URL: 'http://discord.example.com/api' }, /^DISCORD_API_URL = "http:\/\/discord\.example\.com\/api" would send the bot's token unencrypted/],
    [{ DISCORD_API_URL: 'http://10.0.0.5:8787/api' }, /would send the bot's token unencrypted/],
    [{ TRAINING_GUILD_IDS: '123456789012345678,abc' }, /^TRAINING_GUILD_IDS = .*"abc" is not a Discord id/],
    [{ MAX_QUEUED_PER_GUILD: '0' }, /^MAX_QUEUED_PER_GUILD = "0"/],
    [{ IMAGE_SIZES: '100x100' }, /^IMAGE_SIZES: "100x100"/],
    [{ DEFAULT_SIZE: '512x512' }, /^DEFAULT_SIZE = "512x512" must be one of IMAGE_SIZES/],
    [{ DEFAULT_GUIDANCE: 'NaN' }, /^DEFAULT_GUIDANCE = "NaN"/],
    [{ LORA_PATH: '/models/bad name!.safetensors' }, /^LORA_PATH: /],
    [{ QUEUE_PREFIX: 'a b' }, /^QUEUE_PREFIX = "a b"/],
    [{ AUTO_PROMOTE_WIN_RATE: '0.6' }, /^AUTO_PROMOTE_WIN_RATE is set without AUTO_PROMOTE_MIN_VOTES/],
    [{ AUTO_PROMOTE_MIN_VOTES: '10' }, /^AUTO_PROMOTE_MIN_VOTES is set without AUTO_PROMOTE_WIN_RATE/],
    [{ AUTO_PROMOTE_WIN_RATE: '0.4', AUTO_PROMOTE_MIN_VOTES: '10' }, /^AUTO_PROMOTE_WIN_RATE = "0.4" must be a number from 0.5 to 1/],
    [{ AUTO_PROMOTE_WIN_RATE: '60%', AUTO_PROMOTE_MIN_VOTES: '10' }, /^AUTO_PROMOTE_WIN_RATE = "60%"/],
    [{ AUTO_PROMOTE_WIN_RATE: '0.6', AUTO_PROMOTE_MIN_VOTES: '0' }, /^AUTO_PROMOTE_MIN_VOTES = "0"/],
    [{ JUDGING_SEED: '4294967296' }, /^JUDGING_SEED = "4294967296" must be an integer from 0 to 4294967295/],
  ];
  for (const [env, message] of cases) {
    assert.throws(() => readBotConfig({ ...base, ...env }, 'token'), (error: unknown) => error instanceof ConfigError && message.test(error.message), JSON.stringify(env));
  }
  const config = readBotConfig({ ...base, LORA_PATH: 'models/wrong-v3.safetensors', ADMIN_ROLE_IDS: '123456789012345678' }, 'token');
  assert.equal(config.loraVersion, 'wrong-v3');
  assert.deepEqual(config.adminRoleIds, ['123456789012345678']);
  assert.equal(config.defaults.size.value, '1024x1024');
  assert.equal(config.autoPromote, null, 'no promotion on votes unless both thresholds are set');
  for (const local of ['http://127.0.0.1:8787/api', 'http://localhost:8787/api', 'http://[::1]:8787/api', 'https://discord.example.com/api']) {
    assert.equal(readBotConfig({ ...base, DISCORD_API_URL: local }, 'token').apiUrl, local);
  }
  assert.deepEqual(config.trainingGuildIds, [], 'no server trains unless named');
  assert.deepEqual(readBotConfig({ ...base, DISCORD_GUILD_ID: '223456789012345678' }, 'token').trainingGuildIds, ['223456789012345678'], 'the development server trains');
  assert.deepEqual(readBotConfig({ ...base, DISCORD_GUILD_ID: '223456789012345678', TRAINING_GUILD_IDS: '323456789012345678,423456789012345678' }, 'token').trainingGuildIds,
    ['323456789012345678', '423456789012345678']);
  assert.deepEqual(readBotConfig({ ...base, AUTO_PROMOTE_WIN_RATE: '0.6', AUTO_PROMOTE_MIN_VOTES: '10' }, 'token').autoPromote, { winRate: 0.6, minVotes: 10 });
  assert.equal(readBotConfig({ ...base, JUDGING_SEED: '7' }, 'token').judgingSeed, 7);
});

test('who may cancel: the owner anywhere; an admin only jobs of their own server, and trainings from any training server', () => {
  const config = readBotConfig({ DATA_DIR: '/tmp/x', TRAINING_GUILD_IDS: '111111111111111111,222222222222222222' }, 'token');
  const job = (kind: 'imagine' | 'train', guildId: string) => ({ kind, guildId, userId: 'owner' }) as Parameters<typeof mayCancel>[0];
  const member = (userId: string, isAdmin: boolean, guildId: string) => ({ userId, isAdmin, guildId });
  assert.equal(mayCancel(job('imagine', 'A'), member('owner', false, 'B'), config), true, 'the owner, from anywhere');
  assert.equal(mayCancel(job('imagine', 'A'), member('other', false, 'A'), config), false, 'another member');
  assert.equal(mayCancel(job('imagine', 'A'), member('admin', true, 'A'), config), true, 'an admin of the job\'s server');
  assert.equal(mayCancel(job('imagine', 'A'), member('admin', true, 'B'), config), false, 'an admin of another server');
  assert.equal(mayCancel(job('train', '111111111111111111'), member('admin', true, '222222222222222222'), config), true, 'a training belongs to every training server');
  assert.equal(mayCancel(job('train', '111111111111111111'), member('admin', true, 'B'), config), false, 'but not to the others');
});

test('judging shuffles: one seed gives one order on any run; from a fixed seed both orders occur over 10 pairs, and about evenly', () => {
  const candidateSide = (seed: number, pairNumber: number) => seededShuffle(['candidate', 'opponent'], seedAt(seed, pairNumber))[0] === 'candidate' ? 'left' : 'right';
  for (const fixed of [0, 1, 7, 42, 2 ** 32 - 1]) {
    const sides = Array.from({ length: 10 }, (_, index) => candidateSide(fixed, index + 1));
    assert.ok(sides.includes('left') && sides.includes('right'), `seed ${fixed}: ${sides.join(' ')}`);
    assert.deepEqual(Array.from({ length: 10 }, (_, index) => candidateSide(fixed, index + 1)), sides, 'the same seed gives the same orders');
  }
  const lefts = Array.from({ length: 10_000 }, (_, index) => candidateSide(3, index + 1)).filter((side) => side === 'left').length;
  assert.ok(lefts > 4_800 && lefts < 5_200, `${lefts} of 10000 on the left`);
  assert.deepEqual(seededShuffle([1, 2, 3, 4, 5], 9).sort(), [1, 2, 3, 4, 5], 'a shuffle keeps every item');
  const orders = new Set(Array.from({ length: 200 }, (_, seed) => seededShuffle([1, 2, 3], seed).join('')));
  assert.equal(orders.size, 6, 'every order of three items occurs');
});

test('command definitions: unique names, admin commands hidden from members, the server’s sizes as choices', () => {
  const names = COMMANDS.map((command) => command.definition.name);
  assert.equal(new Set(names).size, names.length);
  for (const name of ['imagine', 'wrong', 'compare', 'judge', 'queue', 'cancel', 'train', 'dataset', 'lora']) assert.ok(names.includes(name), name);
  for (const adminOnly of ['train', 'lora']) {
    assert.equal(COMMANDS.find((command) => command.definition.name === adminOnly)!.definition.default_member_permissions, '32', adminOnly);
  }
  const definitions = commandDefinitions(parseImageSizes('128x128,96x168', 4096));
  const imagine = definitions.find((definition) => definition.name === 'imagine')!;
  const size = imagine.options!.find((option) => option.name === 'size') as { choices: Array<{ value: string }> };
  assert.deepEqual(size.choices.map((choice) => choice.value), ['128x128', '96x168']);
  for (const definition of definitions) assert.ok((definition.options?.length ?? 0) <= 25, definition.name);
});

test('a worker\'s failure reaches the member as their input\'s fault, as advice on memory, or as a pointer to the log', () => {
  const jobId = '0f8fad5b-d9cb-469f-a165-70867728950e';
  assert.equal(workerFailureForMembers('invalid imagine job: settings.width = 100 must be a multiple of 8', jobId), 'settings.width = 100 must be a multiple of 8');
  assert.match(workerFailureForMembers('Failed to allocate memory for requested buffer of size 671088640', jobId), /ran out of memory for this image; a smaller size may work/);
  const internal = workerFailureForMembers("unet failed: Non-zero status code returned while running Concat node. Name:'/up_blocks.1/Concat'", jobId);
  assert.equal(internal, `the worker could not make this image (job ${jobId}); an admin can find why in the bot's log.`);
  assert.doesNotMatch(workerFailureForMembers('/home/gpu/models/unet/model.onnx: failed to load', jobId), /model\.onnx/, 'no path of the worker host');
});

test('a progress view holds whatever a worker reports: a step past the total, or none at all', () => {
  const job = { jobId: '0f8fad5b-d9cb-469f-a165-70867728950e', kind: 'train', userName: 'Ada', request: { baseVersion: null, steps: 10 } } as unknown as Parameters<typeof progressView>[0];
  assert.match(progressView(job, { step: 15, totalSteps: 10, etaMs: 0 }).content, /▰{12} step 15\/10 · finishing/);
  assert.match(progressView(job, { step: -3, totalSteps: 10, etaMs: 1000 }).content, /▱{12} step -3\/10/);
  assert.match(progressView(job, { step: 1, totalSteps: 0, etaMs: 1000 }).content, /▱{12} step 1\/0/);
});
