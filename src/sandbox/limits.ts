import { DiscordApiError, invalidFormBody, requestTooLarge } from './discord-errors.js';
import { MessageFlag } from './message-flags.js';

// Discord's platform limits on what a message may carry. Some are in the OpenAPI spec, some are not (the spec
// allows 4 000 characters of channel-message content, knows nothing of the 6 000-character embed total or
// duplicate custom ids), so all are checked here in one place whatever the validator caught first.

const MAX_CONTENT_CHARS = 2000;
const MAX_EMBEDS = 10;
const MAX_EMBED_TOTAL_CHARS = 6000;
const MAX_ACTION_ROWS = 5;
const MAX_COMPONENTS_PER_ROW = 5;
const MAX_CUSTOM_ID_CHARS = 100;
export const MAX_ATTACHMENTS = 10;
export const MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024;
export const MAX_REQUEST_BYTES = 25 * 1024 * 1024;
/**
 * How deeply a body's arrays and objects may nest. Discord's own payloads nest a dozen levels at most (a command's
 * option choices' name_localizations); every walk over a body here (schema validation, these limits, the values
 * quoted in problems) recurses once per level, so a body nested thousands deep must be refused before any of them.
 */
export const MAX_JSON_DEPTH = 32;
const MAX_COMMAND_OPTIONS = 25;
const MAX_OPTION_CHOICES = 25;
export const ACKNOWLEDGE_DEADLINE_MS = 3000;
export const TOKEN_LIFETIME_MS = 15 * 60 * 1000;

/** A request that broke a platform limit: answered as Discord would, and recorded as a violation. */
export class LimitBreach extends Error {
  override name = 'LimitBreach';

  constructor(readonly answer: DiscordApiError, readonly problems: string[]) {
    super(problems.join('; '));
  }
}

export function breach(problems: string[]): LimitBreach {
  return new LimitBreach(invalidFormBody(problems, 'PLATFORM_LIMIT'), problems);
}

const characters = (text: unknown): number => (typeof text === 'string' ? [...text].length : 0);

function embedCharacters(embed: Record<string, unknown>): number {
  const nested = (key: string, field: string) => characters((embed[key] as Record<string, unknown> | undefined)?.[field]);
  const fields = Array.isArray(embed['fields']) ? (embed['fields'] as Record<string, unknown>[]) : [];
  return characters(embed['title']) + characters(embed['description']) + nested('footer', 'text') + nested('author', 'name')
    + fields.reduce((sum, field) => sum + characters(field['name']) + characters(field['value']), 0);
}

function componentProblems(components: unknown[], isComponentsV2: boolean): string[] {
  const problems: string[] = [];
  if (!isComponentsV2 && components.length > MAX_ACTION_ROWS) {
    problems.push(`components: ${components.length} action rows; the limit is ${MAX_ACTION_ROWS}`);
  }
  const customIds = new Map<string, string>();
  const visit = (component: Record<string, unknown>, where: string): void => {
    const customId = component['custom_id'];
    if (typeof customId === 'string') {
      if (customId.length > MAX_CUSTOM_ID_CHARS) {
        problems.push(`${where}.custom_id: ${customId.length} characters; the limit is ${MAX_CUSTOM_ID_CHARS}`);
      }
      const first = customIds.get(customId);
      if (first !== undefined) problems.push(`${where}.custom_id: ${JSON.stringify(customId)} is already used by ${first}`);
      else customIds.set(customId, where);
    }
    const children = component['components'];
    if (!Array.isArray(children)) return;
    if (component['type'] === 1 && children.length > MAX_COMPONENTS_PER_ROW) {
      problems.push(`${where}.components: ${children.length} components in an action row; the limit is ${MAX_COMPONENTS_PER_ROW}`);
    }
    children.forEach((child, i) => visit(child as Record<string, unknown>, `${where}.components[${i}]`));
  };
  components.forEach((component, i) => visit(component as Record<string, unknown>, `components[${i}]`));
  return problems;
}

/** Problems with a message create/edit payload's content, embeds and components (empty = within limits). */
function messageLimitProblems(body: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const contentChars = characters(body['content']);
  if (contentChars > MAX_CONTENT_CHARS) problems.push(`content: ${contentChars} characters; the limit is ${MAX_CONTENT_CHARS}`);
  const embeds = Array.isArray(body['embeds']) ? (body['embeds'] as Record<string, unknown>[]) : [];
  if (embeds.length > MAX_EMBEDS) problems.push(`embeds: ${embeds.length} embeds; the limit is ${MAX_EMBEDS}`);
  const embedChars = embeds.reduce((sum, embed) => sum + embedCharacters(embed), 0);
  if (embedChars > MAX_EMBED_TOTAL_CHARS) {
    problems.push(`embeds: ${embedChars} characters across embeds; the limit is ${MAX_EMBED_TOTAL_CHARS}`);
  }
  if (Array.isArray(body['components'])) {
    const flags = typeof body['flags'] === 'number' ? body['flags'] : 0;
    problems.push(...componentProblems(body['components'], (flags & MessageFlag.IsComponentsV2) !== 0));
  }
  return problems;
}

/** Throws the breach for too many attachments or one too large (Discord answers the latter with 413). */
export function checkAttachmentLimits(count: number, fileSizes: ReadonlyArray<{ field: string; bytes: number }>): void {
  if (count > MAX_ATTACHMENTS) throw breach([`attachments: ${count} attachments; the limit is ${MAX_ATTACHMENTS}`]);
  const tooLarge = fileSizes.filter((file) => file.bytes > MAX_ATTACHMENT_BYTES);
  if (tooLarge.length > 0) {
    throw new LimitBreach(requestTooLarge(), tooLarge.map((file) => `${file.field}: ${file.bytes} bytes; the limit is ${MAX_ATTACHMENT_BYTES} per attachment`));
  }
}

export function checkMessageLimits(body: Record<string, unknown>): void {
  const problems = messageLimitProblems(body);
  if (problems.length > 0) throw breach(problems);
}

/** Limits on a command registration that the spec's schema leaves out (options and choices per level). */
export function commandLimitProblems(command: Record<string, unknown>, where: string): string[] {
  const options = Array.isArray(command['options']) ? (command['options'] as Record<string, unknown>[]) : [];
  const problems: string[] = [];
  if (options.length > MAX_COMMAND_OPTIONS) problems.push(`${where}.options: ${options.length} options; the limit is ${MAX_COMMAND_OPTIONS}`);
  options.forEach((option, i) => {
    const choices = option['choices'];
    if (Array.isArray(choices) && choices.length > MAX_OPTION_CHOICES) {
      problems.push(`${where}.options[${i}].choices: ${choices.length} choices; the limit is ${MAX_OPTION_CHOICES}`);
    }
    problems.push(...commandLimitProblems(option, `${where}.options[${i}]`));
  });
  return problems;
}
