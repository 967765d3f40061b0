import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  ActionRowBuilder, AttachmentBuilder, ButtonBuilder, ButtonStyle, Client, DiscordAPIError, EmbedBuilder, GatewayIntentBits,
  PermissionFlagsBits, Routes,
  type ButtonInteraction, type ChatInputCommandInteraction, type Interaction, type Message,
} from 'discord.js';
import { SandboxClient } from '../src/sandbox/control-client.js';
import { HEARTBEAT_INTERVAL_MS } from '../src/sandbox/gateway.js';
import { LocalDiscord } from '../src/sandbox/local-discord.js';
import { WebSocket } from 'ws';
import { runCli } from './support/cli.js';
import { nextEvent, startSandboxWithClient, type SandboxWithClient } from './support/sandbox-discord.js';

// The local Discord driven by a real discord.js Client (no wrongbot code): what the bot relies on must work the
// way discord.js expects, and the sandbox must record what Discord would refuse.

const IMAGINE = {
  name: 'imagine', description: 'Draw a picture',
  options: [
    { type: 3, name: 'prompt', description: 'What to draw', required: true, max_length: 500 },
    { type: 4, name: 'steps', description: 'Steps', min_value: 1, max_value: 50 },
    { type: 10, name: 'guidance', description: 'Guidance', min_value: 0, max_value: 20 },
    { type: 3, name: 'size', description: 'Size', choices: [{ name: 'square', value: '1024x1024' }, { name: 'wide', value: '1344x768' }] },
  ],
};
const TRAIN = { name: 'train', description: 'Train the LoRA', default_member_permissions: '8' };

async function withSandbox(run: (world: SandboxWithClient) => Promise<void>, options = {}): Promise<void> {
  const world = await startSandboxWithClient(options);
  try {
    await run(world);
  } finally {
    await world.close();
  }
}

async function registerCommands(world: SandboxWithClient): Promise<void> {
  const guild = world.client.guilds.cache.first()!;
  await guild.commands.set([IMAGINE, TRAIN]);
}

test('login reaches clientReady with the guild available and the bot member permissions computed', () => withSandbox(async ({ client, control }) => {
  const state = await control.state();
  const guild = client.guilds.cache.get(state.guildId);
  assert.ok(guild, 'the guild is cached');
  assert.equal(guild.available, true);
  assert.equal(guild.name, 'Sandbox');
  assert.equal(client.user.id, state.botUserId);
  const me = guild.members.me;
  assert.ok(me, 'guild.members.me is known');
  assert.equal(me.permissions.has(PermissionFlagsBits.SendMessages), true);
  assert.equal(me.permissions.has(PermissionFlagsBits.Administrator), false);
  const general = guild.channels.cache.get(state.channels['general']!);
  assert.equal(general?.name, 'general');
  const fetched = await guild.members.fetch({ user: [state.botUserId, (await control.createUser('frank')).id] });
  assert.deepEqual([...fetched.values()].map((member) => member.user.username).sort(), ['frank', 'wrongbot']);
  assert.deepEqual(await control.violations(), []);
}));

test('a registered command arrives typed; deferReply then editReply with a file stores the exact bytes', () => withSandbox(async (world) => {
  const { client, control } = world;
  await registerCommands(world);
  const arrived = nextEvent(client, 'interactionCreate');
  const handle = await control.command({ user: 'alice', command: 'imagine', options: { prompt: 'a cat', steps: '20', guidance: 7.5 } });
  const [interaction] = await arrived;
  assert.ok(interaction.isChatInputCommand());
  const command = interaction as ChatInputCommandInteraction;
  assert.equal(command.id, handle.interactionId);
  assert.equal(command.commandName, 'imagine');
  assert.equal(command.options.getString('prompt'), 'a cat');
  assert.equal(command.options.getInteger('steps'), 20);
  assert.equal(command.options.getNumber('guidance'), 7.5);
  assert.equal(command.user.username, 'alice');
  assert.equal(command.memberPermissions?.has(PermissionFlagsBits.Administrator), false);
  await command.deferReply();
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, ...Array.from({ length: 300 }, (_, i) => i % 251)]);
  await command.editReply({ content: 'done', files: [new AttachmentBuilder(png, { name: 'cat.png' })] });
  const messages = await control.messages('general');
  assert.equal(messages.length, 1);
  const [reply] = messages;
  assert.equal(reply!.content, 'done');
  assert.equal(reply!.interactionId, handle.interactionId);
  assert.equal(reply!.attachments.length, 1);
  assert.equal(reply!.attachments[0]!.filename, 'cat.png');
  assert.deepEqual(await control.download(reply!.attachments[0]!.url), png);
  const record = await control.interaction(handle.interactionId);
  assert.equal(record.callbackType, 5);
  assert.equal(record.messageId, reply!.id);
  assert.deepEqual(await control.violations(), []);
}));

