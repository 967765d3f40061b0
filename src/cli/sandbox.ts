import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SandboxClient, WaitTimeoutError, type SandboxMessageView } from '../sandbox/control-client.js';
import { integerOption, parseOptions, pickOptions, UsageError, type OptionSpec } from './options.js';

// `wrongbot sandbox …`: plays the humans in a running local Discord (started by `npm start` without a
// DISCORD_TOKEN) through its control API — run commands, press buttons, react — and shows what the bot posted.

export const DEFAULT_SANDBOX_PORT = 8787;
const DEFAULT_SANDBOX_URL = `http://127.0.0.1:${DEFAULT_SANDBOX_PORT}/_sandbox`;
export const SANDBOX_USAGE = 'wrongbot sandbox command NAME [--as USER] [--opt KEY=VALUE ...] [--sub NAME] [--channel C] [--force]'
  + ' | press MESSAGE_ID CUSTOM_ID [--as USER] | react|unreact MESSAGE_ID [--emoji E] [--as USER]'
  + ' | messages [--channel C] [--as USER] [--save DIR] | clock [+MS]   (SANDBOX_URL, default ' + DEFAULT_SANDBOX_URL + ')';

const DEFAULT_USER = 'alice';
const DEFAULT_EMOJI = '👎';
const DEFAULT_CHANNEL = 'general';

/** Every subcommand's options; each subcommand takes the ones its usage names. */
export const SANDBOX_OPTIONS = {
  as: { type: 'string', value: 'USER', description: `the member who acts, or whose view messages shows; made on first use (default ${DEFAULT_USER})` },
  opt: { type: 'string', value: 'KEY=VALUE', multiple: true, description: 'an option of the slash command, one --opt each (command)' },
  sub: { type: 'string', value: 'NAME', description: 'the slash command\'s subcommand (command)' },
  channel: { type: 'string', value: 'C', description: `the channel (command, messages; default ${DEFAULT_CHANNEL})` },
  force: { type: 'boolean', description: 'deliver an admin command to a member who is no admin (command)' },
  emoji: { type: 'string', value: 'E', description: `the reaction (react, unreact; default ${DEFAULT_EMOJI})` },
  save: { type: 'string', value: 'DIR', description: 'save the attachments to this folder (messages)' },
} as const satisfies OptionSpec;

/** How long `command` and `press` wait to report the bot's answer; Discord's own deadline is 3 s. */
const ANSWER_WAIT_MS = 3500;

/** Splits off the leading positional arguments a subcommand takes, so the rest parse as options. */
function positionals(argv: string[], names: string[]): { values: string[]; rest: string[] } {
  const values = argv.slice(0, names.length);
  const missing = names.find((_, i) => values[i] === undefined || values[i]!.startsWith('--'));
  if (missing !== undefined) throw new UsageError(`${missing} is required`);
  return { values, rest: argv.slice(names.length) };
}

/** `--opt key=value` pairs as the slash command's options. */
function commandOptions(pairs: readonly string[]): Record<string, string> {
  const options: Record<string, string> = {};
  for (const pair of pairs) {
    const equals = pair.indexOf('=');
    if (equals <= 0) throw new UsageError(`--opt ${JSON.stringify(pair)} must be KEY=VALUE`);
    options[pair.slice(0, equals)] = pair.slice(equals + 1);
  }
  return options;
}

async function reportAnswer(client: SandboxClient, interactionId: string): Promise<void> {
  console.log(`interaction ${interactionId} sent`);
  const answered = await client.waitFor(async () => {
    const interaction = await client.interaction(interactionId);
    return interaction.acknowledgedAt !== null && interaction;
  }, { timeoutMs: ANSWER_WAIT_MS, what: 'the bot to answer' }).catch((error: unknown) => {
    // Only silence means the bot may not be running; any other failure is reported as it is.
    if (error instanceof WaitTimeoutError) return null;
    throw error;
  });
  if (answered === null) console.log(`the bot has not answered within ${ANSWER_WAIT_MS} ms (is it running?)`);
  else console.log(`the bot answered with callback type ${answered.callbackType}; message ${answered.messageId}`);
}

function describeComponents(components: Array<Record<string, unknown>>): string[] {
  const buttons: string[] = [];
  const visit = (component: Record<string, unknown>) => {
    if (component['type'] === 2) {
      const label = String(component['label'] ?? (component['emoji'] as { name?: string } | undefined)?.name ?? '');
      const target = component['custom_id'] ?? component['url'];
      buttons.push(`[${label}] ${String(target)}${component['disabled'] === true ? ' (disabled)' : ''}`);
    }
    if (Array.isArray(component['components'])) component['components'].forEach(visit);
  };
  components.forEach(visit);
  return buttons.length === 0 ? [] : [`  buttons: ${buttons.join(' · ')}`];
}

