// Errors answered the way Discord answers them: an HTTP status plus a JSON body {code, message[, errors]}, so
// discord.js turns them into the same DiscordAPIError the bot would see in production.

export class DiscordApiError extends Error {
  override name = 'DiscordApiError';

  constructor(readonly status: number, readonly code: number, message: string, readonly errors?: Record<string, unknown>) {
    super(message);
  }

  body(): Record<string, unknown> {
    return this.errors === undefined ? { code: this.code, message: this.message } : { code: this.code, message: this.message, errors: this.errors };
  }
}

export const unauthorized = () => new DiscordApiError(401, 0, '401: Unauthorized');
export const unknownChannel = () => new DiscordApiError(404, 10003, 'Unknown Channel');
export const unknownGuild = () => new DiscordApiError(404, 10004, 'Unknown Guild');
export const unknownMessage = () => new DiscordApiError(404, 10008, 'Unknown Message');
export const unknownUser = () => new DiscordApiError(404, 10013, 'Unknown User');
export const unknownEmoji = () => new DiscordApiError(400, 10014, 'Unknown Emoji');
export const unknownWebhook = () => new DiscordApiError(404, 10015, 'Unknown Webhook');
export const unknownApplication = () => new DiscordApiError(404, 10002, 'Unknown Application');
export const unknownInteraction = () => new DiscordApiError(404, 10062, 'Unknown interaction');
export const alreadyAcknowledged = () => new DiscordApiError(400, 40060, 'Interaction has already been acknowledged.');
export const invalidWebhookToken = () => new DiscordApiError(401, 50027, 'Invalid Webhook Token');
export const requestTooLarge = () => new DiscordApiError(413, 40005, 'Request entity too large');
export const invalidJson = () => new DiscordApiError(400, 50109, 'The request body contains invalid JSON.');
export const cannotEditOthersMessage = () => new DiscordApiError(403, 50005, 'Cannot edit a message authored by another user');
export const cannotSendEmpty = () => new DiscordApiError(400, 50006, 'Cannot send an empty message');
export const notFound = () => new DiscordApiError(404, 0, '404: Not Found');

/**
 * Discord's "Invalid Form Body": errors nested by field path, each leaf {_errors: [{code, message}]}. `problems`
 * are "where: why" lines, e.g. "body.content: must be at most 2000 characters"; a leading "body." is dropped as
 * Discord's paths start at the payload.
 */
export function invalidFormBody(problems: readonly string[], errorCode: string): DiscordApiError {
  const errors: Record<string, unknown> = {};
  for (const problem of problems) {
    const colon = problem.indexOf(': ');
    const where = colon < 0 ? '' : problem.slice(0, colon).replace(/^body\.?/, '');
    const message = colon < 0 ? problem : problem.slice(colon + 2);
    const keys = where.split(/[.[\]]+/).filter((key) => key !== '');
    let node = errors;
    for (const key of keys) node = (node[key] ??= {}) as Record<string, unknown>;
    ((node['_errors'] ??= []) as unknown[]).push({ code: errorCode, message });
  }
  return new DiscordApiError(400, 50035, 'Invalid Form Body', errors);
}

/** A control API refusal; its message is what SandboxClient throws. */
export class ControlError extends Error {
  override name = 'ControlError';

  constructor(readonly status: number, message: string) {
    super(message);
  }
}