async function runCommand(world: SandboxWithClient, user = 'alice', options: Record<string, string | number> = { prompt: 'a cat' }): Promise<ChatInputCommandInteraction> {
  const arrived = nextEvent(world.client, 'interactionCreate');
  await world.control.command({ user, command: 'imagine', options });
  const [interaction] = await arrived;
  assert.ok(interaction.isChatInputCommand());
  return interaction;
}

async function assertNoViolations(control: SandboxClient): Promise<void> {
  assert.deepEqual(await control.violations(), []);
}

async function rejection(promise: Promise<unknown>): Promise<DiscordAPIError> {
  const error = await promise.then(() => null, (caught: unknown) => caught);
  assert.ok(error instanceof DiscordAPIError, `expected a DiscordAPIError, got ${String(error)}`);
  return error;
}

test('a button press arrives as a ButtonInteraction carrying its message, and update() edits that message', () => withSandbox(async (world) => {
  const { client, control } = world;
  await registerCommands(world);
  const command = await runCommand(world);
  const row = new ActionRowBuilder<ButtonBuilder>().addComponents(
    new ButtonBuilder().setCustomId('reroll:1').setLabel('Reroll').setStyle(ButtonStyle.Primary),
    new ButtonBuilder().setCustomId('gone:1').setLabel('Gone').setStyle(ButtonStyle.Secondary).setDisabled(true),
  );
  const reply = await command.reply({ content: 'here it is', components: [row], withResponse: true });
  const messageId = reply.resource!.message!.id;
  await assert.rejects(control.press('bob', messageId, 'gone:1'), /disabled/);
  await assert.rejects(control.press('bob', messageId, 'nope'), /no button "nope".*reroll:1/);
  const arrived = nextEvent(client, 'interactionCreate');
  const handle = await control.press('bob', messageId, 'reroll:1');
  const [interaction] = await arrived as [Interaction];
  assert.ok(interaction.isButton());
  const button = interaction as ButtonInteraction;
  assert.equal(button.customId, 'reroll:1');
  assert.equal(button.message.id, messageId);
  assert.equal(button.message.content, 'here it is');
  assert.equal(button.user.username, 'bob');
  await button.update({ content: 'rerolling', components: [] });
  const [message] = await control.messages('general');
  assert.equal(message!.content, 'rerolling');
  assert.deepEqual(message!.components, []);
  assert.deepEqual(message!.edits.map((edit) => edit.fields), [['content', 'components']]);
  assert.equal((await control.interaction(handle.interactionId)).callbackType, 7);
  await assertNoViolations(control);
}));

test('a reaction on an uncached message reaches messageReactionAdd as a partial that can be fetched', () => withSandbox(async ({ client, control }) => {
  const state = await control.state();
  const posted = await client.rest.post(Routes.channelMessages(state.channels['general']!), { body: { content: 'vote here' } }) as { id: string };
  const added = nextEvent(client, 'messageReactionAdd');
  await control.react('bob', posted.id, '👎');
  const [reaction, user] = await added;
  assert.equal(reaction.message.id, posted.id);
  assert.equal(reaction.message.partial, true);
  assert.equal(reaction.emoji.name, '👎');
  const bob = (await control.state()).users.find((candidate) => candidate.name === 'bob');
  assert.equal(user.id, bob?.id);
  const message = await reaction.message.fetch() as Message;
  assert.equal(message.content, 'vote here');
  const full = await reaction.fetch();
  assert.equal(full.count, 1);
  const reactors = await full.users.fetch();
  assert.deepEqual([...reactors.values()].map((reactor) => reactor.username), ['bob']);

  // The bot's own reaction is dispatched back to it, as Discord does.
  const own = nextEvent(client, 'messageReactionAdd');
  await message.react('👎');
  const [, reactor] = await own;
  assert.equal(reactor.id, client.user.id);
  const removed = nextEvent(client, 'messageReactionRemove');
  await control.unreact('bob', posted.id, '👎');
  assert.equal((await removed)[1].id, user.id);
  const [stored] = await control.messages('general');
  assert.deepEqual(stored!.reactions, [{ emoji: '👎', users: ['wrongbot'] }]);
  await assertNoViolations(control);
}));