function describeMessage(message: SandboxMessageView): string {
  const notes = [
    message.ephemeral ? 'ephemeral' : '', message.interactionId === null ? '' : `interaction ${message.interactionId}`,
    message.edits.length === 0 ? '' : `edited ${message.edits.length}×`,
  ].filter((note) => note !== '');
  const lines = [`${message.id} ${message.author.name}${message.author.bot ? ' (bot)' : ''}${notes.length > 0 ? ` · ${notes.join(' · ')}` : ''}`];
  if (message.content !== '') lines.push(...message.content.split('\n').map((line) => `  ${line}`));
  for (const embed of message.embeds) {
    const fields = Array.isArray(embed['fields']) ? (embed['fields'] as Array<{ name: string; value: string }>) : [];
    lines.push(`  embed: ${String(embed['title'] ?? '(untitled)')}${embed['description'] === undefined ? '' : ` — ${String(embed['description'])}`}`);
    lines.push(...fields.map((field) => `    ${field.name}: ${field.value}`));
  }
  lines.push(...describeComponents(message.components));
  if (message.attachments.length > 0) {
    lines.push(`  attachments: ${message.attachments.map((file) => `${file.filename} (${file.contentType}, ${file.size} bytes)`).join(', ')}`);
  }
  if (message.reactions.length > 0) lines.push(`  reactions: ${message.reactions.map((reaction) => `${reaction.emoji} ${reaction.users.join(', ')}`).join(' · ')}`);
  return lines.join('\n');
}

async function showMessages(client: SandboxClient, argv: string[]): Promise<void> {
  const values = parseOptions(argv, pickOptions(SANDBOX_OPTIONS, ['channel', 'as', 'save']));
  const channel = values.channel ?? DEFAULT_CHANNEL;
  const messages = await client.messages(channel, { user: values.as });
  console.log(`#${channel}: ${messages.length} message${messages.length === 1 ? '' : 's'}${values.as === undefined ? '' : ` (as ${values.as} sees them)`}`);
  for (const message of messages) console.log(describeMessage(message));
  if (values.save === undefined) return;
  await mkdir(values.save, { recursive: true });
  for (const message of messages) {
    for (const attachment of message.attachments) {
      const file = path.join(values.save, `${message.id}-${path.basename(attachment.filename)}`);
      await writeFile(file, await client.download(attachment.url));
      console.log(`saved ${file}`);
    }
  }
}

async function run(client: SandboxClient, subcommand: string | undefined, argv: string[]): Promise<void> {
  switch (subcommand) {
    case 'command': {
      const { values: [name], rest } = positionals(argv, ['NAME']);
      const values = parseOptions(rest, pickOptions(SANDBOX_OPTIONS, ['as', 'opt', 'sub', 'channel', 'force']));
      const handle = await client.command({
        user: values.as ?? DEFAULT_USER, command: name!, options: commandOptions(values.opt ?? []),
        subcommand: values.sub, channel: values.channel, force: values.force,
      });
      await reportAnswer(client, handle.interactionId);
      return;
    }
    case 'press': {
      const { values: [messageId, customId], rest } = positionals(argv, ['MESSAGE_ID', 'CUSTOM_ID']);
      const values = parseOptions(rest, pickOptions(SANDBOX_OPTIONS, ['as']));
      await reportAnswer(client, (await client.press(values.as ?? DEFAULT_USER, messageId!, customId!)).interactionId);
      return;
    }
    case 'react':
    case 'unreact': {
      const { values: [messageId], rest } = positionals(argv, ['MESSAGE_ID']);
      const values = parseOptions(rest, pickOptions(SANDBOX_OPTIONS, ['as', 'emoji']));
      const user = values.as ?? DEFAULT_USER;
      const emoji = values.emoji ?? DEFAULT_EMOJI;
      const result = subcommand === 'react' ? await client.react(user, messageId!, emoji) : await client.unreact(user, messageId!, emoji);
      const verb = subcommand === 'react' ? 'reacted' : 'removed the reaction';
      console.log(result.changed ? `${user} ${verb} ${emoji} on ${messageId}` : `nothing changed: ${user} ${subcommand === 'react' ? 'had already reacted' : 'had not reacted'} ${emoji}`);
      return;
    }
    case 'messages':
      return showMessages(client, argv);
    case 'clock': {
      if (argv.length > 1) throw new UsageError(`clock takes one argument (+MS), got ${argv.length}`);
      const now = argv[0] === undefined ? await client.now() : await client.advanceClock(integerOption('clock', argv[0].replace(/^\+/, '')));
      console.log(`sandbox clock: ${new Date(now).toISOString()} (${now})`);
      return;
    }
    default:
      throw new UsageError(`unknown sandbox command ${JSON.stringify(subcommand ?? '')}; usage: ${SANDBOX_USAGE}`);
  }
}

/** A refused fetch means nothing is listening: say how to start it instead of "fetch failed". */
function explainUnreachable(error: unknown, url: string): unknown {
  const cause = (error as { cause?: { code?: string } }).cause;
  if (error instanceof TypeError && (cause?.code === 'ECONNREFUSED' || cause?.code === 'ENOTFOUND')) {
    return new Error(`no local Discord at ${url}: start one with \`npm start\` (without DISCORD_TOKEN), or set SANDBOX_URL to where it runs`);
  }
  return error;
}

export async function sandboxCommand(args: string[]): Promise<void> {
  const url = process.env['SANDBOX_URL'] || DEFAULT_SANDBOX_URL;
  const [subcommand, ...rest] = args;
  try {
    await run(new SandboxClient(url), subcommand, rest);
  } catch (error) {
    throw explainUnreachable(error, url);
  }
}
