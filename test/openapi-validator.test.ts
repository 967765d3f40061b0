import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import {
  ActionRowBuilder, AttachmentBuilder, ButtonBuilder, ButtonInteraction, ButtonStyle, ChatInputCommandInteraction, Client,
  ComponentType, EmbedBuilder, InteractionContextType, InteractionType, MessageFlags, PermissionFlagsBits, Routes,
  SlashCommandBuilder, type DMChannel,
} from 'discord.js';
import { DISCORD_OPENAPI_PATH, OpenApiValidator, type RequestToValidate } from '../src/sandbox/openapi-validator.js';
import { SchemaCompiler, type Schema, type SchemaProblem } from '../src/sandbox/json-schema.js';

const validator = OpenApiValidator.fromFile();

const APPLICATION_ID = '200000000000000001';
const CHANNEL_ID = '300000000000000001';
const MESSAGE_ID = '900000000000000001';
const GUILD_ID = '600000000000000001';
const USER = { id: '500000000000000001', username: 'painter', discriminator: '0', global_name: null, avatar: null };
const MESSAGE = {
  id: MESSAGE_ID, channel_id: CHANNEL_ID, type: 0, content: 'x', author: USER, timestamp: '2025-01-01T00:00:00.000Z',
  edited_timestamp: null, tts: false, mention_everyone: false, mentions: [], mention_roles: [], attachments: [], embeds: [],
  pinned: false, components: [],
};
const COMMAND_INTERACTION = {
  id: '100000000000000001', application_id: APPLICATION_ID, type: InteractionType.ApplicationCommand, token: 'interaction-token',
  channel: { id: CHANNEL_ID, type: 1 }, channel_id: CHANNEL_ID, user: USER, version: 1, locale: 'en-US', app_permissions: '0',
  entitlements: [], authorizing_integration_owners: {}, context: 1,
  data: { id: '400000000000000001', name: 'draw', type: 1, options: [] },
};
const BUTTON_INTERACTION = {
  ...COMMAND_INTERACTION, type: InteractionType.MessageComponent, message: MESSAGE,
  data: { custom_id: 'again', component_type: ComponentType.Button },
};

/** What the local server answers, so discord.js carries on as it would against Discord. */
function answer(method: string, path: string): { status: number; body?: unknown } {
  if (path.endsWith('/callback') || path.includes('/reactions/')) return { status: 204 };
  if (path === '/gateway/bot') {
    return { status: 200, body: { url: 'ws://127.0.0.1', shards: 1, session_start_limit: { total: 1000, remaining: 1000, reset_after: 0, max_concurrency: 1 } } };
  }
  if (method === 'GET' && path === `/channels/${CHANNEL_ID}`) return { status: 200, body: { id: CHANNEL_ID, type: 1, recipients: [USER], last_message_id: null } };
  if (method === 'GET' && path === `/users/${USER.id}`) return { status: 200, body: USER };
  if (path.startsWith('/guilds/')) return { status: 200, body: { user: USER, roles: [], joined_at: '2025-01-01T00:00:00.000Z', deaf: false, mute: false, flags: 0 } };
  if (path.includes('/commands')) return { status: 200, body: [] };
  return { status: 200, body: MESSAGE };
}

async function readRequest(request: IncomingMessage): Promise<RequestToValidate> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  const raw = Buffer.concat(chunks);
  const url = new URL(request.url ?? '/', 'http://localhost');
  const contentType = request.headers['content-type'] ?? null;
  const recorded: RequestToValidate = {
    method: request.method ?? 'GET', path: url.pathname.replace(/^\/api\/v10/, ''), query: url.searchParams, contentType, body: undefined,
  };
  if (contentType?.startsWith('multipart/form-data')) {
    const form = await new Response(raw, { headers: { 'content-type': contentType } }).formData();
    recorded.fileFields = [];
    for (const [name, value] of form) {
      if (typeof value !== 'string') recorded.fileFields.push(name);
      else if (name === 'payload_json') recorded.body = JSON.parse(value);
    }
  } else if (raw.length > 0) {
    recorded.body = JSON.parse(raw.toString('utf8'));
  }
  return recorded;
}