test('answering after the 3 s deadline fails with 10062, answering twice with 40060', () => withSandbox(async (world) => {
  const { control } = world;
  await registerCommands(world);
  const late = await runCommand(world);
  await control.advanceClock(3001);
  const error = await rejection(late.deferReply());
  assert.equal(error.code, 10062);
  const violations = await control.violations();
  assert.equal(violations.length, 1);
  assert.match(violations[0]!.problems[0]!, /deadline is 3000 ms/);
  await control.clearViolations();

  const twice = await runCommand(world);
  await twice.deferReply();
  const again = await rejection(world.client.rest.post(Routes.interactionCallback(twice.id, twice.token), { body: { type: 5 }, auth: false }));
  assert.equal(again.code, 40060);
  await assertNoViolations(control);
}));

test('an interaction token is refused with 50027 after 15 minutes', () => withSandbox(async (world) => {
  const { control } = world;
  await registerCommands(world);
  const command = await runCommand(world);
  await command.deferReply({ flags: 64 });
  await command.editReply('still within the lifetime');
  await control.advanceClock(15 * 60 * 1000 + 1);
  const error = await rejection(command.editReply('too late'));
  assert.equal(error.code, 50027);
  assert.deepEqual(await control.violations(), [], 'an expired token is how a bot learns of it, not a mistake');
  const asAlice = await control.messages('general', { user: 'alice' });
  assert.deepEqual(asAlice.map((message) => [message.content, message.ephemeral]), [['still within the lifetime', true]]);
  assert.deepEqual(await control.messages('general'), [], 'an ephemeral reply is visible only to its user');
}));

test('content over 2 000 characters is rejected with 50035 and recorded as a violation', () => withSandbox(async (world) => {
  const { client, control } = world;
  await registerCommands(world);
  const state = await control.state();
  const channel = await client.channels.fetch(state.channels['art']!);
  assert.ok(channel?.isSendable());
  const error = await rejection(channel.send('x'.repeat(2001)));
  assert.equal(error.code, 50035);
  assert.match(error.message, /2001 characters/);
  const command = await runCommand(world);
  const replyError = await rejection(command.reply('y'.repeat(2001)));
  assert.equal(replyError.code, 50035);
  const violations = await control.violations();
  assert.deepEqual(violations.map((violation) => violation.method), ['POST', 'POST']);
  assert.match(violations[0]!.path, /^\/channels\/\d+\/messages$/);
  assert.match(violations[1]!.path, /^\/interactions\/\d+\/.+\/callback$/);
  assert.deepEqual(await control.messages('art'), []);
}));

test('a rate-limited request is retried by discord.js and succeeds', () => withSandbox(async ({ client, control }) => {
  const state = await control.state();
  const channel = await client.channels.fetch(state.channels['general']!);
  assert.ok(channel?.isSendable());
  let rateLimits = 0;
  client.rest.on('rateLimited', () => rateLimits++);
  await assert.rejects(control.setRateLimit(1), /rateLimitEveryNth = 1 must be 0 \(off\) or a whole number ≥ 2/);
  await control.setRateLimit(2);
  await channel.send('first');
  await channel.send('second');
  assert.deepEqual((await control.messages('general')).map((message) => message.content), ['first', 'second']);
  const statuses = (await control.requests()).filter((entry) => entry.route.endsWith('/messages') && entry.method === 'POST').map((entry) => entry.status);
  assert.deepEqual(statuses, [200, 429, 200]);
  assert.equal(rateLimits, 1);
  await assertNoViolations(control);
}, { rateLimitEveryNth: 0 }));

