import { DiscordAPIError, MessageFlags, Routes, type APIMessage, type REST } from 'discord.js';
import type { JobRecord } from '../store/jobs.js';
import { THUMBS_DOWN, withinDiscordLimits, type MessageView } from './views.js';

// The one place that writes a job's message to Discord. While the interaction token lives, the job's message is the
// interaction's reply (@original); after that, a finished job is posted to the channel. Edits to one message are
// spaced at least EDIT_INTERVAL_MS apart: a newer view replaces one still waiting, an edit that would change nothing
// is skipped, and nothing follows a final view that made it.

export const EDIT_INTERVAL_MS = 2_000;
/** Discord accepts edits for 15 minutes; one started this close to the end might not make it. */
export const TOKEN_SAFETY_MARGIN_MS = 30_000;
/**
 * Discord's answers that mean the reply cannot be edited any more: the token expired (50027, 10015, 10062) or the
 * reply was deleted (10008). The result then goes to the channel instead.
 */
const REPLY_GONE_CODES: ReadonlySet<number | string> = new Set([50027, 10015, 10062, 10008]);
/** Discord's limit on a message nonce. */
const MAX_NONCE_CHARS = 25;

export interface OutgoingFile {
  name: string;
  data: Buffer;
}

export interface Shown {
  messageId: string;
  channelId: string;
  /** True when the view went to the channel as a new message because the interaction had expired. */
  inChannel: boolean;
}

interface Pending {
  job: JobRecord;
  render: (inChannel: boolean) => MessageView;
  files: OutgoingFile[];
  final: boolean;
  resolve: (shown: Shown | null) => void;
  reject: (error: Error) => void;
}

interface MessageState {
  jobId: string;
  lastSentAt: number;
  /** The last body that reached Discord, to skip edits that would change nothing. */
  lastBody: string | null;
  pending: Pending | null;
  timer: NodeJS.Timeout | null;
  sending: Promise<void> | null;
  ended: boolean;
}

export class JobMessages {
  private readonly states = new Map<string, MessageState>();