/** Runs real discord.js against a local HTTP server and returns every request it sent, in order. */
async function recordDiscordJs(drive: (client: Client) => Promise<void>): Promise<RequestToValidate[]> {
  const recorded: RequestToValidate[] = [];
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    readRequest(request).then((parsed) => {
      recorded.push(parsed);
      const { status, body } = answer(parsed.method, parsed.path);
      response.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' });
      response.end(body === undefined ? undefined : JSON.stringify(body));
    }, (error: unknown) => {
      response.writeHead(400);
      response.end(String(error));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = new Client({ intents: [], rest: { api: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api` } });
  client.rest.setToken('bot-token');
  try {
    await drive(client);
  } finally {
    await client.destroy();
    await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
  }
  return recorded;
}

// discord.js builds interactions from gateway payloads; these tests build them from the same payloads without a gateway.
function commandInteraction(client: Client, id: string): ChatInputCommandInteraction {
  return Reflect.construct(ChatInputCommandInteraction, [client, { ...COMMAND_INTERACTION, id }]) as ChatInputCommandInteraction;
}

function buttonInteraction(client: Client, id: string): ButtonInteraction {
  return Reflect.construct(ButtonInteraction, [client, { ...BUTTON_INTERACTION, id }]) as ButtonInteraction;
}

function pngFile(name: string): AttachmentBuilder {
  return new AttachmentBuilder(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), { name });
}

function assertAllValid(recorded: readonly RequestToValidate[], expectedOperations: readonly string[]): void {
  const outcomes = recorded.map((request) => ({ request: `${request.method} ${request.path}`, ...validator.validate(request) }));
  assert.deepEqual(outcomes.map((outcome) => outcome.operationId), expectedOperations);
  for (const outcome of outcomes) assert.deepEqual(outcome.problems, [], outcome.request);
}

function problemsOf(request: Partial<RequestToValidate> & Pick<RequestToValidate, 'method' | 'path'>): string[] {
  return validator.validate({ query: new URLSearchParams(), contentType: null, body: undefined, ...request }).problems;
}

function callback(body: unknown): string[] {
  return problemsOf({ method: 'POST', path: '/interactions/1/token/callback', contentType: 'application/json', body });
}

test('DISCORD_OPENAPI_PATH points at the spec in assets/discord', () => {
  assert.match(DISCORD_OPENAPI_PATH, /assets[/\\]discord[/\\]openapi\.json$/);
  assert.equal(JSON.parse(readFileSync(DISCORD_OPENAPI_PATH, 'utf8')).openapi, '3.1.0');
});

test('interaction responses discord.js sends pass: defers, replies, updates, edits and follow-ups', async () => {
  const recorded = await recordDiscordJs(async (client) => {
    await commandInteraction(client, '100000000000000001').deferReply({ flags: MessageFlags.Ephemeral });
    const deferred = commandInteraction(client, '100000000000000002');
    await deferred.deferReply();
    await commandInteraction(client, '100000000000000003').reply({
      content: 'Queued **a cat**',
      embeds: [new EmbedBuilder().setTitle('a cat').setDescription('seed 42').setColor(0x5865f2).addFields({ name: 'steps', value: '30' }).setTimestamp()],
      components: [new ActionRowBuilder<ButtonBuilder>().addComponents(
        new ButtonBuilder().setCustomId('again:42').setLabel('Again').setStyle(ButtonStyle.Primary).setEmoji('🔁'),
        new ButtonBuilder().setCustomId('cancel:42').setLabel('Cancel').setStyle(ButtonStyle.Danger),
      )],
    });
    await buttonInteraction(client, '100000000000000004').deferUpdate();
    await buttonInteraction(client, '100000000000000005').update({ content: 'Cancelled', components: [] });
    await deferred.editReply({ content: 'Done', files: [pngFile('cat.png')] });
    await deferred.editReply({ content: 'Done, again' });
    await deferred.followUp({ content: 'Only you can see this', flags: MessageFlags.Ephemeral });
    await commandInteraction(client, '100000000000000006').reply({ content: 'Here', files: [pngFile('a.png'), pngFile('b.png')] });
    await deferred.followUp({ files: [pngFile('c.png')] });
  });
  assertAllValid(recorded, [
    'create_interaction_response', 'create_interaction_response', 'create_interaction_response', 'create_interaction_response',
    'create_interaction_response', 'update_original_webhook_message', 'update_original_webhook_message', 'execute_webhook',
    'create_interaction_response', 'execute_webhook',
  ]);
  assert.deepEqual(recorded.slice(0, 2).map((request) => request.body), [{ type: 5, data: { flags: 64 } }, { type: 5, data: { flags: 0 } }]);
  assert.equal(recorded[5]!.path, `/webhooks/${APPLICATION_ID}/interaction-token/messages/%40original`);
  assert.deepEqual(recorded[5]!.fileFields, ['files[0]']);
  assert.equal(recorded[7]!.query.get('wait'), 'true');
  assert.deepEqual(recorded[8]!.fileFields, ['files[0]', 'files[1]']);
});

test('channel messages, reactions and reads discord.js sends pass', async () => {
  const recorded = await recordDiscordJs(async (client) => {
    await client.rest.get(Routes.gatewayBot());
    const channel = (await client.channels.fetch(CHANNEL_ID)) as DMChannel;
    await channel.send({ content: `Done, <@${USER.id}>`, allowedMentions: { users: [USER.id] }, files: [pngFile('cat.png')] });
    await channel.send({ content: 'No files', allowedMentions: { parse: [] } });
    await channel.messages.react(MESSAGE_ID, '👎');
    await channel.messages.fetch({ message: MESSAGE_ID, force: true });
    await client.users.fetch(USER.id, { force: true });
    await client.rest.get(Routes.guildMember(GUILD_ID, USER.id));
  });
  assertAllValid(recorded, ['get_bot_gateway', 'get_channel', 'create_message', 'create_message', 'add_my_message_reaction', 'get_message', 'get_user', 'get_guild_member']);
  assert.equal(recorded[4]!.path, `/channels/${CHANNEL_ID}/messages/${MESSAGE_ID}/reactions/%F0%9F%91%8E/@me`);
  assert.deepEqual(validator.validate(recorded[4]!).pathParams, { channel_id: CHANNEL_ID, message_id: MESSAGE_ID, emoji_name: '👎' });
});

function slashCommands(): unknown[] {
  const draw = new SlashCommandBuilder().setName('draw').setDescription('Draw an image from a prompt')
    .addStringOption((option) => option.setName('prompt').setDescription('What to draw').setRequired(true).setMinLength(1).setMaxLength(1000))
    .addStringOption((option) => option.setName('size').setDescription('Image size').addChoices({ name: 'Square', value: '1024x1024' }, { name: 'Wide', value: '1344x768' }))
    .addIntegerOption((option) => option.setName('steps').setDescription('Denoising steps').setMinValue(1).setMaxValue(100))
    .addIntegerOption((option) => option.setName('count').setDescription('Images').addChoices({ name: 'one', value: 1 }, { name: 'four', value: 4 }))
    .addNumberOption((option) => option.setName('guidance').setDescription('Guidance scale').setMinValue(0).setMaxValue(30.5))
    .setContexts(InteractionContextType.Guild, InteractionContextType.BotDM)
    .setDefaultMemberPermissions(0);
  const admin = new SlashCommandBuilder().setName('queue').setDescription('Manage the queue')
    .addSubcommand((sub) => sub.setName('clear').setDescription('Clear it'))
    .setDefaultMemberPermissions(PermissionFlagsBits.Administrator)
    .setDMPermission(false);
  return [draw.toJSON(), admin.toJSON()];
}

test('slash command registration discord.js sends passes, permission strings included', async () => {
  const commands = slashCommands();
  assert.deepEqual(commands.map((command) => (command as { default_member_permissions: unknown }).default_member_permissions), ['0', '8']);
  const recorded = await recordDiscordJs(async (client) => {
    await client.rest.put(Routes.applicationGuildCommands(APPLICATION_ID, GUILD_ID), { body: commands });
    await client.rest.put(Routes.applicationCommands(APPLICATION_ID), { body: commands });
  });
  assertAllValid(recorded, ['bulk_set_guild_application_commands', 'bulk_set_application_commands']);
});

test('permission strings must still be digits within the bounds', () => {
  const put = (permissions: unknown) => problemsOf({
    method: 'PUT', path: `/applications/${APPLICATION_ID}/commands`, contentType: 'application/json',
    body: [{ name: 'draw', description: 'Draw', default_member_permissions: permissions }],
  });
  assert.deepEqual(put('8'), []);
  assert.deepEqual(put(8), []);
  assert.deepEqual(put(null), []);
  assert.deepEqual(put('eight'), ['body[0].default_member_permissions: must be an integer or null (got "eight")']);
  assert.deepEqual(put('-8'), ['body[0].default_member_permissions: must be an integer or null (got "-8")']);
  assert.deepEqual(put('18014398509481984'), []);
  assert.deepEqual(put('36028797018963968'), ['body[0].default_member_permissions: must be at most 18014398509481984 (got 36028797018963970)']);
  // One more than 2^54 has no exact JS number; it stays text rather than round down into range.
  assert.deepEqual(put('18014398509481985'), ['body[0].default_member_permissions: must be an integer or null (got "18014398509481985")']);
});

test('a reply over 2000 characters names body.data.content and the limit', () => {
  assert.deepEqual(callback({ type: 4, data: { content: 'x'.repeat(2000) } }), []);
  assert.deepEqual(callback({ type: 4, data: { content: 'x'.repeat(2001) } }), ['body.data.content: must be at most 2000 characters (got 2001)']);
});

test('characters are counted as code points, as Discord counts them', () => {
  assert.deepEqual(callback({ type: 4, data: { content: '🎨'.repeat(2000) } }), []);
  assert.deepEqual(callback({ type: 4, data: { content: '🎨'.repeat(2001) } }), ['body.data.content: must be at most 2000 characters (got 2001)']);
});

test('a custom_id over 100 characters names the button', () => {
  const row = (customId: string) => ({ type: 1, components: [{ type: 2, style: 1, label: 'Again', custom_id: customId, emoji: { name: '🔁' } }] });
  assert.deepEqual(callback({ type: 4, data: { components: [row('x'.repeat(100))] } }), []);
  assert.deepEqual(callback({ type: 4, data: { components: [row('x'.repeat(101))] } }), [
    'body.data.components[0].components[0].custom_id: must be at most 100 characters (got 101)',
  ]);
});

test('a callback without type, or with an unknown type, gets one readable problem at body.type', () => {
  assert.deepEqual(callback({ data: { content: 'hi' } }), ['body.type: is required']);
  assert.deepEqual(callback({ type: 99 }), ['body.type: must be one of 1, 4, 5, 6, 7, 8, 9, 12, 13 (got 99)']);
  assert.deepEqual(callback({ type: '4' }), ['body.type: must be an integer (got "4")']);
  assert.deepEqual(callback('pong'), ['body: must be an object (got "pong")']);
});

test('problems inside a union come from the branch the value picked by its type', () => {
  assert.deepEqual(callback({ type: 7, data: { content: 'x'.repeat(2001) } }), ['body.data.content: must be at most 2000 characters (got 2001)']);
  assert.deepEqual(callback({ type: 4, data: { components: [{ type: 1, components: [{ type: 2, style: 9, custom_id: 'a' }] }] } }), [
    'body.data.components[0].components[0].style: must be one of 1, 2, 3, 4, 5, 6 (got 9)',
  ]);
  assert.deepEqual(callback({ type: 4, data: { components: [{ type: 1, components: [{ type: 42 }] }] } }), [
    'body.data.components[0].components[0].type: must be one of 2, 3, 5, 6, 7, 8 (got 42)',
  ]);
});

test('more than 10 embeds is a problem at body.data.embeds', () => {
  const embeds = (count: number) => Array.from({ length: count }, (_, index) => ({ title: `embed ${index}` }));
  assert.deepEqual(callback({ type: 4, data: { embeds: embeds(10) } }), []);
  assert.deepEqual(callback({ type: 4, data: { embeds: embeds(11) } }), ['body.data.embeds: must have at most 10 items (got 11)']);
});

test('an unknown route or method is one problem naming the method and path', () => {
  assert.deepEqual(validator.validate({ method: 'GET', path: '/no/such/route', query: new URLSearchParams(), contentType: null, body: undefined }), {
    operationId: null, route: null, pathParams: {}, problems: ['GET /no/such/route: no route in the Discord OpenAPI spec has this path'],
  });
  assert.deepEqual(problemsOf({ method: 'DELETE', path: '/gateway/bot' }), ['DELETE /gateway/bot: /gateway/bot has no DELETE operation (it has GET)']);
  assert.deepEqual(problemsOf({ method: 'GET', path: '/gateway/bot/' }), ['GET /gateway/bot/: no route in the Discord OpenAPI spec has this path']);
});

test('path parameters are checked against their schemas', () => {
  assert.deepEqual(problemsOf({ method: 'GET', path: '/channels/general' }), ['path.channel_id: must be a snowflake (decimal digits, below 2^64) (got "general")']);
  assert.deepEqual(problemsOf({ method: 'GET', path: '/channels/0123' }), ['path.channel_id: must match /^(0|[1-9][0-9]*)$/ (got "0123")']);
  assert.deepEqual(problemsOf({ method: 'GET', path: '/channels/18446744073709551616' }), ['path.channel_id: must be a snowflake (decimal digits, below 2^64) (got "18446744073709551616")']);
  assert.deepEqual(problemsOf({ method: 'GET', path: `/channels/${CHANNEL_ID}/polls/${MESSAGE_ID}/answers/11` }), ['path.answer_id: must be at most 10 (got 11)']);
  assert.deepEqual(problemsOf({ method: 'PUT', path: `/channels/${CHANNEL_ID}/messages/${MESSAGE_ID}/reactions/%E0%A4/@me` }), ['path.emoji_name: is not valid percent-encoding (got "%E0%A4")']);
});

test('a literal segment wins over a parameter: @original is not a message id', () => {
  const edit = (messageSegment: string) => validator.validate({
    method: 'PATCH', path: `/webhooks/${APPLICATION_ID}/token/messages/${messageSegment}`, query: new URLSearchParams(),
    contentType: 'application/json', body: { content: 'edited' },
  });
  for (const original of ['@original', '%40original']) {
    assert.deepEqual(edit(original), {
      operationId: 'update_original_webhook_message', route: '/webhooks/{webhook_id}/{webhook_token}/messages/@original',
      pathParams: { webhook_id: APPLICATION_ID, webhook_token: 'token' }, problems: [],
    });
  }
  assert.equal(edit(MESSAGE_ID).operationId, 'update_webhook_message');
  assert.deepEqual(edit(MESSAGE_ID).pathParams, { webhook_id: APPLICATION_ID, webhook_token: 'token', message_id: MESSAGE_ID });
  assert.deepEqual(edit('latest').problems, ['path.message_id: must be a snowflake (decimal digits, below 2^64) (got "latest")']);
});

test('query parameters are coerced from text, checked, and unknown ones are problems', () => {
  const list = (query: string) => problemsOf({ method: 'GET', path: `/channels/${CHANNEL_ID}/messages`, query: new URLSearchParams(query) });
  assert.deepEqual(list('limit=50&before=1'), []);
  assert.deepEqual(list('limit=500'), ['query.limit: must be at most 100 (got 500)']);
  assert.deepEqual(list('limit=fifty'), ['query.limit: must be an integer (got "fifty")']);
  assert.deepEqual(list('limit=1&limit=2'), ['query.limit: must be given once (got 2 values)']);
  assert.deepEqual(list('page=2'), ['query.page: is not a query parameter of GET /channels/{channel_id}/messages']);
  assert.deepEqual(problemsOf({ method: 'GET', path: `/channels/${CHANNEL_ID}`, query: new URLSearchParams('with_counts=true') }), [
    'query.with_counts: is not a query parameter of GET /channels/{channel_id}',
  ]);
  const followUp = (query: string) => problemsOf({
    method: 'POST', path: `/webhooks/${APPLICATION_ID}/token`, query: new URLSearchParams(query), contentType: 'application/json', body: { content: 'hi' },
  });
  assert.deepEqual(followUp('wait=true'), []);
  assert.deepEqual(followUp('wait=yes'), ['query.wait: must be a boolean (got "yes")']);
  assert.deepEqual(problemsOf({ method: 'GET', path: `/guilds/${GUILD_ID}/members/search`, query: new URLSearchParams('limit=5') }), ['query.query: is required']);
});

test('request bodies: none on a GET, one where required, and only the media types the operation takes', () => {
  assert.deepEqual(problemsOf({ method: 'GET', path: `/channels/${CHANNEL_ID}`, contentType: 'application/json', body: {} }), [
    'body: GET /channels/{channel_id} takes no request body',
  ]);
  assert.deepEqual(problemsOf({ method: 'POST', path: '/interactions/1/token/callback' }), [
    'body: is required (POST /interactions/{interaction_id}/{interaction_token}/callback takes application/json, application/x-www-form-urlencoded, multipart/form-data)',
  ]);
  assert.deepEqual(problemsOf({ method: 'POST', path: '/interactions/1/token/callback', contentType: 'text/plain', body: { type: 1 } }), [
    'content-type: must be one of application/json, application/x-www-form-urlencoded, multipart/form-data for POST /interactions/{interaction_id}/{interaction_token}/callback (got "text/plain")',
  ]);
  assert.deepEqual(problemsOf({ method: 'POST', path: '/interactions/1/token/callback', contentType: 'Application/JSON; charset=utf-8', body: { type: 1 } }), []);
  assert.deepEqual(problemsOf({ method: 'POST', path: '/interactions/1/token/callback', contentType: 'application/json', body: { type: 1 }, fileFields: ['files[0]'] }), [
    'body: file parts need multipart/form-data (got application/json with files[0])',
  ]);
});

test('multipart file parts must be ones the operation takes', () => {
  const multipart = 'multipart/form-data; boundary=x';
  const create = (fileFields: string[]) => problemsOf({
    method: 'POST', path: `/channels/${CHANNEL_ID}/messages`, contentType: multipart, body: { content: 'hi' }, fileFields,
  });
  assert.deepEqual(create(['files[0]', 'files[9]']), []);
  assert.deepEqual(create(['files[10]']), [
    'body["files[10]"]: is not a file part this operation takes (it takes files[0], files[1], files[2], files[3], files[4], files[5], files[6], files[7], files[8], files[9])',
  ]);
  assert.deepEqual(create(['file']), [
    'body.file: is not a file part this operation takes (it takes files[0], files[1], files[2], files[3], files[4], files[5], files[6], files[7], files[8], files[9])',
  ]);
  // The spec declares no file part for callbacks; files[n] is accepted there up to Discord's 10 attachments.
  const reply = (fileFields: string[]) => problemsOf({
    method: 'POST', path: '/interactions/1/token/callback', contentType: multipart, body: { type: 4, data: { attachments: [{ id: '0' }] } }, fileFields,
  });
  assert.deepEqual(reply(['files[0]']), []);
  assert.deepEqual(reply(['files[10]']), ['body["files[10]"]: is not a file part this operation takes (it takes files[0] … files[9])']);
  assert.deepEqual(problemsOf({ method: 'POST', path: `/channels/${CHANNEL_ID}/messages`, contentType: multipart, body: [1], fileFields: ['files[0]'] }), [
    'body: payload_json must hold a JSON object (got [1])',
  ]);
  assert.deepEqual(problemsOf({
    method: 'PATCH', path: `/webhooks/${APPLICATION_ID}/token/messages/@original`, contentType: multipart,
    body: { attachments: [{ id: 0 }] }, fileFields: ['files[0]'],
  }), ['body.attachments[0].id: must be a string (got 0)']);
});

test('every schema in the spec compiles: it uses no keyword the engine lacks', () => {
  const spec = JSON.parse(readFileSync(DISCORD_OPENAPI_PATH, 'utf8')) as { components: { schemas: Record<string, Schema> } };
  const compiler = new SchemaCompiler(spec);
  for (const [name, schema] of Object.entries(spec.components.schemas)) {
    assert.doesNotThrow(() => compiler.compile(schema), name);
  }
  assert.throws(() => new SchemaCompiler({}).compile({ not: { type: 'null' } }), /JSON Schema keyword "not" is not supported/);
});

function schemaProblems(schema: Schema, value: unknown, root: unknown = {}): string[] {
  const found: SchemaProblem[] = [];
  new SchemaCompiler(root).compile(schema)(value, 'value', found);
  return found.map((problem) => `${problem.at}: ${problem.rule}`);
}

test('schema keywords: types, values, strings, numbers, arrays and objects', () => {
  assert.deepEqual(schemaProblems({ type: ['string', 'null'] }, null), []);
  assert.deepEqual(schemaProblems({ type: ['string', 'null'] }, 3), ['value: must be a string or null (got 3)']);
  assert.deepEqual(schemaProblems({ type: 'integer' }, 1.5), ['value: must be an integer (got 1.5)']);
  assert.deepEqual(schemaProblems({ type: 'number', format: 'int32' }, 2 ** 31), ['value: must be a 32-bit integer (got 2147483648)']);
  assert.deepEqual(schemaProblems({ const: 'a' }, 'b'), ['value: must be "a" (got "b")']);
  assert.deepEqual(schemaProblems({ enum: [3, 1, 2] }, 4), ['value: must be one of 1, 2, 3 (got 4)']);
  assert.deepEqual(schemaProblems({ type: 'string', minLength: 2, maxLength: 3 }, 'a'), ['value: must be at least 2 characters (got 1)']);
  assert.deepEqual(schemaProblems({ type: 'string', format: 'date-time' }, '2025-01-01T00:00:00.000Z'), []);
  assert.deepEqual(schemaProblems({ type: 'string', format: 'date-time' }, 'yesterday'), ['value: must be an RFC 3339 date-time (got "yesterday")']);
  assert.deepEqual(schemaProblems({ type: 'string', format: 'uri' }, 'attachment://cat.png'), []);
  assert.deepEqual(schemaProblems({ type: 'string', format: 'uri' }, 'cat.png'), ['value: must be an absolute URI (got "cat.png")']);
  assert.deepEqual(schemaProblems({ type: 'string', format: 'made-up' }, 'anything'), []);
  assert.deepEqual(schemaProblems({ type: 'number', minimum: 0, maximum: 1 }, -1), ['value: must be at least 0 (got -1)']);
  assert.deepEqual(schemaProblems({ type: 'array', items: { type: 'integer' }, minItems: 1, maxItems: 2, uniqueItems: true }, [1, 'a', 1]), [
    'value[1]: must be an integer (got "a")', 'value: must have at most 2 items (got 3)', 'value[2]: must not repeat item 0 (got 1)',
  ]);
  assert.deepEqual(schemaProblems({ type: 'array', uniqueItems: true }, [{ a: 1, b: 2 }, { b: 2, a: 1 }]), ['value[1]: must not repeat item 0 (got {"b":2,"a":1})']);
  assert.deepEqual(schemaProblems({ type: 'array', minItems: 1 }, []), ['value: must have at least 1 items (got 0)']);
  const object: Schema = { type: 'object', properties: { name: { type: 'string' } }, required: ['name'], additionalProperties: { type: 'integer' }, maxProperties: 2 };
  assert.deepEqual(schemaProblems(object, { name: 'a', extra: 1 }), []);
  assert.deepEqual(schemaProblems(object, { extra: 'x', more: 2, most: 3 }), [
    'value.extra: must be an integer (got "x")', 'value.name: is required', 'value: must have at most 2 properties (got 3)',
  ]);
  assert.deepEqual(schemaProblems({ type: 'object', properties: { a: { type: 'string' } } }, { b: 1 }), []);
  assert.deepEqual(schemaProblems({ type: 'object', minProperties: 1 }, {}), ['value: must have at least 1 properties (got 0)']);
  assert.deepEqual(schemaProblems({ type: 'object' }, [1]), ['value: must be an object (got [1])']);
});

test('schema combinators and $ref, recursion included', () => {
  const root = {
    defs: {
      Node: { type: 'object', properties: { value: { type: 'integer' }, next: { oneOf: [{ type: 'null' }, { $ref: '#/defs/Node' }] } }, required: ['value'] },
    },
  };
  assert.deepEqual(schemaProblems({ $ref: '#/defs/Node' }, { value: 1, next: { value: 2, next: null } }, root), []);
  assert.deepEqual(schemaProblems({ $ref: '#/defs/Node' }, { value: 1, next: { value: 'two', next: null } }, root), ['value.next.value: must be an integer (got "two")']);
  assert.deepEqual(schemaProblems({ allOf: [{ type: 'integer' }, { minimum: 5 }] }, 3), ['value: must be at least 5 (got 3)']);
  assert.deepEqual(schemaProblems({ anyOf: [{ type: 'string' }, { type: 'integer' }] }, true), ['value: must be a string or an integer (got true)']);
  assert.deepEqual(schemaProblems({ oneOf: [{ type: 'integer' }, { type: 'number' }] }, 1), ['value: matches 2 of the 2 oneOf alternatives; exactly one must match']);
  assert.deepEqual(schemaProblems({ oneOf: [{ type: 'integer' }, { type: 'number' }] }, 1.5), []);
  assert.throws(() => schemaProblems({ $ref: '#/defs/Missing' }, 1, root), /\$ref #\/defs\/Missing points at nothing/);
});

test('digit strings count as integers only for the properties named, and only where the schema wants an integer', () => {
  const schema: Schema = { type: 'object', properties: { permissions: { type: ['integer', 'null'] }, flags: { type: 'integer' }, name: { type: 'string' } } };
  const found: SchemaProblem[] = [];
  new SchemaCompiler({}, { digitStringIntegerProperties: new Set(['permissions', 'name']) }).compile(schema)({ permissions: '8', flags: '64', name: 'x' }, 'value', found);
  assert.deepEqual(found.map((problem) => `${problem.at}: ${problem.rule}`), ['value.flags: must be an integer (got "64")']);
});