test('after a resumable gateway drop the client RESUMEs and gets the dispatch it missed', () => withSandbox(async ({ client, control }) => {
  const state = await control.state();
  const posted = await client.rest.post(Routes.channelMessages(state.channels['general']!), { body: { content: 'vote' } }) as { id: string };
  let identified = 0;
  client.on('shardReady', () => identified++);
  const resumed = nextEvent(client, 'shardResume');
  const added = nextEvent(client, 'messageReactionAdd');
  assert.equal(await control.disconnectGateway({ code: 4000, holdMs: 300 }), 1);
  await control.react('carol', posted.id, '👎');
  const [reaction] = await added;
  await resumed;
  assert.equal(reaction.message.id, posted.id);
  assert.equal(identified, 0, 'the session was resumed, not identified afresh');
  assert.equal((await control.state()).gatewaySessions, 1);
  await assertNoViolations(control);
}));

test('a command with default_member_permissions is refused to members without them unless forced', () => withSandbox(async (world) => {
  const { client, control } = world;
  await registerCommands(world);
  await assert.rejects(control.command({ user: 'alice', command: 'train' }), /alice lacks Administrator that \/train requires/);
  const forced = nextEvent(client, 'interactionCreate');
  await control.command({ user: 'alice', command: 'train', force: true });
  const [interaction] = await forced;
  assert.equal(interaction.memberPermissions?.has(PermissionFlagsBits.Administrator), false);
  const allowed = nextEvent(client, 'interactionCreate');
  await control.command({ user: 'admin_ann', command: 'train' });
  const [adminInteraction] = await allowed;
  assert.equal(adminInteraction.memberPermissions?.has(PermissionFlagsBits.Administrator), true);
  await assertNoViolations(control);
}));

test('command options are checked against the registration', () => withSandbox(async (world) => {
  const { control } = world;
  await registerCommands(world);
  await assert.rejects(control.command({ user: 'alice', command: 'paint' }), /\/paint is not registered \(registered: \/imagine, \/train\)/);
  await assert.rejects(control.command({ user: 'alice', command: 'imagine', options: {} }), /needs option prompt/);
  await assert.rejects(control.command({ user: 'alice', command: 'imagine', options: { prompt: 'a', colour: 'red' } }), /no option "colour"/);
  await assert.rejects(control.command({ user: 'alice', command: 'imagine', options: { prompt: 'a', steps: 51 } }), /steps = 51 is above its max_value 50/);
  await assert.rejects(control.command({ user: 'alice', command: 'imagine', options: { prompt: 'a', steps: '2.5' } }), /steps = "2.5" must be an integer/);
  await assert.rejects(control.command({ user: 'alice', command: 'imagine', options: { prompt: 'a', size: '1x1' } }), /size = "1x1" is not one of its choices/);
  const interaction = await runCommand(world, 'alice', { prompt: 'a', size: '1344x768' });
  assert.equal(interaction.options.getString('size'), '1344x768');
  await assertNoViolations(control);
}));

test('editReply keeps the attachments it lists, drops the others, and follow-ups are separate messages', () => withSandbox(async (world) => {
  const { control } = world;
  await registerCommands(world);
  const command = await runCommand(world);
  await command.deferReply();
  const first = await command.editReply({ files: [new AttachmentBuilder(Buffer.from('one'), { name: 'one.txt' }), new AttachmentBuilder(Buffer.from('two'), { name: 'two.txt' })] });
  const keep = first.attachments.find((attachment) => attachment.name === 'two.txt')!;
  await command.editReply({ content: 'swapped', attachments: [keep], files: [new AttachmentBuilder(Buffer.from('three'), { name: 'three.txt' })] });
  await command.followUp({ content: 'just for you', flags: 64 });
  const [reply] = await control.messages('general');
  assert.deepEqual(reply!.attachments.map((attachment) => attachment.filename), ['two.txt', 'three.txt']);
  assert.equal((await control.download(reply!.attachments[1]!.url)).toString(), 'three');
  assert.deepEqual(reply!.edits.map((edit) => edit.fields), [['attachments', 'flags'], ['attachments', 'content']]);
  const followUp = (await control.messages('general', { user: 'alice' })).at(-1)!;
  assert.equal(followUp.content, 'just for you');
  assert.equal(followUp.ephemeral, true);
  assert.deepEqual((await control.interaction(command.id)).followUpIds, [followUp.id]);
  await assertNoViolations(control);
}));