  constructor(
    private readonly rest: REST,
    private readonly applicationId: string,
    private readonly log: (line: string) => void,
    /** Discord's time (see DiscordClock), by which interaction tokens expire. */
    private readonly discordNow: () => number = Date.now,
    /** This host's time, by which edits are spaced. */
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Shows a view on the job's message. Resolves once it is on Discord, or with null when a newer view replaced it
   * or it would have changed nothing. A final view is the last thing sent for the job; when the reply can no longer
   * be edited it becomes a new channel message. If a final view fails, it rejects and a later one may be tried.
   */
  show(job: JobRecord, render: (inChannel: boolean) => MessageView, options: { final?: boolean; files?: OutgoingFile[] } = {}): Promise<Shown | null> {
    // A job with neither an interaction nor a channel (a synthetic image) has nowhere to be shown.
    if (job.interactionToken === null && job.channelId === null) return Promise.resolve(null);
    const state = this.stateOf(job.jobId);
    if (state.ended) return Promise.resolve(null);
    const final = options.final ?? false;
    if (final) state.ended = true;
    return new Promise((resolve, reject) => {
      state.pending?.resolve(null);
      state.pending = { job, render, files: options.files ?? [], final, resolve, reject };
      this.schedule(state);
    });
  }

  /** A private note to the member who asked, while the interaction lives; false when it could not be sent. */
  async privateNote(job: JobRecord, content: string): Promise<boolean> {
    if (!this.tokenUsable(job)) return false;
    try {
      await this.rest.post(Routes.webhook(this.applicationId, job.interactionToken!), {
        body: { content, flags: MessageFlags.Ephemeral, allowed_mentions: { parse: [] } },
        auth: false,
      });
      return true;
    } catch (error) {
      this.log(`job ${job.jobId}: could not send a private note: ${(error as Error).message}`);
      return false;
    }
  }

  /** Adds the bot's own 👎 so members can vote with one click. */
  async addVoteReaction(shown: Shown): Promise<void> {
    await this.rest.put(Routes.channelMessageOwnReaction(shown.channelId, shown.messageId, encodeURIComponent(THUMBS_DOWN)));
  }

  /** Sends what is still waiting at once (the interval aside) and resolves when nothing is in flight; for shutdown. */
  async drain(): Promise<void> {
    for (let busy = this.busy(); busy.length > 0; busy = this.busy()) {
      for (const state of busy) {
        if (state.timer) {
          clearTimeout(state.timer);
          state.timer = null;
          state.lastSentAt = 0;
          this.schedule(state);
        }
      }
      await Promise.all(busy.map((state) => state.sending));
    }
  }

  private busy(): MessageState[] {
    return [...this.states.values()].filter((state) => state.sending !== null || state.pending !== null);
  }

  private stateOf(jobId: string): MessageState {
    let state = this.states.get(jobId);
    if (!state) {
      state = { jobId, lastSentAt: 0, lastBody: null, pending: null, timer: null, sending: null, ended: false };
      this.states.set(jobId, state);
    }
    return state;
  }

  private schedule(state: MessageState): void {
    if (state.sending || state.timer) return;
    const pending = state.pending;
    if (!pending) return;
    const waitMs = state.lastSentAt + EDIT_INTERVAL_MS - this.now();
    if (waitMs > 0) {
      state.timer = setTimeout(() => {
        state.timer = null;
        this.schedule(state);
      }, waitMs);
      return;
    }
    state.pending = null;
    state.sending = this.send(state, pending).then(pending.resolve, (error: Error) => {
      // The job stays owed: let a later attempt show its final view.
      state.ended = false;
      pending.reject(error);
    }).finally(() => {
      state.sending = null;
      if (state.pending) this.schedule(state);
      else if (state.ended) this.states.delete(state.jobId);
    });
  }

  private tokenUsable(job: JobRecord): boolean {
    return job.interactionToken !== null && job.tokenExpiresAt !== null && this.discordNow() < job.tokenExpiresAt - TOKEN_SAFETY_MARGIN_MS;
  }

  private async send(state: MessageState, pending: Pending): Promise<Shown | null> {
    const { job } = pending;
    try {
      if (this.tokenUsable(job)) {
        const body = this.body(pending.render(false), pending.files);
        const serialized = JSON.stringify(body);
        if (!pending.final && serialized === state.lastBody) return null;
        try {
          const message = await this.rest.patch(Routes.webhookMessage(this.applicationId, job.interactionToken!, '@original'), {
            body, files: this.files(pending.files), auth: false,
          }) as APIMessage;
          state.lastBody = serialized;
          return { messageId: message.id, channelId: message.channel_id, inChannel: false };
        } catch (error) {
          if (!(error instanceof DiscordAPIError && REPLY_GONE_CODES.has(error.code))) throw error;
          this.log(`job ${job.jobId}: its reply can no longer be edited (${error.message})`);
        } finally {
          // Counted from when the edit is done: Discord's clock sees it then, not when it left.
          state.lastSentAt = this.now();
        }
      }
      // Progress on a message nobody can see any more is not worth a new message; the result is.
      if (!pending.final || job.channelId === null) return null;
      const message = await this.rest.post(Routes.channelMessages(job.channelId), {
        // The nonce makes Discord drop a second copy if a timed-out request is retried after all.
        body: { ...this.body(pending.render(true), pending.files), nonce: job.jobId.replaceAll('-', '').slice(0, MAX_NONCE_CHARS), enforce_nonce: true },
        files: this.files(pending.files),
      }) as APIMessage;
      await this.pointAt(job, message);
      return { messageId: message.id, channelId: message.channel_id, inChannel: true };
    } catch (error) {
      this.log(`job ${job.jobId}: could not update its message: ${(error as Error).message}`);
      if (pending.final) throw error;
      return null;
    }
  }

  /**
   * The reply the interaction's token can no longer edit would go on saying "Generating · step 31/150" beside a live
   * ❌: the bot edits its own message (with its own token) to point at the one that took its place.
   */
  private async pointAt(job: JobRecord, replacement: APIMessage): Promise<void> {
    if (job.messageId === null || job.channelId === null || job.messageId === replacement.id) return;
    const link = `https://discord.com/channels/${job.guildId ?? '@me'}/${replacement.channel_id}/${replacement.id}`;
    try {
      await this.rest.patch(Routes.channelMessage(job.channelId, job.messageId), {
        body: { content: `⤵️ Finished: the result is in a newer message, ${link}`, components: [], allowed_mentions: { parse: [] } },
      });
    } catch (error) {
      this.log(`job ${job.jobId}: could not point its first message at the result: ${(error as Error).message}`);
    }
  }

  private body(unchecked: MessageView, files: OutgoingFile[]): Record<string, unknown> {
    const view = withinDiscordLimits(unchecked);
    return {
      content: view.content,
      embeds: view.embeds,
      components: view.components,
      allowed_mentions: { parse: [], users: view.mentionUserIds },
      ...(files.length > 0 ? { attachments: files.map((file, index) => ({ id: String(index), filename: file.name })) } : {}),
    };
  }

  private files(files: OutgoingFile[]): Array<{ name: string; data: Buffer; contentType: string }> | undefined {
    return files.length > 0 ? files.map((file) => ({ name: file.name, data: file.data, contentType: 'image/png' })) : undefined;
  }
}