test('a wrong token is refused: REST 401 and no login', async () => {
  const sandbox = await LocalDiscord.start({ botToken: 'right-token' });
  const client = new Client({ intents: [GatewayIntentBits.Guilds], rest: { api: sandbox.apiUrl } });
  try {
    await assert.rejects(client.login('wrong-token'), /invalid token/i);
    const response = await fetch(`${sandbox.apiUrl}/v10/users/@me`, { headers: { Authorization: 'Bot wrong-token' } });
    assert.equal(response.status, 401);
    assert.deepEqual(await response.json(), { code: 0, message: '401: Unauthorized' });
  } finally {
    await client.destroy();
    await sandbox.close();
  }
});

test('an attachment over 10 MiB is refused with 413 and recorded', () => withSandbox(async ({ client, control }) => {
  const state = await control.state();
  const channel = await client.channels.fetch(state.channels['general']!);
  assert.ok(channel?.isSendable());
  const error = await rejection(channel.send({ files: [new AttachmentBuilder(Buffer.alloc(10 * 1024 * 1024 + 1), { name: 'big.bin' })] }));
  assert.equal(error.status, 413);
  assert.equal(error.code, 40005);
  assert.match((await control.violations())[0]!.problems[0]!, /files\[0\]: 10485761 bytes/);
}));

test('wrongbot sandbox drives a running sandbox: command, messages --save, react, clock', () => withSandbox(async (world) => {
  const { client, control, sandbox } = world;
  await registerCommands(world);
  const png = Buffer.from('not really a png');
  client.on('interactionCreate', (interaction) => {
    if (!interaction.isChatInputCommand()) return;
    const prompt = interaction.options.getString('prompt', true);
    void interaction.reply({
      embeds: [new EmbedBuilder().setTitle(`“${prompt}”`).addFields({ name: 'seed', value: '42' })],
      components: [new ActionRowBuilder<ButtonBuilder>().addComponents(new ButtonBuilder().setCustomId('reroll:42').setLabel('Reroll').setStyle(ButtonStyle.Primary))],
      files: [new AttachmentBuilder(png, { name: 'result.png' })],
    });
  });
  const env = { SANDBOX_URL: sandbox.controlUrl };
  const ran = await runCli(['sandbox', 'command', 'imagine', '--as', 'dora', '--opt', 'prompt=a red fox'], env);
  assert.equal(ran.code, 0, ran.stderr);
  assert.match(ran.stdout, /the bot answered with callback type 4; message \d+/);
  const [message] = await control.messages('general');
  const saveDir = mkdtempSync(path.join(tmpdir(), 'wrongbot-sandbox-'));
  try {
    const listed = await runCli(['sandbox', 'messages', '--save', saveDir], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /embed: “a red fox”/);
    assert.match(listed.stdout, /seed: 42/);
    assert.match(listed.stdout, /buttons: \[Reroll\] reroll:42/);
    assert.match(listed.stdout, /attachments: result\.png \(image\/png, 16 bytes\)/);
    assert.deepEqual(readFileSync(path.join(saveDir, `${message!.id}-result.png`)), png);
  } finally {
    rmSync(saveDir, { recursive: true, force: true });
  }
  const reacted = await runCli(['sandbox', 'react', message!.id, '--as', 'erin'], env);
  assert.equal(reacted.code, 0, reacted.stderr);
  assert.deepEqual((await control.messages('general'))[0]!.reactions, [{ emoji: '👎', users: ['erin'] }]);
  const before = await control.now();
  const clock = await runCli(['sandbox', 'clock', '+60000'], env);
  assert.equal(clock.code, 0, clock.stderr);
  assert.ok(await control.now() >= before + 60_000);
  const refused = await runCli(['sandbox', 'command', 'imagine', '--opt', 'colour=red'], env);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /no option "colour"/);
  await assertNoViolations(control);
}));

test('wrongbot sandbox explains usage mistakes and a sandbox that is not running', async () => {
  const sandbox = await LocalDiscord.start();
  const unreachable = sandbox.controlUrl;
  await sandbox.close();
  const missing = await runCli(['sandbox', 'press', '123'], { SANDBOX_URL: unreachable });
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /CUSTOM_ID is required/);
  const down = await runCli(['sandbox', 'messages'], { SANDBOX_URL: unreachable });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /no local Discord at .*npm start/);
});

test('the first follow-up after a deferral fills the "thinking…" reply instead of posting another message', () => withSandbox(async (world) => {
  const { control } = world;
  await registerCommands(world);
  const command = await runCommand(world);
  await command.deferReply();
  const filled = await command.followUp('filled in');
  const second = await command.followUp('a second message');
  const messages = await control.messages('general');
  assert.deepEqual(messages.map((message) => [message.content, message.flags, message.edits.length]), [['filled in', 0, 0], ['a second message', 0, 0]]);
  const record = await control.interaction(command.id);
  assert.equal(filled.id, record.messageId);
  assert.deepEqual(record.followUpIds, [second.id]);
  await assertNoViolations(control);
}));

/** A raw gateway connection that collects what the server sends, for protocol details discord.js hides. */
async function rawGateway(url: string) {
  const socket = new WebSocket(`${url}?v=10&encoding=json`);
  const received: Array<{ op: number; t: string | null; s: number | null; d: any }> = [];
  const waiters: Array<() => void> = [];
  socket.on('message', (data) => {
    received.push(JSON.parse(data.toString()));
    waiters.splice(0).forEach((wake) => wake());
  });
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  return {
    socket, closed,
    send: (payload: unknown) => socket.send(JSON.stringify(payload)),
    async next(predicate: (payload: { op: number; t: string | null; d: any }) => boolean) {
      for (;;) {
        const found = received.find(predicate);
        if (found !== undefined) return found;
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
  };
}

/** The gateway address, asked for the way discord.js asks. */
async function gatewayUrlOf(sandbox: LocalDiscord): Promise<string> {
  const response = await fetch(`${sandbox.apiUrl}/v10/gateway/bot`, { headers: { Authorization: `Bot ${sandbox.botToken}` } });
  return ((await response.json()) as { url: string }).url;
}

test('gateway protocol: HELLO, heartbeat ACK, bad IDENTIFY closes 4004, unknown RESUME gets op 9', async () => {
  const sandbox = await LocalDiscord.start();
  try {
    const gatewayUrl = await gatewayUrlOf(sandbox);
    const good = await rawGateway(gatewayUrl);
    assert.equal((await good.next((payload) => payload.op === 10)).d.heartbeat_interval, HEARTBEAT_INTERVAL_MS);
    good.send({ op: 1, d: null });
    await good.next((payload) => payload.op === 11);
    good.send({ op: 2, d: { token: sandbox.botToken, intents: 1, properties: {}, shard: [0, 1] } });
    const ready = await good.next((payload) => payload.t === 'READY');
    const guild = await good.next((payload) => payload.t === 'GUILD_CREATE');
    assert.equal(ready.d.guilds[0].unavailable, true);
    assert.equal(guild.d.unavailable, false);
    assert.equal(guild.d.roles.find((role: { name: string }) => role.name === '@everyone').id, guild.d.id);
    good.socket.close();

    const resume = await rawGateway(gatewayUrl);
    resume.send({ op: 6, d: { token: sandbox.botToken, session_id: 'no-such-session', seq: 3 } });
    assert.equal((await resume.next((payload) => payload.op === 9)).d, false);
    resume.socket.close();

    const bad = await rawGateway(gatewayUrl);
    bad.send({ op: 2, d: { token: 'wrong', intents: 1, properties: {} } });
    assert.equal(await bad.closed, 4004);
  } finally {
    await sandbox.close();
  }
});

// Malformed input must cost the sender its request or connection, never the server: every test below ends with the
// server still answering.

async function withBareSandbox(run: (sandbox: LocalDiscord, control: SandboxClient) => Promise<void>): Promise<void> {
  const sandbox = await LocalDiscord.start();
  try {
    await run(sandbox, new SandboxClient(sandbox.controlUrl));
  } finally {
    await sandbox.close();
  }
}

/** Writes `request` as raw bytes and returns everything the server sent until it closed the connection. */
async function rawExchange(serverUrl: string, request: string): Promise<string> {
  const { hostname, port } = new URL(serverUrl);
  const socket = connect(Number(port), hostname);
  const chunks: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => chunks.push(chunk));
  // A destroyed socket may surface as ECONNRESET; what was received so far is the answer either way.
  socket.on('error', () => {});
  await new Promise<void>((resolve) => {
    socket.once('connect', () => socket.write(request));
    socket.once('close', () => resolve());
  });
  return Buffer.concat(chunks).toString('latin1');
}

test('a request target that is no URL path ("//") is answered 400, and an upgrade to it is dropped', () => withBareSandbox(async (sandbox, control) => {
  const answer = await rawExchange(sandbox.url, 'GET // HTTP/1.1\r\nHost: sandbox\r\nConnection: close\r\n\r\n');
  assert.match(answer, /^HTTP\/1\.1 400 /);
  assert.match(answer, /\r\n\r\n\{"message":"\\"\/\/\\" is not a request path"\}$/);
  const upgrade = await rawExchange(sandbox.url, [
    'GET // HTTP/1.1', 'Host: sandbox', 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', '', '',
  ].join('\r\n'));
  assert.equal(upgrade, '', 'the upgrade is dropped without an answer');
  assert.equal((await control.state()).gatewaySessions, 0);
}));

test('a gateway frame that is not UTF-8 closes that connection with 1007; the gateway still greets the next one', () => withBareSandbox(async (sandbox) => {
  const gatewayUrl = await gatewayUrlOf(sandbox);
  const broken = await rawGateway(gatewayUrl);
  broken.socket.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
  assert.equal(await broken.closed, 1007);
  const next = await rawGateway(gatewayUrl);
  await next.next((payload) => payload.op === 10);
  next.socket.close();
}));

test('a gateway payload that is JSON but not an object closes with 4002 (decode error)', () => withBareSandbox(async (sandbox) => {
  const gatewayUrl = await gatewayUrlOf(sandbox);
  for (const text of ['null', '[]', '7']) {
    const connection = await rawGateway(gatewayUrl);
    connection.socket.send(text);
    assert.equal(await connection.closed, 4002, text);
  }
  const next = await rawGateway(gatewayUrl);
  await next.next((payload) => payload.op === 10);
  next.socket.close();
}));

// Were the refused request to set the hold anyway, the raw connection would wait days for HELLO: the timeout fails it.
test('a gateway disconnect with a code ws cannot send is refused with 400 and changes nothing', { timeout: 30_000 }, () => withSandbox(async ({ sandbox, control }) => {
  for (const code of [0, 1001, 2999, 5000, 4000.5, '4000']) {
    await assert.rejects(control.disconnectGateway({ code: code as number, holdMs: 2 ** 31 - 1 }), /^Error: code = \S+ must be 1000 or a whole number from 3000 to 4999$/);
  }
  assert.equal((await control.state()).gatewaySessions, 1, 'the bot stays connected');
  const next = await rawGateway(await gatewayUrlOf(sandbox));
  await next.next((payload) => payload.op === 10);
  next.socket.close();
}));

test('a permission string too long for any number is a violation answered 400, not a server error', () => withBareSandbox(async (sandbox, control) => {
  const { applicationId } = await control.state();
  const response = await fetch(`${sandbox.apiUrl}/v10/applications/${applicationId}/commands`, {
    method: 'PUT', headers: { Authorization: `Bot ${sandbox.botToken}`, 'Content-Type': 'application/json' },
    body: JSON.stringify([{ name: 'draw', description: 'Draw', default_member_permissions: '9'.repeat(400) }]),
  });
  assert.equal(response.status, 400);
  assert.equal(((await response.json()) as { code: number }).code, 50035);
  const violations = await control.violations();
  assert.equal(violations.length, 1);
  assert.match(violations[0]!.problems[0]!, /^body\[0\]\.default_member_permissions: must be an integer or null \(got "9{20}/);
}));

test('a body nested past 32 levels is a violation answered 400 (50035), as JSON, multipart and on the control API', () => withBareSandbox(async (sandbox, control) => {
  const { channels } = await control.state();
  const messagesUrl = `${sandbox.apiUrl}/v10/channels/${channels['general']}/messages`;
  const auth = { Authorization: `Bot ${sandbox.botToken}` };
  const nested = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
  // Deep enough that any walk recursing per level overflows the stack; 3 levels are the body, embeds and the embed.
  const deep = `{"content":"x","embeds":[{"title":${nested(100_000)}}]}`;
  const form = new FormData();
  form.append('payload_json', deep);
  for (const body of [deep, form]) {
    const headers = typeof body === 'string' ? { ...auth, 'Content-Type': 'application/json' } : auth;
    const response = await fetch(messagesUrl, { method: 'POST', headers, body });
    assert.equal(response.status, 400);
    assert.deepEqual(await response.json(), {
      code: 50035, message: 'Invalid Form Body',
      errors: { _errors: [{ code: 'PLATFORM_LIMIT', message: 'nested 100003 levels deep; the limit is 32' }] },
    });
  }
  const violations = await control.violations();
  assert.deepEqual(violations.map((violation) => violation.problems), Array(2).fill(['body: nested 100003 levels deep; the limit is 32']));

  const atLimit = await fetch(messagesUrl, {
    method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: `{"content":"x","embeds":[{"title":${nested(29)}}]}`,
  });
  assert.equal(atLimit.status, 400);
  assert.match(JSON.stringify(await atLimit.json()), /"title":\{"_errors":\[\{"code":"OPENAPI_SCHEMA","message":"must be a string or null/,
    '32 levels reach the schema, which names the field');
  const bracketsInText = await fetch(messagesUrl, {
    method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ content: `"\\"${'['.repeat(1000)}` }),
  });
  assert.equal(bracketsInText.status, 200, 'brackets inside a string do not nest');

  const controlAnswer = await fetch(`${sandbox.controlUrl}/commands`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: `{"user":"alice","command":"imagine","options":{"prompt":${nested(100_000)}}}`,
  });
  assert.equal(controlAnswer.status, 400);
  assert.deepEqual(await controlAnswer.json(), { message: 'body: nested 100002 levels deep; the limit is 32' });
}));

test('a channel keeps its last 500 messages: an older one goes with its attachment, as if deleted', () => withBareSandbox(async (sandbox, control) => {
  const { channels } = await control.state();
  const messagesUrl = `${sandbox.apiUrl}/v10/channels/${channels['general']}/messages`;
  const auth = { Authorization: `Bot ${sandbox.botToken}` };
  const form = new FormData();
  form.append('payload_json', JSON.stringify({ content: 'the first' }));
  form.append('files[0]', new Blob([Buffer.from('first bytes')]), 'first.txt');
  const first = await (await fetch(messagesUrl, { method: 'POST', headers: auth, body: form })).json() as { id: string; attachments: Array<{ url: string }> };
  assert.equal((await control.download(first.attachments[0]!.url)).toString(), 'first bytes');
  let last = '';
  for (let i = 0; i < 500; i++) {
    const response = await fetch(messagesUrl, { method: 'POST', headers: { ...auth, 'Content-Type': 'application/json' }, body: JSON.stringify({ content: `message ${i}` }) });
    last = ((await response.json()) as { id: string }).id;
  }
  const kept = await control.messages('general');
  assert.equal(kept.length, 500);
  assert.deepEqual([kept[0]!.content, kept.at(-1)!.content], ['message 0', 'message 499']);
  const gone = await fetch(`${messagesUrl}/${first.id}`, { headers: auth });
  assert.equal(gone.status, 404);
  assert.equal(((await gone.json()) as { code: number }).code, 10008);
  assert.equal((await fetch(first.attachments[0]!.url)).status, 404);
  const channel = await (await fetch(`${sandbox.apiUrl}/v10/channels/${channels['general']}`, { headers: auth })).json() as { last_message_id: string };
  assert.equal(channel.last_message_id, last);
  assert.deepEqual(await control.violations(), []);
}));
